// SPDX-License-Identifier: Apache-2.0
// Is this sink able to host a pack's gateways? CRIU restores code and data mappings from
// the files at the same paths, so every executable and mapped file must be the very same
// file here (same template): a mismatch is refused. Files a gateway merely holds open
// (logs, configs) may differ; the sink container stands in dummies of the right size.
#pragma once

#include <string>
#include <vector>

#include "pack/manifest.h"
#include "pack/pack.h"

namespace seamless::sink {

struct PackCheck {
  packfmt::Manifest manifest;
  std::vector<packfmt::FileIdentity> dummies;  // held-open files that differ or are missing here
};

// `root` prefixes every path (the sink's own root is "").
Result<PackCheck> check_manifest(packfmt::Manifest manifest, const std::string& root = "");

// Unpacks into a fresh directory below work_dir, checks, and removes it again.
Result<PackCheck> check_pack(const std::string& pack, const std::string& work_dir,
                             const packfmt::PackLimits& limits = {});

std::string to_json(const PackCheck& c);

}  // namespace seamless::sink
