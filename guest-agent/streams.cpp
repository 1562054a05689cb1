// SPDX-License-Identifier: Apache-2.0
// Outside streams: found at dump, reconnected at restore.
#include "guest-agent/streams.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/sys.h"
#include "common/time.h"

namespace seamless::guest {

Result<std::vector<OutsideStream>> outside_streams(const Snapshot& snap, const std::vector<pid_t>& pids,
                                                   const std::vector<UnixSocket>& sockets,
                                                   const std::string& proc_root) {
  std::vector<OutsideStream> out;
  std::map<uint64_t, size_t> index;  // inode -> position in out
  for (const auto& e : external_streams(snap, pids, sockets)) {
    if (e.peer_name.empty())
      return make_error(ErrorKind::Invalid, "cannot checkpoint: ", e.describe(snap),
                        ", which cannot be reached again after a restore (CRIU takes only one end of it)");
    auto [it, fresh] = index.emplace(e.inode, out.size());
    if (fresh) {
      OutsideStream s;
      s.inode = e.inode;
      s.peer = e.peer_name;
      s.identifier = snap.processes.at(e.pid).stat.comm;
      auto cgroup = sys::read_file(cat(proc_root, "/", e.pid, "/cgroup"));
      s.unit = cgroup.ok() ? unit_of_cgroup(*cgroup) : "";
      out.push_back(std::move(s));
    }
    out[it->second].holders.push_back({e.pid, e.fd});
  }
  return out;
}

Result<std::vector<std::string>> outside_loggers(const Snapshot& snap, const std::vector<pid_t>& pids,
                                                 const std::vector<UnixSocket>& sockets) {
  std::vector<std::string> out;
  for (const auto& d : external_streams(snap, pids, sockets, true)) {
    // CRIU connects it again by name (--ext-unix-sk): the other end must have one that a
    // restoring side can reach, and a sink can stand in for.
    if (!packfmt::valid_logger(d.peer_name))
      return make_error(ErrorKind::Invalid, "cannot checkpoint: ", d.describe(snap),
                        ", which cannot be connected again after a restore (only named sockets below /run, "
                        "/var/run or /dev/log can)");
    if (std::find(out.begin(), out.end(), d.peer_name) == out.end()) out.push_back(d.peer_name);
  }
  return out;
}

std::vector<packfmt::Directory> needed_dirs(const Snapshot& snap, const std::vector<pid_t>& pids,
                                            const std::vector<UnixSocket>& sockets, const std::string& proc_root) {
  std::map<uint64_t, const UnixSocket*> by_inode;
  for (const auto& s : sockets) by_inode[s.inode] = &s;
  std::vector<packfmt::Directory> out;
  // `dir` as process `pid` sees it (its root: its own mount namespace).
  auto add = [&](pid_t pid, const std::string& dir) {
    if (dir == "/" || !packfmt::is_plain_absolute(dir)) return;
    for (const auto& d : out)
      if (d.path == dir) return;
    struct stat st {};
    if (::stat(cat(proc_root, "/", pid, "/root", dir).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
    out.push_back({dir, uint32_t(st.st_mode & 01777), st.st_uid, st.st_gid});
  };
  for (pid_t pid : pids) {
    auto p = snap.processes.find(pid);
    if (p == snap.processes.end()) continue;
    std::error_code ec;
    add(pid, std::filesystem::read_symlink(cat(proc_root, "/", pid, "/cwd"), ec).string());
    for (uint64_t inode : p->second.socket_inodes) {
      auto s = by_inode.find(inode);
      if (s == by_inode.end() || s->second->name.empty() || s->second->name[0] != '/') continue;
      const std::string& name = s->second->name;
      add(pid, name.substr(0, name.rfind('/')));
    }
  }
  return out;
}

std::string journal_header(const OutsideStream& s) { return cat(s.identifier, "\n", s.unit, "\n6\n1\n0\n0\n0\n"); }

namespace {

Result<UniqueFd> connect_to(const std::string& peer) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (peer.empty() || peer.size() >= sizeof addr.sun_path)
    return make_error(ErrorKind::Invalid, "`", peer, "` is not a unix socket address");
  std::memcpy(addr.sun_path, peer.data(), peer.size());
  if (peer[0] == '@') addr.sun_path[0] = '\0';  // abstract
  // Not close-on-exec: CRIU inherits it.
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
  if (!fd.valid()) return errno_error("socket");
  const auto len = socklen_t(offsetof(sockaddr_un, sun_path) + peer.size() + (peer[0] == '@' ? 0 : 1));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0)
    return errno_error(cat("connecting to `", peer, "`"));
  return fd;
}

}  // namespace

Result<void> open_devices(const std::vector<DeviceFd>& devices, std::vector<UniqueFd>* fds,
                          std::vector<InheritFd>* inherit) {
  for (const auto& d : devices) {
    if (!carried_device(d.path)) return make_error(ErrorKind::Invalid, "`", d.path, "` is not a carried device");
    UniqueFd fd(::open(d.path.c_str(), O_RDWR));  // not close-on-exec: CRIU inherits it
    if (!fd.valid()) return errno_error(cat("opening `", d.path, "`"));
    inherit->push_back({fd.get(), d.key()});
    fds->push_back(std::move(fd));
  }
  return ok();
}

Result<StreamEnds> open_stream_ends(const std::vector<OutsideStream>& streams, StreamMode mode) {
  StreamEnds ends;
  for (const auto& s : streams) {
    UniqueFd fd;
    if (mode == StreamMode::Dummy) {
      int pair[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return errno_error("socketpair");
      fd.reset(pair[0]);
      ::fcntl(pair[1], F_SETFD, FD_CLOEXEC);
      ends.fds.emplace_back(pair[1]);
    } else if (auto c = connect_to(s.peer); c.ok()) {
      fd = std::move(c).value();
      if (s.journal())
        SL_TRY_CTX(sys::write_all(fd.get(), journal_header(s), Deadline(Millis(5000))), "the journal's stream header");
    } else {
      // The gateway must come back even when its log is gone: its output goes nowhere.
      ends.warnings.push_back(cat(c.error().message, ": ", s.identifier, "'s output goes to /dev/null"));
      fd.reset(::open("/dev/null", O_RDWR));
      if (!fd.valid()) return errno_error("open /dev/null");
    }
    ends.inherit.push_back({fd.get(), cat("socket:[", s.inode, "]")});
    ends.fds.push_back(std::move(fd));
  }
  return ends;
}

}  // namespace seamless::guest
