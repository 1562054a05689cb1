// SPDX-License-Identifier: Apache-2.0
// Pack archives: a gzip-compressed ustar archive whose first entry is manifest.json,
// followed by the gateways' CRIU images; CRIU's page images (pages-N.img) are stored
// page-deduplicated as `pages-N.img.dedup` (a forking server's workers share most of
// their pages) and unpacked under their own names. Packs cross trust boundaries (guest
// -> host -> sink and back), so the reader trusts nothing: only regular files and
// directories with plain relative names are accepted, sizes are bounded (after
// decoding), and every file is created inside the destination directory without
// following links.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::guest {

inline constexpr const char* kManifestName = "manifest.json";

struct PackLimits {
  size_t max_entries = 4096;
  uint64_t max_manifest = 4 << 20;
  uint64_t max_file = uint64_t(512) << 20;
  uint64_t max_total = uint64_t(1) << 30;  // uncompressed
};

// Writes manifest_json and then the files `rel_paths` (relative to `root`) to `path`,
// atomically (a temporary file renamed into place). gzip level 1: packs are made on the
// park path and CRIU's page images compress well even so.
Result<void> write_pack(const std::string& path, const std::string& manifest_json, const std::string& root,
                        const std::vector<std::string>& rel_paths);

// The regular files below root, relative to it, sorted: what write_pack() takes. CRIU's
// logs (*.log) and pid files (*.pid) are left out: they belong to the side that made them.
std::vector<std::string> list_pack_files(const std::string& root);

// Extracts `pack` into `dest`, which must not exist yet (it is created, mode 0700).
// Returns the manifest's text. On any error `dest` is removed again.
Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits = {});

// A name a pack may hold: relative, components of [A-Za-z0-9._+-], no `.`/`..`, at most
// 255 bytes and 8 levels. The error says what is wrong with it.
Result<void> check_entry_name(std::string_view name);

}  // namespace seamless::guest
