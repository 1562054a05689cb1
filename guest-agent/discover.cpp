// SPDX-License-Identifier: Apache-2.0
// Gateway discovery.
#include "guest-agent/discover.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/sys.h"
#include "qmp/json.h"

namespace seamless::guest {
namespace {

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The topmost ancestor of pid below init (pid 1) or the kernel (pid 0).
pid_t tree_root(const Snapshot& snap, pid_t pid) {
  pid_t cur = pid;
  for (int guard = 0; guard < 4096; ++guard) {
    auto it = snap.processes.find(cur);
    if (it == snap.processes.end()) return cur;
    pid_t parent = it->second.stat.ppid;
    if (parent <= 1 || !snap.processes.count(parent)) return cur;
    cur = parent;
  }
  return cur;
}

bool under(const Snapshot& snap, pid_t pid, const std::set<pid_t>& ancestors) {
  for (int guard = 0; pid > 0 && guard < 4096; ++guard) {
    if (ancestors.count(pid)) return true;
    auto it = snap.processes.find(pid);
    if (it == snap.processes.end()) return false;
    pid = it->second.stat.ppid;
  }
  return false;
}

std::string endpoint(const std::string& addr, uint16_t port, Family family) {
  return family == Family::V6 ? cat("[", addr, "]:", port) : cat(addr, ":", port);
}

void socket_json(qmp::ArgWriter& w, const NetSocket& s) {
  w.str("proto", s.proto == Proto::Tcp ? "tcp" : "udp").str("family", s.family == Family::V4 ? "ipv4" : "ipv6");
  w.str("addr", s.local_addr).num("port", s.local_port);
}

}  // namespace

Result<Config> parse_config(std::string_view text) {
  Config c;
  std::istringstream in{std::string(text)};
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string verb, kind, value, extra;
    if (!(words >> verb)) continue;
    if (!(words >> kind >> value) || (words >> extra) || (verb != "include" && verb != "exclude") ||
        (kind != "port" && kind != "exe"))
      return make_error(ErrorKind::Invalid, "line ", lineno, ": expected `include|exclude port N|exe PATH`, got `",
                        line, "`");
    bool inc = verb == "include";
    if (kind == "port") {
      char* end = nullptr;
      long port = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || port < 1 || port > 65535)
        return make_error(ErrorKind::Invalid, "line ", lineno, ": `", value, "` is not a port number");
      (inc ? c.include_ports : c.exclude_ports).insert(uint16_t(port));
    } else {
      if (value.empty() || value[0] != '/')
        return make_error(ErrorKind::Invalid, "line ", lineno, ": `", value, "` is not an absolute path");
      (inc ? c.include_exes : c.exclude_exes).insert(value);
    }
  }
  return c;
}

Result<Config> load_config(const std::string& path) {
  auto text = sys::read_file(path);
  if (!text.ok()) {
    if (text.error().code == ENOENT) return Config{};
    return std::move(text).error();
  }
  return SL_TRY_CTX(parse_config(*text), "`", path, "`");
}

std::vector<uint16_t> Gateway::ports() const {
  std::vector<uint16_t> out;
  for (const auto& s : listening) out.push_back(s.local_port);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Discovery discover(const Snapshot& snap, const Config& config, const std::set<pid_t>& keep_out) {
  std::map<pid_t, Gateway> by_root;
  std::map<pid_t, std::string> excluded;  // root -> reason
  std::map<pid_t, std::set<uint16_t>> excluded_ports;
  for (const auto& s : snap.sockets) {
    if (!s.listening()) continue;
    auto owner = snap.inode_owner.find(s.inode);
    if (owner == snap.inode_owner.end()) continue;  // a kernel socket, or another netns
    pid_t pid = owner->second;
    pid_t root = tree_root(snap, pid);
    if (pid == 1) {
      excluded.emplace(1,
                       "the listening socket belongs to init (systemd socket activation), which would go on "
                       "accepting on it while the service is away: it cannot be moved and stays here");
      excluded_ports[1].insert(s.local_port);
      continue;
    }
    if (under(snap, pid, keep_out)) {
      excluded.emplace(root, "the guest agent's own process tree");
      excluded_ports[root].insert(s.local_port);
      continue;
    }
    auto& g = by_root[root];
    g.root = root;
    g.listening.push_back(s);
  }
  Discovery out;
  for (auto& [root, g] : by_root) {
    const Process& rp = snap.processes.at(root);
    g.exe = rp.exe;
    g.unit = rp.unit;
    g.own_mount_ns = rp.mnt_ns != 0 && snap.self_mnt_ns != 0 && rp.mnt_ns != snap.self_mnt_ns;
    g.name = !rp.exe.empty() ? basename_of(rp.exe) : rp.stat.comm;
    g.pids = snap.tree(root);
    std::set<std::string> exes;
    for (pid_t p : g.pids) exes.insert(snap.processes.at(p).exe);
    auto ports = g.ports();
    auto port_in = [&](const std::set<uint16_t>& set) {
      return std::any_of(ports.begin(), ports.end(), [&](uint16_t p) { return set.count(p) > 0; });
    };
    auto exe_in = [&](const std::set<std::string>& set) {
      return std::any_of(exes.begin(), exes.end(), [&](const std::string& e) { return set.count(e) > 0; });
    };
    std::string reason;
    if (config.has_includes() && !port_in(config.include_ports) && !exe_in(config.include_exes))
      reason = "not included by the configuration";
    else if (port_in(config.exclude_ports))
      reason = "a port is excluded by the configuration";
    else if (exe_in(config.exclude_exes))
      reason = "its executable is excluded by the configuration";
    if (!reason.empty()) {
      out.excluded.push_back({root, g.name, reason, ports});
      continue;
    }
    std::set<pid_t> members(g.pids.begin(), g.pids.end());
    for (const auto& s : snap.sockets) {
      if (!s.established()) continue;
      auto owner = snap.inode_owner.find(s.inode);
      if (owner != snap.inode_owner.end() && members.count(owner->second)) {
        g.established.push_back(s);
        g.established_owner.push_back(owner->second);
      }
    }
    out.gateways.push_back(std::move(g));
  }
  for (const auto& [root, reason] : excluded) {
    auto it = snap.processes.find(root);
    const auto& ports = excluded_ports[root];
    out.excluded.push_back({root, it == snap.processes.end() ? "" : it->second.stat.comm, reason,
                            std::vector<uint16_t>(ports.begin(), ports.end())});
  }
  return out;
}

std::string to_json(const Gateway& g) {
  std::string listening = "[", established = "[", pids = "[";
  for (size_t i = 0; i < g.listening.size(); ++i) {
    qmp::ArgWriter w;
    socket_json(w, g.listening[i]);
    listening += (i ? "," : "") + w.finish();
  }
  for (size_t i = 0; i < g.established.size(); ++i) {
    const auto& s = g.established[i];
    qmp::ArgWriter w;
    w.str("proto", "tcp").num("pid", g.established_owner[i]);
    w.str("local", endpoint(s.local_addr, s.local_port, s.family));
    w.str("remote", endpoint(s.remote_addr, s.remote_port, s.family));
    established += (i ? "," : "") + w.finish();
  }
  for (size_t i = 0; i < g.pids.size(); ++i) pids += cat(i ? "," : "", g.pids[i]);
  qmp::ArgWriter w;
  w.num("root", g.root).str("name", g.name).str("exe", g.exe);
  if (!g.unit.empty()) w.str("unit", g.unit);
  if (g.own_mount_ns) w.boolean("own_mount_ns", true);
  w.raw("pids", pids + "]").raw("listening", listening + "]").raw("established", established + "]");
  return w.finish();
}

std::string to_json(const Discovery& d) {
  std::string gws = "[", ex = "[";
  for (size_t i = 0; i < d.gateways.size(); ++i) gws += (i ? "," : "") + to_json(d.gateways[i]);
  for (size_t i = 0; i < d.excluded.size(); ++i) {
    qmp::ArgWriter w;
    w.num("root", d.excluded[i].root).str("name", d.excluded[i].name).str("reason", d.excluded[i].reason);
    if (d.excluded[i].cannot_move) w.boolean("cannot_move", true);
    std::string ports = "[";
    for (size_t j = 0; j < d.excluded[i].ports.size(); ++j) ports += cat(j ? "," : "", d.excluded[i].ports[j]);
    w.raw("ports", ports + "]");
    ex += (i ? "," : "") + w.finish();
  }
  qmp::ArgWriter w;
  w.raw("gateways", gws + "]").raw("excluded", ex + "]");
  return w.finish();
}

}  // namespace seamless::guest
