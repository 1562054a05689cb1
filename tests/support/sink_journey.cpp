// SPDX-License-Identifier: Apache-2.0
#include "tests/support/sink_journey.h"

#include "qmp/guest.h"
#include "tests/support/gateway_client.h"

namespace seamless::test {

Result<SinkMove> move_to_sink(qmp::QmpSocket& control, const SinkPair& vms, const std::vector<uint16_t>& ports,
                              const std::string& id, const std::vector<std::string>& dump_args) {
  SinkMove m;
  m.id = id;
  const std::string guest_pack = cat("/run/", id, ".pack");
  std::vector<std::string> args = {"dump", "--out", guest_pack};
  for (uint16_t p : ports) args.insert(args.end(), {"--port", std::to_string(p)});
  args.insert(args.end(), dump_args.begin(), dump_args.end());
  HelperRun dumped;
  auto t0 = Clock::now();
  for (int attempt = 0; attempt < 5; ++attempt) {
    dumped = run_guest_helper(*vms.guest.agent, args, Millis(300000));
    if (dumped.code != 3) break;  // aborted by user activity: tried again, as the park does
  }
  m.dump_seconds = seconds_since(t0);
  if (dumped.code != 0) return make_error(ErrorKind::Remote, "dump: ", dumped.text);
  auto bytes = SL_TRY(qmp::read_guest_file(*vms.guest.agent, guest_pack));
  m.pack_bytes = int64_t(bytes.size());
  m.pack = guest_pack;
  SL_TRY(qmp::write_guest_file(*vms.sink.agent, m.pack, bytes));
  auto sink = sink_client(control);
  const std::string files = cat("/run/", id, ".files");
  m.shipment = SL_TRY(ctl::ship_missing(sink, *vms.guest.agent, *vms.sink.agent, {guest_pack, m.pack, files, files}));
  m.added = SL_TRY(sink.add_gateway({m.pack, id, true, m.shipment.sink_path}));
  return m;
}

Result<void> speak_for(qmp::QmpSocket& control, const SinkPair& vms, const std::string& id) {
  SL_TRY(vms.guest.monitor->call("stop", "", Millis(30000)));
  SL_TRY(vms.guest.bed.redirect(Testbed::guest_mac(vms.guest_index), Testbed::guest_mac(vms.sink_index)));
  return sink_client(control).speak({id});
}

Result<int64_t> come_home(qmp::QmpSocket& control, const SinkPair& vms, const std::string& id,
                          const std::string& pack) {
  SL_TRY(vms.guest.monitor->call("cont", "", Millis(30000)));
  SL_TRY(vms.guest.monitor->call("announce-self", R"({"initial":50,"max":550,"rounds":5,"step":100})", Millis(30000)));
  SL_TRY(vms.guest.bed.end_redirect(Testbed::guest_mac(vms.guest_index)));
  auto bytes = SL_TRY(qmp::read_guest_file(*vms.sink.agent, pack));
  SL_TRY(qmp::write_guest_file(*vms.guest.agent, pack, bytes));
  // Checked against what the guest dumped (move_to_sink's pack), as a wake does.
  auto restored =
      run_guest_helper(*vms.guest.agent, {"restore", pack, "--dumped", cat("/run/", id, ".pack")}, Millis(300000));
  if (restored.code != 0) return make_error(ErrorKind::Remote, "restore at home: ", restored.text);
  auto sink = sink_client(control);
  auto released = SL_TRY(sink.release_packets({id}));
  SL_TRY(sink.remove_gateway({id}));
  return released.released;
}

}  // namespace seamless::test
