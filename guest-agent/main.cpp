// SPDX-License-Identifier: Apache-2.0
// seamless-guest: the in-guest helper, run through qemu-guest-agent's guest-exec.
// Prints exactly one JSON object on stdout (errors too); exit code 0 only on success.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "guest-agent/discover.h"
#include "guest-agent/gateway.h"
#include "qmp/json.h"

using namespace seamless;
using namespace seamless::guest;

namespace {

constexpr const char* kUsage =
    R"(usage: seamless-guest discover
       seamless-guest dump [--out PACK] [--port N]... [--compress xz|gzip] [--no-page-deltas]
                           [--keep-free-heap]
       seamless-guest restore PACK [--dumped PACK]
       seamless-guest prewarm PACK
       seamless-guest ship PACK [--out SHIPMENT] [--path FILE]... [--have OBJECT]...

Runs inside a VM (normally through qemu-guest-agent's guest-exec) and prints one JSON
object on stdout; exit code 0 only on success.

  discover  gateways: process trees owning listening TCP/UDP sockets (IPv4 and IPv6),
            their ports, executables, systemd units and established connections; the
            guest agent, sockets systemd itself holds (socket activation), whatever
            /etc/seamless/guest.conf excludes, and gateways that cannot move (state
            outside what CRIU carries; "cannot_move": true) are left out, each with the
            reason. A dump of all gateways is refused while one cannot move
  dump      checkpoints the gateways with CRIU (established TCP connections kept) into a
            pack (default /run/seamless-guest/gateways.pack); --port limits it to the
            gateways listening on those ports. User activity during the dump aborts it
            and restores the gateways in place ("ok": false, "aborted": why; exit 3).
            Packs are xz-compressed (--compress gzip: larger, several times faster to
            write) and store the pages that are private copies of mapped libraries as
            differences from the library files (--no-page-deltas: as they are), and the
            free chunks of the gateways' glibc malloc heaps as zeros (--keep-free-heap:
            as they are; nothing reads them, but they are what the process left). A
            gateway that is a systemd service's main process leaves its unit active
            meanwhile (a stand-in is its main process; no restart, no stop) until the
            restore gives it the restored process back
  restore   restores a pack here (the wake path). --dumped: PACK is a sink's hand-back of
            that dump (made here, its tasks recorded in DUMPED.ids): refused unless it
            holds those tasks and threads only, each running the executable it ran, with
            credentials and capabilities it held or could have taken by itself
  prewarm   dummy-restores a pack in throw-away namespaces and kills it, so the pages a
            real restore needs are in memory
  ship      writes the files a sink lacks for a pack (its executables, libraries and
            mapped files; --path: only these, paths the pack names) into a shipment
            (default PACK.files, gzip; --compress xz): each checked against the pack,
            with its SHA-256, mode and owner. A file that makes one of the --have names
            (the sink's cache objects, SHA256-MODE-UID-GID) is listed without contents

Environment: SEAMLESS_GUEST_CONF (default /etc/seamless/guest.conf),
             SEAMLESS_GUEST_WORK (default /run/seamless-guest).
)";

int emit_error(const Error& e, int code = 1) {
  qmp::ArgWriter w;
  w.boolean("ok", false).str("error", e.message).str("kind", std::string(to_string(e.kind)));
  std::printf("%s\n", w.finish().c_str());
  return code;
}

int usage_error(const std::string& why) {
  std::fprintf(stderr, "seamless-guest: %s (see --help)\n", why.c_str());
  return emit_error(make_error(ErrorKind::Invalid, why), 2);
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// This process and its ancestors (qemu-ga runs us): never gateways.
std::set<pid_t> keep_out(const Snapshot& snap) {
  std::set<pid_t> out;
  for (pid_t p = ::getpid(); p > 1;) {
    out.insert(p);
    auto it = snap.processes.find(p);
    if (it == snap.processes.end()) break;
    p = it->second.stat.ppid;
  }
  for (const auto& [pid, proc] : snap.processes)
    if (proc.stat.comm == "qemu-ga") out.insert(pid);
  return out;
}

Result<Discovery> find_gateways(Env& env) {
  auto config = SL_TRY(load_config(env_or("SEAMLESS_GUEST_CONF", "/etc/seamless/guest.conf")));
  auto snap = SL_TRY(snapshot());
  auto d = discover(snap, config, keep_out(snap));
  SL_TRY(exclude_unmovable(env, snap, &d));
  return d;
}

int main_impl(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string out = env_or("SEAMLESS_GUEST_WORK", "/run/seamless-guest") + "/gateways.pack";
  bool out_given = false;
  std::set<uint16_t> ports;
  std::vector<std::string> ship_paths, have;
  std::string dumped;
  PackOptions pack_options;
  std::optional<Compression> compression;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--no-page-deltas") {
      pack_options.base_root.clear();
    } else if (a == "--keep-free-heap") {
      pack_options.zero_free_heap = false;
    } else if (a == "--compress") {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      auto c = parse_compression(argv[++i]);
      if (!c.ok()) return usage_error(c.error().message);
      pack_options.compression = *c;
      compression = *c;
    } else if (a == "--dumped") {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      dumped = argv[++i];
    } else if (a == "--path" || a == "--have") {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      (a == "--path" ? ship_paths : have).push_back(argv[++i]);
    } else if (a == "--out" || a == "--port") {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      std::string v = argv[++i];
      if (a == "--out") {
        out = v;
        out_given = true;
      } else {
        char* end = nullptr;
        long p = std::strtol(v.c_str(), &end, 10);
        if (*end != '\0' || p < 1 || p > 65535) return usage_error("`" + v + "` is not a port");
        ports.insert(uint16_t(p));
      }
    } else if (!a.empty() && a[0] == '-') {
      return usage_error("unknown option " + a);
    } else {
      pos.push_back(a);
    }
  }
  if (pos.empty()) return usage_error("a verb is needed");
  const std::string verb = pos[0];
  CriuBinary criu;
  Iptables iptables;
  Env env{&criu, &iptables, nullptr, env_or("SEAMLESS_GUEST_WORK", "/run/seamless-guest")};
  Systemd systemd;
  if (Systemd::running()) env.services = &systemd;

  if (verb == "discover") {
    if (pos.size() != 1) return usage_error("discover takes no arguments");
    auto d = find_gateways(env);
    if (!d.ok()) return emit_error(d.error());
    std::string json = to_json(*d);
    std::printf("{\"ok\":true,%s\n", json.c_str() + 1);
    return 0;
  }
  if (verb == "dump") {
    if (pos.size() != 1) return usage_error("dump takes options only");
    auto config = load_config(env_or("SEAMLESS_GUEST_CONF", "/etc/seamless/guest.conf"));
    if (!config.ok()) return emit_error(config.error());
    auto snap = snapshot();
    if (!snap.ok()) return emit_error(snap.error());
    auto d = discover(*snap, *config, keep_out(*snap));
    if (auto x = exclude_unmovable(env, *snap, &d); !x.ok()) return emit_error(x.error());
    // A port asked for that belongs to what cannot move: refused by name, with the reason.
    for (const auto& e : d.excluded)
      for (uint16_t p : e.ports)
        if (ports.count(p))
          return emit_error(make_error(ErrorKind::Invalid, "port ", p, " (", e.name.empty() ? "?" : e.name, ", pid ",
                                       e.root, ") cannot be moved: ", e.reason));
    // All gateways (a park): one that cannot move would leave its service unanswered.
    for (const auto& e : d.excluded)
      if (ports.empty() && e.cannot_move)
        return emit_error(make_error(ErrorKind::Invalid, "gateway `", e.name, "` (pid ", e.root, ") ", e.reason,
                                     "; nothing was dumped (exclude it in guest.conf to park without it)"));
    std::vector<Gateway> chosen;
    for (auto& g : d.gateways) {
      auto gp = g.ports();
      if (ports.empty() || std::any_of(gp.begin(), gp.end(), [&](uint16_t p) { return ports.count(p) > 0; }))
        chosen.push_back(std::move(g));
    }
    if (chosen.empty())
      return emit_error(make_error(ErrorKind::NotFound,
                                   ports.empty() ? "no gateways found" : "no gateway listens on the given ports"));
    auto r = dump(env, *snap, chosen, out, pack_options);
    if (!r.ok()) return emit_error(r.error());
    std::printf("%s\n", to_json(*r).c_str());
    return r->aborted ? 3 : 0;
  }
  if (verb == "restore" || verb == "prewarm") {
    if (pos.size() != 2) return usage_error(verb + " needs a PACK");
    if (verb == "restore") {
      auto r = restore(env, pos[1], {}, dumped);
      if (!r.ok()) return emit_error(r.error());
      std::printf("%s\n", to_json(*r).c_str());
    } else {
      auto m = prewarm(env, pos[1]);
      if (!m.ok()) return emit_error(m.error());
      std::printf("{\"ok\":true,\"gateways\":%zu}\n", m->gateways.size());
    }
    return 0;
  }
  if (verb == "ship") {
    if (pos.size() != 2) return usage_error("ship needs a PACK");
    ShipRequest req;
    req.pack = pos[1];
    req.out = out_given ? out : pos[1] + ".files";
    req.paths = ship_paths;
    req.have = have;
    if (compression) req.compression = *compression;
    auto r = ship(env, req);
    if (!r.ok()) return emit_error(r.error());
    std::printf("%s\n", to_json(*r).c_str());
    return 0;
  }
  return usage_error("unknown verb `" + verb + "`");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_impl(argc, argv);
  } catch (const std::exception& e) {
    return emit_error(make_error(ErrorKind::System, "internal error: ", e.what()));
  }
}
