// SPDX-License-Identifier: Apache-2.0
// Fuzz target: arbitrary bytes as a pack file (tar in gzip or xz, a manifest first, CRIU
// images, page images and deltas): read and unpacked into a scratch directory with small
// limits. Must never crash, hang, or write outside the directory.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/sys.h"
#include "pack/pack.h"
#include "tests/fuzz/scratch.h"

using namespace seamless;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fuzz::Scratch scratch("pack");
  const std::string& dir = scratch.path;
  const std::string pack = dir + "/in.pack", out = dir + "/out";
  if (!sys::write_file(pack, std::string_view(reinterpret_cast<const char*>(data), size)).ok()) return 0;
  packfmt::PackLimits limits;
  limits.max_entries = 64;
  limits.max_manifest = 64 << 10;
  limits.max_file = 1 << 20;
  limits.max_total = 4 << 20;
  (void)packfmt::read_manifest(pack, limits);
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  // No base files to rebuild deltas from: page records against bases are refused.
  (void)packfmt::unpack(pack, out, limits, std::vector<std::string>{});
  std::filesystem::remove_all(out, ec);
  return 0;
}
