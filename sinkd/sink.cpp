// SPDX-License-Identifier: Apache-2.0
// The sink's gateways: add (unpack, check, container, CRIU restore, trace), hand back
// (stop, CRIU dump, pack), remove, list, and recovery after a daemon restart.
#include "sinkd/sink.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <optional>
#include <set>
#include <sstream>

#include "common/log.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/criu.h"
#include "guest-agent/gateway.h"
#include "guest-agent/procfs.h"
#include "pack/criu_confine.h"
#include "qmp/json.h"
#include "sinkd/moves.h"
#include "sinkd/pack_check.h"
#include "sinkd/protocol.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "sink";
using proto::GatewayState;
constexpr const char* kImages = "/.seamless";    // the pack's images, inside the container
constexpr const char* kCgroupMount = "/cgroup";  // the containers' cgroup2, in the state directory
constexpr const char* kHandedBack = "/handed-back";

std::string exe_name(pid_t pid) {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink(cat("/proc/", pid, "/exe"), ec);
  return ec ? "" : exe.filename().string();
}

// /proc/PID/stat of a process here ({} when it is gone).
guest::ProcStat proc_stat(pid_t pid) {
  auto text = sys::read_file(cat("/proc/", pid, "/stat"));
  auto stat = text.ok() ? guest::parse_stat(*text) : Result<guest::ProcStat>(text.error());
  return stat.ok() ? *stat : guest::ProcStat{};
}

// PSS of a process in kB (0 when it is gone).
uint64_t pss_kb(const std::string& pid) {
  auto text = sys::read_file("/proc/" + pid + "/smaps_rollup");
  auto v = text.ok() ? guest::parse_kb_field(*text, "Pss") : Result<uint64_t>(text.error());
  return v.ok() ? *v : 0;
}

// Once CRIU has restored a gateway its images are dead weight, and the state directory is
// usually a tmpfs: they (and CRIU's verbose log, 1.5 MB for apache2) would cost the sink
// as much memory as the gateway itself. `dir` is seen through the container's overlay
// (Container::root); the pack's manifest, one level up, stays for a restarted daemon.
void drop_images(const Container& c, const std::string& dir) {
  if (auto r = sys::remove_in_root(c.root(), dir); !r.ok()) SL_LOG(Warn, kModule, "cannot remove: ", r.error().message);
}

// The gateway's streams to the drain as they are now: the socket each holder has (the
// inode changed with the restore here); a stream no holder has any more is gone.
std::vector<packfmt::OutsideStream> current_streams(const std::vector<packfmt::OutsideStream>& streams,
                                                    const std::map<pid_t, pid_t>& here_of) {
  std::vector<packfmt::OutsideStream> out;
  for (auto st : streams) {
    for (const auto& h : st.holders) {
      auto here = here_of.find(h.pid);
      auto inode = here == here_of.end() ? std::nullopt : guest::fd_socket_inode(here->second, h.fd);
      if (!inode) continue;
      st.inode = *inode;
      out.push_back(st);
      break;
    }
  }
  return out;
}

// Sets the open-files limits a pack recorded (pids inside the container) back on the
// container's processes.
void lower_fd_limits_inside(const std::vector<std::pair<pid_t, pid_t>>& procs,
                            const std::vector<packfmt::PackedGateway>& gateways) {
  std::map<pid_t, pid_t> here_of;
  for (auto [here, inside] : procs) here_of[inside] = here;
  for (const auto& gw : gateways) {
    std::vector<packfmt::FdLimit> limits;
    for (auto l : gw.fd_limits)
      if (here_of.count(l.pid)) limits.push_back({here_of[l.pid], l.soft, l.hard});
    guest::lower_fd_limits(limits);
  }
}

// A gateway's outside streams, in the sink: each a fresh connection to the container's
// drain.
StreamEnds drains(const Container& c) {
  return [&c](const packfmt::PackedGateway& gw) -> Result<std::vector<UniqueFd>> {
    std::vector<UniqueFd> out;
    for (size_t i = 0; i < gw.streams.size(); ++i) out.push_back(SL_TRY(c.drain_stream()));
    return out;
  };
}

}  // namespace

std::unique_ptr<guest::Criu> criu_in(const Container& c, const std::string& criu) {
  return std::make_unique<guest::CriuBinary>(
      criu, [&c](const std::vector<std::string>& argv, Millis timeout) { return c.run(argv, timeout); }, c.root());
}

struct Sink::Gateway {
  std::string id;
  // Held by the command working on this gateway; everything but `mu`'s fields changes
  // only under it.
  std::mutex op;
  bool gone = false;  // removed, or its add failed (under op)
  // Set once its add is done (or it was adopted): container and manifest no longer change
  // and other commands (list, metrics) may read them.
  std::atomic<bool> ready{false};
  std::optional<Container> container;  // absent once lost
  packfmt::Manifest manifest;
  std::map<pid_t, pid_t> inner;  // pid here -> pid inside, of the traced processes
  std::mutex mu;                 // state, activity, error, pack, tracer, and which hold there is
  GatewayState state = GatewayState::Stopped;
  std::string activity, error, pack;
  std::unique_ptr<PacketHold> hold;  // while the restore runs, and from hand-back on
  Tracer* tracer = nullptr;          // while the watcher runs
  std::thread thread;
  std::atomic<int> request{0};  // 1: freeze, 2: let go
  std::atomic<bool> finished{false};
  void set(GatewayState s) {
    std::lock_guard<std::mutex> lock(mu);
    state = s;
  }
  GatewayState get() {
    std::lock_guard<std::mutex> lock(mu);
    return state;
  }
  // A hold taken or let go (the old one ends outside the lock).
  void set_hold(std::unique_ptr<PacketHold> h) {
    {
      std::lock_guard<std::mutex> lock(mu);
      hold.swap(h);
    }
    h.reset();
  }
};

Sink::Sink(SinkOptions options, EventSink events)
    : opt_(std::move(options)), events_(std::move(events)), cache_(opt_.state_dir + "/files", opt_.file_cache_budget) {
  if (!opt_.criu_for) opt_.criu_for = [path = opt_.criu](const Container& c) { return criu_in(c, path); };
  std::error_code ec;
  std::filesystem::create_directories(opt_.state_dir + "/containers", ec);
}

Sink::~Sink() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, g] : gateways_) stop_watching(*g, false);
}

size_t Sink::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return gateways_.size();
}

Result<Sink::Claimed> Sink::claim(const std::string& id) {
  std::shared_ptr<Gateway> g;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = gateways_.find(id); it != gateways_.end()) g = it->second;
  }
  if (!g) return make_error(ErrorKind::NotFound, "the sink hosts no gateway `", id, "`");
  std::unique_lock<std::mutex> op(g->op);
  if (g->gone) return make_error(ErrorKind::NotFound, "the sink hosts no gateway `", id, "` (it went meanwhile)");
  return Claimed{std::move(g), std::move(op)};
}

void Sink::forget(Gateway& g) {
  g.gone = true;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = gateways_.find(g.id); it != gateways_.end() && it->second.get() == &g) gateways_.erase(it);
}

void Sink::watcher(Gateway* g, bool stopped, std::shared_ptr<std::promise<std::string>> attached) {
  std::vector<TracedProcess> procs;
  // The guest's file tree, laid into the container: look-ups it answers run there.
  auto tree = std::make_shared<const packfmt::TreeView>(g->manifest.tree);
  for (auto [here, inside] : g->container->processes()) {
    const std::string text = std::string(kBuiltinPolicy) + "\n" + opt_.policy_text;
    auto policy = Policy::parse(text, exe_name(here));
    if (!policy.ok()) policy = Policy::builtin("");
    procs.push_back({here, std::move(policy).value(), tree});
    g->inner[here] = inside;
  }
  auto t = Tracer::attach(std::move(procs));
  if (!t.ok()) {
    attached->set_value(t.error().message);
    g->finished = true;
    return;
  }
  // Restored stopped, seized now: they go on under the tracer, never untraced in between.
  // SIGCONT ends the group stop (a tracee restarted from it would stop again at detach).
  if (stopped)
    for (const auto& [here, inside] : g->inner) ::kill(here, SIGCONT);
  {
    std::lock_guard<std::mutex> lock(g->mu);
    g->tracer = t->get();
    g->state = GatewayState::Traced;
  }
  attached->set_value("");
  for (;;) {
    auto r = (*t)->run(Deadline::never());
    if (!r.ok()) {
      {
        std::lock_guard<std::mutex> lock(g->mu);
        g->state = GatewayState::Crashed;
        g->error = r.error().message;
      }
      SL_LOG(Warn, kModule, "gateway `", g->id, "`: ", r.error().message);
      events_(proto::kError, proto::ErrorEvent{g->id, r.error().message}.to_json());
      break;
    }
    if (r->has_value()) {
      const Activity& a = **r;
      {
        std::lock_guard<std::mutex> lock(g->mu);
        g->state = GatewayState::Woken;
        g->activity = a.reason;
      }
      SL_LOG(Info, kModule, "gateway `", g->id, "` activity: ", a.reason);
      events_(proto::kActivity, proto::ActivityEvent{g->id, a.reason, g->inner[a.pid]}.to_json());
      break;
    }
    if (g->request == 1) {
      (*t)->stop_and_detach();
      g->set(GatewayState::Stopped);
      break;
    }
    if (g->request == 2) break;
  }
  {
    std::lock_guard<std::mutex> lock(g->mu);
    g->tracer = nullptr;
  }
  t->reset();  // detaches here, in the tracing thread, unless stopped already
  g->finished = true;
}

Result<void> Sink::watch(Gateway& g, bool stopped) {
  g.request = 0;
  g.finished = false;
  auto attached = std::make_shared<std::promise<std::string>>();
  auto result = attached->get_future();
  g.thread = std::thread(&Sink::watcher, this, &g, stopped, attached);
  std::string why = result.get();
  if (!why.empty()) {
    g.thread.join();
    return make_error(ErrorKind::System, "tracing gateway `", g.id, "`: ", why);
  }
  return ok();
}

void Sink::stop_watching(Gateway& g, bool freeze) {
  if (!g.thread.joinable()) return;
  g.request = freeze ? 1 : 2;
  while (!g.finished) {
    {
      std::lock_guard<std::mutex> lock(g.mu);
      if (g.tracer) g.tracer->interrupt();
    }
    std::this_thread::sleep_for(Millis(20));
  }
  g.thread.join();
}

size_t Sink::recover() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t found = 0;
  std::error_code ec;
  // What a daemon killed during an add or a check left half unpacked, and hand-back packs
  // it did not finish writing: nobody will finish them.
  for (const auto& e : std::filesystem::directory_iterator(opt_.state_dir, ec))
    if (e.path().filename().string().rfind("incoming-", 0) == 0) {
      SL_LOG(Info, kModule, "removing `", e.path().string(), "`, left by an add that did not finish");
      std::filesystem::remove_all(e.path(), ec);
    }
  std::filesystem::remove_all(opt_.state_dir + "/work", ec);
  for (const auto& e : std::filesystem::directory_iterator(opt_.state_dir + "/out", ec))
    if (e.path().extension() == ".part") std::filesystem::remove(e.path(), ec);
  ec.clear();
  for (const auto& e : std::filesystem::directory_iterator(opt_.state_dir + "/containers", ec)) {
    const std::string id = e.path().filename();
    if (gateways_.count(id)) continue;
    auto g = std::make_shared<Gateway>();
    g->id = id;
    g->ready = true;
    ++found;
    auto c = Container::adopt(e.path());
    if (!c.ok()) {
      g->state = GatewayState::Lost;
      g->error = c.error().message;
      SL_LOG(Warn, kModule, "gateway `", id, "` is lost: ", c.error().message);
      gateways_[id] = std::move(g);
      continue;
    }
    g->container = std::move(c).value();
    auto text = sys::read_file(g->container->upper() + kImages + "/" + packfmt::kManifestName);
    auto m = text.ok() ? packfmt::Manifest::parse(*text) : Result<packfmt::Manifest>(text.error());
    if (m.ok()) g->manifest = std::move(m).value();
    auto procs = g->container->processes();
    if (auto marker = sys::read_file(e.path().string() + kHandedBack); marker.ok()) {
      g->state = GatewayState::HandedBack;
      g->pack = *marker;
      // The old daemon's held packets died with it (their senders retransmit); hold anew.
      auto hold = PacketHold::open(g->container->netns());
      if (hold.ok())
        g->hold = std::move(hold).value();
      else
        g->error = hold.error().message;
    } else if (procs.empty()) {
      g->state = GatewayState::Crashed;
      g->error = "no gateway process is left in its container";
    } else {
      bool all_stopped = true;
      for (auto [here, inside] : procs) all_stopped = all_stopped && proc_stat(here).state == 'T';
      if (all_stopped) {
        g->state = GatewayState::Stopped;
      } else if (auto w = watch(*g); !w.ok()) {
        g->state = GatewayState::Crashed;
        g->error = w.error().message;
      }
    }
    SL_LOG(Info, kModule, "adopted gateway `", id, "` (", proto::to_string(g->state), ")");
    gateways_[id] = std::move(g);
  }
  return found;
}

Result<std::string> Sink::add(const std::string& pack, const std::string& id, bool quiet, const std::string& files) {
  SL_TRY(check_container_id(id));  // it names paths below the state directory
  // Listed as adding from now on; other commands on it wait for this one.
  auto g = std::make_shared<Gateway>();
  g->id = id;
  g->state = GatewayState::Adding;
  std::unique_lock<std::mutex> op(g->op);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gateways_.count(id)) return make_error(ErrorKind::Invalid, "the sink already hosts a gateway `", id, "`");
    gateways_[id] = g;
  }
  auto added = add_body(*g, pack, quiet, files);
  if (!added.ok()) forget(*g);
  return added;
}

Result<std::string> Sink::add_body(Gateway& gw, const std::string& pack, bool quiet, const std::string& files) {
  Gateway* g = &gw;
  const std::string& id = g->id;
  const auto t0 = Clock::now();
  const std::string incoming = opt_.state_dir + "/incoming-" + id;
  const std::string dir = opt_.state_dir + "/containers/" + id;
  std::error_code ec;
  std::filesystem::remove_all(incoming, ec);
  if (std::filesystem::exists(dir)) return make_error(ErrorKind::Invalid, "`", dir, "` exists already");
  // Until its container has its layer of shipped files, no other add takes a shipment
  // (whose trimming could drop this one's objects before they are linked).
  std::unique_lock<std::mutex> files_lock(files_mu_);
  // Files shipped with the pack go to the cache first: pages may be stored against them.
  std::optional<packfmt::ShipmentIndex> shipment;
  std::vector<std::string> bases = {"/"};
  std::optional<TempDir> base_layer;
  if (!files.empty()) {
    shipment = SL_TRY_CTX(cache_.take(files, opt_.state_dir + "/work", opt_.limits), "adding gateway `", id, "`");
    base_layer.emplace(SL_TRY(TempDir::create(opt_.state_dir + "/work/base-")));
    std::vector<LayerFile> all;
    for (const auto& f : shipment->files) all.emplace_back(f.path, f.object());
    SL_TRY(cache_.build_layer(base_layer->path() + "/root", all));
    bases.insert(bases.begin(), base_layer->path() + "/root");
  }
  auto text = SL_TRY_CTX(packfmt::unpack(pack, incoming, opt_.limits, bases), "pack `", pack, "`");
  base_layer.reset();
  size_t held = 0;
  std::string cgroup;
  auto body = [&]() -> Result<PackCheck> {
    auto manifest = SL_TRY_CTX(packfmt::Manifest::parse(text), "pack `", pack, "`");
    auto checked = SL_TRY_CTX(check_manifest(std::move(manifest), "", &cache_, shipment ? &*shipment : nullptr),
                              "pack `", pack, "`");
    // Each thread restored without the capabilities no gateway uses here, under the
    // sink's seccomp filter; the guest puts back what it dumped.
    for (const auto& gw : checked.manifest.gateways)
      SL_TRY_CTX(packfmt::criu_images::confine(cat(incoming, "/", gw.dir), seccomp_program()), "confining gateway `",
                 gw.name, "`");
    ContainerSpec spec;
    spec.id = id;
    spec.dir = dir;
    spec.hostname = checked.manifest.hostname;
    spec.interfaces = checked.manifest.interfaces;
    spec.routes = checked.manifest.routes;
    spec.nic = opt_.nic;
    spec.dummies = checked.dummies;
    spec.from_sink = checked.from_sink;
    spec.shipped = checked.shipped;
    for (const auto& gw : checked.manifest.gateways) {
      for (const auto& l : gw.loggers)
        if (std::find(spec.loggers.begin(), spec.loggers.end(), l) == spec.loggers.end()) spec.loggers.push_back(l);
      spec.dirs.insert(spec.dirs.end(), gw.dirs.begin(), gw.dirs.end());
    }
    spec.cache = &cache_;
    spec.tree = checked.manifest.tree;
    spec.tree_contents = incoming;
    spec.quiet = quiet;
    // Its cgroup, with the sink's limits: the gateways are restored into it.
    std::string parent;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cgroups_.empty())
        cgroups_ = SL_TRY_CTX(prepare_container_cgroups(opt_.state_dir + kCgroupMount), "the sink's container cgroups");
      parent = cgroups_;
    }
    cgroup = SL_TRY(make_container_cgroup(parent, id, opt_.container_limits));
    spec.cgroup = cgroup;
    // Packets for the VM wait until the gateways' sockets exist: the kernel would reset
    // their connections otherwise.
    g->container = SL_TRY(Container::create(spec, opt_.self_exe, [&](pid_t init) -> Result<void> {
      g->set_hold(SL_TRY_CTX(PacketHold::open(cat("/proc/", init, "/ns/net")), "holding packets for the VM"));
      return ok();
    }));
    files_lock.unlock();
    const std::string images = g->container->upper() + kImages;
    std::filesystem::remove_all(cat(incoming, "/", packfmt::kTreeContents), ec);  // laid out in the tree layer
    if (::rename(incoming.c_str(), images.c_str()) != 0)
      return errno_error(cat("rename `", incoming, "` to `", images, "`"));
    auto criu = opt_.criu_for(*g->container);
    // Stopped until the tracer has them: a restored process never runs untraced.
    SL_TRY(restore_gateways(*criu, kImages, checked.manifest.gateways, drains(*g->container), true));
    for (const auto& gw : checked.manifest.gateways) drop_images(*g->container, cat(kImages, "/", gw.dir));
    // vsftpd's sandboxed limits: the pack recorded them with the pids inside.
    lower_fd_limits_inside(g->container->processes(), checked.manifest.gateways);
    g->manifest = checked.manifest;
    SL_TRY(watch(*g, true));
    held = SL_TRY_CTX(g->hold->accept(), "letting the held packets in");
    g->set_hold(nullptr);
    return checked;
  };
  auto checked = body();
  if (!checked.ok()) {
    stop_watching(*g, false);
    g->set_hold(nullptr);
    if (g->container)
      g->container->destroy();  // its cgroup with it
    else if (!cgroup.empty())
      (void)remove_cgroup(cgroup, Millis(5000));
    std::filesystem::remove_all(incoming, ec);
    return std::move(checked).error().wrap(cat("adding gateway `", id, "`"));
  }
  proto::Added reply;
  reply.id = id;
  reply.hostname = g->manifest.hostname;
  for (const auto& iface : g->manifest.interfaces) reply.interfaces.push_back({iface.name, iface.mac, iface.addresses});
  reply.quiet = quiet;
  reply.init = g->container->init();
  for (const auto& gw : g->manifest.gateways) reply.gateways.push_back({gw.name, gw.root});
  reply.processes = int64_t(g->inner.size());
  reply.dummies = int64_t(checked->dummies.size());
  reply.shipped = int64_t(checked->shipped.size());
  reply.held = int64_t(held);
  reply.seconds = seconds_since(t0);
  SL_LOG(Info, kModule, "gateway `", id, "` ready in ", seconds_since(t0), " s");
  g->ready = true;
  events_(proto::kReady, proto::IdArg{id}.to_json());
  return reply.to_json();
}

Result<std::string> Sink::missing(const std::string& pack) {
  auto files = SL_TRY(missing_for_pack(pack, cache_, opt_.limits));
  proto::Missing reply;
  for (auto& m : files) reply.files.push_back({m.file.path, int64_t(m.file.size), m.file.role, m.candidates});
  return reply.to_json();
}

std::string Sink::cache_stats() {
  auto s = cache_.stats();
  return proto::FileCacheStats{s.objects, s.bytes, s.in_use}.to_json();
}

Result<void> Sink::speak(const std::string& id) {
  auto g = SL_TRY(claim(id));
  if (!g->container) return make_error(ErrorKind::Invalid, "gateway `", id, "` has no container");
  {
    std::lock_guard<std::mutex> glock(g->mu);
    if (g->state == GatewayState::HandedBack)
      return make_error(ErrorKind::Invalid, "gateway `", id, "` was handed back");
  }
  SL_TRY_CTX(g->container->speak(), "gateway `", id, "`");
  SL_LOG(Info, kModule, "gateway `", id, "` speaks for its VM");
  return ok();
}

std::string Sink::list() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<proto::ListedGateway> out;
  for (auto& [id, g] : gateways_) {
    proto::ListedGateway l;
    std::lock_guard<std::mutex> glock(g->mu);
    l.id = id;
    l.state = g->state;
    if (g->ready) l.hostname = g->manifest.hostname;
    if (g->ready && g->container) {
      l.init = g->container->init();
      l.processes = int64_t(g->container->processes().size());
    }
    l.activity = g->activity;
    l.error = g->error;
    l.pack = g->pack;
    if (g->hold) l.held = int64_t(g->hold->held());
    out.push_back(std::move(l));
  }
  return proto::to_json(out);
}

std::string Sink::metrics() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string containers = "[";
  uint64_t total = 0;
  for (auto& [id, g] : gateways_) {
    if (!g->ready || !g->container) continue;
    uint64_t gws = 0;
    auto procs = g->container->processes();
    for (auto [here, inside] : procs) gws += pss_kb(std::to_string(here));
    const uint64_t init = pss_kb(std::to_string(g->container->init()));
    total += gws + init;
    qmp::ArgWriter w;
    w.str("id", id)
        .num("processes", int64_t(procs.size()))
        .num("pss_kb", int64_t(gws))
        .num("init_pss_kb", int64_t(init));
    // What its cgroup charges it (page cache and kernel memory included) and its limit.
    if (auto u = cgroup_usage(g->container->cgroup()); u.ok())
      w.num("cgroup_kb", int64_t(u->memory_bytes >> 10))
          .num("cgroup_peak_kb", int64_t(u->memory_peak_bytes >> 10))
          .num("cgroup_pids", int64_t(u->pids))
          .num("memory_limit_kb", int64_t(opt_.container_limits.memory_bytes >> 10))
          .num("pids_limit", int64_t(opt_.container_limits.pids));
    containers += (containers.size() > 1 ? "," : "") + w.finish();
  }
  auto meminfo = sys::read_file("/proc/meminfo");
  auto field = [&](const char* key) -> int64_t {
    auto v = meminfo.ok() ? guest::parse_kb_field(*meminfo, key) : Result<uint64_t>(meminfo.error());
    return v.ok() ? int64_t(*v) : -1;
  };
  qmp::ArgWriter w;
  return w.num("gateways", int64_t(gateways_.size()))
      .num("containers_pss_kb", int64_t(total))
      .num("sinkd_pss_kb", int64_t(pss_kb("self")))
      .num("mem_total_kb", field("MemTotal"))
      .num("mem_available_kb", field("MemAvailable"))
      .raw("containers", containers + "]")
      .finish();
}

Result<std::string> Sink::hand_back(const std::string& id, const std::string& out_arg) {
  auto g = SL_TRY(claim(id));
  const auto t0 = Clock::now();
  stop_watching(*g, true);
  const GatewayState state = g->get();
  if (state == GatewayState::HandedBack)
    return make_error(ErrorKind::Invalid, "gateway `", id, "` was handed back already: `", g->pack, "`");
  if (state != GatewayState::Woken && state != GatewayState::Stopped)
    return make_error(ErrorKind::Invalid, "gateway `", id, "` cannot be handed back: it is ", proto::to_string(state),
                      g->error.empty() ? "" : " (" + g->error + ")");
  // From here on the gateways answer nothing: their packets wait for the VM.
  if (!g->hold) g->set_hold(SL_TRY_CTX(PacketHold::open(g->container->netns()), "holding packets for the VM"));
  auto out = checkpoint(*g, out_arg);
  if (!out.ok()) {
    // The gateways stay here (CRIU leaves them as they were, stopped): so do the packets.
    if (auto a = g->hold->accept(); !a.ok()) SL_LOG(Warn, kModule, a.error().message);
    g->set_hold(nullptr);
    return std::move(out).error();
  }
  {
    std::lock_guard<std::mutex> glock(g->mu);
    g->state = GatewayState::HandedBack;
    g->pack = *out;
  }
  // The gateways are gone from here: the VM's MAC and addresses speak only from the VM.
  if (auto quiet = g->container->silence(); !quiet.ok())
    SL_LOG(Warn, kModule, "gateway `", id, "`: ", quiet.error().message);
  std::error_code ec;
  proto::HandedBack reply;
  reply.id = id;
  reply.pack = *out;
  reply.bytes = int64_t(std::filesystem::file_size(*out, ec));
  reply.held = int64_t(g->hold->held());
  reply.seconds = seconds_since(t0);
  SL_LOG(Info, kModule, "gateway `", id, "` handed back in ", reply.seconds, " s: `", *out, "`");
  return reply.to_json();
}

Result<std::string> Sink::checkpoint(Gateway& gw_entry, const std::string& out_arg) {
  Gateway* g = &gw_entry;
  const std::string& id = g->id;
  Container& c = *g->container;
  // The processes as they are now, inside pids, per gateway tree.
  auto procs = c.processes();
  std::map<pid_t, pid_t> inner_of(procs.begin(), procs.end()), here_of;
  for (auto [here, inside] : procs) here_of[inside] = here;
  packfmt::Manifest m = g->manifest;
  for (auto& gw : m.gateways) {
    gw.pids.clear();
    for (auto [here, inside] : procs)
      for (pid_t p = here; p > 0 && inner_of.count(p); p = proc_stat(p).ppid)
        if (inner_of[p] == gw.root) {
          gw.pids.push_back(inside);
          break;
        }
    if (std::find(gw.pids.begin(), gw.pids.end(), gw.root) == gw.pids.end())
      return make_error(ErrorKind::NotFound, "gateway `", gw.name, "` (pid ", gw.root, ") of `", id, "` is gone");
    // The manifest's order: the root first. Connections of processes gone meanwhile go.
    std::stable_partition(gw.pids.begin(), gw.pids.end(), [&](pid_t p) { return p == gw.root; });
    std::erase_if(gw.established, [&](const packfmt::Connection& conn) {
      return std::find(gw.pids.begin(), gw.pids.end(), conn.pid) == gw.pids.end();
    });
  }
  // Through the container's own root, never behind its overlay: the overlay caches what it
  // has looked up, so a directory made in the upper layer after a lookup stays invisible
  // inside (CRIU: "Can't open dir"), and a file removed there keeps its space.
  const std::string out_dir = cat(kImages, "/out");
  std::error_code ec;
  drop_images(c, out_dir);
  for (auto& gw : m.gateways) {
    std::vector<pid_t> here;
    for (pid_t p : gw.pids) here.push_back(here_of[p]);
    gw.fd_limits.clear();
    for (auto l : guest::raise_fd_limits(here)) gw.fd_limits.push_back({inner_of[l.pid], l.soft, l.hard});
    gw.streams = current_streams(gw.streams, here_of);
    for (auto& st : gw.streams)
      std::erase_if(st.holders, [&](const packfmt::StreamHolder& h) {
        return std::find(gw.pids.begin(), gw.pids.end(), h.pid) == gw.pids.end();
      });
    std::erase_if(gw.streams, [](const packfmt::OutsideStream& st) { return st.holders.empty(); });
    // The devices it was handed at the restore, as the container's processes hold them now.
    gw.devices = SL_TRY_CTX(guest::foreign_devices(here), "gateway `", gw.name, "`");
  }
  auto criu = opt_.criu_for(c);
  auto dumped =
      dump_gateways(*criu, cat(kImages, "/out"), m.gateways, drains(c),
                    [&](const std::string& dir) -> Result<void> { return sys::make_dirs_in_root(c.root(), dir); });
  if (!dumped.ok()) {
    // What is in the container now (the gateways as they were, or those put back) gets its
    // own limits again.
    lower_fd_limits_inside(c.processes(), m.gateways);
    return std::move(dumped).error().wrap(cat("gateway `", id, "`"));
  }
  const std::string out = out_arg.empty() ? cat(opt_.state_dir, "/out/", id, ".pack") : out_arg;
  std::filesystem::create_directories(std::filesystem::path(out).parent_path(), ec);
  // The hand-back is on the wake path: gzip, several times faster to write than xz.
  packfmt::PackOptions pack_options;
  pack_options.compression = packfmt::Compression::Gzip;
  // The images directory as an open descriptor: nothing the container plants on the way
  // there leads out (write_pack resolves every file inside it).
  UniqueFd images = SL_TRY(sys::open_in_root(c.root(), out_dir, O_PATH | O_DIRECTORY));
  const std::string out_root = cat("/proc/self/fd/", images.get());
  SL_TRY_CTX(packfmt::write_pack(out, m.to_json(), out_root, packfmt::list_pack_files(out_root), pack_options),
             "writing `", out, "`");
  images.reset();
  drop_images(c, out_dir);
  (void)sys::write_file(c.dir() + kHandedBack, out, 0600);
  return out;
}

Result<std::string> Sink::release(const std::string& id) {
  auto g = SL_TRY(claim(id));
  if (const auto state = g->get(); state != GatewayState::HandedBack)
    return make_error(ErrorKind::Invalid, "gateway `", id, "` has not been handed back (it is ",
                      proto::to_string(state), ")");
  if (!g->hold)
    return make_error(ErrorKind::Invalid, "gateway `", id, "` holds no packets",
                      g->error.empty() ? "" : " (holding again after a restart failed: " + g->error + ")");
  if (g->manifest.interfaces.empty()) return make_error(ErrorKind::Invalid, "gateway `", id, "` has no interface");
  ForwardTarget to;
  to.nic = opt_.nic;
  auto own = SL_TRY_CTX(sys::read_file("/sys/class/net/" + opt_.nic + "/address"), "the working NIC's MAC");
  to.src_mac = own.substr(0, own.find_first_of("\n "));
  to.dst_mac = g->manifest.interfaces.front().mac;
  for (const auto& iface : g->manifest.interfaces)
    if (auto index = g->hold->ifindex(iface.name); index.ok()) to.dst_by_indev[*index] = iface.mac;
  const size_t dropped = g->hold->dropped();
  const size_t n = SL_TRY_CTX(g->hold->forward(to), "releasing the packets held for `", id, "`");
  SL_LOG(Info, kModule, "gateway `", id, "`: ", n, " held packet(s) released toward ", to.dst_mac);
  return proto::Released{id, int64_t(n), int64_t(dropped)}.to_json();
}

Result<void> Sink::remove(const std::string& id) {
  auto g = SL_TRY(claim(id));
  // Out of the list first: nothing reads its container while it goes.
  forget(*g);
  stop_watching(*g, false);
  g->set_hold(nullptr);
  if (g->container) {
    g->container->destroy();
  } else {
    // A lost container (found without its init after a restart): its cgroup goes too,
    // with anything still in it.
    if (auto r = remove_cgroup(container_cgroup(opt_.state_dir + kCgroupMount, id), Millis(5000)); !r.ok())
      SL_LOG(Warn, kModule, "gateway `", id, "`'s cgroup: ", r.error().message);
    std::error_code ec;
    std::filesystem::remove_all(opt_.state_dir + "/containers/" + id, ec);
  }
  SL_LOG(Info, kModule, "gateway `", id, "` removed");
  return ok();
}

}  // namespace seamless::sink
