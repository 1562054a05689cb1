// SPDX-License-Identifier: Apache-2.0
// Gateways: the process trees that own listening TCP/UDP sockets, minus what the guest
// agent itself runs and what /etc/seamless/guest.conf excludes.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "guest-agent/procfs.h"

namespace seamless::guest {

// /etc/seamless/guest.conf, one rule per line, '#' comments:
//   include port 8080      exclude port 53
//   include exe /usr/sbin/dropbear     exclude exe /usr/sbin/named
// With any include rule only matching gateways are taken; exclude rules then remove.
struct Config {
  std::set<uint16_t> include_ports, exclude_ports;
  std::set<std::string> include_exes, exclude_exes;
  bool has_includes() const { return !include_ports.empty() || !include_exes.empty(); }
};
Result<Config> parse_config(std::string_view text);
// A missing file is the empty config.
Result<Config> load_config(const std::string& path = "/etc/seamless/guest.conf");

struct Gateway {
  pid_t root = 0;
  std::string name, exe;
  std::string unit;           // the systemd unit of its root ("" = not started by systemd)
  bool own_mount_ns = false;  // a mount namespace of its own (systemd's PrivateTmp=, ProtectSystem=, ...)
  std::vector<pid_t> pids;    // the tree, parents first
  std::vector<NetSocket> listening, established;
  std::vector<pid_t> established_owner;  // parallel to established
  std::vector<uint16_t> ports() const;   // listening ports, sorted, unique
};

struct Excluded {
  pid_t root = 0;
  std::string name, reason;
  std::vector<uint16_t> ports;  // its listening ports, sorted
  // It would have to move for the VM to park (not excluded by choice): a dump of all
  // gateways is refused while it runs.
  bool cannot_move = false;
};

struct Discovery {
  std::vector<Gateway> gateways;
  std::vector<Excluded> excluded;
};

// `keep_out` are pids whose trees are never gateways (the guest agent, this process).
Discovery discover(const Snapshot& snap, const Config& config, const std::set<pid_t>& keep_out);

std::string to_json(const Gateway& g);
std::string to_json(const Discovery& d);

}  // namespace seamless::guest
