// SPDX-License-Identifier: Apache-2.0
// Unix sockets as the kernel's sock_diag reports them (inode, type, peer, bound name), and
// the stream connections a gateway holds to processes outside it — systemd's journal
// behind a unit's stdout and stderr, a logger, a database's socket. CRIU cannot take one
// end of such a connection without the other.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "guest-agent/procfs.h"

namespace seamless::guest {

struct UnixSocket {
  uint64_t inode = 0;
  uint64_t peer = 0;  // the inode of the other end; 0: none
  int type = 0;       // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
  int state = 0;      // TCP_ESTABLISHED, TCP_LISTEN, ...
  std::string name;   // bound path; abstract names start with '@'; "" when unbound
};

// The replies of a sock_diag dump (netlink messages, NLMSG_DONE last). Malformed or
// truncated messages and netlink errors are errors naming what is wrong.
Result<std::vector<UnixSocket>> parse_unix_diag(std::string_view replies);

// Every unix socket of this network namespace, through NETLINK_SOCK_DIAG.
Result<std::vector<UnixSocket>> list_unix_sockets();

struct ExternalStream {
  pid_t pid = 0;
  int fd = -1;
  uint64_t inode = 0;
  std::string peer_name;  // the name the other end was reached by ("" when unnamed)
  bool dgram = false;     // a datagram socket connected to the other end (syslog's /dev/log)
  bool journal() const;   // systemd's journal stream (a unit's stdout/stderr)
  std::string describe(const Snapshot& snap) const;
};

// The stream (and seqpacket) unix connections whose other end no process of `tree` holds;
// with `datagrams`, the datagram sockets connected to a peer outside it instead.
std::vector<ExternalStream> external_streams(const Snapshot& snap, const std::vector<pid_t>& tree,
                                             const std::vector<UnixSocket>& sockets, bool datagrams = false);

}  // namespace seamless::guest
