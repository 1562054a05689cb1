// SPDX-License-Identifier: Apache-2.0
// Restore and dump of a container's gateways through the CRIU seam.
#include "sinkd/moves.h"

#include "common/log.h"
#include "guest-agent/streams.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "sink";

Result<void> restore_one(guest::Criu& criu, const std::string& images, const packfmt::PackedGateway& gw,
                         const StreamEnds& ends, bool leave_stopped) {
  // The descriptors stay open until CRIU has inherited them.
  auto streams = SL_TRY(ends(gw));
  if (streams.size() != gw.streams.size())
    return make_error(ErrorKind::Invalid, streams.size(), " stream end(s) for ", gw.streams.size(), " stream(s)");
  guest::RestoreRequest req;
  req.images = images + "/" + gw.dir;
  req.shell_job = gw.shell_job;
  req.leave_stopped = leave_stopped;
  // Born in the container's cgroup, under its limits, whatever cgroups the images name.
  req.keep_cgroup = true;
  // Its loggers: the container binds a socket of its own at each name first.
  req.external_datagrams = !gw.loggers.empty();
  if (gw.shell_job) {
    // A shell job joins the session of whoever restores it. That session must live in the
    // container's PID namespace, or the hand-back's dump finds the gateway's session leader
    // outside it and refuses: CRIU runs as a session leader of its own there.
    req.wrapper = {"setsid", "--wait"};
  }
  for (size_t i = 0; i < streams.size(); ++i)
    req.inherit.push_back({streams[i].get(), cat("socket:[", gw.streams[i].inode, "]")});
  SL_TRY(guest::open_devices(gw.devices, &streams, &req.inherit));
  SL_TRY(criu.restore(req));
  return ok();
}

}  // namespace

Result<void> restore_gateways(guest::Criu& criu, const std::string& images,
                              const std::vector<packfmt::PackedGateway>& gateways, const StreamEnds& ends,
                              bool leave_stopped) {
  for (const auto& gw : gateways)
    SL_TRY_CTX(restore_one(criu, images, gw, ends, leave_stopped), "restoring gateway `", gw.name, "`");
  return ok();
}

Result<void> dump_gateways(guest::Criu& criu, const std::string& out,
                           const std::vector<packfmt::PackedGateway>& gateways, const StreamEnds& ends,
                           const std::function<Result<void>(const std::string& dir)>& make_dir) {
  for (size_t i = 0; i < gateways.size(); ++i) {
    const auto& gw = gateways[i];
    guest::DumpRequest req;
    req.root = gw.root;
    req.images = out + "/" + gw.dir;
    req.shell_job = gw.shell_job;
    // The drain streams are external as the journal was at home: the guest reconnects them.
    for (const auto& st : gw.streams) req.external_unix.push_back(st.inode);
    for (const auto& d : gw.devices) req.external_files.push_back(d.key());
    req.external_datagrams = !gw.loggers.empty();
    auto dumped = make_dir(req.images);
    if (dumped.ok()) dumped = criu.dump(req);
    if (dumped.ok()) continue;
    auto error = std::move(dumped).error().wrap(cat("dumping gateway `", gw.name, "`"));
    if (i == 0) return error;
    const std::vector<packfmt::PackedGateway> done(gateways.begin(), gateways.begin() + i);
    auto back = restore_gateways(criu, out, done, ends, true);
    if (!back.ok()) {
      SL_LOG(Error, kModule, "putting back the gateways dumped before `", gw.name, "`: ", back.error().message);
      return make_error(ErrorKind::Remote, error.message, "; putting back the ", i,
                        " gateway(s) dumped before it failed: ", back.error().message);
    }
    SL_LOG(Warn, kModule, "put back ", i, " gateway(s) dumped before `", gw.name, "` failed");
    return make_error(ErrorKind::Remote, error.message, "; the ", i, " gateway(s) dumped before it are back, stopped");
  }
  return ok();
}

}  // namespace seamless::sink
