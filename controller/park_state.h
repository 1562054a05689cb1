// SPDX-License-Identifier: Apache-2.0
// What a park leaves behind and a wake needs, kept where the operator sees it: in the
// libvirt domain's live metadata under the seamless XML namespace (`virsh dumpxml` shows
// it; it dies with the running domain). Also what the controller reads from domain XML:
// a VM's NIC MACs, a sink VM's control channel.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::ctl {

inline constexpr const char* kMetadataUri = "https://seamless.dev/xmlns/park/1";
inline constexpr const char* kMetadataKey = "seamless";
inline constexpr const char* kSinkChannel = "org.seamless.sinkd.0";

struct ParkState {
  std::string mode;       // swap | ram | disk
  std::string sink;       // sink VM's domain name
  std::string container;  // container id in the sink
  std::string mac;        // the VM's NIC whose traffic goes to the sink
  std::string pack_sha256;
  uint64_t cookie = 0;
  int64_t balloon_before = 0;  // bytes
  int64_t memory_before = 0;   // QEMU's cgroup usage before / after (bytes; swap mode)
  int64_t memory_after = 0;
  int64_t parked_at = 0;  // seconds since the epoch
  double park_seconds = 0;
  std::string to_xml() const;
  static Result<ParkState> from_xml(const std::string& xml);
};

struct DomainFacts {
  std::string name;
  std::vector<std::string> macs;        // NICs, in order
  std::string sink_socket;              // host end of org.seamless.sinkd.0 (sink VMs)
  std::optional<std::string> park_xml;  // <seamless:park> from <metadata>, if any
};
Result<DomainFacts> parse_domain_xml(const std::string& xml);

}  // namespace seamless::ctl
