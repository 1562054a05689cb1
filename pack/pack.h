// SPDX-License-Identifier: Apache-2.0
// Pack archives: a gzip- or xz-compressed ustar archive whose first entry is
// manifest.json, followed by the gateways' CRIU images; CRIU's page images (pages-N.img)
// are stored page-deduplicated as `pages-N.img.dedup` (a forking server's workers share
// most of their pages), with the pages that are private copies of a mapped ELF file
// (relocated library data) stored as their difference from the file, which the other
// side has too; they are unpacked under their own names. Packs cross trust boundaries (guest
// -> host -> sink and back), so the reader trusts nothing: only regular files and
// directories with plain relative names are accepted, sizes are bounded (after
// decoding), and every file is created inside the destination directory without
// following links.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "pack/compress.h"

namespace seamless::packfmt {

inline constexpr const char* kManifestName = "manifest.json";

struct PackLimits {
  size_t max_entries = 4096;
  uint64_t max_manifest = 4 << 20;
  uint64_t max_file = uint64_t(512) << 20;
  uint64_t max_total = uint64_t(1) << 30;  // uncompressed
};

struct PackOptions {
  Compression compression = Compression::Xz;
  // Where the files CRIU's images name live (as the dumped processes saw them), for
  // storing pages as differences from them; empty: every page is stored as it is.
  std::string base_root = "/";
  // Store the bodies of free chunks in the dumped processes' glibc malloc heaps as zeros
  // (see pack/malloc_heap.h); false: as they are.
  bool zero_free_heap = true;
};

// How the pages of a pack's page images were stored.
struct PackStats {
  uint64_t literal = 0;          // as they are
  uint64_t copies = 0;           // as copies of earlier pages
  uint64_t deltas = 0;           // as differences from a mapped file's page
  uint64_t free_heap_bytes = 0;  // free malloc memory, stored as zeros
};

// Writes manifest_json and then the files `rel_paths` (relative to `root`) to `path`,
// atomically (a temporary file renamed into place).
Result<void> write_pack(const std::string& path, const std::string& manifest_json, const std::string& root,
                        const std::vector<std::string>& rel_paths, const PackOptions& options = {},
                        PackStats* stats = nullptr);

// Writes manifest_json and then, as they are, the files `entries` (name in the pack, file
// to read), atomically. `check` (if set) sees each file's contents as read and may refuse
// them (a file that changed since it was identified).
using PackEntry = std::pair<std::string, std::string>;
using EntryCheck = std::function<Result<void>(size_t index, std::string_view contents)>;
Result<void> write_plain_pack(const std::string& path, const std::string& manifest_json,
                              const std::vector<PackEntry>& entries, Compression compression,
                              const EntryCheck& check = {});

// Reads only the manifest of `pack` (its first entry), without unpacking the rest.
Result<std::string> read_manifest(const std::string& pack, const PackLimits& limits = {});

// The regular files below root, relative to it, sorted: what write_pack() takes. CRIU's
// logs (*.log) and pid files (*.pid) are left out: they belong to the side that made them.
std::vector<std::string> list_pack_files(const std::string& root);

// For unpack(): leave page images as they are stored (`*.dedup`), for tools that only
// read the manifest or hand the images on to write_pack() unchanged.
inline const std::string kKeepPageImages;

// Extracts `pack` into `dest`, which must not exist yet (it is created, mode 0700).
// Returns the manifest's text. On any error `dest` is removed again. Pages stored as
// differences are rebuilt from the files below `base_root` (this side's own root: the
// template's), which must be the same ELF files (size and build-id) as on the side that
// packed them.
Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits = {},
                           const std::string& base_root = "/");

// The same, with the files pages are stored against looked for below each of `base_roots`
// in turn (e.g. files shipped with the pack before the sink's own); none: kept as stored.
Result<std::string> unpack(const std::string& pack, const std::string& dest, const PackLimits& limits,
                           const std::vector<std::string>& base_roots);

// A name a pack may hold: relative, components of [A-Za-z0-9._+-], no `.`/`..`, at most
// 255 bytes and 8 levels. The error says what is wrong with it.
Result<void> check_entry_name(std::string_view name);

}  // namespace seamless::packfmt
