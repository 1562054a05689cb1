// SPDX-License-Identifier: Apache-2.0
// A gateway's unix stream connections to processes outside it (systemd's journal behind
// a unit's stdout and stderr, a logger): recorded at dump, and reconnected at each
// restore so CRIU can hand the fresh end in where the old one was.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "guest-agent/criu.h"
#include "guest-agent/procfs.h"
#include "guest-agent/unix_diag.h"
#include "pack/manifest.h"

namespace seamless::guest {

// The pack format (pack/) is the helper's own vocabulary.
using namespace packfmt;

// The outside streams of the tree `pids`, one per socket with every fd holding it. A
// stream whose other end has no name cannot be reached again: an error naming it.
Result<std::vector<OutsideStream>> outside_streams(const Snapshot& snap, const std::vector<pid_t>& pids,
                                                   const std::vector<UnixSocket>& sockets,
                                                   const std::string& proc_root = "/proc");

// The loggers of the tree `pids`: the names of the datagram sockets outside that its
// sockets are connected to (see PackedGateway::loggers). One with no name, or a name
// outside /run, /var/run and /dev/log: an error naming it.
Result<std::vector<std::string>> outside_loggers(const Snapshot& snap, const std::vector<pid_t>& pids,
                                                 const std::vector<UnixSocket>& sockets);

// The directories the tree `pids` needs on a restoring side (PackedGateway::dirs): its
// working directories, and those of the unix sockets it has bound to a path (snmpd's
// AgentX master in /var/agentx).
std::vector<packfmt::Directory> needed_dirs(const Snapshot& snap, const std::vector<pid_t>& pids,
                                            const std::vector<UnixSocket>& sockets,
                                            const std::string& proc_root = "/proc");

// What systemd writes first on a journal stream: identifier, unit, priority (6, info),
// level prefix on, no forwarding to syslog, kmsg or console.
std::string journal_header(const OutsideStream& s);

// Fresh ends for a restore, open (and inherited by CRIU) until this is destroyed.
// Fresh descriptors on a gateway's carried devices (opened here, read-write, inheritable),
// appended to `fds` and `inherit` under CRIU's keys.
Result<void> open_devices(const std::vector<DeviceFd>& devices, std::vector<UniqueFd>* fds,
                          std::vector<InheritFd>* inherit);

struct StreamEnds {
  std::vector<UniqueFd> fds;
  std::vector<InheritFd> inherit;
  std::vector<std::string> warnings;  // streams that could not be reconnected
};

enum class StreamMode {
  Reconnect,  // connect to each peer (the journal gets its header); /dev/null if it is gone
  Dummy,      // a socketpair per stream (throw-away restores)
};

Result<StreamEnds> open_stream_ends(const std::vector<OutsideStream>& streams, StreamMode mode);

}  // namespace seamless::guest
