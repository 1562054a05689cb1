// SPDX-License-Identifier: Apache-2.0
// Unix socket diagnostics (sock_diag) and a gateway's connections to the outside.
#include "guest-agent/unix_diag.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <set>

#include "common/sys.h"
#include "pack/manifest.h"

namespace seamless::guest {
namespace {

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

Result<UnixSocket> parse_one(const char* data, size_t len) {
  if (len < sizeof(unix_diag_msg))
    return make_error(ErrorKind::Protocol, "sock_diag: a unix_diag_msg of ", len, " bytes (needs ",
                      sizeof(unix_diag_msg), ")");
  const auto msg = load<unix_diag_msg>(data);
  if (msg.udiag_family != AF_UNIX)
    return make_error(ErrorKind::Protocol, "sock_diag: family ", int(msg.udiag_family), " in a unix socket reply");
  UnixSocket s;
  s.inode = msg.udiag_ino;
  s.type = msg.udiag_type;
  s.state = msg.udiag_state;
  size_t off = NLMSG_ALIGN(sizeof(unix_diag_msg));
  while (off + sizeof(rtattr) <= len) {
    const auto attr = load<rtattr>(data + off);
    if (attr.rta_len < sizeof(rtattr) || off + attr.rta_len > len)
      return make_error(ErrorKind::Protocol, "sock_diag: attribute of ", attr.rta_len, " bytes overruns socket ",
                        s.inode, "'s reply");
    const char* payload = data + off + RTA_LENGTH(0);
    const size_t n = attr.rta_len - RTA_LENGTH(0);
    if (attr.rta_type == UNIX_DIAG_PEER) {
      if (n < sizeof(uint32_t)) return make_error(ErrorKind::Protocol, "sock_diag: short peer of socket ", s.inode);
      s.peer = load<uint32_t>(payload);
    } else if (attr.rta_type == UNIX_DIAG_NAME && n > 0) {
      // A path ends at its NUL; an abstract name starts with one and is shown with '@'.
      if (payload[0] == '\0')
        s.name = "@" + std::string(payload + 1, n - 1);
      else
        s.name = std::string(payload, strnlen(payload, n));
    }
    off += RTA_ALIGN(attr.rta_len);
  }
  return s;
}

}  // namespace

Result<std::vector<UnixSocket>> parse_unix_diag(std::string_view replies) {
  std::vector<UnixSocket> out;
  size_t off = 0;
  while (off < replies.size()) {
    if (replies.size() - off < sizeof(nlmsghdr))
      return make_error(ErrorKind::Protocol, "sock_diag: ", replies.size() - off, " bytes left, not a message");
    const auto h = load<nlmsghdr>(replies.data() + off);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > replies.size() - off)
      return make_error(ErrorKind::Protocol, "sock_diag: a message claims ", h.nlmsg_len, " bytes of ",
                        replies.size() - off);
    const char* payload = replies.data() + off + NLMSG_HDRLEN;
    const size_t len = h.nlmsg_len - NLMSG_HDRLEN;
    if (h.nlmsg_type == NLMSG_DONE) return out;
    if (h.nlmsg_type == NLMSG_ERROR) {
      const int code = len >= sizeof(int) ? load<int>(payload) : 0;
      // The kernel's codes are -4095..-1; anything else is no error it sent.
      const int err = code >= -4095 && code < 0 ? -code : 0;
      return make_error(ErrorKind::System, "sock_diag: the kernel answered ", err ? std::strerror(err) : "an error");
    }
    if (h.nlmsg_type == SOCK_DIAG_BY_FAMILY) out.push_back(SL_TRY(parse_one(payload, len)));
    off += NLMSG_ALIGN(h.nlmsg_len);
  }
  return make_error(ErrorKind::Protocol, "sock_diag: the dump ended without NLMSG_DONE");
}

Result<std::vector<UnixSocket>> list_unix_sockets() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return errno_error("sock_diag: socket");
  struct {
    nlmsghdr h;
    unix_diag_req r;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = AF_UNIX;
  req.r.udiag_states = ~0u;
  req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER;
  if (::send(fd.get(), &req, sizeof req, 0) != ssize_t(sizeof req)) return errno_error("sock_diag: send");
  std::string replies;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("sock_diag: recv");
    if (n == 0) return make_error(ErrorKind::Closed, "sock_diag: the kernel closed the dump");
    // Each datagram holds whole messages; the dump ends with NLMSG_DONE (or an error).
    replies.append(buf.data(), size_t(n));
    for (size_t off = 0; off + sizeof(nlmsghdr) <= size_t(n);) {
      const auto h = load<nlmsghdr>(buf.data() + off);
      if (h.nlmsg_type == NLMSG_DONE || h.nlmsg_type == NLMSG_ERROR) return parse_unix_diag(replies);
      if (h.nlmsg_len < sizeof(nlmsghdr)) break;
      off += NLMSG_ALIGN(h.nlmsg_len);
    }
  }
}

bool ExternalStream::journal() const { return peer_name == packfmt::kJournalStdout; }

std::string ExternalStream::describe(const Snapshot& snap) const {
  auto p = snap.processes.find(pid);
  const std::string comm = p == snap.processes.end() ? "?" : p->second.stat.comm;
  std::string what = fd == 1 ? " (stdout)" : fd == 2 ? " (stderr)" : fd == 0 ? " (stdin)" : "";
  return cat("fd ", fd, what, " of ", comm, " (pid ", pid, ") is a unix ",
             dgram ? "datagram socket connected" : "stream connection", " to ",
             peer_name.empty() ? "an unnamed socket of another process" : cat("`", peer_name, "`"),
             journal() ? " (systemd's journal)" : "");
}

std::vector<ExternalStream> external_streams(const Snapshot& snap, const std::vector<pid_t>& tree,
                                             const std::vector<UnixSocket>& sockets, bool datagrams) {
  std::map<uint64_t, const UnixSocket*> by_inode;
  for (const auto& s : sockets) by_inode[s.inode] = &s;
  std::set<uint64_t> inside;
  for (pid_t pid : tree)
    if (auto p = snap.processes.find(pid); p != snap.processes.end())
      inside.insert(p->second.socket_inodes.begin(), p->second.socket_inodes.end());
  std::vector<ExternalStream> out;
  for (pid_t pid : tree) {
    auto p = snap.processes.find(pid);
    if (p == snap.processes.end()) continue;
    const Process& proc = p->second;
    for (size_t i = 0; i < proc.socket_inodes.size() && i < proc.socket_fds.size(); ++i) {
      auto s = by_inode.find(proc.socket_inodes[i]);
      if (s == by_inode.end()) continue;
      const bool dgram = s->second->type == SOCK_DGRAM;
      if (datagrams ? !dgram : (s->second->type != SOCK_STREAM && s->second->type != SOCK_SEQPACKET)) continue;
      const uint64_t peer = s->second->peer;
      if (peer == 0 || inside.count(peer)) continue;
      auto other = by_inode.find(peer);
      out.push_back(
          {pid, proc.socket_fds[i], proc.socket_inodes[i], other == by_inode.end() ? "" : other->second->name, dgram});
    }
  }
  return out;
}

}  // namespace seamless::guest
