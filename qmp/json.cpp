// SPDX-License-Identifier: Apache-2.0
// RapidJSON helpers.
#include "qmp/json.h"

#include <rapidjson/error/en.h>

#include <optional>

namespace seamless::qmp {

std::string Json::dump() const { return qmp::dump(doc_); }

namespace {

// The offset at which `text` opens an array or object deeper than kMaxJsonDepth, if it
// does (brackets inside strings do not count; the parser judges everything else).
std::optional<size_t> too_deep(std::string_view text) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return i;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return std::nullopt;
}

// The offset of a `\uDC00`..`\uDFFF` escape that does not follow a high-surrogate escape,
// if there is one. RapidJSON 1.1 decodes such a lone low surrogate into bytes that are no
// UTF-8, which nothing downstream could write back or compare.
std::optional<size_t> lone_low_surrogate(std::string_view text) {
  auto hex4 = [&](size_t at) -> int {
    if (at + 4 > text.size()) return -1;
    int v = 0;
    for (size_t k = at; k < at + 4; ++k) {
      const char c = text[k];
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  };
  size_t after_high = std::string_view::npos;  // where a high-surrogate escape ended
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\' || i + 1 >= text.size()) continue;
    if (text[i + 1] != 'u') {
      ++i;  // an escaped character, whatever it is
      continue;
    }
    const int cp = hex4(i + 2);
    if (cp >= 0xDC00 && cp <= 0xDFFF && after_high != i) return i;
    after_high = cp >= 0xD800 && cp <= 0xDBFF ? i + 6 : std::string_view::npos;
    i += 5;
  }
  return std::nullopt;
}

}  // namespace

Result<Json> parse(std::string_view text) {
  if (auto at = too_deep(text))
    return make_error(ErrorKind::Protocol, "malformed JSON at offset ", *at, ": nested deeper than ", kMaxJsonDepth,
                      " levels");
  if (auto at = lone_low_surrogate(text))
    return make_error(ErrorKind::Protocol, "malformed JSON at offset ", *at, ": a lone low surrogate escape");
  Json j;
  // Iterative: no recursion in the parser whatever the input.
  constexpr unsigned kFlags =
      rapidjson::kParseValidateEncodingFlag | rapidjson::kParseStopWhenDoneFlag | rapidjson::kParseIterativeFlag;
  j.doc().Parse<kFlags>(text.data(), text.size());
  if (j.doc().HasParseError())
    return make_error(ErrorKind::Protocol, "malformed JSON at offset ", j.doc().GetErrorOffset(), ": ",
                      rapidjson::GetParseError_En(j.doc().GetParseError()));
  return j;
}

std::string dump(const Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return {buf.GetString(), buf.GetSize()};
}

std::string quote(std::string_view s) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  return {buf.GetString(), buf.GetSize()};
}

Result<const Value*> field(const Value& obj, const char* name) {
  if (!obj.IsObject()) return make_error(ErrorKind::Protocol, "expected an object, got ", dump(obj).substr(0, 80));
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) return make_error(ErrorKind::Protocol, "missing field `", name, "`");
  return &it->value;
}

Result<std::string> get_string(const Value& obj, const char* name) {
  const Value* v = SL_TRY(field(obj, name));
  if (!v->IsString()) return make_error(ErrorKind::Protocol, "field `", name, "` is not a string");
  return std::string(v->GetString(), v->GetStringLength());
}

Result<int64_t> get_int(const Value& obj, const char* name) {
  const Value* v = SL_TRY(field(obj, name));
  if (v->IsInt64()) return v->GetInt64();
  if (v->IsUint64()) return make_error(ErrorKind::Protocol, "field `", name, "` is out of range");
  return make_error(ErrorKind::Protocol, "field `", name, "` is not an integer");
}

Result<bool> get_bool(const Value& obj, const char* name) {
  const Value* v = SL_TRY(field(obj, name));
  if (!v->IsBool()) return make_error(ErrorKind::Protocol, "field `", name, "` is not a boolean");
  return v->GetBool();
}

std::optional<std::string> opt_string(const Value& obj, const char* name) {
  if (!obj.IsObject() || !obj.HasMember(name)) return std::nullopt;
  auto r = get_string(obj, name);
  return r.ok() ? std::optional(std::move(r).value()) : std::nullopt;
}

std::optional<int64_t> opt_int(const Value& obj, const char* name) {
  if (!obj.IsObject() || !obj.HasMember(name)) return std::nullopt;
  auto r = get_int(obj, name);
  return r.ok() ? std::optional(*r) : std::nullopt;
}

std::optional<bool> opt_bool(const Value& obj, const char* name) {
  if (!obj.IsObject() || !obj.HasMember(name)) return std::nullopt;
  auto r = get_bool(obj, name);
  return r.ok() ? std::optional(*r) : std::nullopt;
}

ArgWriter& ArgWriter::str(const char* key, std::string_view v) {
  w_.Key(key);
  w_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
  return *this;
}
ArgWriter& ArgWriter::num(const char* key, int64_t v) {
  w_.Key(key);
  w_.Int64(v);
  return *this;
}
ArgWriter& ArgWriter::boolean(const char* key, bool v) {
  w_.Key(key);
  w_.Bool(v);
  return *this;
}
ArgWriter& ArgWriter::real(const char* key, double v) {
  w_.Key(key);
  w_.Double(v);
  return *this;
}
ArgWriter& ArgWriter::strings(const char* key, const std::vector<std::string>& v) {
  w_.Key(key);
  w_.StartArray();
  for (const auto& s : v) w_.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
  w_.EndArray();
  return *this;
}
ArgWriter& ArgWriter::raw(const char* key, std::string_view json) {
  w_.Key(key);
  w_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
  return *this;
}
std::string ArgWriter::finish() {
  w_.EndObject();
  return {buf_.GetString(), buf_.GetSize()};
}

}  // namespace seamless::qmp
