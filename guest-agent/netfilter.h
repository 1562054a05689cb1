// SPDX-License-Identifier: Apache-2.0
// The netfilter seam of the guest helper: counting user activity that reaches the
// gateways while they are dumped, holding new connections off while they are away, and
// removing the connection locks CRIU's dump left.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::guest {

struct Activity {
  uint64_t new_connections = 0;  // TCP SYNs to a gateway port
  uint64_t data_packets = 0;     // TCP segments with PSH to a gateway port
  uint64_t datagrams = 0;        // UDP to a gateway port
  // What aborts a dump: a new peer. Data on a connection the gateway has is no reason:
  // the segment is in the dumped socket, or CRIU's lock drops it and the client sends it
  // again to wherever the gateway is next, where it is judged by what the gateway does
  // with it (a sink wakes the VM for a command typed, not for an SSH keep-alive).
  bool any() const { return new_connections || datagrams; }
  std::string describe() const;
};

class Netfilter {
 public:
  virtual ~Netfilter() = default;
  // Starts counting packets to these ports (raw table, before CRIU's DROP rules).
  virtual Result<void> watch(const std::vector<uint16_t>& tcp_ports, const std::vector<uint16_t>& udp_ports) = 0;
  virtual Result<Activity> read_watch() = 0;
  virtual void unwatch() = 0;
  // Deletes every connection lock CRIU added (its rules carry the SOCCR mark match).
  virtual Result<int> clear_criu_locks() = 0;
  // Once the gateways are dumped, their ports have no listener here: a SYN would get a
  // reset ("connection refused"). It is dropped instead (after the watch counts it), so
  // the client's retransmission reaches the sink, or the gateway restored here.
  virtual Result<void> hold_new(const std::vector<uint16_t>& tcp_ports) = 0;
  virtual void release_new() = 0;
};

class Iptables final : public Netfilter {
 public:
  Result<void> watch(const std::vector<uint16_t>& tcp_ports, const std::vector<uint16_t>& udp_ports) override;
  Result<Activity> read_watch() override;
  void unwatch() override;
  Result<int> clear_criu_locks() override;
  Result<void> hold_new(const std::vector<uint16_t>& tcp_ports) override;
  void release_new() override;
};

// Parses `iptables -t raw -L SEAMLESS-WATCH -v -x -n` output into counts (rule order:
// syn, psh, udp, as watch() installs them).
Result<Activity> parse_watch_counters(std::string_view listing);
// The `-D ...` argument lists that undo CRIU's lock rules in `iptables-save` output.
std::vector<std::vector<std::string>> criu_lock_deletions(std::string_view save_output);

}  // namespace seamless::guest
