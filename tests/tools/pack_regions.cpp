// SPDX-License-Identifier: Apache-2.0
// pack-regions: what a pack's memory is made of, mapping by mapping. Unpacks PACK (pages
// stored as differences are rebuilt from this machine's files: run it where the pack was
// made, e.g. in the guest) and prints, per mapping of each dumped task, the pages the dump
// holds and what they compress to alone with the pack's xz, largest first.
//   pack-regions PACK [--top N]
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/compress.h"
#include "pack/criu_images.h"
#include "pack/pack.h"

using namespace seamless;

namespace {

constexpr size_t kPage = 4096;

struct Region {
  std::string label;
  std::string pages;  // the region's pages as the dump holds them, in address order
};

// What `data` compresses to with the pack's xz.
Result<size_t> xz_size(const std::string& data) {
  UniqueFd fd(::memfd_create("pack-regions", MFD_CLOEXEC));
  if (!fd.valid()) return errno_error("memfd_create");
  const int raw = fd.get();
  auto w = SL_TRY(packfmt::CompressedWriter::open(UniqueFd(::dup(raw)), packfmt::Compression::Xz, "memfd"));
  SL_TRY(w->write(data.data(), data.size()));
  SL_TRY(w->finish());
  return size_t(::lseek(raw, 0, SEEK_END));
}

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(v));
  return b;
}

// One task's pages by mapping: a private file mapping's pages under the file's name,
// anonymous writable ones under their mapping's range, the rest together.
Result<void> add_regions(const std::string& dir, std::map<std::string, Region>& regions) {
  const auto origins = SL_TRY(packfmt::criu_images::page_origins(dir));
  for (const auto& [n, memory] : origins.memory) {
    const auto image = SL_TRY(sys::read_file(cat(dir, "/pages-", n, ".img"), size_t(1) << 30));
    const auto& files = origins.images.at(n);
    const std::string task = std::filesystem::path(dir).filename().string();
    for (size_t i = 0; i < memory.addresses.size() && (i + 1) * kPage <= image.size(); ++i) {
      const uint64_t addr = memory.addresses[i];
      std::string label = cat("task ", task, ": shared, read-only or other");
      if (files[i]) {
        label = cat("task ", task, ": ", origins.files[files[i]->file], " (private copies: packed as differences)");
      } else {
        for (const auto& m : memory.anonymous)
          if (addr >= m.start && addr < m.end) {
            label = cat("task ", task, ": anonymous ", hex(m.start), "-", hex(m.end));
            if (memory.brk_start && m.start >= memory.brk_start && m.end <= memory.brk + kPage) label += " [heap]";
          }
      }
      auto& r = regions[label];
      r.label = label;
      r.pages.append(image, i * kPage, kPage);
    }
  }
  return ok();
}

int run(int argc, char** argv) {
  std::string pack;
  size_t top = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::puts(
          "usage: pack-regions PACK [--top N]\n"
          "Prints, per mapping of each task a pack holds, its pages and what they compress to\n"
          "alone with the pack's xz (Markdown, largest first; N rows, default 20). Pages packed\n"
          "as differences from files are rebuilt from this machine's: run it where the pack\n"
          "was made.");
      return 0;
    }
    if (a == "--top" && i + 1 < argc) {
      top = size_t(std::strtoul(argv[++i], nullptr, 10));
    } else if (pack.empty() && a[0] != '-') {
      pack = a;
    } else {
      std::fprintf(stderr, "pack-regions: unknown argument `%s` (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (pack.empty()) {
    std::fprintf(stderr, "pack-regions: no pack given (see --help)\n");
    return 2;
  }
  auto dir = TempDir::create("/tmp/pack-regions-");
  if (!dir.ok()) return std::fprintf(stderr, "pack-regions: %s\n", dir.error().message.c_str()), 1;
  const std::string dest = *dir / "pack";
  if (auto u = packfmt::unpack(pack, dest); !u.ok())
    return std::fprintf(stderr, "pack-regions: %s\n", u.error().message.c_str()), 1;
  std::map<std::string, Region> regions;
  if (std::filesystem::exists(dest + "/gw"))
    for (const auto& task : std::filesystem::directory_iterator(dest + "/gw"))
      if (auto r = add_regions(task.path().string(), regions); !r.ok())
        return std::fprintf(stderr, "pack-regions: %s\n", r.error().message.c_str()), 1;
  struct Row {
    std::string label;
    size_t bytes, xz;
  };
  std::vector<Row> rows;
  size_t bytes = 0, xz = 0;
  for (const auto& [label, r] : regions) {
    auto z = xz_size(r.pages);
    if (!z.ok()) return std::fprintf(stderr, "pack-regions: %s\n", z.error().message.c_str()), 1;
    rows.push_back({label, r.pages.size(), *z});
    bytes += r.pages.size();
    xz += *z;
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.xz > b.xz; });
  std::printf("| mapping | pages MB | xz alone MB |\n|---|---|---|\n");
  for (size_t i = 0; i < rows.size() && i < top; ++i)
    std::printf("| %s | %.2f | %.2f |\n", rows[i].label.c_str(), rows[i].bytes / 1e6, rows[i].xz / 1e6);
  std::printf("| all %zu mappings | %.2f | %.2f |\n", rows.size(), bytes / 1e6, xz / 1e6);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
