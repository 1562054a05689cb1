// SPDX-License-Identifier: Apache-2.0
// Shipping what a sink lacks for a pack, written once for the controller's park, the tests
// and the benchmarks: the sink names the code and mapped files it lacks (and the cached
// objects that may be them), the guest ships those not cached into a shipment
// (`seamless-guest ship`), and the shipment goes to the sink next to the pack, for
// add-gateway's `files`. A sink that lacks nothing gets nothing.
#pragma once

#include <string>

#include "common/result.h"
#include "controller/guest_helper.h"
#include "qmp/channel.h"
#include "sinkd/protocol.h"

namespace seamless::ctl {

struct Shipment {
  std::string sink_path;  // the shipment in the sink; "" when the sink lacks nothing
  int64_t missing = 0;    // files the sink lacked
  ShipOutcome outcome;    // what the guest wrote (files, included, sizes)
};

struct ShipPaths {
  std::string guest_pack, sink_pack;          // the pack, on both sides
  std::string guest_shipment, sink_shipment;  // where the shipment is written and goes
};

// Undo: removes the shipment from the sink (the guest's copy is removed once sent).
Result<Shipment> ship_missing(sink::proto::Client& sink, qmp::Channel& guest_agent, qmp::Channel& sink_agent,
                              const ShipPaths& paths);

}  // namespace seamless::ctl
