// SPDX-License-Identifier: Apache-2.0
// Shipments: the files a sink lacks for a pack, sent from the guest with it. A gateway's
// code and mapped data are restored from the files at the same paths, so a daemon the
// sink never saw (or another version of it) needs its executables, libraries and mapped
// files there. A shipment is a pack-format archive (see pack.h) whose manifest.json is
// the index below and whose entries are `objects/SHA256`: the contents of each file the
// index says is included. Files the sink has cached already (the guest was told their
// names, and checked that their contents hash the same) are listed without contents.
// The sink keeps what it receives in a content-addressed cache: the hundredth VM with the
// same daemon ships nothing.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "pack/compress.h"

namespace seamless::packfmt {

inline constexpr const char* kObjectsDir = "objects";
inline constexpr int kShipmentFormat = 1;
inline constexpr size_t kMaxShippedFiles = 1024;

struct ShippedFile {
  std::string path;    // as the gateways saw it (a path of the pack's manifest)
  std::string sha256;  // of its contents, hex
  uint64_t size = 0;
  uint32_t mode = 0644, uid = 0, gid = 0;
  bool included = false;  // its contents are in the shipment (else: cached in the sink)
  // The cache's name for it: "SHA256-MODE-UID-GID" (mode in octal). Owner and mode are
  // part of it: CRIU checks them, and cached files are shared by hard links.
  std::string object() const;
  // The entry holding its contents in a shipment: "objects/SHA256".
  std::string entry() const;
};

struct ShipmentIndex {
  int format = kShipmentFormat;
  std::vector<ShippedFile> files;
  std::string to_json() const;
  // Strict: every field is checked (plain absolute paths, 64 hex digits, mode bits without
  // setuid/setgid, owners, sizes, no path twice); errors name the field and the file.
  static Result<ShipmentIndex> parse(std::string_view text);
  const ShippedFile* find(const std::string& path) const;
};

// Whether `name` is a cache object name as ShippedFile::object() makes them.
bool valid_object_name(std::string_view name);
// Whether `hex` is a SHA-256 digest as shipments write them (64 lowercase hex digits).
bool valid_sha256(std::string_view hex);

// Writes a shipment: the index, then the contents of each included file read from
// `sources[i]` (same order as index.files; ignored for files not included). Each file
// is read once and must still hash to its recorded digest.
Result<void> write_shipment(const std::string& path, const ShipmentIndex& index,
                            const std::vector<std::string>& sources, Compression compression);

}  // namespace seamless::packfmt
