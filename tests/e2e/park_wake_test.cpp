// SPDX-License-Identifier: Apache-2.0
// End to end, as an operator and a client see it: a guest VM and a sink VM on the test
// bed, seamlessd started with a configuration naming the sink, and the operator commands
// virsh-park / virsh-wake / virsh-parked run as processes. Everything is checked from the
// client namespace: the parked VM answers ping (through the sink), an SSH session opened
// before the park lives through it, a new request wakes the VM by itself and gets its
// normal answer, virsh-wake works, park -> wake -> park -> wake runs cleanly, refusals
// change nothing, and a failure injected at each park step leaves the VM running with its
// services and nothing of the park behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "qmp/commands.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "qmp/socket.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::test {
namespace {

constexpr int kSink = 17, kGuest = 18;
constexpr const char* kSinkName = "sl-e2e-sink";
constexpr const char* kGuestName = "sl-e2e";
const std::string kPage = "GET /info.php HTTP/1.1\r\nHost: guest\r\nConnection: keep-alive\r\n\r\n";

struct Ran {
  int code = -1;
  std::string out, err;
};

class ParkWake : public VmSuite<ParkWake> {
 protected:
  static void SetUpTestSuite() {
    auto s = LibvirtGuest::boot(sink_vm_spec(kSinkName, kSink, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN));
    if (!s.ok()) return fail(s.error().message);
    sink_ = std::move(s).value();
    VmSpec guest;
    guest.name = kGuestName;
    guest.index = kGuest;
    guest.services = "dropbear,lighttpd";
    guest.tools = {SEAMLESS_GUEST_BIN};
    auto g = LibvirtGuest::boot(guest);
    if (!g.ok()) return fail(g.error().message);
    guest_ = std::move(g).value();
    auto dir = TempDir::create();
    if (!dir.ok()) return fail(dir.error().message);
    dir_ = std::make_unique<TempDir>(std::move(dir).value());
    auto key = make_trusted_ssh_key(*guest_->agent, dir_->path());
    if (!key.ok()) return fail(key.error().message);
    key_ = *key;
    // The default socket: the libvirt hook notifies seamlessd there.
    socket_ = "/run/seamless/seamlessd.sock";
    if (auto w = sys::write_file(*dir_ / "seamless.conf",
                                 cat("# e2e\nsink ", kSinkName, "\nmode ram\nwake-sink-first yes\n"));
        !w.ok())
      return fail(w.error().message);
    if (auto up = start_daemon(); !up.ok()) return fail(up.error().message);
  }
  static void TearDownTestSuite() {
    if (daemon_.pid() > 0) daemon_.stop(Millis(20000));
    if (guest_)
      (void)run({"ovs-ofctl", "del-flows", guest_->bed.bridge, "cookie=0x5e1e000000000000/0xffff000000000000"});
    guest_.reset();
    sink_.reset();
    dir_.reset();
  }
  void SetUp() override { require(sink_ != nullptr && guest_ != nullptr); }
  void TearDown() override {
    if (HasFailure()) {
      auto log = sys::read_file(*dir_ / "seamlessd.log");
      auto p = parked();
      std::printf("--- virsh-parked: %s\n", p.ok() ? p->dump().c_str() : p.error().message.c_str());
      std::printf("--- seamlessd log (tail)\n%s\n",
                  log.ok() ? log->substr(log->size() > 6000 ? log->size() - 6000 : 0).c_str() : "");
    }
  }

  // seamlessd as the test bed runs it: by hand, its log in the test's directory.
  static Result<void> start_daemon() {
    SpawnOptions so;
    so.stdout_path = *dir_ / "seamlessd.log";
    so.stderr_path = *dir_ / "seamlessd.log";
    ::setenv("SEAMLESS_TEST_SEAMS", "1", 1);
    ::setenv("SEAMLESS_LOG", "info", 1);
    daemon_ =
        SL_TRY(ChildProcess::spawn({SEAMLESSD_BIN, "--config", *dir_ / "seamless.conf", "--socket", socket_}, so));
    // Up once it answers and its sink is connected.
    for (Deadline d(Millis(120000)); !d.expired(); std::this_thread::sleep_for(Millis(500))) {
      auto c = qmp::QmpSocket::connect(socket_, Millis(2000));
      if (!c.ok()) continue;
      auto st = (*c)->call("query-status", "", Millis(5000));
      if (st.ok() && st->dump().find("\"connected\":true") != std::string::npos) return ok();
    }
    return make_error(ErrorKind::Timeout, "seamlessd did not connect to its sink in 120 s");
  }

  static Ran virsh(const std::string& verb, std::vector<std::string> args) {
    std::vector<std::string> argv = {cat(VIRSH_DIR, "/virsh-", verb), "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run(argv, Millis(900000));
    if (!r.ok()) return Ran{-1, "", r.error().message};
    return Ran{r->status.code, r->out, r->err};
  }
  static Result<qmp::Json> daemon_call(const std::string& cmd, const std::string& args) {
    auto c = SL_TRY(qmp::QmpSocket::connect(socket_, Millis(5000)));
    return c->call(cmd, args, Millis(60000));
  }
  // The controller's test seam: the named step ("park:dump") fails; "" for none.
  static Result<qmp::Json> fail_at(const std::string& where) {
    qmp::ArgWriter w;
    return daemon_call("test-fail-at", w.str("at", where).finish());
  }
  // One of the two consistent states: the VM runs, serves from the client namespace, and
  // nothing of a park is left.
  void expect_home_and_serving() {
    auto running = vm_running();
    ASSERT_TRUE(running.ok()) << running.error().message;
    EXPECT_TRUE(*running);
    EXPECT_FALSE(is_parked());
    EXPECT_EQ(leftovers(), "");
    auto page = fetch_page(Millis(30000));
    EXPECT_TRUE(page.ok()) << "the service: " << page.error().message;
  }
  static Result<qmp::Json> parked() {
    auto r = virsh("parked", {"--json"});
    if (r.code != 0) return make_error(ErrorKind::Remote, "virsh-parked: ", r.err);
    return qmp::parse(r.out);
  }
  static bool is_parked() {
    auto p = parked();
    if (!p.ok() || !p->root().IsObject()) return false;
    auto list = p->root().FindMember("parked");
    if (list == p->root().MemberEnd() || !list->value.IsArray()) return false;
    for (const auto& e : list->value.GetArray())
      if (e.IsObject() && qmp::opt_string(e, "domain").value_or("") == kGuestName) return true;
    return false;
  }
  static Result<bool> vm_running() {
    auto st = SL_TRY(qmp::execute(*guest_->monitor, qmp::QueryStatus{}));
    return st.running;
  }
  // The seamless flows on the bridge and the containers in the sink, as text.
  static std::string leftovers() {
    std::string out;
    auto flows = run_ok({"ovs-ofctl", "dump-flows", guest_->bed.bridge});
    if (flows.ok())
      for (size_t at = 0; (at = flows->find("cookie=0x5e1e", at)) != std::string::npos; ++at) out += "flow ";
    auto conts = qmp::guest_run_ok(*sink_->agent, "/bin/ls", {"/run/seamless-sinkd/containers"});
    if (conts.ok() && !conts->empty()) out += "containers: " + *conts;
    auto xml = guest_->vm->domain().xml();
    if (xml.ok() && xml->find("seamless.dev/xmlns/park") != std::string::npos) out += "metadata ";
    return out;
  }
  // A page over a fresh connection from the client namespace.
  static Result<std::string> fetch_page(Millis timeout = Millis(120000)) {
    auto fd = SL_TRY(guest_->bed.connect_from_client(guest_->bed.guest_ip(kGuest), 80, timeout));
    SL_TRY(sys::write_all(fd.get(), kPage, Deadline(Millis(5000))));
    return read_until(fd.get(), "php ok", timeout);
  }
  static Result<void> park_ok(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {kGuestName};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = virsh("park", args);
    if (r.code != 0) return make_error(ErrorKind::Remote, "virsh-park exit ", r.code, ": ", r.err, r.out);
    return ok();
  }
  static Result<void> wait_woken(Millis timeout = Millis(180000)) {
    for (Deadline d(timeout); !d.expired(); std::this_thread::sleep_for(Millis(500)))
      if (!is_parked()) return ok();
    return make_error(ErrorKind::Timeout, "still parked");
  }

  static inline std::string key_, socket_;
  static inline std::unique_ptr<LibvirtGuest> sink_, guest_;
  static inline std::unique_ptr<TempDir> dir_;
  static inline ChildProcess daemon_;
};

// The journey: park; ping answers through the sink; two minutes of SSH and TCP
// keep-alives (and lighttpd's idle keep-alive connection) wake nothing; the SSH session
// opened before is typed into while parked and after; a page request wakes the VM by
// itself and gets its answer with no client packet retransmitted and no reset;
// virsh-parked shows the wake's breakdown.
TEST_F(ParkWake, AParkedVmAnswersAndAPageRequestWakesIt) {
  const Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  ClientKeepalives tcp_keepalives(bed, 5);
  auto ssh = SshSession::open(bed, key_, dir_->path(), ip, 2222, 10);
  ASSERT_TRUE(ssh.ok()) << ssh.error().message;
  ASSERT_TRUE((*ssh)->type("echo before-$((20+22))", "before-42").ok());
  auto http = bed.connect_from_client(ip, 80);
  ASSERT_TRUE(http.ok()) << http.error().message;
  ASSERT_TRUE(sys::write_all(http->get(), kPage, Deadline(Millis(5000))).ok());
  ASSERT_TRUE(read_until(http->get(), "php ok").ok());
  std::this_thread::sleep_for(Millis(2000));
  const auto weight = guest_->vm->domain().cpu_shares();  // libvirt's, for real
  ASSERT_TRUE(weight.ok()) << weight.error().message;

  auto parked_now = park_ok();
  ASSERT_TRUE(parked_now.ok()) << parked_now.error().message;
  EXPECT_TRUE(is_parked());
  auto running = vm_running();
  ASSERT_TRUE(running.ok()) << running.error().message;
  EXPECT_FALSE(*running) << "the parked VM is paused";
  EXPECT_TRUE(bed.answers_ping(ip)) << "the sink answers ping for the parked VM";
  auto xml = guest_->vm->domain().xml();
  ASSERT_TRUE(xml.ok());
  EXPECT_NE(xml->find("seamless.dev/xmlns/park"), std::string::npos) << "park state in the domain's metadata";

  // Two minutes of keep-alives: served in the sink.
  std::this_thread::sleep_for(Millis(120000));
  EXPECT_TRUE(is_parked()) << "keep-alives woke it";
  EXPECT_TRUE((*ssh)->alive());
  // Typed into while parked: the line is answered (by the sink, or at home if it woke it).
  auto during = (*ssh)->type("echo during-$((30+3))", "during-33", Millis(300000));
  EXPECT_TRUE(during.ok()) << "the session while parked: " << during.error().message;

  // A page request wakes it by itself and is answered: no retransmission, no reset.
  if (!is_parked()) {
    ASSERT_TRUE(park_ok().ok());
  }
  auto capture = ClientCapture::start(bed, dir_->path(), "tcp port 80");
  ASSERT_TRUE(capture.ok()) << capture.error().message;
  auto waking = bed.connect_from_client(ip, 80, Millis(300000));
  ASSERT_TRUE(waking.ok()) << waking.error().message;
  ASSERT_TRUE(sys::write_all(waking->get(), kPage, Deadline(Millis(5000))).ok());
  auto page = read_until(waking->get(), "php ok", Millis(300000));
  EXPECT_TRUE(page.ok()) << "the waking request: " << page.error().message;
  auto seen = (*capture)->stop();  // before the connection closes
  ASSERT_TRUE(seen.ok()) << seen.error().message;
  std::string lines;
  for (const auto& l : seen->lines) lines += l + "\n";
  EXPECT_GT(seen->packets, 4) << lines;
  EXPECT_EQ(seen->resets, 0) << lines;
  EXPECT_EQ(seen->retransmitted, 0) << lines;
  auto woken = wait_woken();
  ASSERT_TRUE(woken.ok()) << woken.error().message;
  running = vm_running();
  ASSERT_TRUE(running.ok());
  EXPECT_TRUE(*running);
  auto typed = (*ssh)->type("echo after-$((50+5))", "after-55");
  EXPECT_TRUE(typed.ok()) << "the old session after the wake: " << typed.error().message;
  EXPECT_EQ(leftovers(), "");
  auto st = parked();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_NE(st->dump().find("\"trigger\":\"activity: "), std::string::npos) << st->dump();
  EXPECT_NE(st->dump().find("\"hand_back\":"), std::string::npos) << st->dump();
  EXPECT_NE(st->dump().find("\"fallback\":false"), std::string::npos)
      << "the gateways came home from the sink, not from the parked pack: " << st->dump();
  // The VM yielded the CPU to the sink's hand-back and has its own weight again.
  EXPECT_NE(st->dump().find("\"sink_first\":true"), std::string::npos) << st->dump();
  auto weight_after = guest_->vm->domain().cpu_shares();
  ASSERT_TRUE(weight_after.ok()) << weight_after.error().message;
  EXPECT_EQ(*weight_after, *weight);
  std::printf("virsh-parked after the wake: %s\n", st->dump().c_str());
}

// A new SSH login wakes it by itself; then park -> virsh-wake -> park (swap) -> virsh-wake.
TEST_F(ParkWake, ALoginWakesItAndParkWakeRepeats) {
  const Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  ASSERT_TRUE(park_ok().ok());
  auto login = SshSession::open(bed, key_, dir_->path(), ip, 2222);
  ASSERT_TRUE(login.ok()) << login.error().message;
  auto typed = (*login)->type("echo login-$((30+3))", "login-33", Millis(300000));
  EXPECT_TRUE(typed.ok()) << "the login that woke it: " << typed.error().message;
  ASSERT_TRUE(wait_woken().ok());
  EXPECT_EQ(leftovers(), "");

  // The second round parks in swap mode (the default outside this suite): balloon, cgroup
  // squeeze, prewarm of the pack in the guest, pause.
  // The swap round's wake gives the guest room first and the rest of its memory after
  // the gateway is home: when the wake returns, the guest has all it had.
  auto balloon = [&] {
    auto info = qmp::execute(*guest_->monitor, qmp::QueryBalloon{});
    return info.ok() ? info->actual : int64_t(-1);
  };
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    const int64_t before = balloon();
    ASSERT_GT(before, 0);
    auto p = round == 1 ? park_ok({"--mode", "swap"}) : park_ok();
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_TRUE(is_parked());
    if (round == 1) {
      EXPECT_LT(balloon(), before) << "the swap park inflated the balloon";
    }
    auto w = virsh("wake", {kGuestName});
    ASSERT_EQ(w.code, 0) << w.err << w.out;
    EXPECT_NE(w.out.find("woken in"), std::string::npos) << w.out;
    EXPECT_FALSE(is_parked());
    EXPECT_EQ(balloon(), before) << "the guest has all its memory back once woken";
    auto page = fetch_page();
    EXPECT_TRUE(page.ok()) << page.error().message;
    EXPECT_EQ(leftovers(), "");
  }
}

// Refusals: each a clear message, exit 4, and the VM untouched.
TEST_F(ParkWake, RefusalsChangeNothing) {
  auto unknown = virsh("park", {"no-such-domain"});
  EXPECT_EQ(unknown.code, 4) << unknown.err;
  EXPECT_NE(unknown.err.find("no-such-domain"), std::string::npos) << unknown.err;
  auto not_parked = virsh("wake", {kGuestName});
  EXPECT_EQ(not_parked.code, 4) << not_parked.err;
  EXPECT_NE(not_parked.err.find("is not parked"), std::string::npos) << not_parked.err;
  auto sink_itself = virsh("park", {kSinkName});
  EXPECT_EQ(sink_itself.code, 4) << sink_itself.err;
  EXPECT_NE(sink_itself.err.find("is a sink"), std::string::npos) << sink_itself.err;
  auto bad_mode = virsh("park", {kGuestName, "--mode", "hibernate"});
  EXPECT_EQ(bad_mode.code, 2) << bad_mode.err;

  // Swap off: a swap-mode park is refused naming the swap.
  auto swaps = sys::read_file("/proc/swaps");
  ASSERT_TRUE(swaps.ok());
  std::vector<std::string> active;
  {
    std::istringstream in(*swaps);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line))
      if (auto sp = line.find(' '); sp != std::string::npos) active.push_back(line.substr(0, sp));
  }
  for (const auto& s : active) ASSERT_TRUE(run_ok({"swapoff", s}).ok()) << s;
  auto no_swap = virsh("park", {kGuestName, "--mode", "swap"});
  for (const auto& s : active) EXPECT_TRUE(run_ok({"swapon", s}).ok()) << s;
  EXPECT_EQ(no_swap.code, 4) << no_swap.err;
  EXPECT_NE(no_swap.err.find("swap"), std::string::npos) << no_swap.err;

  // No daemon: exit 3.
  auto none = run({cat(VIRSH_DIR, "/virsh-park"), "--socket", *dir_ / "nothing.sock", kGuestName});
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->status.code, 3) << none->err;

  // None of it touched the VM.
  auto running = vm_running();
  ASSERT_TRUE(running.ok());
  EXPECT_TRUE(*running);
  EXPECT_EQ(leftovers(), "");
  EXPECT_TRUE(fetch_page().ok());
}

// A failure injected at each park step rolls the park back: the VM runs, its services
// answer from the client namespace, and no flow, container or metadata is left.
TEST_F(ParkWake, AFailureAtEachParkStepRollsBack) {
  for (const char* step :
       {"dump", "transfer", "ship", "sink-restore", "pause", "switch", "speak", "suspend", "record"}) {
    SCOPED_TRACE(step);
    ASSERT_TRUE(fail_at(cat("park:", step)).ok());
    auto r = virsh("park", {kGuestName});
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("injected failure"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("rolled back"), std::string::npos) << r.err;
    expect_home_and_serving();
  }
  ASSERT_TRUE(fail_at("").ok());
}

// A failure at each wake step after the VM runs again brings it home all the same (with
// the gateway it parked with): running, serving, nothing left behind.
TEST_F(ParkWake, AFailureAtEachWakeStepStillBringsTheVmHome) {
  for (const char* step : {"transfer", "restore", "switch", "release", "drop-container", "deflate", "clear"}) {
    SCOPED_TRACE(step);
    ASSERT_TRUE(park_ok().ok());
    ASSERT_TRUE(fail_at(cat("wake:", step)).ok());
    auto r = virsh("wake", {kGuestName});
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("injected failure"), std::string::npos) << r.err;
    ASSERT_TRUE(fail_at("").ok());
    expect_home_and_serving();
  }
}

// seamlessd restarted while a VM is parked picks it up from the metadata and still wakes
// it on activity.
TEST_F(ParkWake, ARestartedDaemonStillWakesAParkedVm) {
  ASSERT_TRUE(park_ok().ok());
  daemon_.stop(Millis(20000));
  auto up = start_daemon();
  ASSERT_TRUE(up.ok()) << up.error().message;
  EXPECT_TRUE(is_parked());
  auto page = fetch_page(Millis(300000));
  EXPECT_TRUE(page.ok()) << "the waking request: " << page.error().message;
  EXPECT_TRUE(wait_woken().ok());
  EXPECT_EQ(leftovers(), "");
}

// sinkd killed in the sink VM while a VM is parked: its container goes on answering for
// the VM; once sinkd is back (a supervisor restarts it) it adopts the container, seamlessd
// reconnects, and a request still wakes the VM.
TEST_F(ParkWake, AKilledSinkdComesBackAndStillWakesTheVm) {
  ASSERT_TRUE(park_ok().ok());
  qmp::RunOptions ro;
  ro.timeout = Millis(60000);
  auto killed = qmp::guest_run_ok(*sink_->agent, "/bin/sh",
                                  {"-c",
                                   "pkill -KILL -f '^seamless-sinkd --port'; sleep 3; setsid seamless-sinkd --port "
                                   "/dev/virtio-ports/org.seamless.sinkd.0 </dev/null >>/var/log/seamless/sinkd.log "
                                   "2>&1 &"},
                                  ro);
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  EXPECT_TRUE(guest_->bed.answers_ping(guest_->bed.guest_ip(kGuest))) << "the container answers without sinkd";
  // seamlessd notices the new session within its health check and reconnects.
  std::this_thread::sleep_for(Millis(20000));
  auto page = fetch_page(Millis(300000));
  EXPECT_TRUE(page.ok()) << "the waking request: " << page.error().message;
  EXPECT_TRUE(wait_woken().ok());
  EXPECT_EQ(leftovers(), "");
}

// Run a command in the guest over SSH from the client namespace (the agent may be down).
static Result<std::string> ssh_run(const Testbed& bed, const std::string& key, const std::string& ip,
                                   const std::string& command) {
  return run_ok({"ip", "netns", "exec", bed.netns, "ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o",
                 "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-p", "2222",
                 "root@" + ip, command},
                Millis(120000));
}

// A dead guest agent: the park is refused by name and nothing changes.
TEST_F(ParkWake, ADeadGuestAgentIsRefusedByName) {
  const Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  auto killed = ssh_run(bed, key_, ip, "kill $(cat /run/qemu-ga.pid); sleep 1");
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  auto r = virsh("park", {kGuestName});
  auto back = ssh_run(bed, key_, ip,
                      "qemu-ga -d -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -f /run/qemu-ga.pid");
  EXPECT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_NE(r.err.find("guest agent"), std::string::npos) << r.err;
  EXPECT_FALSE(is_parked());
  EXPECT_EQ(leftovers(), "");
  bool answers = false;
  for (Deadline d(Millis(120000)); !answers && !d.expired(); std::this_thread::sleep_for(Millis(1000)))
    answers = qmp::execute(*guest_->agent, qmp::GuestPing{}, Millis(5000)).ok();
  EXPECT_TRUE(answers) << "the guest agent is back";
}

// Shutting a parked domain down: libvirt refuses `virsh shutdown` of a paused domain, and
// the park stays whole; a power-down request that reaches QEMU (the ACPI button, which a
// paused guest would never see) makes seamlessd wake the VM first, so the guest handles
// it with its services home (the test template's busybox init ignores the button; a
// systemd guest powers off). Nothing of the park is left.
TEST_F(ParkWake, ShuttingDownAParkedDomainWakesItFirst) {
  ASSERT_TRUE(park_ok().ok());
  auto refused = run({"virsh", "shutdown", kGuestName});
  ASSERT_TRUE(refused.ok()) << refused.error().message;
  EXPECT_NE(refused->status.code, 0) << "libvirt shut a paused domain down";
  EXPECT_TRUE(is_parked());
  auto powerdown = run_ok({"virsh", "qemu-monitor-command", kGuestName, R"({"execute":"system_powerdown"})"});
  ASSERT_TRUE(powerdown.ok()) << powerdown.error().message;
  auto woken = wait_woken();
  ASSERT_TRUE(woken.ok()) << woken.error().message;
  auto running = vm_running();
  ASSERT_TRUE(running.ok());
  EXPECT_TRUE(*running);
  EXPECT_EQ(leftovers(), "");
  auto st = parked();
  ASSERT_TRUE(st.ok());
  EXPECT_NE(st->dump().find("powerdown requested"), std::string::npos) << st->dump();
  EXPECT_TRUE(fetch_page().ok());
}

// `virsh destroy` of a parked domain: the libvirt hook tells seamlessd, and its container,
// flows and metadata go. (Last: the guest VM is gone after it.)
TEST_F(ParkWake, DestroyingAParkedDomainLeavesNothing) {
  if (!is_parked()) {
    ASSERT_TRUE(park_ok().ok());
  }
  ASSERT_TRUE(guest_->vm->domain().destroy().ok());
  std::string left = "not checked";
  for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(1000)))
    if ((left = leftovers()).empty()) break;
  EXPECT_EQ(left, "");
  EXPECT_FALSE(is_parked());
}

}  // namespace
}  // namespace seamless::test
