// SPDX-License-Identifier: Apache-2.0
// Template checks of packs against the sink.
#include "sinkd/pack_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/time.h"
#include "qmp/json.h"

namespace seamless::sink {

namespace {

// How much of the sink's own files one check reads to hash them (files that are not ELF):
// a manifest naming a large file thousands of times costs no more than this.
constexpr uint64_t kCheckBudget = uint64_t(2) << 30;

Result<packfmt::FileIdentity> identify_here(const packfmt::FileIdentity& f, const std::string& at, uint64_t* budget) {
  auto here = packfmt::identify(at, budget);
  if (!here.ok()) return here.error().wrap(cat("`", f.path, "` is missing here"));
  here->path = f.path;
  return here;
}

Result<void> same_here(const packfmt::FileIdentity& f, const std::string& root, uint64_t* budget) {
  // A different size settles it without reading anything.
  struct stat st {};
  if (::stat((root + f.path).c_str(), &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) != f.size)
    return make_error(ErrorKind::Invalid, "`", f.path, "` differs: ", st.st_size, " bytes here, ", f.size,
                      " in the pack");
  auto here = SL_TRY(identify_here(f, root + f.path, budget));
  return packfmt::same_file(f, here);
}

// The shipped object is the file the manifest names, with its mode and owner (a file the
// gateway writes through a shared mapping has the contents it had at the dump, which the
// manifest, written before, does not know).
Result<LayerFile> shipped_as(const packfmt::FileIdentity& f, const packfmt::ShippedFile& s, const FileCache& cache) {
  const std::string at = cache.object_path(s.object());
  auto obj = SL_TRY_CTX(identify_here(f, at, nullptr), "shipped");
  if (f.role != "shared") SL_TRY_CTX(packfmt::same_file(f, obj), "shipped");
  if (s.mode != f.mode || s.uid != f.uid || s.gid != f.gid)
    return make_error(ErrorKind::Invalid, "`", f.path, "` shipped with mode/owner ", s.mode, "/", s.uid, ":", s.gid,
                      ", the pack says ", f.mode, "/", f.uid, ":", f.gid);
  return LayerFile{f.path, s.object()};
}

}  // namespace

std::vector<packfmt::FileIdentity> missing_files(const packfmt::Manifest& m, const std::string& root) {
  std::vector<packfmt::FileIdentity> out;
  uint64_t budget = kCheckBudget;
  for (const auto& f : m.files)
    if (f.role != "open" && !same_here(f, root, &budget).ok()) out.push_back(f);
  return out;
}

Result<PackCheck> check_manifest(packfmt::Manifest manifest, const std::string& root, const FileCache* cache,
                                 const packfmt::ShipmentIndex* shipment) {
  PackCheck out;
  std::vector<std::string> mismatches;
  uint64_t budget = kCheckBudget;
  for (const auto& f : manifest.files) {
    if (!packfmt::is_plain_absolute(f.path)) {
      mismatches.push_back(cat("`", f.path, "` is not a plain absolute path"));
      continue;
    }
    auto same = same_here(f, root, &budget);
    if (same.ok()) {
      out.from_sink.push_back(f.path);
      continue;
    }
    if (f.role == "open") {
      out.dummies.push_back(f);
      continue;
    }
    const packfmt::ShippedFile* s = shipment ? shipment->find(f.path) : nullptr;
    if (s && cache) {
      auto layer = shipped_as(f, *s, *cache);
      if (layer.ok()) {
        out.shipped.push_back(*layer);
        continue;
      }
      same = std::move(layer).error();
    }
    mismatches.push_back(same.error().message);
  }
  if (!mismatches.empty()) {
    std::string list;
    for (size_t i = 0; i < mismatches.size() && i < 5; ++i) list += (i ? "; " : "") + mismatches[i];
    if (mismatches.size() > 5) list += cat("; and ", mismatches.size() - 5, " more");
    return make_error(ErrorKind::Invalid, "template mismatch: ", mismatches.size(),
                      " code file(s) differ from this sink's and were not shipped with the pack: ", list);
  }
  out.manifest = std::move(manifest);
  return out;
}

Result<std::vector<MissingFile>> missing_for_pack(const std::string& pack, const FileCache& cache,
                                                  const packfmt::PackLimits& limits) {
  auto text = SL_TRY(packfmt::read_manifest(pack, limits));
  auto manifest = SL_TRY_CTX(packfmt::Manifest::parse(text), "pack `", pack, "`");
  std::vector<MissingFile> out;
  for (auto& f : missing_files(manifest)) {
    if (!packfmt::is_plain_absolute(f.path))
      return make_error(ErrorKind::Invalid, "pack `", pack, "`: `", f.path, "` is not a plain absolute path");
    auto candidates = cache.candidates(f);
    out.push_back({std::move(f), std::move(candidates)});
  }
  return out;
}

Result<PackCheck> check_pack(const std::string& pack, const std::string& work_dir, const packfmt::PackLimits& limits) {
  std::filesystem::create_directories(work_dir);
  const std::string dir = cat(work_dir, "/check-", ::getpid(), "-", Clock::now().time_since_epoch().count());
  auto text = SL_TRY(packfmt::unpack(pack, dir, limits));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  auto manifest = SL_TRY_CTX(packfmt::Manifest::parse(text), "pack `", pack, "`");
  return check_manifest(std::move(manifest));
}

std::string to_json(const PackCheck& c) {
  std::string gws = "[", dummies = "[";
  for (size_t i = 0; i < c.manifest.gateways.size(); ++i)
    gws += cat(i ? "," : "", qmp::quote(c.manifest.gateways[i].name));
  for (size_t i = 0; i < c.dummies.size(); ++i) dummies += cat(i ? "," : "", qmp::quote(c.dummies[i].path));
  qmp::ArgWriter w;
  w.str("hostname", c.manifest.hostname).raw("gateways", gws + "]").raw("dummies", dummies + "]");
  w.num("files", int64_t(c.manifest.files.size()));
  return w.finish();
}

}  // namespace seamless::sink
