// SPDX-License-Identifier: Apache-2.0
// Template checks of packs against the sink.
#include "sinkd/pack_check.h"

#include <unistd.h>

#include <filesystem>

#include "common/time.h"
#include "qmp/json.h"

namespace seamless::sink {

Result<PackCheck> check_manifest(packfmt::Manifest manifest, const std::string& root) {
  PackCheck out;
  std::vector<std::string> mismatches;
  for (const auto& f : manifest.files) {
    auto here = packfmt::identify(root + f.path);
    Result<void> same = here.ok() ? (here->path = f.path, packfmt::same_file(f, *here))
                                  : Result<void>(here.error().wrap(cat("`", f.path, "` is missing here")));
    if (same.ok()) continue;
    if (f.role == "open")
      out.dummies.push_back(f);
    else
      mismatches.push_back(same.error().message);
  }
  if (!mismatches.empty()) {
    std::string list;
    for (size_t i = 0; i < mismatches.size() && i < 5; ++i) list += (i ? "; " : "") + mismatches[i];
    if (mismatches.size() > 5) list += cat("; and ", mismatches.size() - 5, " more");
    return make_error(ErrorKind::Invalid, "template mismatch: the sink is not built from the VM's template (",
                      mismatches.size(), " code file(s) differ): ", list);
  }
  out.manifest = std::move(manifest);
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
