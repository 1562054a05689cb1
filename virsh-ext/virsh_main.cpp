// SPDX-License-Identifier: Apache-2.0
// virsh-park, virsh-wake, virsh-parked: the operator commands, in virsh's style. They ask
// seamlessd (which owns the sink connections) over its control socket; this one file is
// built as each command (SEAMLESS_VERB).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "controller/config.h"
#include "qmp/json.h"
#include "qmp/socket.h"

using namespace seamless;

namespace {

// Exit codes scripts can rely on (also in the man pages).
enum Exit {
  kOk = 0,
  kFailed = 1,       // the operation failed; it was rolled back (the VM is as it was)
  kUsage = 2,        // bad arguments
  kNoDaemon = 3,     // seamlessd does not answer
  kRefused = 4,      // refused before anything was touched (unknown domain, not parked, ...)
  kInconsistent = 5  // failed and the rollback did not complete: see the message
};

constexpr const char* kVerb = SEAMLESS_VERB;

void usage(FILE* out) {
  const std::string verb = kVerb;
  if (verb == "park")
    std::fputs(
        "usage: virsh-park [OPTIONS] DOMAIN [--mode swap|ram|disk]\n\n"
        "Parks DOMAIN: its listening services move to a sink VM that answers for it, and\n"
        "the VM is suspended (swap by default: balloon, cgroup squeeze, prewarm, pause).\n"
        "It wakes by itself when a real request arrives, or with virsh-wake.\n",
        out);
  else if (verb == "wake")
    std::fputs(
        "usage: virsh-wake [OPTIONS] DOMAIN\n\n"
        "Wakes a parked DOMAIN: its services come home with their connections, and the\n"
        "packets that arrived meanwhile are delivered. Prints the wake's timing breakdown.\n",
        out);
  else
    std::fputs(
        "usage: virsh-parked [OPTIONS] [DOMAIN]\n\n"
        "Lists the parked VMs (mode, sink, memory reclaimed, since when) and the last\n"
        "wake of each VM with its timing breakdown.\n",
        out);
  std::fputs(
      "\nOptions:\n"
      "  -c, --connect URI  libvirt URI (default: $LIBVIRT_DEFAULT_URI, else seamlessd's)\n"
      "  --socket PATH      seamlessd's control socket (default: $SEAMLESS_SOCKET, else\n"
      "                     /run/seamless/seamlessd.sock)\n"
      "  --json             print the result as one JSON object\n"
      "  -q, --quiet        no progress lines\n"
      "  -h, --help         this text\n"
      "Exit codes: 0 done; 1 failed and rolled back (the VM is as it was); 2 usage;\n"
      "3 seamlessd not reachable; 4 refused before anything was touched (unknown or\n"
      "stopped domain, not parked, no sink, no guest agent, swap off, ...); 5 failed\n"
      "and not rolled back completely (see the message).\n",
      out);
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "virsh-%s: %s (see --help)\n", kVerb, why.c_str());
  return kUsage;
}

std::string mib(int64_t bytes) { return cat(bytes >> 20, " MiB"); }

double num(const qmp::Value& v, const char* k) {
  auto it = v.FindMember(k);
  return it != v.MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : 0;
}

void print_steps(const qmp::Value& steps) {
  if (!steps.IsArray()) return;
  for (const auto& s : steps.GetArray())
    if (s.IsObject())
      std::printf("  %-18s %7.2f s\n", qmp::opt_string(s, "step").value_or("?").c_str(), num(s, "seconds"));
}

void print_human(const qmp::Value& r) {
  const std::string verb = kVerb;
  if (verb == "park") {
    std::printf("Domain '%s' parked (%s) on sink '%s' in %.2f s\n", qmp::opt_string(r, "domain").value_or("").c_str(),
                qmp::opt_string(r, "mode").value_or("").c_str(), qmp::opt_string(r, "sink").value_or("").c_str(),
                num(r, "seconds"));
    int64_t before = qmp::opt_int(r, "memory_before").value_or(0), after = qmp::opt_int(r, "memory_after").value_or(0);
    if (before > 0) std::printf("Host memory: %s -> %s\n", mib(before).c_str(), mib(after).c_str());
  } else if (verb == "wake") {
    std::printf("Domain '%s' woken in %.2f s%s\n", qmp::opt_string(r, "domain").value_or("").c_str(), num(r, "seconds"),
                qmp::opt_bool(r, "fallback").value_or(false) ? " (fallback)" : "");
    if (r.HasMember("activity_to_event"))
      std::printf("  activity -> event %.3f s (%s)\n", num(r, "activity_to_event"),
                  qmp::opt_string(r, "trigger").value_or("").c_str());
    std::printf("  hand-back %.2f s | resume %.2f s (in parallel)\n", num(r, "hand_back"), num(r, "resume"));
    std::printf("  transfer %.2f s, restore %.2f s, switch %.2f s, release %.2f s (%lld packets held)\n",
                num(r, "transfer"), num(r, "restore"), num(r, "switch"), num(r, "release"),
                static_cast<long long>(qmp::opt_int(r, "released").value_or(0)));
    return;
  } else {
    auto parked = r.FindMember("parked");
    std::printf(" %-20s %-5s %-16s %-12s %s\n", "Domain", "Mode", "Sink", "Reclaimed", "Parked for");
    std::printf("-------------------------------------------------------------------------\n");
    if (parked != r.MemberEnd() && parked->value.IsArray())
      for (const auto& p : parked->value.GetArray()) {
        if (!p.IsObject()) continue;
        long long since = static_cast<long long>(std::time(nullptr)) - qmp::opt_int(p, "parked_at").value_or(0);
        std::printf(" %-20s %-5s %-16s %-12s %lld s\n", qmp::opt_string(p, "domain").value_or("").c_str(),
                    qmp::opt_string(p, "mode").value_or("").c_str(), qmp::opt_string(p, "sink").value_or("").c_str(),
                    mib(qmp::opt_int(p, "reclaimed").value_or(0)).c_str(), since);
      }
    auto wakes = r.FindMember("last_wakes");
    if (wakes != r.MemberEnd() && wakes->value.IsObject() && wakes->value.MemberCount()) {
      std::printf("\nLast wakes:\n");
      for (const auto& w : wakes->value.GetObject()) {
        const auto& v = w.value;
        if (!v.IsObject()) continue;
        std::printf(
            " %-20s %.2f s (%s): hand-back %.2f | resume %.2f | transfer %.2f | restore %.2f | switch "
            "%.2f | release %.2f\n",
            w.name.GetString(), num(v, "seconds"), qmp::opt_string(v, "trigger").value_or("").c_str(),
            num(v, "hand_back"), num(v, "resume"), num(v, "transfer"), num(v, "restore"), num(v, "switch"),
            num(v, "release"));
      }
    }
    return;
  }
  if (auto s = r.FindMember("steps"); s != r.MemberEnd()) print_steps(s->value);
}

int main_impl(int argc, char** argv) {
  const std::string verb = kVerb;
  std::string domain, mode, uri, socket;
  bool json = false, quiet = false;
  if (const char* e = std::getenv("SEAMLESS_SOCKET"); e && *e) socket = e;
  if (const char* e = std::getenv("LIBVIRT_DEFAULT_URI"); e && *e) uri = e;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](std::string* out) -> bool {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return kOk;
    } else if (a == "--json") {
      json = true;
    } else if (a == "-q" || a == "--quiet") {
      quiet = true;
    } else if (a == "-c" || a == "--connect") {
      if (!value(&uri)) return usage_error(a + " needs a URI");
    } else if (a == "--socket") {
      if (!value(&socket)) return usage_error(a + " needs a path");
    } else if (a == "--mode" && verb == "park") {
      if (!value(&mode)) return usage_error("--mode needs swap, ram or disk");
      if (mode != "swap" && mode != "ram" && mode != "disk") return usage_error("unknown mode `" + mode + "`");
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option " + a);
    } else if (domain.empty()) {
      domain = a;
    } else {
      return usage_error("unexpected argument " + a);
    }
  }
  if (domain.empty() && verb != "parked") return usage_error("a DOMAIN is needed");
  if (socket.empty()) socket = ctl::kDefaultSocket;

  auto c = qmp::QmpSocket::connect(socket, Millis(5000));
  if (!c.ok()) {
    std::fprintf(stderr, "virsh-%s: error: seamlessd does not answer at `%s`: %s\n", kVerb, socket.c_str(),
                 c.error().message.c_str());
    return kNoDaemon;
  }
  if (!uri.empty()) {
    auto st = (*c)->call("query-status", "", Millis(10000));
    if (!st.ok()) {
      std::fprintf(stderr, "virsh-%s: error: %s\n", kVerb, st.error().message.c_str());
      return kNoDaemon;
    }
    auto theirs = qmp::opt_string(st->root(), "connect").value_or("");
    if (theirs != uri) {
      std::fprintf(stderr, "virsh-%s: error: seamlessd manages `%s`, not `%s`\n", kVerb, theirs.c_str(), uri.c_str());
      return kRefused;
    }
  }
  if (!quiet && !json && ::isatty(STDERR_FILENO))
    (*c)->events().subscribe([](const qmp::Event& ev) {
      if (ev.name != "PROGRESS") return;
      const auto& d = ev.data.root();
      const std::string what = qmp::opt_string(d, "what").value_or("");
      const std::string step = qmp::opt_string(d, "step").value_or("");
      if (what == "done")
        std::fprintf(stderr, "  %-18s done in %s s\n", step.c_str(), qmp::opt_string(d, "detail").value_or("").c_str());
      else if (what == "failed")
        std::fprintf(stderr, "  %-18s FAILED: %s\n", step.c_str(), qmp::opt_string(d, "detail").value_or("").c_str());
      else if (what == "undone")
        std::fprintf(stderr, "  %-18s undone\n", step.c_str());
    });
  qmp::ArgWriter args;
  std::string command = verb == "parked" ? "list-parked" : verb;
  if (verb != "parked") args.str("domain", domain);
  if (!mode.empty()) args.str("mode", mode);
  auto r = (*c)->call(command, verb == "parked" ? "" : args.finish(), Millis(3600 * 1000));
  if (!r.ok()) {
    const Error& e = r.error();
    std::fprintf(stderr, "virsh-%s: error: %s\n", kVerb, e.message.c_str());
    if (json) {
      qmp::ArgWriter w;
      std::printf("%s\n", w.boolean("ok", false).str("error", e.message).finish().c_str());
    }
    if (e.kind == ErrorKind::Closed || e.kind == ErrorKind::Timeout) return kNoDaemon;
    if (e.message.find("rolled back") != std::string::npos || e.message.find("woken with") != std::string::npos)
      return kFailed;
    // Refusals come before the first step: no step name in the message.
    if (e.message.find(": step `") == std::string::npos) return kRefused;
    return kInconsistent;
  }
  if (json) {
    std::printf("%s\n", r->dump().c_str());
  } else {
    print_human(r->root());
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "virsh-%s: internal error: %s\n", kVerb, e.what());
    return 1;
  }
}
