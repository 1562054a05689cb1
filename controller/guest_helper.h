// SPDX-License-Identifier: Apache-2.0
// Typed calls of the in-guest helper `seamless-guest` through the guest agent. Its one
// JSON object on stdout is parsed back (untrusted: every field checked), and a dump that
// user activity aborted (exit 3, everything put back) is told apart from a failure.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "qmp/channel.h"

namespace seamless::ctl {

inline constexpr const char* kGuestHelper = "/usr/sbin/seamless-guest";

struct DumpOutcome {
  bool aborted = false;
  std::string abort_reason;
  std::string pack;  // path in the guest
  int64_t pack_bytes = 0;
  std::vector<std::string> gateways;  // names
  double dump_seconds = 0;
};

// What `seamless-guest ship` wrote.
struct ShipOutcome {
  std::string shipment;  // path in the guest
  int64_t files = 0, included = 0, content_bytes = 0, shipment_bytes = 0;
};
Result<ShipOutcome> parse_ship(const std::string& out, int64_t code, const std::string& err);

// Parses seamless-guest's dump output (exit code `code`).
Result<DumpOutcome> parse_dump(const std::string& out, int64_t code, const std::string& err);

// Forgives libvirt's "guest agent not available for now" / "not connected" (the request
// never reached the guest) by retrying for a while; everything else goes through.
class PatientAgent final : public qmp::Channel {
 public:
  explicit PatientAgent(qmp::Channel& inner, Millis patience = Millis(60000)) : inner_(inner), patience_(patience) {}
  Result<qmp::Json> call(std::string_view command, std::string_view args, Millis timeout) override;
  std::string describe() const override { return inner_.describe(); }
  size_t transfer_chunk() const override { return inner_.transfer_chunk(); }
  static bool not_sent(const Error& e);

 private:
  qmp::Channel& inner_;
  Millis patience_;
};

class GuestHelper {
 public:
  explicit GuestHelper(qmp::Channel& agent) : agent_(agent) {}
  // Dumps the gateways (all, or those on `ports`) into `out`; an abort is retried up to
  // `attempts` times, then reported as an error naming the activity.
  Result<DumpOutcome> dump(const std::string& out, const std::vector<uint16_t>& ports, int attempts = 5);
  // `dumped`: the pack `pack` hands back (a sink's); the guest checks it against that dump.
  Result<void> restore(const std::string& pack, const std::string& dumped = "");
  // Ships the pack's files in `paths` into `out`, leaving out those that make one of the
  // `have` object names (the sink's cache).
  Result<ShipOutcome> ship(const std::string& pack, const std::string& out, const std::vector<std::string>& paths,
                           const std::vector<std::string>& have);
  // What the suspend engine runs as its prefetch step.
  static std::vector<std::string> prewarm_command(const std::string& pack) { return {kGuestHelper, "prewarm", pack}; }

 private:
  qmp::Channel& agent_;
};

}  // namespace seamless::ctl
