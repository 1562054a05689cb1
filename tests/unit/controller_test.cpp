// SPDX-License-Identifier: Apache-2.0
// Unit tests of the controller's parts: the step runner's rollback order, the OVS flows
// and commands (through a fake runner), park state in XML, domain XML facts, the
// configuration, and the parsers of sinkd's and seamless-guest's untrusted replies.
#include "controller/controller.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <thread>

#include "common/sys.h"
#include "common/tempdir.h"
#include "controller/config.h"
#include "controller/guest_helper.h"
#include "controller/ovs.h"
#include "controller/park_state.h"
#include "controller/procedure.h"
#include "controller/sink_link.h"
#include "qmp/json.h"
#include "qmp/server.h"
#include "tests/support/testbed.h"

namespace seamless::ctl {
namespace {

TEST(Procedure, RunsEveryStepInOrderAndTimesThem) {
  std::string trace;
  Procedure p("test");
  p.step(
      "a",
      [&]() -> Result<void> {
        trace += "a";
        return ok();
      },
      [&]() -> Result<void> {
        trace += "A";
        return ok();
      });
  p.step("b", [&]() -> Result<void> {
    trace += "b";
    return ok();
  });
  ProcedureReport r;
  std::vector<std::string> seen;
  ASSERT_TRUE(p.run(&r, [&](Progress what, const std::string& step, const std::string&) {
                 if (what == Progress::Done) seen.push_back(step);
               }).ok());
  EXPECT_EQ(trace, "ab");
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(r.steps.size(), 2u);
  EXPECT_TRUE(r.failed_step.empty());
}

TEST(Procedure, AFailureUndoesTheStepsDoneNewestFirst) {
  std::string trace;
  Procedure p("park `x`");
  for (const char* n : {"a", "b", "c", "d"}) {
    std::string name = n;
    p.step(
        name,
        [&, name]() -> Result<void> {
          trace += name;
          if (name == "c") return make_error(ErrorKind::Remote, "boom");
          return ok();
        },
        [&, name]() -> Result<void> {
          trace += "~" + name;
          return ok();
        });
  }
  ProcedureReport r;
  auto res = p.run(&r);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(trace, "abc~b~a");
  EXPECT_EQ(r.failed_step, "c");
  EXPECT_TRUE(r.rolled_back);
  EXPECT_NE(res.error().message.find("park `x`: step `c`: boom (rolled back)"), std::string::npos)
      << res.error().message;
}

TEST(Procedure, AFailedUndoIsReportedAndTheRestStillRun) {
  std::string trace;
  Procedure p("p");
  p.step(
      "a", [&]() -> Result<void> { return ok(); },
      [&]() -> Result<void> {
        trace += "~a";
        return ok();
      });
  p.step(
      "b", [&]() -> Result<void> { return ok(); },
      [&]() -> Result<void> { return make_error(ErrorKind::System, "stuck"); });
  p.step("c", [&]() -> Result<void> { return make_error(ErrorKind::System, "no"); });
  ProcedureReport r;
  auto res = p.run(&r);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(trace, "~a");
  EXPECT_FALSE(r.rolled_back);
  EXPECT_NE(res.error().message.find("undoing `b` failed too: stuck"), std::string::npos) << res.error().message;
  EXPECT_EQ(res.error().message.find("rolled back"), std::string::npos);
}

TEST(Procedure, AnInjectedFailureStopsBeforeTheStepRuns) {
  bool ran = false;
  Procedure p("p");
  p.step("x", [&]() -> Result<void> {
    ran = true;
    return ok();
  });
  p.fail_at("x");
  auto res = p.run();
  ASSERT_FALSE(res.ok());
  EXPECT_FALSE(ran);
  EXPECT_NE(res.error().message.find("injected failure"), std::string::npos);
}

TEST(Ovs, CookiesAreStablePerDomainAndMarked) {
  EXPECT_EQ(cookie_for("vm1"), cookie_for("vm1"));
  EXPECT_NE(cookie_for("vm1"), cookie_for("vm2"));
  EXPECT_TRUE(is_seamless_cookie(cookie_for("vm1")));
  EXPECT_FALSE(is_seamless_cookie(0x5e1));
}

TEST(Ovs, FlowsCoverTheMacArpAndNeighbourDiscovery) {
  Redirect r{cookie_for("vm"), "52:54:00:5e:a0:1c", {"10.77.0.28"}, {"fd00::1c"}, "52:54:00:5e:a0:1b"};
  auto flows = redirect_flows(r, "7");
  ASSERT_TRUE(flows.ok()) << flows.error().message;
  EXPECT_NE(flows->find("priority=100,dl_dst=52:54:00:5e:a0:1c,actions=output:7"), std::string::npos) << *flows;
  EXPECT_NE(flows->find("arp,arp_tpa=10.77.0.28,actions=output:7"), std::string::npos) << *flows;
  EXPECT_NE(flows->find("icmp6,icmp_type=135,nd_target=fd00::1c,actions=output:7"), std::string::npos) << *flows;
}

TEST(Ovs, HostileAddressesNeverReachAFlow) {
  Redirect r{cookie_for("vm"), "52:54:00:5e:a0:1c", {"10.0.0.1,actions=drop"}, {}, ""};
  EXPECT_FALSE(redirect_flows(r, "7").ok());
  r.ipv4 = {};
  r.ipv6 = {"::1\nadd priority=999,actions=flood"};
  EXPECT_FALSE(redirect_flows(r, "7").ok());
  r.ipv6 = {};
  r.mac = "52:54:00:5e:a0:1c,in_port=1";
  EXPECT_FALSE(redirect_flows(r, "7").ok());
  r.mac = "52:54:00:5e:a0:1c";
  EXPECT_FALSE(redirect_flows(r, "7,8").ok());
  r.cookie = 0x1234;
  EXPECT_FALSE(redirect_flows(r, "7").ok());
}

// The switch seam: what OvsSwitch asks ovs-vsctl / ovs-ofctl, with canned answers.
struct FakeOvs {
  std::vector<std::string> calls;
  std::vector<std::string> inputs;
  Result<std::string> operator()(const std::vector<std::string>& argv, const std::string& input) {
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    calls.push_back(line);
    inputs.push_back(input);
    if (line.find("find interface external_ids:attached-mac=\"52:54:00:00:00:01\"") != std::string::npos)
      return std::string("vnet0 3\n");
    if (line.find("find interface external_ids:attached-mac=\"52:54:00:00:00:02\"") != std::string::npos)
      return std::string("vnet1 5\n");
    if (line.find("find interface") != std::string::npos) return std::string("");
    if (line.find("iface-to-br") != std::string::npos) return std::string("br0\n");
    if (line == "ovs-vsctl list-br") return std::string("br0\n");
    if (line == "ovs-ofctl dump-flows br0")
      return std::string(
          " cookie=0x5e1e000000000123, priority=100,dl_dst=52:54:00:00:00:01 actions=output:5\n"
          " cookie=0x0, priority=0 actions=NORMAL\n");
    return std::string("");
  }
};

TEST(Ovs, ARedirectIsOneBundleThatReplacesTheCookiesFlows) {
  FakeOvs fake;
  OvsSwitch sw([&](const std::vector<std::string>& a, const std::string& in) { return fake(a, in); });
  Redirect r{cookie_for("vm"), "52:54:00:00:00:01", {"10.0.0.9"}, {}, "52:54:00:00:00:02"};
  ASSERT_TRUE(sw.redirect(r).ok());
  ASSERT_FALSE(fake.calls.empty());
  EXPECT_EQ(fake.calls.back(), "ovs-ofctl --bundle add-flows br0 -");
  const std::string& bundle = fake.inputs.back();
  EXPECT_EQ(bundle.rfind("delete cookie=", 0), 0u) << bundle;
  EXPECT_NE(bundle.find("add cookie="), std::string::npos) << bundle;
  EXPECT_NE(bundle.find("actions=output:5"), std::string::npos) << bundle;
}

TEST(Ovs, AnUnknownMacIsAClearError) {
  FakeOvs fake;
  OvsSwitch sw([&](const std::vector<std::string>& a, const std::string& in) { return fake(a, in); });
  Redirect r{cookie_for("vm"), "52:54:00:00:00:09", {}, {}, "52:54:00:00:00:02"};
  auto res = sw.redirect(r);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message.find("no Open vSwitch interface carries MAC 52:54:00:00:00:09"), std::string::npos)
      << res.error().message;
}

TEST(Ovs, CookiesListsOnlySeamlessFlowsAndClearRemovesByCookie) {
  FakeOvs fake;
  OvsSwitch sw([&](const std::vector<std::string>& a, const std::string& in) { return fake(a, in); });
  auto cookies = sw.cookies();
  ASSERT_TRUE(cookies.ok());
  ASSERT_EQ(cookies->size(), 1u);
  EXPECT_EQ((*cookies)[0], 0x5e1e000000000123ULL);
  ASSERT_TRUE(sw.clear(0x5e1e000000000123ULL).ok());
  EXPECT_EQ(fake.calls.back(), "ovs-ofctl --bundle del-flows br0 cookie=0x5e1e000000000123/-1");
}

TEST(ParkState, RoundTripsThroughXml) {
  ParkState s;
  s.mode = "swap";
  s.sink = "sink1";
  s.container = "vm1";
  s.mac = "52:54:00:00:00:01";
  s.pack_sha256 = std::string(64, 'a');
  s.cookie = cookie_for("vm1");
  s.balloon_before = 512 << 20;
  s.memory_before = 300 << 20;
  s.memory_after = 12 << 20;
  s.parked_at = 1796000000;
  auto back = ParkState::from_xml(s.to_xml());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->mode, "swap");
  EXPECT_EQ(back->cookie, s.cookie);
  EXPECT_EQ(back->balloon_before, s.balloon_before);
  EXPECT_EQ(back->memory_after, s.memory_after);
  EXPECT_EQ(back->mac, s.mac);
}

TEST(ParkState, EditedOrHostileMetadataIsRefused) {
  EXPECT_FALSE(ParkState::from_xml("<park mode='swap'").ok());
  EXPECT_FALSE(ParkState::from_xml("<other/>").ok());
  EXPECT_FALSE(ParkState::from_xml("<park mode='nap' sink='s' container='c' mac='52:54:00:00:00:01' "
                                   "cookie='0x5e1e000000000001'/>")
                   .ok());
  EXPECT_FALSE(ParkState::from_xml("<park mode='ram' sink='s' container='c' mac='52:54:00:00:00:01' "
                                   "cookie='0x1'/>")
                   .ok());
  EXPECT_FALSE(
      ParkState::from_xml("<park mode='ram' sink='s' container='c' mac='x' cookie='0x5e1e000000000001'/>").ok());
  EXPECT_FALSE(ParkState::from_xml("<!DOCTYPE p [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><park mode='&e;'/>").ok());
}

TEST(DomainXml, FindsMacsTheSinkChannelAndParkMetadata) {
  const std::string xml = R"(<domain type='qemu'><name>vm1</name>
    <metadata><seamless:park xmlns:seamless="https://seamless.dev/xmlns/park/1" mode="ram" sink="s"
      container="vm1" mac="52:54:00:00:00:01" cookie="0x5e1e000000000001"/></metadata>
    <devices>
      <interface type='bridge'><mac address='52:54:00:00:00:01'/></interface>
      <channel type='unix'><source mode='bind' path='/run/x/sinkd.sock'/>
        <target type='virtio' name='org.seamless.sinkd.0'/></channel>
      <channel type='unix'><source mode='bind' path='/run/x/qga.sock'/>
        <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    </devices></domain>)";
  auto f = parse_domain_xml(xml);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->name, "vm1");
  EXPECT_EQ(f->macs, (std::vector<std::string>{"52:54:00:00:00:01"}));
  EXPECT_EQ(f->sink_socket, "/run/x/sinkd.sock");
  ASSERT_TRUE(f->park_xml.has_value());
  auto st = ParkState::from_xml(*f->park_xml);
  ASSERT_TRUE(st.ok()) << st.error().message << " in " << *f->park_xml;
  EXPECT_EQ(st->container, "vm1");
}

TEST(Config, ReadsSinksAndDefaults) {
  auto c = parse_config("# sinks\nsink sink-a\nsink sink-b\nmode ram\nmargin-mib 64\nauto-wake no\n", "t.conf");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->sinks, (std::vector<std::string>{"sink-a", "sink-b"}));
  EXPECT_EQ(c->mode, "ram");
  EXPECT_EQ(c->margin_mib, 64);
  EXPECT_FALSE(c->auto_wake);
  EXPECT_FALSE(c->wake_sink_first);
  auto d = parse_config("wake-sink-first yes\n", "t.conf");
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_TRUE(d->wake_sink_first);
  EXPECT_FALSE(parse_config("wake-sink-first maybe\n", "t.conf").ok());
  EXPECT_FALSE(d->wake_deflate_early);
  d = parse_config("wake-deflate-early yes\n", "t.conf");
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_TRUE(d->wake_deflate_early);
  EXPECT_FALSE(d->wake_sink_first);
  EXPECT_FALSE(parse_config("wake-deflate-early 1\n", "t.conf").ok());
  EXPECT_EQ(d->wake_room_mib, 256);
  d = parse_config("wake-room-mib 128\n", "t.conf");
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_EQ(d->wake_room_mib, 128);
  auto bad_room = parse_config("\nwake-room-mib lots\n", "t.conf");
  ASSERT_FALSE(bad_room.ok());
  EXPECT_NE(bad_room.error().message.find("t.conf:2"), std::string::npos) << bad_room.error().message;
  d = parse_config("", "t.conf");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->mode, "swap");
  EXPECT_EQ(d->socket, kDefaultSocket);
}

TEST(Config, ErrorsNameTheFileAndLine) {
  auto bad = parse_config("sink a\nmode nap\n", "/etc/seamless/seamless.conf");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("/etc/seamless/seamless.conf:2:"), std::string::npos) << bad.error().message;
  EXPECT_FALSE(parse_config("colour blue\n", "x").ok());
  EXPECT_FALSE(parse_config("sink a b\n", "x").ok());
  EXPECT_FALSE(parse_config("sink ../etc\n", "x").ok());
  EXPECT_FALSE(parse_config("margin-mib -4\n", "x").ok());
}

TEST(SinkReplies, AddedListedAndHandedBackAreChecked) {
  auto added = qmp::parse(R"({"id":"vm1","hostname":"h","seconds":4.5,
      "interfaces":[{"name":"eth0","mac":"52:54:00:00:00:01","addresses":["10.0.0.2/24"]}]})");
  ASSERT_TRUE(added.ok());
  auto a = Added::parse(added->root());
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->interfaces.at(0).addresses.at(0), "10.0.0.2/24");
  EXPECT_DOUBLE_EQ(a->seconds, 4.5);
  auto listed = qmp::parse(R"([{"id":"a","state":"traced"},{"id":"b","state":"handed-back"},{"id":"c","state":"?"}])");
  ASSERT_TRUE(listed.ok());
  auto l = sink::proto::parse_listed(listed->root());
  ASSERT_TRUE(l.ok());
  EXPECT_EQ((*l)[0].state, GatewayState::Traced);
  EXPECT_EQ((*l)[1].state, GatewayState::HandedBack);
  EXPECT_EQ((*l)[2].state, GatewayState::Unknown);
  for (const char* bad : {R"({"id":1})", R"([])", R"({"hostname":"x"})", R"({"id":"a","seconds":"4"})",
                          R"({"id":"a","interfaces":[{"name":"eth0"}]})", R"({"id":"a","processes":-1})",
                          R"({"id":"a","interfaces":[{"mac":"m","addresses":[7]}]})"}) {
    auto j = qmp::parse(bad);
    ASSERT_TRUE(j.ok());
    EXPECT_FALSE(Added::parse(j->root()).ok()) << bad;
  }
  auto hb = qmp::parse(R"({"pack":"/run/p","bytes":10,"seconds":-3})");
  ASSERT_TRUE(hb.ok());
  EXPECT_FALSE(HandedBack::parse(hb->root()).ok());
  auto long_id = qmp::parse(cat(R"({"id":")", std::string(300, 'x'), R"("})"));
  ASSERT_TRUE(long_id.ok());
  auto refused = Added::parse(long_id->root());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("field `id`"), std::string::npos) << refused.error().message;
}

TEST(GuestReplies, AnAbortedDumpIsToldApartFromAFailure) {
  auto aborted = parse_dump(R"({"ok":false,"aborted":"SYN to port 22"})", 3, "");
  ASSERT_TRUE(aborted.ok()) << aborted.error().message;
  EXPECT_TRUE(aborted->aborted);
  EXPECT_EQ(aborted->abort_reason, "SYN to port 22");
  auto failed = parse_dump(R"({"ok":false,"error":"criu dump failed","kind":"remote"})", 1, "");
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find("criu dump failed"), std::string::npos);
  auto done = parse_dump(R"({"ok":true,"pack":"/run/p","pack_bytes":1000,"gateways":[{"name":"dropbear"}]})", 0, "");
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->gateways, (std::vector<std::string>{"dropbear"}));
  EXPECT_FALSE(parse_dump("garbage", 0, "").ok());
  EXPECT_FALSE(parse_dump(R"({"ok":true})", 0, "").ok()) << "no pack path";
}

TEST(GuestReplies, OnlyRequestsThatNeverLeftAreRetried) {
  EXPECT_TRUE(PatientAgent::not_sent(make_error(ErrorKind::Timeout, "Guest agent not available for now")));
  EXPECT_FALSE(PatientAgent::not_sent(make_error(ErrorKind::Timeout, "Guest agent is not responding")));
}

TEST(Controller, ContainerIdsAreTheDomainNameWhenTheSinkTakesIt) {
  EXPECT_EQ(container_id_for("web-1.example_a"), "web-1.example_a");
  for (const char* odd : {"web 1", "../x", ".hidden", "ünï", std::string(80, 'a').c_str()}) {
    auto id = container_id_for(odd);
    EXPECT_EQ(id.rfind("vm-", 0), 0u) << odd;
    EXPECT_EQ(id.size(), 19u) << odd;
    EXPECT_EQ(id.find_first_not_of("vm-0123456789abcdef"), std::string::npos) << odd;
  }
  EXPECT_NE(container_id_for("web 1"), container_id_for("web 2"));
}

TEST(Controller, AWakeReportsItsBreakdown) {
  WakeResult w;
  w.domain = "vm1";
  w.trigger = "activity: accept4";
  w.hand_back = 2.5;
  w.resume = 0.5;
  w.activity_to_event = 0.01;
  w.report.steps = {
      {"hand-back+resume", 2.5, true, false, ""}, {"transfer", 1, true, false, ""}, {"restore", 2, true, false, ""}};
  auto j = qmp::parse(w.to_json());
  ASSERT_TRUE(j.ok()) << w.to_json();
  EXPECT_DOUBLE_EQ(j->root()["restore"].GetDouble(), 2);
  EXPECT_DOUBLE_EQ(j->root()["hand_back"].GetDouble(), 2.5);
  EXPECT_TRUE(j->root().HasMember("activity_to_event"));
  EXPECT_EQ(j->root()["steps"].Size(), 3u);
}

TEST(ClientCapture, CountsResetsAndClientRetransmissions) {
  const std::string text =
      "10:00:00.1 veth0 Out IP 10.77.0.1.40000 > 10.77.0.28.80: Flags [S], seq 100, win 64240, length 0\n"
      "10:00:00.2 veth0 In  IP 10.77.0.28.80 > 10.77.0.1.40000: Flags [S.], seq 900, ack 101, win 65160, length 0\n"
      "10:00:00.3 veth0 Out IP 10.77.0.1.40000 > 10.77.0.28.80: Flags [.], ack 901, win 502, length 0\n"
      "10:00:00.4 veth0 Out IP 10.77.0.1.40000 > 10.77.0.28.80: Flags [P.], seq 101:180, ack 901, length 79\n"
      "10:00:01.4 veth0 Out IP 10.77.0.1.40000 > 10.77.0.28.80: Flags [P.], seq 101:180, ack 901, length 79\n"
      "10:00:01.5 veth0 In  IP 10.77.0.28.80 > 10.77.0.1.40000: Flags [R.], seq 901, ack 180, length 0\n";
  auto s = test::summarize_capture(text, "10.77.0.1");
  EXPECT_EQ(s.packets, 6);
  EXPECT_EQ(s.resets, 1);
  EXPECT_EQ(s.retransmitted, 1);
  auto clean = test::summarize_capture(text.substr(0, text.find("10:00:01.4")), "10.77.0.1");
  EXPECT_EQ(clean.resets, 0);
  EXPECT_EQ(clean.retransmitted, 0);
}

}  // namespace
}  // namespace seamless::ctl

namespace seamless::ctl {
namespace {

// A fake sinkd: the project's control server on a real unix socket, one peer after another.
class Serving {
 public:
  Serving(qmp::ControlServer& server, const std::string& path) : server_(server) {
    auto l = sys::listen_unix(path);
    if (!l.ok()) return;
    listener_ = std::move(l).value();
    thread_ = std::thread([this] {
      while (!done_) {
        auto peer = sys::accept(listener_.get(), Deadline(Millis(200)));
        if (peer.ok()) (void)server_.serve(std::move(peer).value(), "test");
      }
    });
  }
  ~Serving() {
    done_ = true;
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool listening() const { return listener_.valid(); }

 private:
  qmp::ControlServer& server_;
  UniqueFd listener_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// The controller's link to a sink against a fake sinkd (the project's control server on a
// real unix socket): it connects by itself, learns the sink's clock from its status, gets
// events between commands, and a handler may call back into the link.
TEST(SinkLinkUnit, ConnectsLearnsTheSinksClockAndDeliversEvents) {
  TempDir dir = TempDir::create().value();
  const std::string path = dir / "sinkd.sock";
  qmp::ControlServer server("9.9.9");
  server.on(sink::proto::kQueryStatus, [](const qmp::Value&) -> Result<std::string> {
    sink::proto::Status st;
    st.version = "9.9.9";
    // A sink VM whose clock runs 100 s ahead of the host's.
    st.time = wall_seconds() + 100;
    return st.to_json();
  });
  server.on(sink::proto::kListGateways, [](const qmp::Value&) -> Result<std::string> {
    sink::proto::ListedGateway g;
    g.id = "vm1";
    g.state = sink::proto::GatewayState::Woken;
    return sink::proto::to_json({g});
  });
  Serving serving(server, path);
  ASSERT_TRUE(serving.listening()) << path;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> seen;
  std::unique_ptr<SinkLink> link;
  link = std::make_unique<SinkLink>(
      "fake", [&] { return path; },
      [&](const std::string& sink, const qmp::Event& ev) {
        std::string what = sink + " " + ev.name;
        if (ev.name == sink::proto::kActivity) {
          // As the controller does: ask the sink from within the handler.
          auto listed = link->list_gateways();
          what += listed.ok() && listed->size() == 1 ? " listed" : " list failed";
        }
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(what);
        cv.notify_all();
      });
  link->start();
  auto wait_for = [&](size_t n) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(10), [&] { return seen.size() >= n; });
  };
  ASSERT_TRUE(wait_for(1)) << "no CONNECTED event";
  EXPECT_EQ(seen[0], "fake CONNECTED");
  EXPECT_NEAR(link->clock_offset(), 100, 1) << "the sink's clock, ahead by 100 s";
  server.emit(sink::proto::kActivity, sink::proto::ActivityEvent{"vm1", "SYN to port 22", 7}.to_json());
  ASSERT_TRUE(wait_for(2)) << "the event did not arrive between commands";
  EXPECT_EQ(seen[1], "fake ACTIVITY listed") << "a handler can call back into the link";
  link.reset();
}

// One slow command on a sink (a CRIU restore for one VM's park) holds up no other VM's
// command: sinkd answers as commands finish and the link matches replies by id, several
// callers having commands in flight at once.
TEST(SinkLinkUnit, AQuickCommandIsAnsweredWhileASlowOneRuns) {
  TempDir dir = TempDir::create().value();
  const std::string path = dir / "sinkd.sock";
  qmp::ControlServer server("9.9.9");
  server.answer_out_of_order(4);
  std::atomic<bool> add_started{false}, gate{false};
  server.on(sink::proto::kAddGateway, [&](const qmp::Value& args) -> Result<std::string> {
    auto a = SL_TRY(sink::proto::AddGateway::parse(args));
    add_started = true;
    // Until the test opens the gate, or 20 s (a link that serialises fails, not hangs).
    for (int i = 0; i < 2000 && !gate; ++i) std::this_thread::sleep_for(Millis(10));
    sink::proto::Added added;
    added.id = a.id;
    added.hostname = gate ? "opened" : "gave-up";
    return added.to_json();
  });
  server.on(sink::proto::kHandBack, [&](const qmp::Value& args) -> Result<std::string> {
    sink::proto::HandedBack h;
    h.id = SL_TRY(sink::proto::HandBack::parse(args)).id;
    h.pack = "/run/seamless-sinkd/out/" + h.id + ".pack";
    return h.to_json();
  });
  Serving serving(server, path);
  ASSERT_TRUE(serving.listening()) << path;
  SinkLink link(
      "fake", [&] { return path; }, nullptr);
  link.start();
  std::atomic<bool> add_returned{false};
  Result<sink::proto::Added> added = make_error(ErrorKind::Timeout, "not run");
  std::thread parking([&] {
    added = link.add_gateway("/run/seamless-sinkd/in/vm1.pack", "vm1", true);
    add_returned = true;
  });
  for (int i = 0; i < 1000 && !add_started; ++i) std::this_thread::sleep_for(Millis(10));
  ASSERT_TRUE(add_started) << "the add never reached the sink";
  auto handed = link.hand_back("vm2", "");
  ASSERT_TRUE(handed.ok()) << handed.error().message;
  EXPECT_EQ(handed->id, "vm2");
  EXPECT_FALSE(add_returned) << "vm2's hand-back waited for vm1's add";
  gate = true;
  parking.join();
  ASSERT_TRUE(added.ok()) << added.error().message;
  EXPECT_EQ(added->id, "vm1");
  EXPECT_EQ(added->hostname, "opened");
}

}  // namespace
}  // namespace seamless::ctl
