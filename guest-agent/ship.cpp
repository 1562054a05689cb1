// SPDX-License-Identifier: Apache-2.0
// Shipping the files a sink lacks: read from this machine, checked against the pack.
#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <set>

#include "common/encoding.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/gateway.h"
#include "qmp/json.h"

namespace seamless::guest {

Result<ShipResult> ship(Env& env, const ShipRequest& req) {
  auto manifest = SL_TRY_CTX(Manifest::parse(SL_TRY(read_manifest(req.pack))), "pack `", req.pack, "`");
  // The paths asked for come from the other side: they only pick among the pack's own.
  std::set<std::string> wanted(req.paths.begin(), req.paths.end());
  for (const auto& p : wanted) {
    auto it = std::find_if(manifest.files.begin(), manifest.files.end(),
                           [&](const FileIdentity& f) { return f.path == p && f.role != "open"; });
    if (it == manifest.files.end())
      return make_error(ErrorKind::Invalid, "`", p, "` is not a code or mapped file of pack `", req.pack, "`");
  }
  const std::set<std::string> have(req.have.begin(), req.have.end());
  const auto roots = file_roots(env, manifest);
  ShipmentIndex index;
  std::vector<std::string> sources;
  ShipResult r;
  // A file written through a shared mapping (a JVM's perf data) changes while a gateway
  // that maps it runs: it goes as read once, from a copy.
  std::optional<TempDir> snapshots;
  for (const auto& f : manifest.files) {
    if (f.role == "open" || (!wanted.empty() && !wanted.count(f.path))) continue;
    std::string source = SL_TRY_CTX(find_file(f, roots), "shipping");
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0) return errno_error(cat("stat `", source, "`"));
    auto data = SL_TRY(sys::read_file(source, uint64_t(1) << 31));
    if (f.role == "shared") {
      if (!snapshots) {
        std::filesystem::create_directories(env.work_dir);
        snapshots.emplace(SL_TRY(TempDir::create(env.work_dir + "/ship-")));
      }
      source = snapshots->path() + "/" + std::to_string(sources.size());
      SL_TRY(sys::write_file(source, data, 0600));
    }
    ShippedFile s;
    s.path = f.path;
    s.sha256 = sha256_hex(data);
    s.size = data.size();
    s.mode = st.st_mode & 07777;
    s.uid = st.st_uid;
    s.gid = st.st_gid;
    if (s.mode & (S_ISUID | S_ISGID))
      return make_error(ErrorKind::Invalid, "`", f.path, "` is setuid/setgid: it is not shipped");
    s.included = !have.count(s.object());
    if (s.included) r.content_bytes += s.size, ++r.included;
    index.files.push_back(std::move(s));
    sources.push_back(source);
  }
  r.files = index.files.size();
  r.out = req.out;
  SL_TRY(write_shipment(req.out, index, sources, req.compression));
  std::error_code ec;
  r.shipment_bytes = std::filesystem::file_size(req.out, ec);
  return r;
}

std::string to_json(const ShipResult& r) {
  qmp::ArgWriter w;
  w.boolean("ok", true).str("shipment", r.out).num("files", int64_t(r.files)).num("included", int64_t(r.included));
  w.num("content_bytes", int64_t(r.content_bytes)).num("shipment_bytes", int64_t(r.shipment_bytes));
  return w.finish();
}

}  // namespace seamless::guest
