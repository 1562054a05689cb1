// SPDX-License-Identifier: Apache-2.0
// RapidJSON helpers: strict parsing with a clear error, and field accessors that name what is missing.
#pragma once

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace seamless::qmp {

using Value = rapidjson::Value;

// An owned JSON document (movable). Its root is the value of interest.
class Json {
 public:
  Json() { doc_.SetNull(); }
  Json(Json&&) noexcept = default;
  Json& operator=(Json&&) noexcept = default;
  rapidjson::Document& doc() { return doc_; }
  const Value& root() const { return doc_; }
  auto& allocator() { return doc_.GetAllocator(); }
  std::string dump() const;

 private:
  rapidjson::Document doc_;
};

// The deepest nesting of arrays and objects parse() accepts: no message, manifest or
// reply of ours comes near it, and a value nested deeper (from a guest, a sink or a
// client) would cost the parser and everything walking the value a stack frame a level.
inline constexpr int kMaxJsonDepth = 64;

// Parses text as one JSON value; validates UTF-8; refuses nesting deeper than
// kMaxJsonDepth before parsing; the error names the offset.
Result<Json> parse(std::string_view text);
std::string dump(const Value& v);
// Writes a string as a JSON string literal (quoted, escaped).
std::string quote(std::string_view s);

// Field accessors on an object; errors say "missing field `x`" or "field `x` is not a string".
Result<const Value*> field(const Value& obj, const char* name);
Result<std::string> get_string(const Value& obj, const char* name);
Result<int64_t> get_int(const Value& obj, const char* name);
Result<bool> get_bool(const Value& obj, const char* name);
std::optional<std::string> opt_string(const Value& obj, const char* name);
std::optional<int64_t> opt_int(const Value& obj, const char* name);
std::optional<bool> opt_bool(const Value& obj, const char* name);

// Builder for command arguments: ArgWriter a; a.str("path", p).num("count", n); a.finish().
class ArgWriter {
 public:
  ArgWriter() : w_(buf_) { w_.StartObject(); }
  ArgWriter& str(const char* key, std::string_view v);
  ArgWriter& num(const char* key, int64_t v);
  ArgWriter& real(const char* key, double v);
  ArgWriter& boolean(const char* key, bool v);
  ArgWriter& strings(const char* key, const std::vector<std::string>& v);
  ArgWriter& raw(const char* key, std::string_view json);  // an already serialized value
  std::string finish();

 private:
  rapidjson::StringBuffer buf_;
  rapidjson::Writer<rapidjson::StringBuffer> w_;
};

}  // namespace seamless::qmp
