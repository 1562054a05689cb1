// SPDX-License-Identifier: Apache-2.0
// seamless-guest through the guest agent.
#include "controller/guest_helper.h"

#include <thread>

#include "common/log.h"
#include "qmp/guest.h"
#include "qmp/json.h"

namespace seamless::ctl {

Result<DumpOutcome> parse_dump(const std::string& out, int64_t code, const std::string& err) {
  auto line = out.substr(0, out.find('\n'));
  auto json = qmp::parse(line);
  if (!json.ok() || !json->root().IsObject())
    return make_error(ErrorKind::Protocol, "seamless-guest dump (exit ", code, ") printed no result: `",
                      out.substr(0, 200), "` ", err.substr(0, 400));
  const qmp::Value& v = json->root();
  DumpOutcome d;
  if (auto reason = qmp::opt_string(v, "aborted"); reason && code == 3) {
    d.aborted = true;
    d.abort_reason = reason->substr(0, 400);
    return d;
  }
  if (code != 0 || !qmp::opt_bool(v, "ok").value_or(false))
    return make_error(ErrorKind::Remote, "seamless-guest dump failed (exit ", code,
                      "): ", qmp::opt_string(v, "error").value_or(err.substr(0, 400)));
  d.pack = SL_TRY(qmp::get_string(v, "pack"));
  d.pack_bytes = qmp::opt_int(v, "pack_bytes").value_or(0);
  if (auto gws = v.FindMember("gateways"); gws != v.MemberEnd() && gws->value.IsArray())
    for (const auto& g : gws->value.GetArray())
      if (g.IsObject()) d.gateways.push_back(qmp::opt_string(g, "name").value_or("?"));
  if (auto s = qmp::opt_string(v, "dump_seconds")) d.dump_seconds = std::strtod(s->c_str(), nullptr);
  return d;
}

Result<ShipOutcome> parse_ship(const std::string& out, int64_t code, const std::string& err) {
  auto json = qmp::parse(out.substr(0, out.find('\n')));
  if (!json.ok() || !json->root().IsObject())
    return make_error(ErrorKind::Protocol, "seamless-guest ship (exit ", code, ") printed no result: `",
                      out.substr(0, 200), "` ", err.substr(0, 400));
  const qmp::Value& v = json->root();
  if (code != 0 || !qmp::opt_bool(v, "ok").value_or(false))
    return make_error(ErrorKind::Remote, "seamless-guest ship failed (exit ", code,
                      "): ", qmp::opt_string(v, "error").value_or(err.substr(0, 400)).substr(0, 1000));
  ShipOutcome s;
  s.shipment = SL_TRY(qmp::get_string(v, "shipment"));
  for (auto [key, field] : {std::pair{"files", &s.files},
                            {"included", &s.included},
                            {"content_bytes", &s.content_bytes},
                            {"shipment_bytes", &s.shipment_bytes}}) {
    *field = qmp::opt_int(v, key).value_or(0);
    if (*field < 0) return make_error(ErrorKind::Protocol, "seamless-guest ship: field `", key, "` is negative");
  }
  return s;
}

bool PatientAgent::not_sent(const Error& e) {
  const auto& m = e.message;
  return m.find("not available for now") != std::string::npos || m.find("agent is not connected") != std::string::npos;
}

Result<qmp::Json> PatientAgent::call(std::string_view command, std::string_view args, Millis timeout) {
  Deadline deadline(patience_);
  for (Millis pause(250);; pause = std::min(pause * 2, Millis(2000))) {
    auto r = inner_.call(command, args, timeout);
    if (r.ok() || !not_sent(r.error()) || deadline.expired()) return r;
    SL_LOG(Info, "agent", describe(), ": ", r.error().message, "; trying again");
    std::this_thread::sleep_for(pause);
  }
}

Result<DumpOutcome> GuestHelper::dump(const std::string& out, const std::vector<uint16_t>& ports, int attempts) {
  std::vector<std::string> args = {"dump", "--out", out};
  for (auto p : ports) args.insert(args.end(), {"--port", std::to_string(p)});
  qmp::RunOptions ro;
  ro.timeout = Millis(300000);
  std::string last;
  for (int i = 0; i < attempts; ++i) {
    auto st = SL_TRY_CTX(qmp::guest_run(agent_, kGuestHelper, args, ro), "seamless-guest dump");
    auto d = SL_TRY(parse_dump(st.out, st.exitcode.value_or(-1), st.err));
    if (!d.aborted) return d;
    last = d.abort_reason;
    SL_LOG(Info, "guest", "dump aborted by user activity (", last, "); trying again");
    std::this_thread::sleep_for(Millis(1000));
  }
  return make_error(ErrorKind::Remote, "the dump was aborted by user activity ", attempts, " times (last: ", last,
                    "): the VM is not idle");
}

Result<ShipOutcome> GuestHelper::ship(const std::string& pack, const std::string& out,
                                      const std::vector<std::string>& paths, const std::vector<std::string>& have) {
  std::vector<std::string> args = {"ship", pack, "--out", out};
  for (const auto& p : paths) args.insert(args.end(), {"--path", p});
  for (const auto& h : have) args.insert(args.end(), {"--have", h});
  qmp::RunOptions ro;
  ro.timeout = Millis(300000);
  auto st = SL_TRY_CTX(qmp::guest_run(agent_, kGuestHelper, args, ro), "seamless-guest ship");
  return parse_ship(st.out, st.exitcode.value_or(-1), st.err);
}

Result<void> GuestHelper::restore(const std::string& pack, const std::string& dumped) {
  qmp::RunOptions ro;
  ro.timeout = Millis(300000);
  std::vector<std::string> args = {"restore", pack};
  if (!dumped.empty()) args.insert(args.end(), {"--dumped", dumped});
  auto st = SL_TRY_CTX(qmp::guest_run(agent_, kGuestHelper, args, ro), "seamless-guest restore");
  if (st.exitcode.value_or(-1) == 0) return ok();
  // The reason is in the one JSON object on stdout.
  std::string why = st.err.substr(0, 400);
  if (auto json = qmp::parse(st.out.substr(0, st.out.find('\n'))); json.ok() && json->root().IsObject())
    why = qmp::opt_string(json->root(), "error").value_or(why).substr(0, 1000);
  return make_error(ErrorKind::Remote, "seamless-guest restore `", pack, "` failed in the guest (exit ",
                    st.exitcode.value_or(-1), "): ", why);
}

}  // namespace seamless::ctl
