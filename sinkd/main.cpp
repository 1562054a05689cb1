// SPDX-License-Identifier: Apache-2.0
// seamless-sinkd: the sink daemon. Serves its QMP-style control channel.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>

#include "common/log.h"
#include "common/process.h"
#include "common/sys.h"
#include "common/time.h"
#include "qmp/json.h"
#include "qmp/server.h"
#include "sinkd/container.h"
#include "sinkd/pack_check.h"
#include "sinkd/policy.h"
#include "sinkd/protocol.h"
#include "sinkd/sink.h"

using namespace seamless;
using seamless::qmp::ControlServer;

namespace {

constexpr const char* kVersion = "0.1.0";
// Commands run at once at most (each another VM's); more wait for one to finish.
constexpr size_t kWorkers = 8;
constexpr const char* kUsage =
    R"(usage: seamless-sinkd (--socket PATH | --port DEVICE) [--state-dir DIR] [--nic IF]

The sink daemon. Serves a QMP-style control channel on a unix socket or on a
virtio-serial port (in a sink VM: /dev/virtio-ports/org.seamless.sinkd.0), one client
at a time like a QEMU monitor: greeting, qmp_capabilities, then commands:
  query-status              version, uptime, number of gateways
  check-pack {"pack":PATH}  would this sink host the pack? (template check; the held-open
                            files that would get dummies)
  query-missing-files {"pack":PATH}
                            the pack's code and mapped files this sink lacks (another
                            version, or none), each with the cached objects that may be it:
                            what the guest ships (seamless-guest ship --path/--have)
  add-gateway {"pack":PATH,"id":ID[,"quiet":true][,"files":SHIPMENT]}
                            restore the pack's gateways in a new sink container ID (the
                            VM's MAC, addresses, routes, hostname) and trace them; a quiet
                            container sends nothing (no ARP, no packet) until `speak`; the
                            shipment's files (each checked by SHA-256) go to the file cache
                            and, as a read-only layer, into the container
  query-file-cache          the shipped files kept (STATE-DIR/files): objects, bytes, in use
  speak {"id":ID}           a quiet container answers for its VM from now on (the VM is
                            paused and its traffic switched here)
  list-gateways             every container: state (traced, woken, stopped, handed-back,
                            crashed, lost), activity, errors
  hand-back {"id":ID[,"out":PATH]}
                            stop the gateways and checkpoint them into a pack (default
                            STATE-DIR/out/ID.pack); from then on packets for the VM are
                            held; the container stays until removed
  query-metrics             memory: PSS per container (gateways, init), what its cgroup
                            charges it and its limits, the daemon's own, MemTotal and
                            MemAvailable (kB)
  release-packets {"id":ID} send the held packets (and any later ones) to the VM, out of
                            the working NIC, once its gateways are home
  remove-gateway {"id":ID}  end the container and everything in it
Events: READY {id}, ACTIVITY {id,pid,reason} (the gateway is stopped for the VM),
ERROR {id,error} (a gateway process died). Containers outlive the daemon: a restarted
sinkd adopts them and lists the ones it lost.
Options:
  --socket PATH     listen here (replaced if it exists)
  --port DEVICE     serve the virtio-serial port DEVICE; a greeting goes out each time
                    the host side connects
  --state-dir DIR   working files and containers (default /run/seamless-sinkd)
  --nic IF          the sink's working NIC (default: the default route's, else eth0)
  --criu PATH       the criu binary (default: criu on PATH)
  --policy FILE     activity policy entries over the built-in ones (default
                    /etc/seamless/sink-policy if it exists), e.g. for a daemon that
                    polls files in the sink: "[snmpd]" then "serve openat"
  --container-memory MIB
                    each container's memory limit, its cgroup's memory.max (no swap);
                    default 512
  --container-pids N
                    each container's processes and threads, its pids.max; default 1024
  -h, --help        this text
)";

ControlServer* g_server = nullptr;
volatile sig_atomic_t g_stop = 0;

void on_signal(int) {
  g_stop = 1;
  if (g_server) g_server->stop();
}

// A virtio-serial port reports POLLHUP while no host process has its chardev open.
bool host_connected(int fd) {
  pollfd p{fd, POLLOUT, 0};
  return ::poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP);
}

// Serves the port, one session per host connection. The port reads EOF when the host
// end closes; a host that reconnects within moments shows no EOF, so its first attempt
// may see no greeting (it retries, as QmpSocket users do).
int serve_port(ControlServer& server, const std::string& device) {
  SL_LOG(Info, "sinkd", "serving `", device, "`");
  while (!g_stop) {
    UniqueFd fd(::open(device.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) {
      std::fprintf(stderr, "seamless-sinkd: error: open `%s`: %s\n", device.c_str(), std::strerror(errno));
      return 1;
    }
    while (!g_stop && !host_connected(fd.get())) ::usleep(100 * 1000);
    if (g_stop) break;
    if (auto served = server.serve(std::move(fd), device); !served.ok())
      SL_LOG(Warn, "sinkd", "control session ended: ", served.error().message);
    ::usleep(100 * 1000);
  }
  return 0;
}

// The interface of the default route, else eth0.
std::string default_nic() {
  auto out = run_ok({"ip", "-o", "route", "show", "default"});
  if (out.ok()) {
    std::istringstream in(*out);
    for (std::string w; in >> w;)
      if (w == "dev" && in >> w) return w;
  }
  return "eth0";
}

int main_impl(int argc, char** argv) {
  if ((argc == 4 || argc == 5) && std::string(argv[1]) == "--container-init")
    return sink::container_init_main(argv[2], argv[3], argc == 5 ? argv[4] : "");
  if (argc > 1 && std::string(argv[1]) == "--join-cgroup") return sink::join_cgroup_main(argc, argv);
  std::string socket_path, port_path, state_dir = "/run/seamless-sinkd", nic, criu = "criu", policy_file;
  sink::ContainerLimits limits;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if ((a == "--socket" || a == "--port" || a == "--state-dir" || a == "--nic" || a == "--criu" ||
                a == "--policy") &&
               i + 1 < argc) {
      (a == "--socket"      ? socket_path
       : a == "--port"      ? port_path
       : a == "--state-dir" ? state_dir
       : a == "--nic"       ? nic
       : a == "--policy"    ? policy_file
                            : criu) = argv[++i];
    } else if ((a == "--container-memory" || a == "--container-pids") && i + 1 < argc) {
      char* end = nullptr;
      const unsigned long long n = std::strtoull(argv[++i], &end, 10);
      if (*argv[i] < '0' || *argv[i] > '9' || *end || n == 0 || n > (1ull << 30)) {
        std::fprintf(stderr, "seamless-sinkd: %s wants a positive number, not `%s`\n", a.c_str(), argv[i]);
        return 2;
      }
      if (a == "--container-memory")
        limits.memory_bytes = uint64_t(n) << 20;
      else
        limits.pids = n;
    } else {
      std::fprintf(stderr, "seamless-sinkd: %s (see --help)\n",
                   a.rfind("--", 0) == 0 ? ("bad option " + a).c_str() : ("unexpected argument " + a).c_str());
      return 2;
    }
  }
  if (socket_path.empty() == port_path.empty()) {
    std::fprintf(stderr, "seamless-sinkd: one of --socket PATH or --port DEVICE is needed (see --help)\n");
    return 2;
  }
  const auto started = Clock::now();
  qmp::ControlServer server(kVersion);
  // Each VM's command on a worker of its own: one container's CRIU run holds up no other.
  server.answer_out_of_order(kWorkers);
  sink::SinkOptions options;
  options.state_dir = state_dir;
  options.nic = nic.empty() ? default_nic() : nic;
  options.criu = criu;
  options.container_limits = limits;
  if (policy_file.empty() && ::access("/etc/seamless/sink-policy", F_OK) == 0)
    policy_file = "/etc/seamless/sink-policy";
  if (!policy_file.empty()) {
    auto text = sys::read_file(policy_file, 1 << 20);
    auto parsed = text.ok() ? sink::Policy::parse(*text, "") : Result<sink::Policy>(text.error());
    if (!parsed.ok()) {
      std::fprintf(stderr, "seamless-sinkd: policy `%s`: %s\n", policy_file.c_str(), parsed.error().message.c_str());
      return 2;
    }
    options.policy_text = *text;
  }
  std::error_code ec;
  options.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  sink::Sink sink(options, [&](const std::string& event, const std::string& data) { server.emit(event, data); });
  if (size_t n = sink.recover(); n) SL_LOG(Info, "sinkd", "found ", n, " container(s) of an earlier run");
  namespace proto = sink::proto;
  server.on(proto::kQueryStatus, [&](const qmp::Value&) -> Result<std::string> {
    proto::Status st;
    st.version = kVersion;
    st.uptime_seconds = int64_t(seconds_since(started));
    st.gateways = int64_t(sink.size());
    st.nic = options.nic;
    st.time = wall_seconds();
    return st.to_json();
  });
  server.on(proto::kAddGateway, [&](const qmp::Value& args) -> Result<std::string> {
    auto a = SL_TRY(proto::AddGateway::parse(args));
    return sink.add(a.pack, a.id, a.quiet, a.files);
  });
  server.on(proto::kSpeak, [&](const qmp::Value& args) -> Result<std::string> {
    SL_TRY(sink.speak(SL_TRY(proto::IdArg::parse(args)).id));
    return std::string("{}");
  });
  server.on(proto::kListGateways, [&](const qmp::Value&) -> Result<std::string> { return sink.list(); });
  server.on(proto::kHandBack, [&](const qmp::Value& args) -> Result<std::string> {
    auto a = SL_TRY(proto::HandBack::parse(args));
    return sink.hand_back(a.id, a.out);
  });
  server.on(proto::kQueryMetrics, [&](const qmp::Value&) -> Result<std::string> { return sink.metrics(); });
  server.on(proto::kReleasePackets, [&](const qmp::Value& args) -> Result<std::string> {
    return sink.release(SL_TRY(proto::IdArg::parse(args)).id);
  });
  server.on(proto::kRemoveGateway, [&](const qmp::Value& args) -> Result<std::string> {
    SL_TRY(sink.remove(SL_TRY(proto::IdArg::parse(args)).id));
    return std::string("{}");
  });
  server.on(proto::kQueryMissingFiles, [&](const qmp::Value& args) -> Result<std::string> {
    return sink.missing(SL_TRY(proto::PackArg::parse(args)).pack);
  });
  server.on(proto::kQueryFileCache, [&](const qmp::Value&) -> Result<std::string> { return sink.cache_stats(); });
  server.on(proto::kCheckPack, [&](const qmp::Value& args) -> Result<std::string> {
    auto a = SL_TRY(proto::PackArg::parse(args));
    auto checked = SL_TRY(sink::check_pack(a.pack, state_dir + "/work"));
    return to_json(checked);
  });

  g_server = &server;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // The sink goes before the server: no command may still be using it then.
  struct Idle {
    ControlServer& s;
    ~Idle() { s.wait_idle(); }
  } idle{server};
  if (!port_path.empty()) return serve_port(server, port_path);

  ::unlink(socket_path.c_str());
  auto listener = sys::listen_unix(socket_path);
  if (!listener.ok()) {
    std::fprintf(stderr, "seamless-sinkd: error: %s\n", listener.error().message.c_str());
    return 1;
  }
  SL_LOG(Info, "sinkd", "listening on `", socket_path, "`");
  while (!g_stop) {
    auto peer = sys::accept(listener->get(), Deadline(Millis(500)));
    if (!peer.ok()) {
      if (peer.error().kind == ErrorKind::Timeout) continue;
      SL_LOG(Warn, "sinkd", "accept: ", peer.error().message);
      continue;
    }
    if (auto served = server.serve(std::move(peer).value(), socket_path); !served.ok())
      SL_LOG(Warn, "sinkd", "control session ended: ", served.error().message);
  }
  ::unlink(socket_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seamless-sinkd: internal error: %s\n", e.what());
    return 1;
  }
}
