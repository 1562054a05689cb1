// SPDX-License-Identifier: Apache-2.0
// Integration: seamless-sinkd in a sink VM booted from the template, reached over its
// virtio-serial control channel with the project's QMP client; a pack dumped in another
// guest VM crosses machines (guest agent out, guest agent in) and passes the sink's
// template check, a pack claiming other code is refused, and bad input on the real
// channel gets error replies. The guest's gateway goes home afterwards.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "qmp/socket.h"
#include "qmp/stream.h"
#include "sinkd/protocol.h"
#include "tests/support/gateway_client.h"
#include "tests/support/sink_journey.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::sink {
namespace {

constexpr int kSink = 15, kGuest = 16;

class SinkVm : public test::VmSuite<SinkVm> {
 protected:
  static void SetUpTestSuite() {
    auto s = test::LibvirtGuest::boot(test::sink_vm_spec("sl-sink", kSink, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN));
    if (!s.ok()) return fail(s.error().message);
    sink_ = std::move(s).value();
    test::VmSpec guest;
    guest.name = "sl-sink-client";
    guest.index = kGuest;
    guest.services = "dropbear,sshd,lighttpd,apache2,vsftpd";
    guest.tools = {SEAMLESS_GUEST_BIN, ZDTM_ATTACKER};
    auto k = test::KeyedGuest::boot(guest);
    if (!k.ok()) return fail(k.error().message);
    guest_ = std::move(k->guest);
    dir_ = std::move(k->dir);
    key_ = k->key;
  }
  static void TearDownTestSuite() {
    if (guest_) (void)guest_->bed.end_redirect(test::Testbed::guest_mac(kGuest));
    guest_.reset();
    sink_.reset();
    dir_.reset();
  }
  void SetUp() override { require(sink_ != nullptr && guest_ != nullptr); }
  void TearDown() override {
    if (HasFailure() && sink_ && guest_) std::printf("%s", vm_state().c_str());
  }

  static Result<std::unique_ptr<qmp::QmpSocket>> control() { return test::sink_control(*sink_); }
  static proto::Client client(qmp::QmpSocket& c) { return test::sink_client(c); }

  // sinkd dies (its containers live on) and starts again with `options`.
  static Result<std::string> restart_sinkd(const std::string& options) {
    qmp::RunOptions ro;
    ro.timeout = Millis(60000);
    return qmp::guest_run_ok(*sink_->agent, "/bin/sh",
                             {"-c",
                              "pkill -KILL -f '^seamless-sinkd --port'; sleep 1; setsid seamless-sinkd --port "
                              "/dev/virtio-ports/org.seamless.sinkd.0 " +
                                  options + " </dev/null >>/var/log/seamless/sinkd.log 2>&1 &"},
                             ro);
  }
  static Result<std::string> in_sink(const std::string& script) {
    qmp::RunOptions ro;
    ro.timeout = Millis(60000);
    return qmp::guest_run_ok(*sink_->agent, "/bin/sh", {"-c", script}, ro);
  }

  // Runs seamless-guest in the guest VM.
  static Result<std::string> guest_helper(std::vector<std::string> args) {
    qmp::RunOptions ro;
    ro.timeout = Millis(180000);
    return qmp::guest_run_ok(*guest_->agent, "/usr/sbin/seamless-guest", std::move(args), ro);
  }
  // Dumps the guest's gateway on `port` (dropbear's by default) into `path` there and returns the pack's bytes. A dump
  // that user activity aborted (a keep-alive landing during it) is tried again, as the
  // park controller does.
  static Result<std::string> dump_in_guest(const std::string& path, uint16_t port = 2222) {
    Result<std::string> dumped = make_error(ErrorKind::Timeout, "not tried");
    for (int attempt = 0; attempt < 5; ++attempt) {
      dumped = guest_helper({"dump", "--port", std::to_string(port), "--out", path});
      if (dumped.ok() || dumped.error().message.find("user activity") == std::string::npos) break;
    }
    SL_TRY(std::move(dumped));
    return qmp::read_guest_file(*guest_->agent, path);
  }
  // A pack of the guest's dropbear; the gateway goes home at once.
  static Result<std::string> guest_pack() {
    auto bytes = SL_TRY(dump_in_guest("/run/x.pack"));
    SL_TRY(guest_helper({"restore", "/run/x.pack"}));
    return bytes;
  }

  // The pack's bytes with its manifest edited; its images as they were.
  static Result<std::string> repacked(const std::string& bytes, const std::function<void(packfmt::Manifest&)>& edit) {
    auto dir = SL_TRY(TempDir::create());
    SL_TRY(sys::write_file(dir / "in.pack", bytes));
    auto m = SL_TRY(
        packfmt::Manifest::parse(SL_TRY(packfmt::unpack(dir / "in.pack", dir / "x", {}, packfmt::kKeepPageImages))));
    edit(m);
    auto files = packfmt::list_pack_files(dir / "x");
    std::erase(files, packfmt::kManifestName);
    SL_TRY(packfmt::write_pack(dir / "out.pack", m.to_json(), dir / "x", files));
    return sys::read_file(dir / "out.pack");
  }
  // Park: the guest's gateway on `port` is dumped there and restored by sinkd as `id`; the
  // guest VM is paused and OVS sends its traffic to the sink (as the controller will).
  static Result<void> park(qmp::QmpSocket& c, uint16_t port, const std::string& id) {
    const std::string path = cat("/run/", id, ".pack");
    auto pack = SL_TRY(dump_in_guest(path, port));
    SL_TRY(qmp::write_guest_file(*sink_->agent, path, pack));
    auto added = SL_TRY(client(c).add_gateway({path, id}));
    if (added.hostname != "sl-sink-client")
      return make_error(ErrorKind::Protocol, "add-gateway answered for host `", added.hostname, "`");
    SL_TRY(guest_->monitor->call("stop", "", Millis(30000)));
    SL_TRY(guest_->bed.redirect(test::Testbed::guest_mac(kGuest), test::Testbed::guest_mac(kSink)));
    return ok();
  }
  // Hands gateway `id` back; returns the pack's bytes. Packets for the VM are held from now.
  static Result<std::string> hand_back(qmp::QmpSocket& c, const std::string& id) {
    const std::string path = cat("/run/", id, "-back.pack");
    SL_TRY(client(c).hand_back({id, path}));
    return qmp::read_guest_file(*sink_->agent, path);
  }
  // Wake, after the hand-back: the guest VM resumes and announces itself (OVS learnt its MAC
  // at the sink's port), its traffic comes back, the pack is restored there (checked
  // against what park() dumped), the held packets follow. Returns how many were released.
  static Result<int64_t> go_home(qmp::QmpSocket& c, const std::string& id, const std::string& pack) {
    SL_TRY(guest_->monitor->call("cont", "", Millis(30000)));
    SL_TRY(guest_->monitor->call("announce-self", "{\"initial\":50,\"max\":550,\"rounds\":5,\"step\":100}",
                                 Millis(30000)));
    SL_TRY(guest_->bed.end_redirect(test::Testbed::guest_mac(kGuest)));
    const std::string path = cat("/run/", id, "-back.pack");
    SL_TRY(qmp::write_guest_file(*guest_->agent, path, pack));
    SL_TRY(guest_helper({"restore", path, "--dumped", cat("/run/", id, ".pack")}));  // what park() dumped
    auto released = SL_TRY(client(c).release_packets({id}));
    SL_TRY(client(c).remove_gateway({id}));
    return released.released;
  }

  // What the two VMs looked like when a check failed: processes, the kernel's last words,
  // the web servers' error logs. A paused guest VM does not answer (its part says so).
  static std::string vm_state() {
    qmp::RunOptions ro;
    ro.timeout = Millis(20000);
    const std::string script =
        "ps -eo pid,ppid,stat,rss,args | grep -v ' \\[' ; dmesg | tail -n 15; "
        "tail -n 5 /var/log/lighttpd/error.log /var/log/apache2/error.log 2>&1";
    std::string out;
    for (auto* vm : {guest_.get(), sink_.get()}) {
      auto got = qmp::guest_run_ok(*vm->agent, "/bin/sh", {"-c", script}, ro);
      out += cat("--- ", vm == guest_.get() ? "guest" : "sink", " VM\n", got.ok() ? *got : got.error().message, "\n");
    }
    return out;
  }

  static inline std::string key_;
  static inline std::unique_ptr<test::LibvirtGuest> sink_, guest_;
  static inline std::unique_ptr<TempDir> dir_;
};

TEST_F(SinkVm, AnswersOnItsVirtioSerialChannel) {
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message << "\n" << sink_->vm->console_log();
  auto st = (*c)->call("query-status", "", Millis(10000));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(qmp::get_string(st->root(), "version").ok()) << st->dump();
  auto unknown = (*c)->call("no-such-command", "", Millis(10000));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().remote_class, "CommandNotFound");
}

TEST_F(SinkVm, MalformedMessagesGetErrorReplies) {
  {
    // A raw client on the real channel: garbage, then a proper command still works.
    // A virtio-serial port shows the guest no hang-up when the host reconnects at once
    // (see sinkd/main.cpp): wait a moment before each attempt, and retry.
    std::unique_ptr<qmp::JsonStream> stream;
    for (int attempt = 0; attempt < 20 && !stream; ++attempt) {
      // The port must stay closed long enough for the guest to see the hang-up.
      std::this_thread::sleep_for(Millis(1000));
      auto fd = sys::connect_unix(sink_->vm->sink_socket());
      ASSERT_TRUE(fd.ok()) << fd.error().message;
      auto candidate = std::make_unique<qmp::JsonStream>(std::move(fd).value(), 1 << 20, "sinkd");
      if (candidate->next(Deadline(Millis(3000))).ok()) stream = std::move(candidate);
    }
    ASSERT_TRUE(stream) << "no greeting";
    qmp::JsonStream& s = *stream;
    auto say = [&](const std::string& text) {
      EXPECT_TRUE(s.write(text, Deadline(Millis(5000))).ok());
      auto item = s.next(Deadline(Millis(30000)));
      return item.ok() ? item->message.dump() : item.error().message;
    };
    EXPECT_NE(say("{\"execute\":\"qmp_capabilities\"}").find("return"), std::string::npos);
    EXPECT_NE(say("{\"execute\": nonsense}").find("malformed request"), std::string::npos);
    EXPECT_NE(say("{\"execute\":\"check-pack\",\"arguments\":{}}").find("missing field `pack`"), std::string::npos);
    EXPECT_NE(say("{\"execute\":\"query-status\",\"id\":3}").find("\"id\":3"), std::string::npos);
  }
  // The daemon greets the next client after this one hung up.
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
}

TEST_F(SinkVm, APackFromAnotherVmPassesTheTemplateCheck) {
  auto bytes = guest_pack();
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/in.pack", *bytes).ok());
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto checked = (*c)->call(proto::kCheckPack, proto::PackArg{"/run/in.pack"}.to_json(), Millis(120000));
  ASSERT_TRUE(checked.ok()) << checked.error().message;
  EXPECT_EQ(qmp::opt_string(checked->root(), "hostname").value_or(""), "sl-sink-client") << checked->dump();
  EXPECT_NE(checked->dump().find("dropbear"), std::string::npos) << checked->dump();

  // The same pack claiming another build of dropbear: refused as a template mismatch.
  auto other = repacked(*bytes, [](packfmt::Manifest& m) {
    for (auto& f : m.files)
      if (f.role == "exe") f.build_id = std::string(40, '0');
  });
  ASSERT_TRUE(other.ok()) << other.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/other.pack", *other).ok());
  auto refused = client(**c).check_pack({"/run/other.pack"});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("template mismatch"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("dropbear"), std::string::npos) << refused.error().message;
}

// The whole journey of a gateway, ZDTM style, across machines: dropbear with an SSH
// session in it (SSH keep-alives every 10 s, TCP keep-alives every 5 s) is dumped in the
// guest VM and restored by sinkd in a sink container in the sink VM while the guest VM is
// paused and OVS sends its traffic to the sink. Two minutes of keep-alives wake nothing
// and the session lives on. A new connection raises exactly one activity event naming its
// peer. The gateway is handed back; what the client types meanwhile is held in the sink
// and released to the guest VM once the gateway is restored there; the connection that
// woke it gets its answer. dropbear runs as a systemd unit with its log on the journal
// would (a stand-in journal in the guest): in the sink its log goes to the container's
// drain, and at home again to a fresh journal stream.
TEST_F(SinkVm, DropbearRoundTripsThroughASinkContainer) {
  const test::Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  auto journal_up = test::start_journal(*guest_->agent);
  ASSERT_TRUE(journal_up.ok()) << journal_up.error().message;
  auto unit = qmp::guest_run_ok(*guest_->agent, "/bin/sh",
                                {"-c", cat("pkill -x dropbear; sleep 0.5; (", test::kJournalExec,
                                           " dropbear dropbear -F -E -R -p 2222 &); sleep 2")});
  ASSERT_TRUE(unit.ok()) << unit.error().message;
  auto journal = [&]() {
    auto text = test::journal_text(*guest_->agent);
    return text.ok() ? *text : std::string();
  };
  test::ClientKeepalives tcp_keepalives(bed, 5);
  auto ssh = test::SshSession::open(bed, key_, dir_->path(), ip, 2222, 10);
  ASSERT_TRUE(ssh.ok()) << ssh.error().message;
  auto typed = (*ssh)->type("echo before-$((20+22))", "before-42");
  ASSERT_TRUE(typed.ok()) << typed.error().message;

  // Each dropbear's capabilities, no_new_privs and seccomp mode, as the guest runs them.
  auto privileges = [&](auto& agent, const std::string& procs) {
    auto text = qmp::guest_run_ok(agent, "/bin/sh",
                                  {"-c", "for p in " + procs +
                                             "; do grep -qx dropbear /proc/$p/comm || continue; "
                                             "grep -E '^(Cap(Inh|Prm|Eff|Bnd)|NoNewPrivs|Seccomp):' /proc/$p/status; "
                                             "done"});
    return text.ok() ? *text : text.error().message;
  };
  const std::string at_home = privileges(*guest_->agent, "$(pgrep -x dropbear | sort -n)");
  EXPECT_NE(at_home.find("Seccomp:\t0\n"), std::string::npos) << at_home;

  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_NE(journal().find("Child connection from " + bed.client_ip), std::string::npos) << journal();
  const size_t logged = journal().size();  // the guest agent is away while the VM is parked
  auto parked = park(**c, 2222, "rt");
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  // Restored, the images and CRIU's log are dropped (sinkd's state directory is a tmpfs);
  // the manifest stays.
  auto kept = qmp::guest_run_ok(*sink_->agent, "/usr/bin/find",
                                {"/run/seamless-sinkd/containers/rt/upper/.seamless", "-type", "f"});
  ASSERT_TRUE(kept.ok()) << kept.error().message;
  EXPECT_EQ(*kept, "/run/seamless-sinkd/containers/rt/upper/.seamless/manifest.json\n");
  // The gateway's /dev: the harmless devices and its own pseudo-terminals, none of the
  // sink's disks, memory or consoles.
  auto dev = qmp::guest_run_ok(
      *sink_->agent, "/bin/sh",
      {"-c",
       "nsenter -t $(sed 's/.*\"init\":\\([0-9]*\\).*/\\1/' /run/seamless-sinkd/containers/rt/state.json) -m -r "
       "ls /dev | tr '\\n' ' '"});
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  for (const char* present : {" null ", " urandom ", " pts ", " shm ", " ptmx "})
    EXPECT_NE((" " + *dev).find(present), std::string::npos) << present << " in " << *dev;
  for (const char* absent : {" vda ", " sda ", " mem ", " kmsg ", " console ", " vport", " hvc0 "})
    EXPECT_EQ((" " + *dev).find(absent), std::string::npos) << absent << " in " << *dev;
  // Its cgroup, with the sink's limits: the restored gateway was born there (no cgroup the
  // images name), and sees it as the root of its cgroup namespace.
  auto cg = qmp::guest_run_ok(
      *sink_->agent, "/bin/sh",
      {"-c",
       "cg=/run/seamless-sinkd/cgroup/seamless/rt; cat $cg/memory.max $cg/pids.max; "
       "echo -n ' '; for p in $(cat $cg/cgroup.procs); do cat /proc/$p/comm; done | sort -u | tr '\\n' ' '; echo; "
       "d=$(for p in $(cat $cg/cgroup.procs); do grep -qx dropbear /proc/$p/comm && echo $p; done | head -1); "
       "cat /proc/$d/cgroup; "
       "nsenter -t $(sed 's/.*\"init\":\\([0-9]*\\).*/\\1/' /run/seamless-sinkd/containers/rt/state.json) -C "
       "cat /proc/$d/cgroup"});
  ASSERT_TRUE(cg.ok()) << cg.error().message;
  EXPECT_EQ(cg->rfind("536870912\n1024\n", 0), 0u) << "memory.max, pids.max: " << *cg;
  for (const char* in : {" dropbear ", " seamless-sinkd "})
    EXPECT_NE(cg->find(in), std::string::npos) << in << " in the container's cgroup: " << *cg;
  EXPECT_NE(cg->find("\n0::/seamless/rt\n0::/\n"), std::string::npos) << "its cgroup outside and inside: " << *cg;
  // In the sink each dropbear runs with no_new_privs, under the sink's seccomp filter,
  // without CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE or CAP_SYS_RAWIO in any set.
  const std::string in_sink = privileges(*sink_->agent, "$(cat /run/seamless-sinkd/cgroup/seamless/rt/cgroup.procs)");
  EXPECT_NE(in_sink.find("NoNewPrivs:\t1\nSeccomp:\t2\n"), std::string::npos) << in_sink;
  EXPECT_EQ(in_sink.find("NoNewPrivs:\t0"), std::string::npos) << in_sink;
  EXPECT_EQ(in_sink.find("Seccomp:\t0"), std::string::npos) << in_sink;
  for (size_t at = in_sink.find("Cap"); at != std::string::npos; at = in_sink.find("Cap", at + 1)) {
    const uint64_t caps = std::strtoull(in_sink.c_str() + in_sink.find('\t', at) + 1, nullptr, 16);
    for (int cap : {16, 17, 19, 21})
      EXPECT_FALSE((caps >> cap) & 1) << "capability " << cap << " in " << in_sink.substr(at, 24);
  }

  // Two minutes idle with keep-alives: dropbear's timers, polls and keep-alive replies are
  // served in the sink, and the kernel there answers the TCP keep-alives.
  auto idle = (*c)->wait_event("ACTIVITY", Millis(120000));
  EXPECT_FALSE(idle.ok()) << "the idle gateway woke: " << idle->data.dump();
  auto listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).state, proto::GatewayState::Traced) << proto::to_json(*listed);
  EXPECT_TRUE((*ssh)->alive()) << "the session lived on in the sink";
  EXPECT_TRUE(bed.answers_ping(ip)) << "the sink answers for the parked VM";

  // A new connection: one activity event, naming the client.
  auto fresh = bed.connect_from_client(ip, 2222);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  auto woke = (*c)->wait_event("ACTIVITY", Millis(60000));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  const std::string reason = qmp::opt_string(woke->data.root(), "reason").value_or("");
  EXPECT_NE(reason.find("new connection from " + bed.client_ip + ":"), std::string::npos) << reason;
  EXPECT_EQ(qmp::opt_string(woke->data.root(), "id").value_or(""), "rt");

  // Wake: hand back; the client types while the gateway is away (held in the sink).
  auto back = hand_back(**c, "rt");
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_TRUE((*ssh)->send("echo held-$((40+2))").ok());
  // Handed back, the sink speaks for the VM no more (it still sleeps): a reply from there
  // after the VM is home would teach the switch the VM's MAC at the sink's port.
  EXPECT_FALSE(bed.answers_ping(ip)) << "the sink answered for a handed-back VM";
  auto again = (*c)->wait_event("ACTIVITY", Millis(1000));
  EXPECT_FALSE(again.ok()) << "a second activity event: " << again->data.dump();
  auto released = go_home(**c, "rt", *back);
  ASSERT_TRUE(released.ok()) << released.error().message;
  EXPECT_GE(*released, 1) << "the line typed during the move was held";

  // What was typed during the move is answered at home, and so is the waking connection.
  auto held = (*ssh)->wait_for("held-42");
  EXPECT_TRUE(held.ok()) << held.error().message;
  auto banner = test::read_until(fresh->get(), "SSH-");
  EXPECT_TRUE(banner.ok()) << "the connection that woke it: " << banner.error().message;
  typed = (*ssh)->type("echo after-$((50+5))", "after-55");
  EXPECT_TRUE(typed.ok()) << typed.error().message;
  EXPECT_TRUE((*ssh)->alive());
  // At home with what they had before the park: the guest put back what the sink took.
  const std::string home_again = privileges(*guest_->agent, "$(pgrep -x dropbear | sort -n | head -2)");
  EXPECT_EQ(home_again, at_home) << "before:\n" << at_home << "after:\n" << home_again;
  // At home, dropbear logs to the journal again, on a stream the restore opened.
  const std::string since = journal().substr(logged);
  EXPECT_EQ(since.rfind("dropbear\n\n6\n1\n0\n0\n0\n", 0), 0u) << since;
  EXPECT_NE(since.find("Child connection from " + bed.client_ip), std::string::npos)
      << "the waking connection, logged at home: " << since;

  auto listed_after = client(**c).list_gateways();
  ASSERT_TRUE(listed_after.ok());
  EXPECT_TRUE(listed_after->empty()) << proto::to_json(*listed_after);
}

// The other gateways of the template take the same journey, one at a time, each with a
// connection opened before the move: an SSH session (sshd), an HTTP keep-alive connection
// that has fetched a PHP page (lighttpd+PHP, apache2+PHP), an FTP control connection
// (vsftpd). Idling in the sink wakes nothing. The activity is the one each gateway sees:
// a new SSH login, a page read on the kept-alive connection, a new FTP connection; it is
// reported once, and answered after the gateway is home, where the old connection goes on.
TEST_F(SinkVm, EveryGatewayRoundTripsThroughASinkContainer) {
  const test::Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  const std::string page = "GET /info.php HTTP/1.1\r\nHost: guest\r\nConnection: keep-alive\r\n\r\n";
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  struct Case {
    const char* name;
    uint16_t port;
    const char* reason;  // in the activity event
  };
  for (const Case& gw : {Case{"sshd", 22, "new connection from "}, Case{"lighttpd", 80, "info.php"},
                         Case{"apache2", 8080, "info.php"}, Case{"vsftpd", 21, "new connection from "}}) {
    SCOPED_TRACE(gw.name);
    const bool http = gw.port == 80 || gw.port == 8080;
    std::unique_ptr<test::SshSession> ssh, login;
    UniqueFd conn, fresh;
    if (gw.port == 22) {
      auto s = test::SshSession::open(bed, key_, dir_->path(), ip, 22);
      ASSERT_TRUE(s.ok()) << s.error().message;
      ssh = std::move(s).value();
      auto typed = ssh->type("echo sshd-$((40+2))", "sshd-42");
      ASSERT_TRUE(typed.ok()) << typed.error().message;
    } else {
      auto fd = bed.connect_from_client(ip, gw.port);
      ASSERT_TRUE(fd.ok()) << fd.error().message;
      conn = std::move(fd).value();
      if (http) {
        ASSERT_TRUE(sys::write_all(conn.get(), page, Deadline(Millis(5000))).ok());
      }
      auto got = test::read_until(conn.get(), http ? "php ok" : "220");
      ASSERT_TRUE(got.ok()) << got.error().message;
      // apache2's prefork parent tops its idle children up once a second, and the one
      // serving this connection is busy now: a dump before the top-up would carry the fork
      // into the sink (a parked VM has been idle far longer than that).
      if (http) std::this_thread::sleep_for(Millis(3000));
    }

    auto parked = park(**c, gw.port, gw.name);
    ASSERT_TRUE(parked.ok()) << parked.error().message;
    auto idle = (*c)->wait_event("ACTIVITY", Millis(10000));
    EXPECT_FALSE(idle.ok()) << "the idle gateway woke: " << idle->data.dump();

    if (gw.port == 22) {
      auto s = test::SshSession::open(bed, key_, dir_->path(), ip, 22);  // a new login
      ASSERT_TRUE(s.ok()) << s.error().message;
      login = std::move(s).value();
    } else if (http) {
      ASSERT_TRUE(sys::write_all(conn.get(), page, Deadline(Millis(5000))).ok());
    } else {
      auto fd = bed.connect_from_client(ip, gw.port);
      ASSERT_TRUE(fd.ok()) << fd.error().message;
      fresh = std::move(fd).value();
    }
    auto woke = (*c)->wait_event("ACTIVITY", Millis(60000));
    ASSERT_TRUE(woke.ok()) << woke.error().message;
    const std::string reason = qmp::opt_string(woke->data.root(), "reason").value_or("");
    EXPECT_NE(reason.find(gw.reason), std::string::npos) << reason;
    EXPECT_EQ(qmp::opt_string(woke->data.root(), "id").value_or(""), gw.name);
    std::printf("%s: activity `%s`\n", gw.name, reason.c_str());

    auto back = hand_back(**c, gw.name);
    ASSERT_TRUE(back.ok()) << back.error().message;
    auto again = (*c)->wait_event("ACTIVITY", Millis(1000));
    EXPECT_FALSE(again.ok()) << "a second activity event: " << again->data.dump();
    auto released = go_home(**c, gw.name, *back);
    ASSERT_TRUE(released.ok()) << released.error().message;

    if (gw.port == 22) {
      auto typed = login->type("echo login-$((30+3))", "login-33");
      EXPECT_TRUE(typed.ok()) << "the login that woke it: " << typed.error().message;
      typed = ssh->type("echo sshd-again-$((50+5))", "sshd-again-55");
      EXPECT_TRUE(typed.ok()) << "the old session: " << typed.error().message;
    } else if (http) {
      auto got = test::read_until(conn.get(), "php ok");
      EXPECT_TRUE(got.ok()) << "the request that woke it: " << got.error().message;
      ASSERT_TRUE(sys::write_all(conn.get(), page, Deadline(Millis(5000))).ok());
      got = test::read_until(conn.get(), "php ok");
      EXPECT_TRUE(got.ok()) << "the keep-alive connection stays open: " << got.error().message;
    } else {
      auto got = test::read_until(fresh.get(), "220");
      EXPECT_TRUE(got.ok()) << "the connection that woke it: " << got.error().message;
      ASSERT_TRUE(sys::write_all(conn.get(), "USER ftp\r\n", Deadline(Millis(5000))).ok());
      got = test::read_until(conn.get(), "331");
      EXPECT_TRUE(got.ok()) << "the old control connection: " << got.error().message;
    }
  }
  auto listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok());
  EXPECT_TRUE(listed->empty()) << proto::to_json(*listed);
}

// Containers outlive the daemon: a restarted sinkd adopts the container an earlier run
// made and traces its gateway again; a gateway that dies in the sink is reported with an
// ERROR event and listed as crashed, never silently gone.
TEST_F(SinkVm, ARestartedSinkdFindsItsContainersAndReportsACrash) {
  auto bytes = guest_pack();
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/ad.pack", *bytes).ok());
  {
    auto c = control();
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto added = client(**c).add_gateway({"/run/ad.pack", "ad"});
    ASSERT_TRUE(added.ok()) << added.error().message;
  }
  // The daemon dies (not its containers: their inits are other processes) and comes back.
  qmp::RunOptions ro;
  ro.timeout = Millis(60000);
  auto restarted = restart_sinkd("");
  ASSERT_TRUE(restarted.ok()) << restarted.error().message;
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).id, "ad");
  EXPECT_EQ(listed->at(0).state, proto::GatewayState::Traced) << proto::to_json(*listed);

  // The gateway dies in the sink: reported.
  ASSERT_TRUE(qmp::guest_run_ok(*sink_->agent, "/usr/bin/pkill", {"-KILL", "-x", "dropbear"}, ro).ok());
  auto error = (*c)->wait_event("ERROR", Millis(60000));
  ASSERT_TRUE(error.ok()) << error.error().message;
  EXPECT_EQ(qmp::opt_string(error->data.root(), "id").value_or(""), "ad");
  EXPECT_NE(qmp::opt_string(error->data.root(), "error").value_or("").find("signal 9"), std::string::npos)
      << error->data.dump();
  listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).state, proto::GatewayState::Crashed) << proto::to_json(*listed);
  auto handed = client(**c).hand_back({"ad"});
  ASSERT_FALSE(handed.ok()) << "a crashed gateway cannot be handed back";
  EXPECT_NE(handed.error().message.find("crashed"), std::string::npos) << handed.error().message;
  ASSERT_TRUE(client(**c).remove_gateway({"ad"}).ok());

  // A container whose init died with the daemon is lost; removing it takes its cgroup
  // and its directory too.
  auto added = client(**c).add_gateway({"/run/ad.pack", "lost"});
  ASSERT_TRUE(added.ok()) << added.error().message;
  c->reset();
  auto killed = qmp::guest_run_ok(
      *sink_->agent, "/bin/sh",
      {"-c",
       "pkill -KILL -f '^seamless-sinkd --port'; "
       "kill -KILL $(sed 's/.*\"init\":\\([0-9]*\\).*/\\1/' /run/seamless-sinkd/containers/lost/state.json); "
       "sleep 1; setsid seamless-sinkd --port "
       "/dev/virtio-ports/org.seamless.sinkd.0 </dev/null >>/var/log/seamless/sinkd.log 2>&1 &"},
      ro);
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).state, proto::GatewayState::Lost) << proto::to_json(*listed);
  ASSERT_TRUE(client(**c).remove_gateway({"lost"}).ok());
  auto left = qmp::guest_run_ok(*sink_->agent, "/bin/sh",
                                {"-c",
                                 "ls -d /run/seamless-sinkd/cgroup/seamless/lost "
                                 "/run/seamless-sinkd/containers/lost 2>/dev/null; true"});
  ASSERT_TRUE(left.ok()) << left.error().message;
  EXPECT_EQ(*left, "") << "left behind by a lost container";
  // The sink's interface carried the guest's MAC: the guest claims it back.
  ASSERT_TRUE(
      guest_->monitor->call("announce-self", "{\"initial\":50,\"max\":550,\"rounds\":5,\"step\":100}", Millis(30000))
          .ok());
}

// One container's add holds up no other container: while an add's CRIU restore runs
// (made slow here by a `criu` that first sleeps 40 s on a restore), sinkd lists it as
// adding and hands another container's gateway back; the add is answered when done.
TEST_F(SinkVm, AnAddInProgressHoldsUpNoOtherContainer) {
  auto bytes = guest_pack();
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/ad.pack", *bytes).ok());
  // The second container stands for another VM: the same pack with another MAC (two
  // macvlans with one MAC cannot share the sink's NIC).
  auto other = repacked(*bytes, [](packfmt::Manifest& m) {
    for (auto& iface : m.interfaces) iface.mac = iface.mac.substr(0, 15) + "fe";
  });
  ASSERT_TRUE(other.ok()) << other.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/other.pack", *other).ok());
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/usr/local/sbin/criu-slow",
                                    "#!/bin/sh\nfor a; do [ \"$a\" = restore ] && sleep 40 && break; done\n"
                                    "exec criu \"$@\"\n")
                  .ok());
  ASSERT_TRUE(in_sink("chmod 755 /usr/local/sbin/criu-slow").ok());
  auto state_of = [](const std::vector<proto::ListedGateway>& listed, const std::string& id) {
    for (const auto& g : listed)
      if (g.id == id) return g.state;
    return proto::GatewayState::Unknown;
  };
  {
    auto c = control();
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto added = client(**c).add_gateway({"/run/ad.pack", "quick", true});
    ASSERT_TRUE(added.ok()) << added.error().message;
  }
  ASSERT_TRUE(restart_sinkd("--criu /usr/local/sbin/criu-slow").ok());
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;

  // The slow add, in flight; the project's QMP client keeps its reply when it comes.
  auto slow = (*c)->send(proto::kAddGateway, proto::AddGateway{"/run/other.pack", "slow", true}.to_json(),
                         Deadline(Millis(5000)));
  ASSERT_TRUE(slow.ok()) << slow.error().message;
  Result<std::vector<proto::ListedGateway>> listed = make_error(ErrorKind::Timeout, "not listed");
  for (int i = 0; i < 100; ++i) {
    listed = client(**c).list_gateways();
    ASSERT_TRUE(listed.ok()) << listed.error().message;
    if (state_of(*listed, "slow") == proto::GatewayState::Adding) break;
    if (auto early = (*c)->reply(*slow))
      FAIL() << "answered at once: " << (early->ok() ? (*early)->dump() : early->error().message);
    std::this_thread::sleep_for(Millis(200));
  }
  ASSERT_EQ(state_of(*listed, "slow"), proto::GatewayState::Adding) << proto::to_json(*listed);
  EXPECT_EQ(state_of(*listed, "quick"), proto::GatewayState::Traced) << proto::to_json(*listed);

  auto handed = client(**c).hand_back({"quick"});
  ASSERT_TRUE(handed.ok()) << handed.error().message;
  EXPECT_GT(handed->bytes, 0);
  listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  EXPECT_EQ(state_of(*listed, "slow"), proto::GatewayState::Adding)
      << "the hand-back waited for the other container's add: " << proto::to_json(*listed);
  EXPECT_EQ(state_of(*listed, "quick"), proto::GatewayState::HandedBack) << proto::to_json(*listed);

  std::optional<Result<qmp::Json>> reply;
  for (Deadline d(Millis(180000)); !reply && !d.expired();) {
    ASSERT_TRUE((*c)->pump(Millis(1000)).ok());
    reply = (*c)->reply(*slow);
  }
  ASSERT_TRUE(reply.has_value()) << "the slow add was never answered";
  ASSERT_TRUE(reply->ok()) << reply->error().message;
  auto added = proto::Added::parse((*reply)->root());
  ASSERT_TRUE(added.ok()) << added.error().message;
  EXPECT_EQ(added->id, "slow");
  EXPECT_GE(added->seconds, 40) << "the restore went through the slow criu";
  listed = client(**c).list_gateways();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  EXPECT_EQ(state_of(*listed, "slow"), proto::GatewayState::Traced) << proto::to_json(*listed);

  for (const char* id : {"quick", "slow"}) EXPECT_TRUE(client(**c).remove_gateway({id}).ok()) << id;
  c->reset();
  ASSERT_TRUE(restart_sinkd("").ok());
}

// A hostile gateway in a sink container (zdtm_attacker: a listener from the guest, shipped
// with its pack as a daemon the sink never saw) attacks when a signal says so, not when a
// client calls (that would wake the VM first). Traced, its first attempt is stopped before
// it runs and wakes the VM, named. With sinkd dead (nothing traces it), every attempt
// fails: the sink's files are not in its root, its /dev has no disk, the kernel refuses
// modules, ptrace, mounts, a new root or namespaces; no file of the sink is read. Taking
// more memory than its container may, it alone is killed, by its container's cgroup; the
// sink and another container go on.
TEST_F(SinkVm, AGatewayCannotBreakOutOfItsContainer) {
  const std::string secret = "/etc/seamless/sink-secret", words = "sink-secret-4242";
  ASSERT_TRUE(in_sink("mkdir -p /etc/seamless; echo " + words + " >" + secret + "; chmod 600 " + secret).ok());
  ASSERT_TRUE(restart_sinkd("--container-memory 64").ok());
  // Another VM's container beside it (dropbear; the same pack with another MAC).
  auto bytes = guest_pack();
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  auto other = repacked(*bytes, [](packfmt::Manifest& m) {
    for (auto& iface : m.interfaces) iface.mac = iface.mac.substr(0, 15) + "fd";
  });
  ASSERT_TRUE(other.ok()) << other.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/neighbour.pack", *other).ok());
  qmp::RunOptions ro;
  ro.timeout = Millis(60000);
  ASSERT_TRUE(qmp::guest_run_ok(*guest_->agent, "/bin/sh",
                                {"-c",
                                 "cp /opt/seamless/bin/zdtm_attacker /usr/local/bin/ && setsid "
                                 "/usr/local/bin/zdtm_attacker 7070 " +
                                     secret + " </dev/null >/dev/null 2>&1 & sleep 1"},
                                ro)
                  .ok());
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto neighbour = client(**c).add_gateway({"/run/neighbour.pack", "neighbour", true});
  ASSERT_TRUE(neighbour.ok()) << neighbour.error().message;
  auto moved = test::move_to_sink(**c, {*guest_, kGuest, *sink_, kSink}, {7070}, "attacker");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_GE(moved->shipment.outcome.included, 1) << "the sink never had zdtm_attacker";
  auto pids = in_sink("pgrep -x zdtm_attacker; pgrep -x dropbear");
  ASSERT_TRUE(pids.ok()) << pids.error().message;
  // Numbers only go into the commands below (the sink VM's output is not trusted text).
  std::istringstream pid_lines(*pids);
  pid_t attacker_pid = 0, dropbear_pid = 0;
  ASSERT_TRUE(pid_lines >> attacker_pid >> dropbear_pid && attacker_pid > 1 && dropbear_pid > 1) << *pids;
  const std::string attacker = std::to_string(attacker_pid), dropbear = std::to_string(dropbear_pid);
  auto idle = (*c)->wait_event("ACTIVITY", Millis(5000));
  EXPECT_FALSE(idle.ok()) << "the idle attacker woke: " << idle->data.dump();

  // Traced: the first attempt never runs.
  ASSERT_TRUE(in_sink("kill -USR1 " + attacker).ok());
  auto woke = (*c)->wait_event("ACTIVITY", Millis(60000));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  EXPECT_EQ(qmp::opt_string(woke->data.root(), "id").value_or(""), "attacker");
  EXPECT_NE(qmp::opt_string(woke->data.root(), "reason").value_or("").find("openat `" + secret + "`"),
            std::string::npos)
      << woke->data.dump();

  // Untraced: sinkd dies, the attacker goes on.
  c->reset();
  ASSERT_TRUE(in_sink("pkill -KILL -f '^seamless-sinkd --port'; sleep 1").ok());
  ASSERT_TRUE(in_sink("kill -CONT " + attacker).ok());
  const std::string report_path = "/proc/" + attacker + "/root/tmp/attack.report";
  Result<std::string> report = make_error(ErrorKind::Timeout, "no report");
  for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(500))) {
    report = in_sink("cat " + report_path + " 2>/dev/null; true");
    if (report.ok() && report->find("open_by_handle_at") != std::string::npos) break;
  }
  ASSERT_TRUE(report.ok() && report->find("open_by_handle_at") != std::string::npos)
      << (report.ok() ? *report : report.error().message);
  std::printf("the attacker's report:\n%s", report->c_str());
  EXPECT_EQ(report->find(words), std::string::npos) << "a sink file was read:\n" << *report;
  std::map<std::string, long> results;
  std::istringstream lines(*report);
  for (std::string line; std::getline(lines, line);) {
    // "NAME... RESULT[ TEXT]": the name ends before the first numeric word.
    std::istringstream w(line);
    std::string name, word;
    while (w >> word && !(std::isdigit(static_cast<unsigned char>(word[0])) || word[0] == '-'))
      name += (name.empty() ? "" : " ") + word;
    results[name] = std::strtol(word.c_str(), nullptr, 10);
  }
  for (const std::string& name : std::vector<std::string>{
           "read " + secret, "read /proc/1/root" + secret, "read /../.." + secret, "read /etc/shadow", "open /dev/vda",
           "open /dev/sda", "open /dev/mem", "open /dev/kmsg", "open /dev/virtio-ports/org.seamless.sinkd.0"}) {
    ASSERT_TRUE(results.count(name)) << name << "\n" << *report;
    EXPECT_LT(results[name], 0) << name;
  }
  for (const char* refused : {"mknod /tmp/vda", "init_module", "finit_module", "ptrace init", "process_vm_readv init",
                              "mount", "chroot", "unshare", "open_by_handle_at"}) {
    ASSERT_TRUE(results.count(refused)) << refused << "\n" << *report;
    EXPECT_EQ(results[refused], -EPERM) << refused << ": the sink's seccomp filter refuses it";
  }

  // sinkd again: it adopts both containers and traces them.
  ASSERT_TRUE(restart_sinkd("").ok());
  c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto state_of = [&](const std::string& id) {
    auto listed = client(**c).list_gateways();
    if (listed.ok())
      for (const auto& g : *listed)
        if (g.id == id) return g.state;
    return proto::GatewayState::Unknown;
  };
  EXPECT_EQ(state_of("attacker"), proto::GatewayState::Traced);
  EXPECT_EQ(state_of("neighbour"), proto::GatewayState::Traced);

  // Memory beyond its container's 64 MiB: killed in its cgroup, reported; nothing else.
  ASSERT_TRUE(in_sink("kill -USR2 " + attacker).ok());
  auto error = (*c)->wait_event("ERROR", Millis(120000));
  ASSERT_TRUE(error.ok()) << error.error().message;
  EXPECT_EQ(qmp::opt_string(error->data.root(), "id").value_or(""), "attacker");
  EXPECT_NE(qmp::opt_string(error->data.root(), "error").value_or("").find("signal 9"), std::string::npos)
      << error->data.dump();
  auto oom = in_sink("cat /run/seamless-sinkd/cgroup/seamless/attacker/memory.events");
  ASSERT_TRUE(oom.ok()) << oom.error().message;
  auto kills = oom->find("oom_kill ");
  ASSERT_NE(kills, std::string::npos) << *oom;
  EXPECT_GE(std::atoi(oom->c_str() + kills + 9), 1) << "killed by its container's limit:\n" << *oom;
  EXPECT_EQ(state_of("attacker"), proto::GatewayState::Crashed);
  EXPECT_EQ(state_of("neighbour"), proto::GatewayState::Traced);
  auto still = in_sink("pgrep -x dropbear");
  ASSERT_TRUE(still.ok()) << still.error().message;
  EXPECT_NE(still->find(dropbear), std::string::npos) << "the other container's dropbear lives on";
  auto handed = client(**c).hand_back({"neighbour"});
  EXPECT_TRUE(handed.ok()) << "the sink serves the other container: " << handed.error().message;
  for (const char* id : {"attacker", "neighbour"}) EXPECT_TRUE(client(**c).remove_gateway({id}).ok()) << id;
  ASSERT_TRUE(in_sink("rm -f " + secret).ok());
  c->reset();
  ASSERT_TRUE(restart_sinkd("").ok());
}

}  // namespace
}  // namespace seamless::sink
