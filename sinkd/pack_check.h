// SPDX-License-Identifier: Apache-2.0
// Is this sink able to host a pack's gateways? CRIU restores code and data mappings from
// the files at the same paths, so every executable and mapped file must be the very same
// file here: the sink's own (same template), or one the guest shipped with the pack
// (pack/shipment.h, kept in the sink's FileCache). Anything else is refused as a template
// mismatch. Files a gateway merely holds open (logs, configs) may differ; the sink
// container stands in dummies of the right size.
#pragma once

#include <string>
#include <vector>

#include "pack/manifest.h"
#include "pack/pack.h"
#include "pack/shipment.h"
#include "sinkd/file_cache.h"

namespace seamless::sink {

struct PackCheck {
  packfmt::Manifest manifest;
  std::vector<packfmt::FileIdentity> dummies;  // held-open files that differ or are missing here
  std::vector<LayerFile> shipped;              // code and mapped files from the shipment
  std::vector<std::string> from_sink;          // files the sink's own stand for (same here)
};

// The code and mapped files of `m` that differ from (or are missing at) root + path.
std::vector<packfmt::FileIdentity> missing_files(const packfmt::Manifest& m, const std::string& root = "");

// `root` prefixes every path (the sink's own root is ""). With a shipment (taken into
// `cache`), the files it carries stand in for the ones this sink lacks, each checked
// against the manifest's identity.
Result<PackCheck> check_manifest(packfmt::Manifest manifest, const std::string& root = "",
                                 const FileCache* cache = nullptr, const packfmt::ShipmentIndex* shipment = nullptr);

// Unpacks into a fresh directory below work_dir, checks, and removes it again.
Result<PackCheck> check_pack(const std::string& pack, const std::string& work_dir,
                             const packfmt::PackLimits& limits = {});

// What a guest must ship for `pack` to be hosted here: each missing file with the cache
// objects that may be it (the guest compares their hashes with its file's).
struct MissingFile {
  packfmt::FileIdentity file;
  std::vector<std::string> candidates;
};
Result<std::vector<MissingFile>> missing_for_pack(const std::string& pack, const FileCache& cache,
                                                  const packfmt::PackLimits& limits = {});

std::string to_json(const PackCheck& c);

}  // namespace seamless::sink
