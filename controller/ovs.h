// SPDX-License-Identifier: Apache-2.0
// The traffic switch of a park: OpenFlow rules, tagged with a per-domain cookie, that
// send everything for a parked VM (frames to its MAC, ARP for its IPv4 addresses, IPv6
// neighbour solicitations for its IPv6 addresses) to the sink's port. Installed and
// removed as one bundle (all or nothing). Open vSwitch is driven through ovs-vsctl and
// ovs-ofctl, as libvirt itself does; the Runner seam lets unit tests see the commands.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::ctl {

// What a redirect is made of. Every field is validated before it reaches a flow.
struct Redirect {
  uint64_t cookie = 0;
  std::string mac;                // the parked VM's
  std::vector<std::string> ipv4;  // its addresses (no prefix length)
  std::vector<std::string> ipv6;
  std::string to_mac;  // the sink VM's NIC: its port receives the traffic
};

// The cookie of a domain's flows: stable per domain name, high bits mark seamless.
uint64_t cookie_for(const std::string& domain);
bool is_seamless_cookie(uint64_t cookie);

Result<void> check_mac(const std::string& mac);
Result<void> check_ipv4(const std::string& ip);
Result<void> check_ipv6(const std::string& ip);

// The flows of a redirect to OpenFlow port `port`, one per line (ovs-ofctl syntax).
Result<std::string> redirect_flows(const Redirect& r, const std::string& port);

class Switch {
 public:
  virtual ~Switch() = default;
  // Sends the VM's traffic to the sink (replacing flows with the same cookie).
  virtual Result<void> redirect(const Redirect& r) = 0;
  // Removes the flows with this cookie (nothing to remove is fine).
  virtual Result<void> clear(uint64_t cookie) = 0;
  // Cookies of seamless flows present now (reconciliation).
  virtual Result<std::vector<uint64_t>> cookies() = 0;
};

// Runs a command with optional standard input; returns its standard output.
using Runner = std::function<Result<std::string>(const std::vector<std::string>& argv, const std::string& input)>;
Result<std::string> run_command(const std::vector<std::string>& argv, const std::string& input);

class OvsSwitch final : public Switch {
 public:
  explicit OvsSwitch(Runner runner = run_command) : run_(std::move(runner)) {}
  Result<void> redirect(const Redirect& r) override;
  Result<void> clear(uint64_t cookie) override;
  Result<std::vector<uint64_t>> cookies() override;
  // The bridge and OpenFlow port of the interface carrying `mac` (libvirt records a
  // domain NIC's MAC in external_ids:attached-mac).
  struct Port {
    std::string bridge, ofport;
  };
  Result<Port> port_of(const std::string& mac);
  Result<std::vector<std::string>> bridges();

 private:
  Runner run_;
};

}  // namespace seamless::ctl
