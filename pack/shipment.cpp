// SPDX-License-Identifier: Apache-2.0
// Shipment index JSON in and out, and the shipment writer.
#include "pack/shipment.h"

#include <sys/stat.h>

#include <cstdio>
#include <set>

#include "common/encoding.h"
#include "pack/identity.h"
#include "pack/pack.h"
#include "qmp/json.h"

namespace seamless::packfmt {
namespace {

using qmp::Value;

std::string octal(uint32_t mode) {
  char text[16];
  std::snprintf(text, sizeof text, "%04o", unsigned(mode & 07777));
  return text;
}

Result<int64_t> bounded(const Value& obj, const char* name, int64_t lo, int64_t hi, const std::string& path) {
  auto v = SL_TRY_CTX(qmp::get_int(obj, name), "shipped file `", path, "`");
  if (v < lo || v > hi)
    return make_error(ErrorKind::Protocol, "shipped file `", path, "`: field `", name, "` is out of range (", v, ")");
  return v;
}

Result<ShippedFile> parse_file(const Value& f) {
  if (!f.IsObject()) return make_error(ErrorKind::Protocol, "a shipped file is not an object");
  ShippedFile s;
  s.path = SL_TRY(qmp::get_string(f, "path"));
  if (!is_plain_absolute(s.path))
    return make_error(ErrorKind::Protocol, "shipped file: field `path` is not a plain absolute path");
  s.sha256 = SL_TRY_CTX(qmp::get_string(f, "sha256"), "shipped file `", s.path, "`");
  if (!valid_sha256(s.sha256))
    return make_error(ErrorKind::Protocol, "shipped file `", s.path,
                      "`: field `sha256` is not 64 lowercase hex digits");
  s.size = uint64_t(SL_TRY(bounded(f, "size", 0, int64_t(1) << 31, s.path)));
  s.mode = uint32_t(SL_TRY(bounded(f, "mode", 0, 07777, s.path)));
  // A file from a guest never becomes a way to gain privileges in the sink.
  if (s.mode & (S_ISUID | S_ISGID))
    return make_error(ErrorKind::Protocol, "shipped file `", s.path, "`: field `mode` has setuid/setgid bits (",
                      octal(s.mode), ")");
  s.uid = uint32_t(SL_TRY(bounded(f, "uid", 0, 0xfffffffeLL, s.path)));
  s.gid = uint32_t(SL_TRY(bounded(f, "gid", 0, 0xfffffffeLL, s.path)));
  s.included = SL_TRY_CTX(qmp::get_bool(f, "included"), "shipped file `", s.path, "`");
  return s;
}

}  // namespace

std::string ShippedFile::object() const { return cat(sha256, "-", octal(mode), "-", uid, "-", gid); }

std::string ShippedFile::entry() const { return cat(kObjectsDir, "/", sha256); }

bool valid_sha256(std::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool valid_object_name(std::string_view name) {
  if (name.size() < 64 + 8 || !valid_sha256(name.substr(0, 64)) || name[64] != '-') return false;
  std::string_view rest = name.substr(65);
  // MODE-UID-GID: four octal digits, then two decimal numbers.
  if (rest.size() < 8 || rest[4] != '-') return false;
  for (size_t i = 0; i < 4; ++i)
    if (rest[i] < '0' || rest[i] > '7') return false;
  rest = rest.substr(5);
  auto dash = rest.find('-');
  if (dash == std::string_view::npos || dash == 0 || dash > 10 || rest.size() - dash - 1 == 0 ||
      rest.size() - dash - 1 > 10)
    return false;
  for (size_t i = 0; i < rest.size(); ++i)
    if (i != dash && (rest[i] < '0' || rest[i] > '9')) return false;
  return true;
}

std::string ShipmentIndex::to_json() const {
  std::string files_json = "[";
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& f = files[i];
    qmp::ArgWriter w;
    w.str("path", f.path).str("sha256", f.sha256).num("size", int64_t(f.size));
    w.num("mode", f.mode).num("uid", f.uid).num("gid", f.gid).boolean("included", f.included);
    files_json += (i ? "," : "") + w.finish();
  }
  qmp::ArgWriter w;
  w.num("shipment", format).raw("files", files_json + "]");
  return w.finish();
}

Result<ShipmentIndex> ShipmentIndex::parse(std::string_view text) {
  auto doc = SL_TRY_CTX(qmp::parse(text), "shipment index");
  const Value& root = doc.root();
  if (!root.IsObject()) return make_error(ErrorKind::Protocol, "shipment index: not an object");
  ShipmentIndex index;
  index.format = int(SL_TRY_CTX(qmp::get_int(root, "shipment"), "shipment index"));
  if (index.format != kShipmentFormat)
    return make_error(ErrorKind::Invalid, "shipment format ", index.format, " is not supported (this build reads ",
                      kShipmentFormat, ")");
  const Value* files = SL_TRY_CTX(qmp::field(root, "files"), "shipment index");
  if (!files->IsArray()) return make_error(ErrorKind::Protocol, "shipment index: field `files` is not an array");
  if (files->Size() > kMaxShippedFiles)
    return make_error(ErrorKind::Protocol, "shipment index: more than ", kMaxShippedFiles, " files");
  std::set<std::string> paths;
  for (const auto& f : files->GetArray()) {
    auto s = SL_TRY(parse_file(f));
    if (!paths.insert(s.path).second)
      return make_error(ErrorKind::Protocol, "shipment index: `", s.path, "` is listed twice");
    index.files.push_back(std::move(s));
  }
  return index;
}

const ShippedFile* ShipmentIndex::find(const std::string& path) const {
  for (const auto& f : files)
    if (f.path == path) return &f;
  return nullptr;
}

Result<void> write_shipment(const std::string& path, const ShipmentIndex& index,
                            const std::vector<std::string>& sources, Compression compression) {
  if (sources.size() != index.files.size())
    return make_error(ErrorKind::Invalid, "write_shipment: ", sources.size(), " sources for ", index.files.size(),
                      " files");
  std::vector<PackEntry> entries;
  std::vector<const ShippedFile*> of_entry;
  std::set<std::string> names;
  for (size_t i = 0; i < index.files.size(); ++i) {
    const auto& f = index.files[i];
    // Two paths with the same contents travel once.
    if (!f.included || !names.insert(f.entry()).second) continue;
    entries.emplace_back(f.entry(), sources[i]);
    of_entry.push_back(&f);
  }
  return write_plain_pack(
      path, index.to_json(), entries, compression, [&](size_t i, std::string_view data) -> Result<void> {
        const ShippedFile& f = *of_entry[i];
        if (data.size() != f.size || sha256_hex(data) != f.sha256)
          return make_error(ErrorKind::Invalid, "`", f.path, "` changed while it was being shipped");
        return ok();
      });
}

}  // namespace seamless::packfmt
