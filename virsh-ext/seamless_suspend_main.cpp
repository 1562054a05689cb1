// SPDX-License-Identifier: Apache-2.0
// seamless-suspend: suspend a libvirt domain to RAM, disk or swap, and resume it.
// The parked state lives in /run/seamless/suspend/DOMAIN.json until resume.
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/sys.h"
#include "hooks/direct_domain.h"
#include "hooks/libvirt_domain.h"
#include "qmp/json.h"

using namespace seamless;

namespace {

constexpr const char* kUsage =
    R"(usage: seamless-suspend suspend [--mode ram|disk|swap] [--prefetch 'PROGRAM ARGS...'] DOMAIN
       seamless-suspend resume DOMAIN
       seamless-suspend status DOMAIN
       seamless-suspend --qmp-socket PATH [--qga-socket PATH] VERB NAME   (plain QEMU)

  suspend   pre-checks, then parks DOMAIN (default mode: swap). swap inflates the balloon
            to the guest's used memory plus a margin, squeezes QEMU's memory cgroup so the
            host swaps the rest out, lifts the limit, runs the prefetch command in the
            guest, and pauses. Any failure rolls back: the VM keeps running, unthrottled.
  resume    undoes suspend (cont + balloon back, or restore from disk).
  status    prints the parked state, if any.

Options:
  -c, --connect URI   libvirt URI (default qemu:///system)
  --qmp-socket PATH   a plain QEMU's own QMP socket instead of a libvirt domain (QEMU must
                      run in a memory cgroup of its own; disk mode quits it and resume
                      relaunches its command line with -incoming)
  --qga-socket PATH   that QEMU's guest agent socket (needed for --prefetch)
  --margin MIB        memory left to the guest above its use (default 48)
  --throttle MIB      cgroup limit while swapping out (default 10)
  --json              print the report as one JSON object
  -h, --help          this text
Environment: SEAMLESS_STATE_DIR (default /run/seamless/suspend).
)";

int fail(const Error& e) {
  std::fprintf(stderr, "seamless-suspend: error: %s\n", e.message.c_str());
  return 1;
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "seamless-suspend: %s (see --help)\n", why.c_str());
  return 2;
}

std::string state_path(const std::string& domain) {
  const char* dir = std::getenv("SEAMLESS_STATE_DIR");
  return std::string(dir ? dir : "/run/seamless/suspend") + "/" + domain + ".json";
}

// While a VM may be throttled or half-parked, termination signals wait: the guard and
// the rollback must finish. They are delivered when the scope ends.
class DeferSignals {
 public:
  DeferSignals() {
    sigset_t s;
    sigemptyset(&s);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&s, sig);
    sigprocmask(SIG_BLOCK, &s, &old_);
  }
  ~DeferSignals() { sigprocmask(SIG_SETMASK, &old_, nullptr); }
  DeferSignals(const DeferSignals&) = delete;
  DeferSignals& operator=(const DeferSignals&) = delete;

 private:
  sigset_t old_;
};

void print_report(const std::string& verb, const std::string& domain, const suspend::Report& r, bool json) {
  double total = 0;
  for (const auto& s : r.steps) total += s.seconds;
  if (json) {
    qmp::ArgWriter steps;
    for (const auto& st : r.steps) steps.real(st.step.c_str(), st.seconds);
    qmp::ArgWriter w;
    w.str("verb", verb)
        .str("domain", domain)
        .real("seconds", total)
        .raw("steps", steps.finish())
        .num("balloon_target", r.balloon_target)
        .num("pressure_relief", r.pressure_relief)
        .num("usage_before", r.usage_before)
        .num("usage_after", r.usage_after)
        .num("usage_parked", r.usage_parked)
        .num("evicted", r.evicted);
    std::printf("%s\n", w.finish().c_str());
    return;
  }
  std::printf("%s %s in %.2f s:", verb.c_str(), domain.c_str(), total);
  for (const auto& s : r.steps) std::printf(" %s %.2f s;", s.step.c_str(), s.seconds);
  std::printf("\n");
  if (r.balloon_target > 0)
    std::printf("  balloon target %lld MiB%s; cgroup usage %lld -> %lld MiB at the squeeze, %lld MiB paused\n",
                static_cast<long long>(r.balloon_target >> 20),
                r.pressure_relief > 0 ? cat(" (+", r.pressure_relief >> 20, " MiB: memory pressure)").c_str() : "",
                static_cast<long long>(r.usage_before >> 20), static_cast<long long>(r.usage_after >> 20),
                static_cast<long long>(r.usage_parked >> 20));
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ' ') {
      if (!cur.empty()) out.push_back(std::move(cur)), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

int main_impl(int argc, char** argv) {
  std::string uri = "qemu:///system", qmp_socket, qga_socket;
  suspend::Options opts;
  bool json = false;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if (a == "-c" || a == "--connect" || a == "--mode" || a == "--prefetch" || a == "--margin" ||
               a == "--throttle" || a == "--qmp-socket" || a == "--qga-socket") {
      const char* v = need();
      if (!v) return usage_error(a + " needs a value");
      if (a == "-c" || a == "--connect")
        uri = v;
      else if (a == "--qmp-socket")
        qmp_socket = v;
      else if (a == "--qga-socket")
        qga_socket = v;
      else if (a == "--mode") {
        auto m = suspend::parse_mode(v);
        if (!m.ok()) return usage_error(m.error().message);
        opts.mode = *m;
      } else if (a == "--prefetch")
        opts.prefetch = split_words(v);
      else {
        char* end = nullptr;
        long n = std::strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || n < 1) return usage_error(a + " needs a positive number of MiB");
        (a == "--margin" ? opts.margin_bytes : opts.throttle_bytes) = int64_t(n) << 20;
      }
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option " + a);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 2) return usage_error("a verb and a DOMAIN are needed");
  const std::string& verb = pos[0];
  const std::string& name = pos[1];
  if (verb != "suspend" && verb != "resume" && verb != "status") return usage_error("unknown verb `" + verb + "`");
  if (!qga_socket.empty() && qmp_socket.empty()) return usage_error("--qga-socket goes with --qmp-socket");
  const std::string state = state_path(name);

  if (verb == "status") {
    auto text = sys::read_file(state);
    if (!text.ok()) {
      std::printf("%s: not parked by seamless\n", name.c_str());
      return 0;
    }
    auto parked = suspend::Parked::from_json(*text);
    if (!parked.ok()) return fail(parked.error().wrap(cat("state file `", state, "`")));
    std::printf("%s: parked (%s), balloon before %lld MiB\n", name.c_str(),
                std::string(to_string(parked->mode)).c_str(), static_cast<long long>(parked->balloon_before >> 20));
    return 0;
  }

  // Exactly one of the two kinds of domain; both stay alive until the end of main.
  std::optional<virt::Connection> conn;
  std::optional<virt::Domain> vdom;
  std::unique_ptr<suspend::Domain> domain;
  if (!qmp_socket.empty()) {
    auto d = suspend::DirectDomain::open(qmp_socket, qga_socket, std::filesystem::path(state).parent_path(), name);
    if (!d.ok()) return fail(d.error());
    domain = std::move(d).value();
  } else {
    auto c = virt::Connection::open(uri);
    if (!c.ok()) return fail(c.error());
    conn.emplace(std::move(c).value());
    auto found = conn->lookup(name);
    if (!found.ok()) return fail(found.error());
    vdom.emplace(std::move(found).value());
    auto d = suspend::LibvirtDomain::open(*vdom);
    if (!d.ok()) return fail(d.error());
    domain = std::move(d).value();
  }
  suspend::Report report;
  DeferSignals defer;

  // The knobs a swap-out changes, recorded until put back: a run killed meanwhile leaves
  // them for this one (suspend puts them back first, resume before it starts).
  opts.limits_record = state.substr(0, state.size() - 5) + ".limits.json";
  if (verb == "suspend") {
    if (std::filesystem::exists(state))
      return fail(
          make_error(ErrorKind::Invalid, "`", name, "` is already parked (state `", state, "`); resume it first"));
    auto host = suspend::host_memory();
    if (!host.ok()) return fail(host.error());
    if (auto pre = suspend::precheck(*domain, opts, *host); !pre.ok()) return fail(pre.error());
    std::filesystem::create_directories(std::filesystem::path(state).parent_path());
    auto parked = suspend::suspend(*domain, opts, &report);
    if (!parked.ok()) return fail(parked.error());
    if (auto w = sys::write_file(state, parked->to_json()); !w.ok()) {
      // Without the record resume would not know the balloon size: undo rather than strand the VM.
      (void)suspend::resume(*domain, *parked);
      return fail(w.error().wrap("recording the parked state (the VM was resumed)"));
    }
    print_report("suspended", name, report, json);
    return 0;
  }
  if (auto put = suspend::put_back_limits(*domain, opts.limits_record); !put.ok()) return fail(put.error());
  auto text = sys::read_file(state);
  if (!text.ok())
    return fail(make_error(ErrorKind::NotFound, "`", name, "` is not parked by seamless (no `", state, "`)"));
  auto parked = suspend::Parked::from_json(*text);
  if (!parked.ok()) return fail(parked.error().wrap(cat("state file `", state, "`")));
  if (auto r = suspend::resume(*domain, *parked, &report); !r.ok()) return fail(r.error());
  std::filesystem::remove(state);
  print_report("resumed", name, report, json);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seamless-suspend: fatal: %s\n", e.what());
    return 1;
  }
}
