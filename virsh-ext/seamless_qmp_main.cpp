// SPDX-License-Identifier: Apache-2.0
// seamless-qmp: talk to a domain's QEMU monitor and guest agent, through libvirt or
// through QEMU's own sockets. The operator's window onto the qmp/ library.
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/sys.h"
#include "qmp/guest.h"
#include "qmp/libvirt.h"
#include "qmp/socket.h"

using namespace seamless;

namespace {

constexpr const char* kUsage = R"(usage: seamless-qmp [OPTIONS] DOMAIN VERB [ARGS...]
       seamless-qmp --qmp-socket PATH --qga-socket PATH - VERB [ARGS...]

Verbs:
  status                      QEMU run state (query-status)
  ping                        guest agent round trip (guest-sync + guest-ping + guest-info)
  exec -- PROGRAM [ARGS...]   run a program in the guest; prints its output, exits with its code
  push LOCAL GUEST_PATH       copy a file into the guest (verified by SHA-256)
  pull GUEST_PATH LOCAL       copy a file out of the guest (verified by SHA-256)
  qmp COMMAND [ARGS_JSON]     any QMP command; prints the JSON reply
  qga COMMAND [ARGS_JSON]     any guest agent command; prints the JSON reply

Options:
  -c, --connect URI      libvirt URI (default qemu:///system)
  --qmp-socket PATH      use QEMU's own QMP socket instead of libvirt (DOMAIN is then "-")
  --qga-socket PATH      use QEMU's own guest agent socket instead of libvirt
  --timeout SECONDS      per-command timeout (default 30)
  -h, --help             this text
)";

int fail(const Error& e) {
  std::fprintf(stderr, "seamless-qmp: error: %s\n", e.message.c_str());
  return 1;
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "seamless-qmp: %s\n%s", why.c_str(), kUsage);
  return 2;
}

struct Options {
  std::string uri = "qemu:///system", qmp_socket, qga_socket, domain, verb;
  Millis timeout = Millis(30000);
  std::vector<std::string> args;
};

// Owns whichever transports the options ask for. Not movable: the transports refer
// to the domain handle it holds.
struct Session {
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  std::optional<virt::Connection> conn;
  std::optional<virt::Domain> domain;
  std::unique_ptr<qmp::Channel> monitor, agent;

  static Result<std::unique_ptr<Session>> open(const Options& o, bool need_monitor, bool need_agent) {
    auto owned = std::make_unique<Session>();
    Session& s = *owned;
    bool via_libvirt = (need_monitor && o.qmp_socket.empty()) || (need_agent && o.qga_socket.empty());
    if (via_libvirt) {
      if (o.domain == "-") return make_error(ErrorKind::Invalid, "a socket path or a domain name is needed");
      s.conn.emplace(SL_TRY(virt::Connection::open(o.uri)));
      s.domain.emplace(SL_TRY(s.conn->lookup(o.domain)));
      if (!SL_TRY(s.domain->active())) return make_error(ErrorKind::Invalid, "domain `", o.domain, "` is not running");
    }
    if (need_monitor) {
      if (!o.qmp_socket.empty())
        s.monitor = SL_TRY(qmp::QmpSocket::connect(o.qmp_socket, o.timeout));
      else
        s.monitor = SL_TRY(qmp::LibvirtMonitor::attach(*s.domain));
    }
    if (need_agent) {
      if (!o.qga_socket.empty())
        s.agent = SL_TRY(qmp::QgaSocket::connect(o.qga_socket, o.timeout));
      else
        s.agent = std::make_unique<qmp::LibvirtAgent>(*s.domain);
    }
    return owned;
  }
};

int run_verb(const Options& o) {
  const std::string& v = o.verb;
  bool monitor = v == "status" || v == "qmp";
  bool agent = v == "ping" || v == "exec" || v == "push" || v == "pull" || v == "qga";
  if (!monitor && !agent) return usage_error("unknown verb `" + v + "`");
  auto session = Session::open(o, monitor, agent);
  if (!session.ok()) return fail(session.error());

  if (v == "status") {
    auto st = qmp::execute(*(*session)->monitor, qmp::QueryStatus{}, o.timeout);
    if (!st.ok()) return fail(st.error());
    std::printf("%s (running: %s)\n", st->status.c_str(), st->running ? "yes" : "no");
    return 0;
  }
  if (v == "qmp" || v == "qga") {
    if (o.args.empty() || o.args.size() > 2) return usage_error(v + " needs COMMAND [ARGS_JSON]");
    std::string args = o.args.size() == 2 ? o.args[1] : "";
    if (!args.empty()) {
      auto parsed = qmp::parse(args);
      if (!parsed.ok() || !parsed->root().IsObject()) return usage_error("ARGS_JSON must be a JSON object");
    }
    auto& ch = v == "qmp" ? *(*session)->monitor : *(*session)->agent;
    auto r = ch.call(o.args[0], args, o.timeout);
    if (!r.ok()) return fail(r.error());
    std::printf("%s\n", r->dump().c_str());
    return 0;
  }
  if (v == "ping") {
    auto start = Clock::now();
    auto p = qmp::execute(*(*session)->agent, qmp::GuestPing{}, o.timeout);
    if (!p.ok()) return fail(p.error());
    double rtt = seconds_since(start) * 1000;
    auto info = qmp::execute(*(*session)->agent, qmp::GuestInfo{}, o.timeout);
    if (!info.ok()) return fail(info.error());
    std::printf("guest agent %s answered in %.1f ms (%zu commands enabled)\n", info->version.c_str(), rtt,
                info->enabled_commands.size());
    return 0;
  }
  if (v == "exec") {
    if (o.args.empty()) return usage_error("exec needs a PROGRAM");
    qmp::RunOptions ro;
    ro.timeout = o.timeout;
    auto st = qmp::guest_run(*(*session)->agent, o.args[0], {o.args.begin() + 1, o.args.end()}, ro);
    if (!st.ok()) return fail(st.error());
    std::fwrite(st->out.data(), 1, st->out.size(), stdout);
    std::fwrite(st->err.data(), 1, st->err.size(), stderr);
    if (st->signal) return 128 + static_cast<int>(*st->signal);
    return static_cast<int>(st->exitcode.value_or(1));
  }
  if (o.args.size() != 2) return usage_error(v + " needs two paths");
  if (v == "push") {
    auto data = sys::read_file(o.args[0], size_t(1) << 32);
    if (!data.ok()) return fail(data.error());
    auto start = Clock::now();
    if (auto r = qmp::write_guest_file(*(*session)->agent, o.args[1], *data); !r.ok()) return fail(r.error());
    std::printf("pushed %zu bytes in %.2f s (verified)\n", data->size(), seconds_since(start));
    return 0;
  }
  auto start = Clock::now();
  auto data = qmp::read_guest_file(*(*session)->agent, o.args[0]);
  if (!data.ok()) return fail(data.error());
  if (auto r = sys::write_file(o.args[1], *data); !r.ok()) return fail(r.error());
  std::printf("pulled %zu bytes in %.2f s (verified)\n", data->size(), seconds_since(start));
  return 0;
}

}  // namespace

static int main_impl(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      (void)name;
      return std::string(argv[++i]);
    };
    if (!positional.empty() && positional.size() >= 2) {
      if (a == "--" && positional.size() == 2 && o.args.empty()) continue;
      o.args.push_back(a);
      continue;
    }
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "-c" || a == "--connect" || a == "--qmp-socket" || a == "--qga-socket" || a == "--timeout") {
      auto v = value(a.c_str());
      if (!v) return usage_error("option " + a + " needs a value");
      if (a == "-c" || a == "--connect")
        o.uri = *v;
      else if (a == "--qmp-socket")
        o.qmp_socket = *v;
      else if (a == "--qga-socket")
        o.qga_socket = *v;
      else {
        char* end = nullptr;
        double s = std::strtod(v->c_str(), &end);
        if (end == v->c_str() || *end != '\0' || s <= 0) return usage_error("--timeout needs a positive number");
        o.timeout = Millis(static_cast<long long>(s * 1000));
      }
      continue;
    }
    if (a.size() > 1 && a[0] == '-' && a != "-") return usage_error("unknown option " + a);
    positional.push_back(a);
  }
  if (positional.size() < 2) return usage_error("DOMAIN and VERB are required");
  o.domain = positional[0];
  o.verb = positional[1];
  return run_verb(o);
}

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {  // only allocation failures and the like reach here
    std::fprintf(stderr, "seamless-qmp: fatal: %s\n", e.what());
    return 1;
  }
}
