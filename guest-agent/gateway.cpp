// SPDX-License-Identifier: Apache-2.0
// dump / restore / prewarm of gateways inside the guest.
#include "guest-agent/gateway.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "common/log.h"
#include "common/sys.h"
#include "common/time.h"
#include "guest-agent/file_tree.h"
#include "guest-agent/streams.h"
#include "pack/criu_confine.h"
#include "pack/criu_images.h"
#include "pack/pack.h"
#include "qmp/json.h"

namespace seamless::guest {
namespace {

constexpr std::string_view kModule = "guest";

bool special(const std::string& path) {
  for (const char* p : {"/dev/", "/proc/", "/sys/", "/memfd:", "/SYSV"})
    if (path.rfind(p, 0) == 0) return true;
  return path.find(" (deleted)") != std::string::npos;
}

std::string endpoint_text(const NetSocket& s, bool remote) {
  const auto& addr = remote ? s.remote_addr : s.local_addr;
  uint16_t port = remote ? s.remote_port : s.local_port;
  return s.family == Family::V6 ? cat("[", addr, "]:", port) : cat(addr, ":", port);
}

// How strongly a role binds a file to the pack: code must be the same file, data the
// gateway writes through a shared mapping must be there, a held-open file may differ.
int rank(const std::string& role) {
  return role == "exe" ? 4 : role == "shared" ? 3 : role == "map" ? 2 : role == "open" ? 1 : 0;
}

// Every file a gateway maps or holds open, identified. Read before the dump: afterwards
// the processes are gone. A process in a mount namespace of its own (its unit's: private
// /tmp, protected /usr) is looked at through /proc/PID/root: its paths mean its files.
Result<std::vector<FileIdentity>> gateway_files(const Snapshot& snap, const std::vector<Gateway>& gateways,
                                                const std::string& proc_root = "/proc") {
  struct Use {
    std::string role, where;  // where: the root its path is read under ("" = ours)
  };
  std::map<std::string, Use> uses;  // path -> strongest role
  auto add = [&](const std::string& path, const char* role, const std::string& where) {
    if (path.empty() || path[0] != '/' || special(path)) return;
    auto& u = uses[path];
    if (u.role.empty()) u.where = where;
    if (rank(role) > rank(u.role)) u.role = role;
  };
  for (const auto& g : gateways) {
    for (pid_t pid : g.pids) {
      const Process& p = snap.processes.at(pid);
      const bool own_ns = p.mnt_ns != 0 && snap.self_mnt_ns != 0 && p.mnt_ns != snap.self_mnt_ns;
      const std::string where = own_ns ? cat(proc_root, "/", pid, "/root") : "";
      add(p.exe, "exe", where);
      auto maps = sys::read_file(cat(proc_root, "/", pid, "/maps"));
      if (maps.ok()) {
        for (const auto& path : parse_maps(*maps)) add(path, "map", where);
        for (const auto& path : parse_shared_writable_maps(*maps)) add(path, "shared", where);
      }
      for (const auto& path : p.open_files) add(path, "open", where);
    }
  }
  std::vector<FileIdentity> out;
  for (const auto& [path, use] : uses) {
    struct stat st {};
    const std::string at = use.where + path;
    if (::stat(at.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    auto id = SL_TRY_CTX(identify(at), "identifying files of the gateways");
    id.path = path;
    id.role = use.role;
    out.push_back(std::move(id));
  }
  return out;
}

// CRIU's dump leaves DROP rules for the connections it took (its network lock); its
// restore deletes the rules of the connections it brings back. Clearing them before the
// restore would let a packet through to no socket, and the kernel would reset that
// connection: clear what is left only afterwards (connections that ended elsewhere).
Result<int> clear_leftover_locks(Env& env, Result<void> restored) {
  auto cleared = env.netfilter->clear_criu_locks();
  // The gateways listen here again (or failed to): new connections may come in.
  env.netfilter->release_new();
  SL_TRY(std::move(restored));
  return SL_TRY_CTX(std::move(cleared), "clearing CRIU's connection locks");
}

// Whether `pid` is `root` or below it (its /proc parent chain reaches it).
bool descends_from(pid_t pid, pid_t root) {
  for (int hops = 0; pid > 1 && hops < 64; ++hops) {
    if (pid == root) return true;
    auto text = sys::read_file(cat("/proc/", pid, "/stat"));
    auto st = text.ok() ? parse_stat(*text) : Result<ProcStat>(text.error());
    if (!st.ok()) return false;
    pid = st->ppid;
  }
  return pid == root;
}

// Restores one gateway from its images, fresh ends standing in for its outside streams
// (a stream that cannot be reconnected adds a warning).
Result<pid_t> restore_gateway(Env& env, const std::string& images, const PackedGateway& g,
                              std::vector<std::string>* warnings) {
  auto ends = SL_TRY(open_stream_ends(g.streams, StreamMode::Reconnect));
  for (const auto& w : ends.warnings) warnings->push_back(cat("gateway `", g.name, "`: ", w));
  RestoreRequest req;
  req.images = images;
  req.shell_job = g.shell_job;
  req.pids = g.pids;  // a tree just dumped here may not be reaped yet
  req.inherit = ends.inherit;
  req.external_datagrams = !g.loggers.empty();
  SL_TRY(open_devices(g.devices, &ends.fds, &req.inherit));
  if (g.own_mount_ns) {
    // Back into its unit's mount namespace, which the unit's stand-in has kept.
    if (!env.services)
      return make_error(ErrorKind::Invalid, g.unit, " ran in its own mount namespace, but systemd does not run here");
    req.mount_ns_of = SL_TRY_CTX(env.services->stand_in(g.unit), "its mount namespace is gone");
  }
  pid_t pid = SL_TRY(env.criu->restore(req));
  lower_fd_limits(g.fd_limits);
  if (!g.unit.empty()) {
    // The gateway runs: a unit that cannot have it back is a warning, not a failure. Only
    // the restored tree goes to the unit: the pids of a pack from a sink are its word.
    std::vector<pid_t> restored;
    for (pid_t p : g.pids)
      if (descends_from(p, pid)) restored.push_back(p);
    if (!env.services)
      warnings->push_back(cat("gateway `", g.name, "` was ", g.unit, ", but systemd does not run here"));
    else if (!descends_from(g.unit_main, pid))
      warnings->push_back(cat("gateway `", g.name, "`: the main pid ", g.unit_main, " of ", g.unit,
                              " is not in the restored tree; the unit keeps its stand-in"));
    else if (auto r = env.services->release(g.unit, g.unit_main, restored); !r.ok())
      warnings->push_back(cat("gateway `", g.name, "`: ", r.error().message));
  }
  return pid;
}

// The units of gateways from `first` on, which were held but not dumped (still running):
// their main processes are theirs again.
void release_units(Env& env, const std::vector<PackedGateway>& gateways, size_t first) {
  if (!env.services) return;
  for (size_t i = first; i < gateways.size(); ++i) {
    const auto& g = gateways[i];
    if (g.unit.empty()) continue;
    if (auto r = env.services->release(g.unit, g.unit_main, g.pids); !r.ok())
      SL_LOG(Warn, kModule, "giving ", g.unit, " its process back: ", r.error().message);
  }
  env.services->apply();
}

// Puts dumped gateways back where they were (after a failure or user activity).
Result<void> restore_in_place(Env& env, const std::string& images_root, const std::vector<PackedGateway>& dumped) {
  if (dumped.empty()) return ok();
  auto restored = [&]() -> Result<void> {
    std::vector<std::string> warnings;
    for (const auto& g : dumped) {
      SL_TRY_CTX(restore_gateway(env, images_root + "/" + g.dir, g, &warnings), "putting gateway `", g.name, "` back");
    }
    for (const auto& w : warnings) SL_LOG(Warn, kModule, "putting back: ", w);
    return ok();
  };
  auto back = restored();
  if (env.services) env.services->apply();
  SL_TRY(clear_leftover_locks(env, std::move(back)));
  return ok();
}

std::string unique_dir(const std::string& parent, const char* what) {
  return cat(parent, "/", what, "-", ::getpid(), "-", Clock::now().time_since_epoch().count());
}

// A new scratch directory name for `what` with room for `need` bytes: in the work
// directory when its file system has that much free, else in the spill directory.
std::string scratch_dir(const Env& env, const char* what, uint64_t need) {
  std::error_code ec;
  std::filesystem::create_directories(env.work_dir, ec);
  struct statvfs vs {};
  if (!env.spill_dir.empty() && ::statvfs(env.work_dir.c_str(), &vs) == 0 &&
      uint64_t(vs.f_bavail) * vs.f_frsize < need) {
    SL_LOG(Info, kModule, env.work_dir, " has ", uint64_t(vs.f_bavail) * vs.f_frsize >> 20, " MiB free, ", need >> 20,
           " MiB wanted: the ", what, " images go to ", env.spill_dir);
    std::filesystem::create_directories(env.spill_dir, ec);
    return unique_dir(env.spill_dir, what);
  }
  return unique_dir(env.work_dir, what);
}

// What CRIU writes for `pids` at most: their resident memory, and some room for the rest.
uint64_t image_room(const std::vector<pid_t>& pids) {
  uint64_t bytes = 32 << 20;
  for (pid_t p : pids)
    if (auto statm = sys::read_file(cat("/proc/", p, "/statm")); statm.ok()) {
      unsigned long long size = 0, resident = 0;
      if (std::sscanf(statm->c_str(), "%llu %llu", &size, &resident) == 2)
        bytes += resident * uint64_t(::sysconf(_SC_PAGESIZE));
    }
  return bytes;
}

// Unpacks `pack` into a new scratch directory for `what`: the work directory, or the
// spill directory when the work directory's file system fills up.
Result<std::pair<std::string, std::string>> unpack_scratch(const Env& env, const char* what, const std::string& pack,
                                                           const PackLimits& limits) {
  std::error_code ec;
  std::filesystem::create_directories(env.work_dir, ec);
  std::string dir = unique_dir(env.work_dir, what);
  auto text = unpack(pack, dir, limits);
  if (!text.ok() && text.error().code == ENOSPC && !env.spill_dir.empty()) {
    SL_LOG(Info, kModule, env.work_dir, " is full: the ", what, " images go to ", env.spill_dir);
    std::filesystem::create_directories(env.spill_dir, ec);
    dir = unique_dir(env.spill_dir, what);
    text = unpack(pack, dir, limits);
  }
  if (!text.ok()) return text.error();
  return std::pair{dir, std::move(text).value()};
}

}  // namespace

// CRIU injects code that needs a few free descriptors in each process.
constexpr uint64_t kFdsForCriu = 64;

// Raises the open-files limit of the gateway's processes that sandbox themselves below
// what CRIU needs; returns what they had.
std::vector<FdLimit> raise_fd_limits(const std::vector<pid_t>& pids) {
  std::vector<FdLimit> out;
  for (pid_t pid : pids) {
    rlimit old{};
    if (::prlimit(pid, RLIMIT_NOFILE, nullptr, &old) != 0 || old.rlim_cur >= kFdsForCriu) continue;
    rlimit raised{kFdsForCriu, std::max<rlim_t>(old.rlim_max, kFdsForCriu)};
    if (::prlimit(pid, RLIMIT_NOFILE, &raised, nullptr) == 0) out.push_back({pid, old.rlim_cur, old.rlim_max});
  }
  return out;
}

// Sets the limits back once the processes run again (CRIU keeps their pids).
void lower_fd_limits(const std::vector<FdLimit>& limits) {
  for (const auto& l : limits) {
    rlimit old{rlim_t(l.soft), rlim_t(l.hard)};
    if (::prlimit(l.pid, RLIMIT_NOFILE, &old, nullptr) != 0)
      SL_LOG(Warn, kModule, "setting the open-files limit of pid ", l.pid, " back: ", std::strerror(errno));
  }
}

std::vector<std::string> file_roots(Env& env, const Manifest& m) {
  std::vector<std::string> roots = {""};
  if (!env.services) return roots;
  for (const auto& g : m.gateways) {
    if (!g.own_mount_ns || g.unit.empty()) continue;
    // Away, its stand-in keeps the unit's mount namespace; back home (a pack shipped after
    // a restore in place), the unit's main process has it again.
    auto keeper = env.services->stand_in(g.unit);
    if (!keeper.ok() || *keeper <= 0) keeper = env.services->main_pid(g.unit);
    if (keeper.ok() && *keeper > 0) roots.push_back(cat("/proc/", *keeper, "/root"));
  }
  return roots;
}

Result<std::string> find_file(const FileIdentity& f, const std::vector<std::string>& roots) {
  Result<void> why = make_error(ErrorKind::NotFound, "`", f.path, "` recorded in the pack: not found");
  for (const auto& root : roots) {
    if (f.role == "shared") {
      // Written by the gateway itself until the dump: it must be there, as it is now.
      struct stat st {};
      if (::stat((root + f.path).c_str(), &st) == 0 && S_ISREG(st.st_mode)) return root + f.path;
      continue;
    }
    auto here = identify(root + f.path);
    if (!here.ok()) {
      if (root.empty()) why = here.error().wrap(cat("`", f.path, "` recorded in the pack"));
      continue;
    }
    here->path = f.path;
    auto same = same_file(f, *here);
    if (same.ok()) return root + f.path;
    why = std::move(same);
  }
  return std::move(why).error();
}

Result<void> check_files(const Manifest& m, const std::vector<std::string>& roots) {
  for (const auto& f : m.files) {
    if (f.role == "open") continue;  // data files may differ; only code must match
    SL_TRY(find_file(f, roots));
  }
  return ok();
}

Result<void> movable(Env& env, const Snapshot& snap, const Gateway& g, const std::vector<UnixSocket>& sockets) {
  SL_TRY(outside_streams(snap, g.pids, sockets));
  SL_TRY(outside_loggers(snap, g.pids, sockets));
  SL_TRY(foreign_devices(g.pids));
  if (g.own_mount_ns) {
    bool held = false;
    if (env.services && valid_service_name(g.unit))
      if (auto main = env.services->main_pid(g.unit); main.ok())
        held = std::find(g.pids.begin(), g.pids.end(), *main) != g.pids.end();
    if (!held)
      return make_error(ErrorKind::Invalid, "it runs in a mount namespace of its own and is not the main process of a ",
                        "systemd service, so nothing would keep that namespace while it is away");
  }
  return ok();
}

Result<void> exclude_unmovable(Env& env, const Snapshot& snap, Discovery* d) {
  auto sockets = SL_TRY_CTX(env.unix_sockets(), "listing the guest's unix sockets");
  std::vector<Gateway> keep;
  for (auto& g : d->gateways) {
    if (auto why = movable(env, snap, g, sockets); !why.ok()) {
      std::string reason = why.error().message;
      if (reason.rfind("cannot checkpoint: ", 0) == 0) reason = reason.substr(19);
      d->excluded.push_back({g.root, g.name, "cannot move: " + reason, g.ports(), true});
      continue;
    }
    keep.push_back(std::move(g));
  }
  d->gateways = std::move(keep);
  return ok();
}

namespace {

// Who the tasks of every gateway's images under `root` are (criu_images::task_identities).
Result<std::map<uint32_t, packfmt::criu_images::TaskIdentity>> identities_of(
    const std::string& root, const std::vector<PackedGateway>& gateways) {
  std::map<uint32_t, packfmt::criu_images::TaskIdentity> all;
  for (const auto& g : gateways)
    for (auto& [pid, t] :
         SL_TRY_CTX(packfmt::criu_images::task_identities(root + "/" + g.dir), "the images of gateway `", g.name, "`"))
      if (!all.emplace(pid, std::move(t)).second)
        return make_error(ErrorKind::Invalid, "pid ", pid, " in the images of two gateways");
  return all;
}

}  // namespace

Result<DumpResult> dump(Env& env, const Snapshot& snap, const std::vector<Gateway>& gateways,
                        const std::string& pack_path, const PackOptions& pack_options) {
  if (gateways.empty()) return make_error(ErrorKind::Invalid, "no gateways to dump");
  // Connections to processes outside (the journal behind stdout) are dumped as external
  // and reconnected on restore; one that cannot be reached again is refused here, before
  // anything is touched.
  auto sockets = SL_TRY_CTX(env.unix_sockets(), "listing the guest's unix sockets");
  auto t0 = Clock::now();
  DumpResult result;
  Manifest& m = result.manifest;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  m.hostname = host;
  struct utsname uts {};
  ::uname(&uts);
  m.kernel = uts.release;
  m.criu_version = SL_TRY_CTX(env.criu->version(), "criu --version");
  SL_TRY_CTX(read_network(&m), "reading the network configuration");
  m.files = SL_TRY(gateway_files(snap, gateways));
  std::set<std::string> carried;  // files the pack carries by identity: not in the tree
  for (const auto& f : m.files) carried.insert(f.path);

  std::vector<uint16_t> tcp_ports, udp_ports;
  struct LookedUp {
    std::string view;  // "" or /proc/ROOT/root
    std::vector<std::string> named, cgroups;
  };
  std::vector<LookedUp> looked_up;
  for (const auto& g : gateways) {
    PackedGateway pg;
    pg.streams = SL_TRY_CTX(outside_streams(snap, g.pids, sockets), "gateway `", g.name, "`");
    pg.loggers = SL_TRY_CTX(outside_loggers(snap, g.pids, sockets), "gateway `", g.name, "`");
    pg.dirs = needed_dirs(snap, g.pids, sockets);
    pg.devices = SL_TRY_CTX(foreign_devices(g.pids), "cannot move gateway `", g.name, "`");
    pg.root = g.root;
    pg.name = g.name;
    pg.exe = g.exe;
    pg.dir = cat("gw/", g.root);
    pg.pids = g.pids;
    // A service's main process: its unit is held while the gateway is away.
    if (env.services && valid_service_name(g.unit)) {
      pid_t main = SL_TRY_CTX(env.services->main_pid(g.unit), "gateway `", g.name, "`");
      if (std::find(g.pids.begin(), g.pids.end(), main) != g.pids.end()) {
        pg.unit = g.unit;
        pg.unit_main = main;
      }
    }
    // Its mount namespace lives on only in the unit's stand-in while it is away.
    pg.own_mount_ns = g.own_mount_ns;
    if (g.own_mount_ns && pg.unit.empty())
      return make_error(ErrorKind::Invalid, "cannot move gateway `", g.name, "` (pid ", g.root,
                        "): it runs in a mount namespace of its own and is not the main process of a systemd "
                        "service, so nothing would keep that namespace while it is away");
    const ProcStat& st = snap.processes.at(g.root).stat;
    // CRIU wants the session and process group inside the tree unless told otherwise.
    pg.shell_job = st.session != g.root || st.pgrp != g.root;
    for (const auto& s : g.listening) {
      pg.listening.push_back({s.proto == Proto::Tcp ? "tcp" : "udp", s.local_addr, s.local_port});
      (s.proto == Proto::Tcp ? tcp_ports : udp_ports).push_back(s.local_port);
    }
    for (size_t i = 0; i < g.established.size(); ++i)
      pg.established.push_back(
          {g.established_owner[i], endpoint_text(g.established[i], false), endpoint_text(g.established[i], true)});
    // The trees it names, for a sink to answer its look-ups there from (file_tree.h):
    // recorded below, once every gateway's cgroups are.
    std::vector<std::string> named;
    for (pid_t p : g.pids)
      for (auto& d : named_dirs(p))
        if (std::find(named.begin(), named.end(), d) == named.end()) named.push_back(std::move(d));
    const std::string view = g.own_mount_ns ? cat("/proc/", g.root, "/root") : "";
    looked_up.push_back({view, std::move(named), cgroup_dirs(g.root)});
    m.gateways.push_back(std::move(pg));
  }
  // Every gateway's cgroups first: a few small files each that a JVM re-reads for ever,
  // which the trees' entries and contents could otherwise use the budget up before.
  for (const auto& l : looked_up) collect_cgroups(l.view, l.cgroups, {}, &m.tree);
  for (const auto& l : looked_up) collect_tree(l.view, l.named, carried, {}, &m.tree);
  for (auto* v : {&tcp_ports, &udp_ports}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
    if (v->size() > 15) v->resize(15);  // multiport's limit; the rest go unwatched
  }

  std::vector<pid_t> all_pids;
  for (const auto& g : gateways) all_pids.insert(all_pids.end(), g.pids.begin(), g.pids.end());
  const std::string images = scratch_dir(env, "dump", image_room(all_pids));
  std::filesystem::create_directories(images + "/gw");
  auto cleanup = [&] {
    std::error_code ec;
    std::filesystem::remove_all(images, ec);
  };

  // Units are held before the watch: systemd takes seconds to reread them in a small VM.
  std::vector<std::string> units;
  for (const auto& g : m.gateways)
    if (!g.unit.empty()) units.push_back(g.unit);
  if (!units.empty()) SL_TRY_CTX(env.services->hold(units), "keeping the gateways' units whole while they are away");
  if (auto w = env.netfilter->watch(tcp_ports, udp_ports); !w.ok()) {
    env.netfilter->unwatch();
    release_units(env, m.gateways, 0);
    cleanup();
    return std::move(w).error().wrap("watching the gateways' ports");
  }
  std::vector<PackedGateway> dumped;
  for (auto& g : m.gateways) {
    DumpRequest req;
    req.root = g.root;
    req.images = images + "/" + g.dir;
    req.shell_job = g.shell_job;
    req.mount_ns_of = g.own_mount_ns ? g.root : 0;
    for (const auto& st : g.streams) req.external_unix.push_back(st.inode);
    for (const auto& d : g.devices) req.external_files.push_back(d.key());
    req.external_datagrams = !g.loggers.empty();
    std::filesystem::create_directories(req.images);
    g.fd_limits = raise_fd_limits(g.pids);
    if (auto d = env.criu->dump(req); !d.ok()) {
      lower_fd_limits(g.fd_limits);
      // CRIU leaves a tree it failed to dump running: its unit has it back at once, and
      // so do the units of the gateways not dumped yet. A connection waiting in the accept
      // queue makes it fail, and so is user activity like the watched packets.
      release_units(env, m.gateways, dumped.size());
      auto seen = env.netfilter->read_watch();
      env.netfilter->unwatch();
      bool in_flight = d.error().message.find("In-flight connection") != std::string::npos;
      auto back = restore_in_place(env, images, dumped);
      if (back.ok() && (in_flight || (seen.ok() && seen->any()))) {
        result.aborted = true;
        result.abort_reason = cat("user activity during the dump: ",
                                  seen.ok() && seen->any() ? seen->describe() : "a connection waiting to be accepted");
        result.dump_seconds = seconds_since(t0);
        cleanup();
        return result;
      }
      Error e = std::move(d).error();
      if (e.message.find("Can't dump nested") != std::string::npos)
        e =
            e.wrap(cat("it runs processes in namespaces of their own, which CRIU cannot checkpoint (for vsftpd set "
                       "isolate=NO and isolate_network=NO)"));
      e = e.wrap(cat("dumping gateway `", g.name, "` (pid ", g.root, ")"));
      if (!back.ok()) e = e.wrap(cat("and putting the others back failed too: ", back.error().message, ";"));
      // The images directory stays: it holds the CRIU log the message names.
      return e;
    }
    dumped.push_back(g);
  }
  // From now until a restore (here or, after a wake, of the sink's pack) new connections
  // are dropped, not refused: the client retries and finds the gateway wherever it is.
  if (auto held = env.netfilter->hold_new(tcp_ports); !held.ok())
    SL_LOG(Warn, "guest", "new connections will be refused until the sink answers: ", held.error().message);
  auto activity = env.netfilter->read_watch();
  env.netfilter->unwatch();
  if (!activity.ok() || activity->any()) {
    // Someone is using the gateways (or we cannot tell): they go back, nothing is lost.
    result.aborted = true;
    result.abort_reason = activity.ok() ? cat("user activity during the dump: ", activity->describe())
                                        : cat("cannot read the activity counters: ", activity.error().message);
    SL_TRY_CTX(restore_in_place(env, images, dumped), result.abort_reason, "; restoring the gateways in place");
    cleanup();
    result.dump_seconds = seconds_since(t0);
    return result;
  }
  result.dump_seconds = seconds_since(t0);
  result.compression = pack_options.compression;
  const auto t_pack = Clock::now();
  // The small files of the tree come with their contents (tree/PATH in the pack).
  for (auto& e : m.tree) {
    if (!e.content) continue;
    const std::string at = cat(images, "/", kTreeContents, e.path);
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(at).parent_path(), ec);
    if (ec || !sys::write_file(at, e.data, 0600).ok()) e.content = false;
  }
  // Who was dumped, kept beside the pack: a hand-back from a sink is checked against it.
  auto w = [&]() -> Result<void> {
    auto ids = SL_TRY(identities_of(images, m.gateways));
    SL_TRY(sys::write_file(identities_path(pack_path), packfmt::criu_images::identities_to_json(ids), 0600));
    return write_pack(pack_path, m.to_json(), images, list_pack_files(images), pack_options, &result.pages);
  }();
  if (!w.ok()) {
    auto back = restore_in_place(env, images, dumped);
    Error e = std::move(w).error().wrap("writing the pack");
    if (!back.ok()) return e.wrap(cat("and putting the gateways back failed too: ", back.error().message, ";"));
    cleanup();
    return e;
  }
  result.pack_seconds = seconds_since(t_pack);
  cleanup();
  result.pack = pack_path;
  struct stat st {};
  if (::stat(pack_path.c_str(), &st) == 0) result.pack_bytes = uint64_t(st.st_size);
  return result;
}

std::string identities_path(const std::string& pack_path) { return pack_path + ".ids"; }

Result<RestoreResult> restore(Env& env, const std::string& pack_path, const PackLimits& limits,
                              const std::string& dumped) {
  // The record of what was dumped comes first: a hand-back without one is not restored.
  std::optional<std::map<uint32_t, packfmt::criu_images::TaskIdentity>> was;
  if (!dumped.empty()) {
    auto text =
        SL_TRY_CTX(sys::read_file(identities_path(dumped), 16 << 20), "the record of what `", dumped, "` holds");
    was = SL_TRY_CTX(packfmt::criu_images::identities_from_json(text), "`", identities_path(dumped), "`");
  }
  auto [dir, text] = SL_TRY(unpack_scratch(env, "restore", pack_path, limits));
  auto cleanup = [&] {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  };
  auto body = [&]() -> Result<RestoreResult> {
    RestoreResult r;
    r.manifest = SL_TRY(Manifest::parse(text));
    SL_TRY_CTX(check_files(r.manifest, file_roots(env, r.manifest)), "this machine does not match the pack");
    for (const auto& g : r.manifest.gateways)
      if (!std::filesystem::is_directory(dir + "/" + g.dir))
        return make_error(ErrorKind::Invalid, "the pack has no images for gateway `", g.name, "` (`", g.dir, "`)");
    if (was) {
      SL_TRY_CTX(packfmt::criu_images::check_handed_back(*was, SL_TRY(identities_of(dir, r.manifest.gateways))),
                 "the pack holds what `", dumped, "` did not");
      // What the sink took away for its stay there (capabilities, its seccomp filter)
      // comes back as the dump had it.
      for (const auto& g : r.manifest.gateways)
        SL_TRY_CTX(packfmt::criu_images::restore_as_dumped(dir + "/" + g.dir, *was), "gateway `", g.name, "`");
    }
    auto restored = [&]() -> Result<void> {
      for (const auto& g : r.manifest.gateways) {
        pid_t pid =
            SL_TRY_CTX(restore_gateway(env, dir + "/" + g.dir, g, &r.warnings), "restoring gateway `", g.name, "`");
        // A gateway handed back by a sink was stopped there (SIGSTOP, at the call that
        // needs this machine) and CRIU restores it stopped: let it run that call here.
        for (pid_t p : g.pids) ::kill(p, SIGCONT);
        r.restored.emplace_back(g.name, pid);
      }
      return ok();
    };
    auto back = restored();
    if (env.services) env.services->apply();
    r.locks_cleared = SL_TRY(clear_leftover_locks(env, std::move(back)));
    return r;
  };
  auto r = body();
  // A CRIU failure keeps the directory: it holds the log the error names.
  if (r.ok() || r.error().kind != ErrorKind::Remote) cleanup();
  return r;
}

Result<Manifest> prewarm(Env& env, const std::string& pack_path, const PackLimits& limits) {
  auto [dir, text] = SL_TRY(unpack_scratch(env, "prewarm", pack_path, limits));
  auto body = [&]() -> Result<Manifest> {
    auto m = SL_TRY(Manifest::parse(text));
    SL_TRY_CTX(check_files(m, file_roots(env, m)), "this machine does not match the pack");
    // The addresses the sockets were bound to, on a dummy link in the throw-away netns. The
    // script is fixed text: the addresses (checked by Manifest::parse) are its arguments
    // before `--`, CRIU's command line after it.
    static constexpr const char* kScript =
        "ip link set lo up && ip link add sl0 type dummy && ip link set sl0 up; "
        "while [ \"$1\" != -- ]; do ip addr add \"$1\" dev sl0 nodad 2>/dev/null; shift; done; shift; "
        "\"$@\"; rc=$?; kill -9 -1 2>/dev/null; exit $rc";
    std::vector<std::string> wrapper = {"unshare", "--net",        "--pid",   "--mount", "--uts", "--ipc",
                                        "--fork",  "--mount-proc", "/bin/sh", "-c",      kScript, "prewarm"};
    for (const auto& i : m.interfaces)
      for (const auto& a : i.addresses) wrapper.push_back(a);
    wrapper.push_back("--");
    for (const auto& g : m.gateways) {
      auto ends = SL_TRY_CTX(open_stream_ends(g.streams, StreamMode::Dummy), "dummy restore of gateway `", g.name, "`");
      RestoreRequest req;
      req.images = dir + "/" + g.dir;
      req.shell_job = g.shell_job;
      req.inherit = ends.inherit;
      req.external_datagrams = !g.loggers.empty();
      SL_TRY(open_devices(g.devices, &ends.fds, &req.inherit));
      req.log_name = "prewarm.log";
      req.wrapper = wrapper;
      SL_TRY_CTX(env.criu->restore(req), "dummy restore of gateway `", g.name, "`");
    }
    return m;
  };
  auto m = body();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return m;
}

std::string to_json(const DumpResult& r) {
  qmp::ArgWriter w;
  w.boolean("ok", !r.aborted);
  if (r.aborted) w.str("aborted", r.abort_reason);
  if (!r.pack.empty()) {
    w.str("pack", r.pack).num("pack_bytes", int64_t(r.pack_bytes)).str("compression", to_string(r.compression));
    w.raw("pack_seconds", cat(r.pack_seconds));
    qmp::ArgWriter pages;
    pages.num("literal", int64_t(r.pages.literal)).num("copies", int64_t(r.pages.copies));
    pages.num("deltas", int64_t(r.pages.deltas)).num("free_heap_bytes", int64_t(r.pages.free_heap_bytes));
    w.raw("pages", pages.finish());
  }
  w.str("dump_seconds", cat(r.dump_seconds));
  std::string gws = "[";
  for (size_t i = 0; i < r.manifest.gateways.size(); ++i) {
    const auto& g = r.manifest.gateways[i];
    qmp::ArgWriter x;
    x.str("name", g.name).num("root", g.root).num("connections", int64_t(g.established.size()));
    if (!g.unit.empty()) x.str("unit", g.unit);
    x.num("streams", int64_t(g.streams.size()));
    gws += (i ? "," : "") + x.finish();
  }
  w.raw("gateways", gws + "]").num("files", int64_t(r.manifest.files.size()));
  return w.finish();
}

std::string to_json(const RestoreResult& r) {
  std::string gws = "[";
  for (size_t i = 0; i < r.restored.size(); ++i) {
    qmp::ArgWriter x;
    x.str("name", r.restored[i].first).num("root", r.restored[i].second);
    gws += (i ? "," : "") + x.finish();
  }
  qmp::ArgWriter w;
  w.boolean("ok", true).raw("restored", gws + "]").num("locks_cleared", r.locks_cleared);
  w.strings("warnings", r.warnings);
  return w.finish();
}

}  // namespace seamless::guest
