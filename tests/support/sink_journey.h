// SPDX-License-Identifier: Apache-2.0
// A gateway's journey through a sink VM as the integration tests drive it, step by step
// with checks in between (the controller's park and wake do the same in one go, see
// controller/controller.h): the gateways dumped in the guest VM, what the sink lacks shipped
// (ctl::ship_missing, as the park does), restored by sinkd in a quiet container; the VM
// paused, its traffic sent to the sink, the container speaking for it; and, after a
// hand-back, the way home.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "controller/shipping.h"
#include "qmp/socket.h"
#include "sinkd/protocol.h"
#include "tests/support/testbed.h"

namespace seamless::test {

// Two booted VMs of one test bed: a guest (its gateways) and a sink (sinkd), with their
// test bed indices (their MACs).
struct SinkPair {
  LibvirtGuest& guest;
  int guest_index;
  LibvirtGuest& sink;
  int sink_index;
};

struct SinkMove {
  std::string id;    // the container
  std::string pack;  // in the sink
  int64_t pack_bytes = 0;
  double dump_seconds = 0;
  ctl::Shipment shipment;
  sink::proto::Added added;
};

// The gateways on `ports` dumped in the guest (`dump_args` added; a dump that user
// activity aborted is tried again, as the park does), the pack and what the sink lacks
// carried over, restored in container `id`, quiet until it speaks.
Result<SinkMove> move_to_sink(qmp::QmpSocket& control, const SinkPair& vms, const std::vector<uint16_t>& ports,
                              const std::string& id, const std::vector<std::string>& dump_args = {});

// Parked: the guest VM paused, its traffic sent to the sink, container `id` speaking.
Result<void> speak_for(qmp::QmpSocket& control, const SinkPair& vms, const std::string& id);

// Home after a hand-back of `id` to `pack` (in the sink): the guest VM resumes and
// announces itself, its traffic comes back, the pack is restored there (checked against
// the guest's dump of `id`), the held packets follow and the container goes. Returns how
// many packets were released.
Result<int64_t> come_home(qmp::QmpSocket& control, const SinkPair& vms, const std::string& id, const std::string& pack);

}  // namespace seamless::test
