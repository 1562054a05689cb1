// SPDX-License-Identifier: Apache-2.0
// Integration: seamless-guest inside a real TCG guest on the OVS bridge, run through
// qemu-guest-agent as the host will run it. An SSH session opened from the client
// namespace survives dump + restore in place (typed into before and after); the pack's
// manifest names the gateway, its connection and its files; user activity during a dump
// aborts it and leaves the gateway answering; prewarm works; a damaged pack is refused.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/gateway_client.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::guest {
namespace {

using namespace packfmt;

constexpr int kIndex = 14;
constexpr const char* kName = "sl-guest-agent";

class GuestAgent : public test::VmSuite<GuestAgent> {
 protected:
  static void SetUpTestSuite() {
    test::VmSpec spec;
    spec.name = kName;
    spec.index = kIndex;
    spec.services = "dropbear,sshd,lighttpd,apache2,vsftpd";
    spec.tools = {SEAMLESS_GUEST_BIN};
    auto k = test::KeyedGuest::boot(spec);
    if (!k.ok()) return fail(k.error().message);
    guest_ = std::move(k->guest);
    dir_ = std::move(k->dir);
    key_ = k->key;
  }
  static void TearDownTestSuite() {
    guest_.reset();
    dir_.reset();
  }
  void SetUp() override { require(guest_ != nullptr); }

  // Runs seamless-guest in the guest; returns its exit code and parsed JSON output.
  static test::HelperRun helper(std::vector<std::string> args, Millis timeout = Millis(180000)) {
    return test::run_guest_helper(*guest_->agent, args, timeout);
  }
  static bool ssh_answers() {
    auto r = run({"ip", "netns", "exec", guest_->bed.netns, "timeout", "20", "bash", "-c",
                  cat("exec 3<>/dev/tcp/", guest_->bed.guest_ip(kIndex), "/2222; head -c 4 <&3")});
    return r.ok() && r->out == "SSH-";
  }

  static inline std::string key_;
  static inline std::unique_ptr<test::LibvirtGuest> guest_;
  static inline std::unique_ptr<TempDir> dir_;
};

TEST_F(GuestAgent, DiscoverFindsDropbearAndLeavesTheAgentOut) {
  auto o = helper({"discover"});
  ASSERT_EQ(o.code, 0) << o.text;
  const auto& gws = o.json.root()["gateways"];
  ASSERT_TRUE(gws.IsArray()) << o.text;
  bool dropbear = false;
  for (const auto& g : gws.GetArray()) {
    std::string exe = g["exe"].GetString();
    EXPECT_EQ(exe.find("qemu-ga"), std::string::npos) << "the guest agent is never a gateway";
    if (exe == "/usr/sbin/dropbear") {
      dropbear = true;
      bool port = false;
      for (const auto& l : g["listening"].GetArray()) port |= l["port"].GetInt() == 2222;
      EXPECT_TRUE(port) << o.text;
    }
  }
  EXPECT_TRUE(dropbear) << o.text;
}

TEST_F(GuestAgent, SshSessionSurvivesDumpAndRestore) {
  auto ssh = test::SshSession::open(guest_->bed, key_, dir_->path(), guest_->bed.guest_ip(kIndex));
  ASSERT_TRUE(ssh.ok()) << ssh.error().message;
  auto typed = (*ssh)->type("echo before-$((20+22))", "before-42");
  ASSERT_TRUE(typed.ok()) << typed.error().message;

  auto dumped = helper({"dump", "--port", "2222", "--out", "/run/test.pack"});
  ASSERT_EQ(dumped.code, 0) << dumped.text;
  ASSERT_TRUE(dumped.json.root()["ok"].GetBool()) << dumped.text;
  EXPECT_FALSE(ssh_answers()) << "the gateway is gone from the guest while dumped";
  // The real CRIU images were read: dropbear's relocated library data went in as
  // differences from the libraries, in an xz pack.
  EXPECT_EQ(qmp::opt_string(dumped.json.root(), "compression").value_or(""), "xz") << dumped.text;
  ASSERT_TRUE(dumped.json.root().HasMember("pages")) << dumped.text;
  EXPECT_GT(dumped.json.root()["pages"]["deltas"].GetInt64(), 5) << dumped.text;

  // The pack, read out as the host will: its manifest names the gateway, the open
  // session and the files.
  auto bytes = qmp::read_guest_file(*guest_->agent, "/run/test.pack");
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_TRUE(sys::write_file(*dir_ / "test.pack", *bytes).ok());
  auto text = unpack(*dir_ / "test.pack", *dir_ / "unpacked", {}, kKeepPageImages);
  ASSERT_TRUE(text.ok()) << text.error().message;
  auto m = Manifest::parse(*text);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->hostname, kName);
  ASSERT_EQ(m->gateways.size(), 1u);
  EXPECT_EQ(m->gateways[0].exe, "/usr/sbin/dropbear");
  ASSERT_EQ(m->gateways[0].established.size(), 1u) << "the SSH session";
  EXPECT_NE(m->gateways[0].established[0].remote.find(guest_->bed.client_ip), std::string::npos);
  bool mac = false;
  for (const auto& i : m->interfaces) mac |= i.mac == test::Testbed::guest_mac(kIndex);
  EXPECT_TRUE(mac);
  bool libc = false;
  for (const auto& f : m->files) libc |= f.path.find("libc.so") != std::string::npos && !f.build_id.empty();
  EXPECT_TRUE(libc) << "mapped libraries are identified by build-id";
  EXPECT_TRUE(std::filesystem::exists(*dir_ / ("unpacked/" + m->gateways[0].dir)));

  auto warm = helper({"prewarm", "/run/test.pack"});
  EXPECT_EQ(warm.code, 0) << warm.text;

  auto restored = helper({"restore", "/run/test.pack"});
  ASSERT_EQ(restored.code, 0) << restored.text;
  typed = (*ssh)->type("echo after-$((50+5))", "after-55");
  EXPECT_TRUE(typed.ok()) << typed.error().message;
  EXPECT_TRUE(ssh_answers()) << "new connections are accepted again";
  EXPECT_TRUE((*ssh)->alive());
}

// Each gateway of the template, ZDTM style: a connection opened before the move is used
// again after it, and new connections are accepted. The pack holds just that gateway.
TEST_F(GuestAgent, EveryGatewayRoundTripsInPlace) {
  const std::string ip = guest_->bed.guest_ip(kIndex);
  using test::GatewayUse;
  for (const GatewayUse& use : {GatewayUse{GatewayUse::Kind::Ssh, 22}, GatewayUse{GatewayUse::Kind::Http, 80},
                                GatewayUse{GatewayUse::Kind::Http, 8080}, GatewayUse{GatewayUse::Kind::Ftp, 21}}) {
    SCOPED_TRACE(use.port);
    auto client = test::GatewayClient::open(guest_->bed, ip, use, key_, dir_->path());
    ASSERT_TRUE(client.ok()) << client.error().message;
    const std::string pack = cat("/run/gw-", use.port, ".pack");
    auto t0 = Clock::now();
    auto dumped = helper({"dump", "--port", std::to_string(use.port), "--out", pack});
    std::printf("port %d: dump %.1f s\n", use.port, seconds_since(t0));
    ASSERT_EQ(dumped.code, 0) << dumped.text;
    const auto& gws = dumped.json.root()["gateways"];
    ASSERT_EQ(gws.Size(), 1u) << dumped.text;
    EXPECT_GE(gws[0]["connections"].GetInt(), 1) << dumped.text;
    t0 = Clock::now();
    auto restored = helper({"restore", pack});
    std::printf("port %d: restore %.1f s\n", use.port, seconds_since(t0));
    ASSERT_EQ(restored.code, 0) << restored.text;
    auto used = (*client)->exchange();
    EXPECT_TRUE(used.ok()) << "the connection opened before stays open: " << used.error().message;
    EXPECT_TRUE(test::GatewayClient::accepts(guest_->bed, ip, use.port)) << "new connections are accepted again";
  }
}

TEST_F(GuestAgent, ActivityDuringTheDumpAbortsIt) {
  // A client keeps opening connections while the dump runs.
  auto client = ChildProcess::spawn({"ip", "netns", "exec", guest_->bed.netns, "bash", "-c",
                                     cat("while :; do timeout 2 bash -c 'exec 3<>/dev/tcp/",
                                         guest_->bed.guest_ip(kIndex), "/2222' 2>/dev/null; sleep 0.05; done")});
  ASSERT_TRUE(client.ok());
  std::this_thread::sleep_for(Millis(500));
  auto dumped = helper({"dump", "--port", "2222", "--out", "/run/busy.pack"});
  client->stop(Millis(0));
  EXPECT_EQ(dumped.code, 3) << dumped.text;
  EXPECT_FALSE(dumped.json.root()["ok"].GetBool()) << dumped.text;
  EXPECT_NE(dumped.text.find("new connection"), std::string::npos) << dumped.text;
  EXPECT_TRUE(ssh_answers()) << "the gateway was put back in place";
  auto gone = qmp::guest_run(*guest_->agent, "/bin/test", {"-e", "/run/busy.pack"});
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->exitcode.value_or(0), 1) << "no pack is left behind";
}

// A gateway started as systemd starts a unit whose output goes to the journal (a stand-in
// listens at the journal's path): the stream is dumped as external, the prewarm gets a
// throw-away end, and the restore connects a fresh stream with the journal's header,
// where the gateway's output goes on. A connection to an unnamed socket outside is refused
// by name, and that gateway goes on answering.
TEST_F(GuestAgent, AStreamToTheOutsideGoesWithTheGateway) {
  auto journal_up = test::start_journal(*guest_->agent);
  ASSERT_TRUE(journal_up.ok()) << journal_up.error().message;
  const std::string start = cat("(", test::kJournalExec,
                                " ticker sh -c 'nc -lk 2299 >/dev/null 2>&1 & while :; do echo tick; sleep 1; done' "
                                "&); sleep 3");
  auto started = qmp::guest_run_ok(*guest_->agent, "/bin/sh", {"-c", start});
  ASSERT_TRUE(started.ok()) << started.error().message;
  // The stand-in journal's file, or why it could not be read (said, not taken for empty).
  auto journal = [&]() {
    auto text = test::journal_text(*guest_->agent);
    return text.ok() ? *text : "(journal not read: " + text.error().message + ")";
  };
  auto answers = [&]() {
    auto r = run({"ip", "netns", "exec", guest_->bed.netns, "timeout", "20", "bash", "-c",
                  cat("exec 3<>/dev/tcp/", guest_->bed.guest_ip(kIndex), "/2299 && echo open")});
    return r.ok() && r->out == "open\n";
  };
  ASSERT_EQ(journal().rfind("ticker\n\n6\n0\n0\n0\n0\ntick\n", 0), 0u) << "the gateway logs before: " << journal();

  auto o = helper({"dump", "--port", "2299", "--out", "/run/stream.pack"});
  ASSERT_EQ(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("\"streams\":1"), std::string::npos) << o.text;
  auto pre = helper({"prewarm", "/run/stream.pack"});
  EXPECT_EQ(pre.code, 0) << pre.text;
  const std::string logged = journal();
  ASSERT_EQ(logged.rfind("(journal not read", 0), std::string::npos) << logged;
  const size_t before = logged.size();
  auto back = helper({"restore", "/run/stream.pack"});
  ASSERT_EQ(back.code, 0) << back.text;
  EXPECT_NE(back.text.find("\"warnings\":[]"), std::string::npos) << back.text;
  std::this_thread::sleep_for(Millis(3000));
  const std::string after = journal();
  ASSERT_GT(after.size(), before) << after;
  const std::string fresh = after.substr(before);
  EXPECT_EQ(fresh.rfind("sh\n\n6\n1\n0\n0\n0\ntick\n", 0), 0u)
      << "only the restore's stream, with the journal's header, then the output: " << fresh;
  EXPECT_TRUE(answers()) << "the gateway answers after the round trip";
  (void)qmp::guest_run(*guest_->agent, "/bin/sh", {"-c", "pkill -f '^sh -c nc -lk 2299'; pkill -f '^nc -lk 2299'"});

  // A gateway that accepted a unix connection from a client outside: the client's end has no
  // name to connect to again. Refused by name before anything is touched; it goes on.
  const std::string served =
      "(sh -c 'nc -lk 2299 >/dev/null 2>&1 & nc -lU /run/sl-in.sock >/dev/null' >/dev/null 2>&1 &); sleep 1; "
      "(sh -c 'sleep 1000 | nc -U /run/sl-in.sock' </dev/null >/dev/null 2>&1 &); sleep 2";
  started = qmp::guest_run_ok(*guest_->agent, "/bin/sh", {"-c", served});
  ASSERT_TRUE(started.ok()) << started.error().message;
  o = helper({"discover"});
  EXPECT_NE(o.text.find("\"cannot_move\":true"), std::string::npos) << "discover names it: " << o.text;
  o = helper({"dump", "--out", "/run/unix.pack"});
  EXPECT_NE(o.code, 0) << "a park of all gateways is refused while it runs: " << o.text;
  EXPECT_NE(o.text.find("nothing was dumped"), std::string::npos) << o.text;
  o = helper({"dump", "--port", "2299", "--out", "/run/unix.pack"});
  EXPECT_NE(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("is a unix stream connection to an unnamed socket of another process"), std::string::npos)
      << o.text;
  EXPECT_TRUE(answers()) << "the refused gateway goes on answering";
  auto gone = qmp::guest_run(*guest_->agent, "/bin/test", {"-e", "/run/unix.pack"});
  ASSERT_TRUE(gone.ok());
  EXPECT_EQ(gone->exitcode.value_or(0), 1) << "no pack is left behind";
  (void)qmp::guest_run(
      *guest_->agent, "/bin/sh",
      {"-c",
       "pkill -f '^sh -c sleep 1000'; pkill -f '^sleep 1000'; pkill -f '^nc -lk 2299'; pkill -f '^nc -lU'; "
       "pkill -f '^sh -c nc -lk 2299'; rm -f /run/sl-in.sock /run/stream.pack"});
}

TEST_F(GuestAgent, DamagedPacksAreRefused) {
  auto dumped = helper({"dump", "--port", "2222", "--out", "/run/good.pack"});
  ASSERT_EQ(dumped.code, 0) << dumped.text;
  auto cut =
      qmp::guest_run_ok(*guest_->agent, "/bin/sh",
                        {"-c", "head -c $(( $(stat -c %s /run/good.pack) / 2 )) /run/good.pack > /run/cut.pack"});
  ASSERT_TRUE(cut.ok()) << cut.error().message;
  auto refused = helper({"restore", "/run/cut.pack"});
  EXPECT_EQ(refused.code, 1) << refused.text;
  EXPECT_NE(refused.text.find("truncated"), std::string::npos) << refused.text;
  auto missing = helper({"restore", "/run/nonexistent.pack"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.text.find("/run/nonexistent.pack"), std::string::npos) << missing.text;
  auto restored = helper({"restore", "/run/good.pack"});
  ASSERT_EQ(restored.code, 0) << restored.text;
  EXPECT_TRUE(ssh_answers());
}

}  // namespace
}  // namespace seamless::guest
