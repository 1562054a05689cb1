// SPDX-License-Identifier: Apache-2.0
// /proc parsers and snapshot.
#include "guest-agent/procfs.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "common/sys.h"

namespace seamless::guest {
namespace {

Result<uint64_t> parse_hex(std::string_view s, std::string_view what) {
  if (s.empty() || s.size() > 16) return make_error(ErrorKind::Protocol, "bad ", what, " `", s, "`");
  uint64_t v = 0;
  for (char c : s) {
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                     : -1;
    if (d < 0) return make_error(ErrorKind::Protocol, "bad ", what, " `", s, "`");
    v = v * 16 + uint64_t(d);
  }
  return v;
}

Result<uint64_t> parse_dec(std::string_view s, std::string_view what) {
  if (s.empty() || s.size() > 19) return make_error(ErrorKind::Protocol, "bad ", what, " `", s, "`");
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return make_error(ErrorKind::Protocol, "bad ", what, " `", s, "`");
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

// "0100007F:0016": the address as the kernel stores it (32-bit words in host order).
Result<std::pair<std::string, uint16_t>> parse_endpoint(std::string_view s, Family family) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) return make_error(ErrorKind::Protocol, "bad endpoint `", s, "`");
  std::string_view hex = s.substr(0, colon);
  uint64_t port = SL_TRY(parse_hex(s.substr(colon + 1), "port"));
  if (port > 0xffff) return make_error(ErrorKind::Protocol, "bad port in `", s, "`");
  size_t words = family == Family::V4 ? 1 : 4;
  if (hex.size() != words * 8) return make_error(ErrorKind::Protocol, "bad address `", hex, "`");
  uint32_t raw[4] = {};
  for (size_t i = 0; i < words; ++i) raw[i] = uint32_t(SL_TRY(parse_hex(hex.substr(i * 8, 8), "address")));
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family == Family::V4 ? AF_INET : AF_INET6, raw, text, sizeof text);
  return std::make_pair(std::string(text), uint16_t(port));
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// "socket:[1234]" -> 1234.
std::optional<uint64_t> socket_link_inode(std::string_view target) {
  if (target.rfind("socket:[", 0) != 0 || target.back() != ']') return std::nullopt;
  auto inode = parse_dec(target.substr(8, target.size() - 9), "socket inode");
  return inode.ok() ? std::optional(*inode) : std::nullopt;
}

}  // namespace

bool NetSocket::listening() const {
  if (proto == Proto::Tcp) return state == kTcpListen;
  return state == kUdpUnconnected && remote_port == 0;
}

bool NetSocket::established() const { return proto == Proto::Tcp && state == kTcpEstablished; }

Result<std::vector<NetSocket>> parse_net_table(std::string_view text, Proto proto, Family family) {
  std::vector<NetSocket> out;
  size_t lineno = 0;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (++lineno == 1) continue;  // header
    auto f = fields(line);
    if (f.empty()) continue;
    auto bad = [&](const Error& e) { return e.wrap(cat("socket table line ", lineno)); };
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    if (f.size() < 10) return make_error(ErrorKind::Protocol, "socket table line ", lineno, ": too few fields");
    NetSocket s;
    s.proto = proto;
    s.family = family;
    auto local = parse_endpoint(f[1], family);
    if (!local.ok()) return bad(local.error());
    auto remote = parse_endpoint(f[2], family);
    if (!remote.ok()) return bad(remote.error());
    auto state = parse_hex(f[3], "state");
    if (!state.ok()) return bad(state.error());
    auto inode = parse_dec(f[9], "inode");
    if (!inode.ok()) return bad(inode.error());
    std::tie(s.local_addr, s.local_port) = *local;
    std::tie(s.remote_addr, s.remote_port) = *remote;
    s.state = int(*state);
    s.inode = *inode;
    out.push_back(std::move(s));
  }
  return out;
}

Result<ProcStat> parse_stat(std::string_view text) {
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    return make_error(ErrorKind::Protocol, "bad stat line");
  ProcStat st;
  auto head = fields(text.substr(0, open));
  if (head.size() != 1) return make_error(ErrorKind::Protocol, "bad stat line");
  st.pid = pid_t(SL_TRY(parse_dec(head[0], "pid")));
  st.comm = std::string(text.substr(open + 1, close - open - 1));
  auto rest = fields(text.substr(close + 1));
  // state ppid pgrp session ...
  if (rest.size() < 4 || rest[0].size() != 1) return make_error(ErrorKind::Protocol, "bad stat line of pid ", st.pid);
  st.state = rest[0][0];
  st.ppid = pid_t(SL_TRY(parse_dec(rest[1], "ppid")));
  st.pgrp = pid_t(SL_TRY(parse_dec(rest[2], "pgrp")));
  st.session = pid_t(SL_TRY(parse_dec(rest[3], "session")));
  if (rest.size() > 19) st.start_time = uint64_t(SL_TRY(parse_dec(rest[19], "starttime")));
  return st;
}

Result<uint64_t> parse_kb_field(std::string_view text, std::string_view key) {
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.size() <= key.size() || line.substr(0, key.size()) != key || line[key.size()] != ':') continue;
    std::string_view rest = line.substr(key.size() + 1);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    uint64_t v = 0;
    size_t digits = 0;
    for (; digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9'; ++digits)
      v = v * 10 + uint64_t(rest[digits] - '0');
    if (digits == 0 || rest.substr(digits) != " kB")
      return make_error(ErrorKind::Protocol, "`", key, "` line is not a kB count: `", line, "`");
    return v;
  }
  return make_error(ErrorKind::NotFound, "no `", key, "` line");
}

std::vector<std::string> parse_maps(std::string_view text) {
  std::vector<std::string> out;
  std::set<std::string, std::less<>> seen;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    // address perms offset dev inode pathname; the path is the rest after five fields.
    size_t i = 0;
    for (int field = 0; field < 5 && i < line.size(); ++field) {
      while (i < line.size() && line[i] == ' ') ++i;
      while (i < line.size() && line[i] != ' ') ++i;
    }
    while (i < line.size() && line[i] == ' ') ++i;
    std::string_view path = line.substr(std::min(i, line.size()));
    if (path.empty() || path[0] != '/') continue;  // anonymous, [heap], [vdso], ...
    if (seen.insert(std::string(path)).second) out.emplace_back(path);
  }
  return out;
}

std::vector<std::string> parse_shared_writable_maps(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    auto sp = line.find(' ');
    if (sp == std::string_view::npos || line.size() < sp + 5) continue;
    std::string_view perms = line.substr(sp + 1, 4);  // "rw-s"
    if (perms[1] != 'w' || perms[3] != 's') continue;
    for (const auto& path : parse_maps(line))
      if (std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
  }
  return out;
}

std::vector<pid_t> Snapshot::children_of(pid_t pid) const {
  std::vector<pid_t> out;
  for (const auto& [p, proc] : processes)
    if (proc.stat.ppid == pid) out.push_back(p);
  return out;
}

std::vector<pid_t> Snapshot::tree(pid_t root) const {
  std::vector<pid_t> out;
  if (!processes.count(root)) return out;
  out.push_back(root);
  for (size_t i = 0; i < out.size(); ++i)
    for (pid_t c : children_of(out[i])) out.push_back(c);
  return out;
}

std::optional<uint64_t> fd_socket_inode(pid_t pid, int fd, const std::string& proc_root) {
  auto target = sys::read_link(cat(proc_root, "/", pid, "/fd/", fd));
  return target.ok() ? socket_link_inode(*target) : std::nullopt;
}

Result<std::vector<packfmt::DeviceFd>> foreign_devices(const std::vector<pid_t>& pids, const std::string& proc_root) {
  std::vector<packfmt::DeviceFd> out;
  const uint64_t ours = namespace_inode(proc_root + "/self/ns/mnt");
  // The mounts of each namespace, as its first process (the tree's root: pids come parents
  // first) sees them: a chrooted worker's own mountinfo lists only what is below its root.
  std::map<uint64_t, std::set<uint64_t>> mounts_of;
  for (pid_t pid : pids) {
    const std::string dir = cat(proc_root, "/", pid);
    const uint64_t ns = namespace_inode(dir + "/ns/mnt");
    if (ns == ours) continue;  // CRIU runs in this namespace: it knows every mount
    if (!mounts_of.count(ns)) {
      auto mountinfo = sys::read_file(dir + "/mountinfo");
      if (!mountinfo.ok()) continue;  // gone
      auto& mounts = mounts_of[ns];
      std::istringstream in(*mountinfo);
      for (std::string line; std::getline(in, line);) mounts.insert(std::strtoull(line.c_str(), nullptr, 10));
    }
    const auto& mounts = mounts_of[ns];
    std::error_code ec;
    for (const auto& fd : std::filesystem::directory_iterator(dir + "/fd", ec)) {
      auto target = sys::read_link(fd.path());
      if (!target.ok() || target->empty() || (*target)[0] != '/') continue;  // sockets, pipes, anon inodes
      const std::string name = fd.path().filename();
      auto info = sys::read_file(dir + "/fdinfo/" + name);
      if (!info.ok()) continue;
      auto at = info->find("mnt_id:");
      if (at == std::string::npos) continue;
      const uint64_t mnt = std::strtoull(info->c_str() + at + 7, nullptr, 10);
      if (mounts.count(mnt)) continue;
      struct stat st {};
      if (::stat(fd.path().c_str(), &st) != 0) continue;
      if (!packfmt::carried_device(*target) || !S_ISCHR(st.st_mode))
        return make_error(ErrorKind::Invalid, "fd ", name, " of pid ", pid, " is `", *target,
                          "` from outside the process's mount namespace; CRIU cannot restore that");
      packfmt::DeviceFd d{*target, mnt, uint64_t(st.st_ino)};
      if (std::none_of(out.begin(), out.end(), [&](const auto& o) { return o.mnt_id == mnt && o.inode == d.inode; }))
        out.push_back(d);
    }
  }
  return out;
}

uint64_t namespace_inode(const std::string& link) {
  // "mnt:[4026531841]"
  auto target = sys::read_link(link);
  if (!target.ok()) return 0;
  auto open = target->find('['), close = target->find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return 0;
  return std::strtoull(target->c_str() + open + 1, nullptr, 10);
}

std::string unit_of_cgroup(std::string_view text) {
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    // "0::/system.slice/ssh.service" (v2) or "1:name=systemd:/system.slice/ssh.service" (v1).
    auto first = line.find(':');
    auto second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    std::string_view controllers = std::string_view(line).substr(first + 1, second - first - 1);
    if (!controllers.empty() && controllers != "name=systemd") continue;
    std::string unit = line.substr(line.rfind('/') + 1);
    for (std::string_view suffix : {".service", ".scope"})
      if (unit.size() > suffix.size() && unit.compare(unit.size() - suffix.size(), suffix.size(), suffix) == 0)
        return unit;
  }
  return "";
}

Result<Snapshot> snapshot(const std::string& proc_root) {
  Snapshot snap;
  struct Table {
    const char* name;
    Proto proto;
    Family family;
  };
  for (const Table& t : {Table{"tcp", Proto::Tcp, Family::V4}, Table{"tcp6", Proto::Tcp, Family::V6},
                         Table{"udp", Proto::Udp, Family::V4}, Table{"udp6", Proto::Udp, Family::V6}}) {
    const std::string path = proc_root + "/net/" + t.name;
    auto text = sys::read_file(path);
    if (!text.ok()) {
      if (text.error().code == ENOENT) continue;  // no IPv6 in this kernel
      return std::move(text).error();
    }
    auto socks = SL_TRY_CTX(parse_net_table(*text, t.proto, t.family), "`", path, "`");
    snap.sockets.insert(snap.sockets.end(), socks.begin(), socks.end());
  }
  snap.self_mnt_ns = namespace_inode(proc_root + "/self/ns/mnt");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(proc_root, ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const std::string dir = entry.path();
    auto stat_text = sys::read_file(dir + "/stat");
    if (!stat_text.ok()) continue;  // gone
    auto st = parse_stat(*stat_text);
    if (!st.ok()) return st.error().wrap(cat("`", dir, "/stat`"));
    Process p;
    p.stat = *st;
    if (auto exe = sys::read_link(dir + "/exe"); exe.ok()) p.exe = *exe;
    if (auto cmd = sys::read_file(dir + "/cmdline"); cmd.ok()) p.cmdline = sys::split_nul(*cmd);
    for (const auto& fd : std::filesystem::directory_iterator(dir + "/fd", ec)) {
      auto target = sys::read_link(fd.path());
      if (!target.ok()) continue;
      if (auto inode = socket_link_inode(*target)) {
        auto fdnum = parse_dec(fd.path().filename().string(), "fd");
        if (fdnum.ok()) {
          p.socket_inodes.push_back(*inode);
          p.socket_fds.push_back(int(*fdnum));
          snap.inode_owner.emplace(*inode, p.stat.pid);
        }
      } else if (!target->empty() && (*target)[0] == '/') {
        p.open_files.push_back(*target);
      }
    }
    ec.clear();
    for (const auto& task : std::filesystem::directory_iterator(dir + "/task", ec)) {
      auto tid = parse_dec(task.path().filename().string(), "tid");
      if (tid.ok()) p.threads.push_back(pid_t(*tid));
    }
    ec.clear();
    std::sort(p.threads.begin(), p.threads.end());
    if (auto cgroup = sys::read_file(dir + "/cgroup"); cgroup.ok()) p.unit = unit_of_cgroup(*cgroup);
    p.mnt_ns = namespace_inode(dir + "/ns/mnt");
    snap.processes.emplace(p.stat.pid, std::move(p));
  }
  if (ec) return make_error(ErrorKind::System, "listing `", proc_root, "`: ", ec.message());
  return snap;
}

}  // namespace seamless::guest
