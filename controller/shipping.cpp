// SPDX-License-Identifier: Apache-2.0
// Shipping what a sink lacks for a pack.
#include "controller/shipping.h"

#include "qmp/guest.h"

namespace seamless::ctl {

Result<Shipment> ship_missing(sink::proto::Client& sink, qmp::Channel& guest_agent, qmp::Channel& sink_agent,
                              const ShipPaths& paths) {
  Shipment s;
  auto missing = SL_TRY(sink.query_missing_files({paths.sink_pack}));
  s.missing = int64_t(missing.files.size());
  if (missing.files.empty()) return s;
  GuestHelper helper(guest_agent);
  s.outcome = SL_TRY(helper.ship(paths.guest_pack, paths.guest_shipment, missing.paths(), missing.candidates()));
  auto bytes = qmp::read_guest_file(guest_agent, paths.guest_shipment, {}, size_t(1) << 30);
  (void)qmp::guest_run(guest_agent, "/bin/rm", {"-f", paths.guest_shipment});
  if (!bytes.ok()) return std::move(bytes).error().wrap("reading the shipment from the guest");
  SL_TRY_CTX(qmp::write_guest_file(sink_agent, paths.sink_shipment, *bytes), "writing the shipment to the sink");
  s.sink_path = paths.sink_shipment;
  return s;
}

}  // namespace seamless::ctl
