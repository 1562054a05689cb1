// SPDX-License-Identifier: Apache-2.0
// seamlessd: the host controller. Owns the sink connections, parks and wakes VMs (on
// request, and by itself on the sink's ACTIVITY event), and serves a QMP-style control
// socket for virsh-park / virsh-wake / virsh-parked and the libvirt hook.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <list>
#include <string>
#include <thread>

#include "common/log.h"
#include "common/sys.h"
#include "controller/controller.h"
#include "qmp/json.h"
#include "qmp/server.h"

using namespace seamless;

namespace {

constexpr const char* kVersion = "0.1.0";
constexpr const char* kSpool = "/run/seamless/hook-spool";  // the hook's, see hooks/hook.h
constexpr const char* kUsage =
    R"(usage: seamlessd [--config PATH] [--socket PATH] [-c URI]

The seamless host controller. Connects to the sink VMs named in the configuration,
parks and wakes VMs, and wakes a parked VM by itself when its sink reports activity.
Serves a QMP-style control socket (greeting, qmp_capabilities, then commands):
  query-status               version, libvirt URI, sinks and whether they answer
  park {"domain":D[,"mode":M]}   park D (progress: PROGRESS events)
  wake {"domain":D}          wake D
  list-parked                parked domains, the last wake of each domain
  forget {"domain":D}        D stopped or went away: its container, flows and metadata go
  reconcile                  remove flows and containers that belong to no parked domain
  hook {"domain":D,"operation":OP}
                             a libvirt lifecycle notice (stopped, release, reconnect, ...)
Options:
  --config PATH   configuration (default /etc/seamless/seamless.conf; see seamlessd(8))
  --socket PATH   control socket (default: the configuration's, /run/seamless/seamlessd.sock)
  -c, --connect URI  libvirt URI (default: the configuration's, qemu:///system)
  -h, --help      this text
Environment (tests only): SEAMLESS_FAIL_STEP=park:STEP|wake:STEP makes that step fail;
SEAMLESS_TEST_SEAMS=1 adds the command test-fail-at {"at":"park:STEP"} to do so at run time.
)";

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

Result<std::string> domain_arg(const qmp::Value& args) {
  auto d = SL_TRY(qmp::get_string(args, "domain"));
  if (d.empty() || d.size() > 256) return make_error(ErrorKind::Invalid, "`domain` must be a domain name");
  return d;
}

// The handlers of one client connection; progress events go to that client.
void install(qmp::ControlServer& server, ctl::Controller& c, const ctl::Config& cfg) {
  auto progress_to = [&server](const std::string& domain) {
    return [&server, domain](ctl::Progress what, const std::string& step, const std::string& detail) {
      static const char* names[] = {"begin", "done", "failed", "undoing", "undone"};
      qmp::ArgWriter w;
      w.str("domain", domain).str("step", step).str("what", names[int(what)]);
      if (!detail.empty()) w.str("detail", detail);
      server.emit("PROGRESS", w.finish());
    };
  };
  server.on("query-status", [&](const qmp::Value&) -> Result<std::string> {
    qmp::ArgWriter w;
    w.str("version", kVersion).str("connect", cfg.uri).raw("sinks", c.sinks_json());
    return w.finish();
  });
  server.on("park", [&, progress_to](const qmp::Value& args) -> Result<std::string> {
    auto d = SL_TRY(domain_arg(args));
    ctl::ParkOptions o;
    o.mode = qmp::opt_string(args, "mode").value_or("");
    auto r = SL_TRY(c.park(d, o, progress_to(d)));
    return r.to_json();
  });
  server.on("wake", [&, progress_to](const qmp::Value& args) -> Result<std::string> {
    auto d = SL_TRY(domain_arg(args));
    auto r = SL_TRY(c.wake(d, "virsh-wake", progress_to(d)));
    return r.to_json();
  });
  server.on("list-parked", [&](const qmp::Value&) -> Result<std::string> { return c.status_json(); });
  server.on("forget", [&](const qmp::Value& args) -> Result<std::string> {
    SL_TRY(c.forget(SL_TRY(domain_arg(args))));
    return std::string("{}");
  });
  server.on("reconcile", [&](const qmp::Value&) -> Result<std::string> { return c.reconcile(); });
  if (const char* seams = std::getenv("SEAMLESS_TEST_SEAMS"); seams && std::string(seams) == "1")
    server.on("test-fail-at", [&](const qmp::Value& args) -> Result<std::string> {
      c.fail_at(qmp::opt_string(args, "at").value_or(""));
      return std::string("{}");
    });
  server.on("hook", [&](const qmp::Value& args) -> Result<std::string> {
    auto d = SL_TRY(domain_arg(args));
    c.notice(d, SL_TRY(qmp::get_string(args, "operation")));
    return std::string("{}");
  });
}

int main_impl(int argc, char** argv) {
  std::string config_path = ctl::kDefaultConfig, socket, uri;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if ((a == "--config" || a == "--socket" || a == "-c" || a == "--connect") && i + 1 < argc) {
      (a == "--config" ? config_path : a == "--socket" ? socket : uri) = argv[++i];
    } else {
      std::fprintf(stderr, "seamlessd: %s (see --help)\n", ("bad argument " + a).c_str());
      return 2;
    }
  }
  auto cfg = ctl::load_config(config_path);
  if (!cfg.ok()) {
    std::fprintf(stderr, "seamlessd: error: %s\n", cfg.error().message.c_str());
    return 1;
  }
  if (!socket.empty()) cfg->socket = socket;
  if (!uri.empty()) cfg->uri = uri;
  auto conn = virt::Connection::open(cfg->uri);
  if (!conn.ok()) {
    std::fprintf(stderr, "seamlessd: error: %s\n", conn.error().message.c_str());
    return 1;
  }
  ctl::OvsSwitch ovs;
  ctl::Controller controller(*cfg, *conn, ovs);
  if (const char* f = std::getenv("SEAMLESS_FAIL_STEP"); f && *f) controller.fail_at(f);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(cfg->socket).parent_path(), ec);
  ::unlink(cfg->socket.c_str());
  auto listener = sys::listen_unix(cfg->socket);
  if (!listener.ok()) {
    std::fprintf(stderr, "seamlessd: error: %s\n", listener.error().message.c_str());
    return 1;
  }
  ::chmod(cfg->socket.c_str(), 0600);
  controller.start();
  controller.read_spool(kSpool);
  SL_LOG(Info, "seamlessd", "listening on `", cfg->socket, "` (", cfg->sinks.size(), " sink(s))");

  struct Session {
    std::unique_ptr<qmp::ControlServer> server;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  std::list<Session> sessions;
  // A notice spooled while this daemon was up but too busy to answer the hook in time
  // waits no longer than this.
  auto spool_read = Clock::now();
  while (!g_stop) {
    if (Clock::now() - spool_read > Millis(5000)) {
      controller.read_spool(kSpool);
      spool_read = Clock::now();
    }
    // Finished sessions are joined as new ones come.
    for (auto it = sessions.begin(); it != sessions.end();) {
      if (it->done) {
        it->thread.join();
        it = sessions.erase(it);
      } else {
        ++it;
      }
    }
    auto peer = sys::accept(listener->get(), Deadline(Millis(500)));
    if (!peer.ok()) {
      if (peer.error().kind != ErrorKind::Timeout) SL_LOG(Warn, "seamlessd", "accept: ", peer.error().message);
      continue;
    }
    Session& s = sessions.emplace_back();
    s.server = std::make_unique<qmp::ControlServer>(kVersion);
    install(*s.server, controller, *cfg);
    s.thread = std::thread([&s, fd = std::make_shared<UniqueFd>(std::move(peer).value()), path = cfg->socket] {
      if (auto r = s.server->serve(std::move(*fd), path); !r.ok())
        SL_LOG(Debug, "seamlessd", "session ended: ", r.error().message);
      s.done = true;
    });
  }
  for (auto& s : sessions) s.server->stop();
  for (auto& s : sessions) s.thread.join();
  ::unlink(cfg->socket.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seamlessd: internal error: %s\n", e.what());
    return 1;
  }
}
