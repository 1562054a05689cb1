// SPDX-License-Identifier: Apache-2.0
// Integration: seamless-guest in a guest booted with systemd (the systemd template), each
// gateway started by its own Debian unit: ssh, dropbear, lighttpd, apache2 (PrivateTmp=),
// vsftpd and tomcat10 (PrivateTmp=, ProtectSystem=strict, stdin /dev/null from outside
// its namespace). Each one round-trips in place with a connection opened before and used
// after (a dropbear session typed into, an sshd connection before login, HTTP keep-alive
// with Tomcat's session, FTP control); an sshd login session (its syslog datagram socket
// connected to the journal's dev-log) round-trips in place too.
// While it is away systemd keeps the unit active with a stand-in as its main process,
// refuses to stop it and starts no second copy; afterwards the restored process is the
// unit's main PID again, in its cgroup and mount namespace, NRestarts is unchanged, no
// runtime drop-in is left, the journal goes on under the unit, and `systemctl restart`
// works. A socket-activated service is refused by name and goes on answering.
// The same gateways take the journey through a sink container (a sink VM booted from the
// init template, which has none of the guest's units): all six with their sessions idle
// two minutes there with keep-alives, the next page of Tomcat's HTTP session wakes them
// once and is answered at home, and the sessions go on, the units whole.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/gateway_client.h"
#include "tests/support/sink_journey.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::guest {
namespace {

constexpr int kIndex = 22, kSink = 26;
constexpr const char* kName = "sl-systemd";

using test::GatewayUse;

class SystemdGuest : public test::VmSuite<SystemdGuest> {
 protected:
  static void SetUpTestSuite() {
    test::VmSpec spec;
    spec.name = kName;
    spec.index = kIndex;
    spec.guest_template = "systemd";
    spec.memory_mib = 1024;  // Tomcat's JVM
    spec.services = "dropbear,sshd,lighttpd,apache2,vsftpd,tomcat";
    spec.tools = {SEAMLESS_GUEST_BIN};
    spec.ready_timeout = Millis(480000);
    // The sink boots next to it (the guest's boot time is measured with it running).
    auto sink = std::async(std::launch::async, [] {
      auto s = test::sink_vm_spec("sl-systemd-sink", kSink, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN);
      s.memory_mib = 1024;  // Tomcat's JVM, restored there
      return test::LibvirtGuest::boot(s);
    });
    auto t0 = Clock::now();
    auto k = test::KeyedGuest::boot(spec);
    if (k.ok()) boot_seconds_ = seconds_since(t0);
    auto s = sink.get();
    if (!k.ok()) return fail(k.error().message);
    if (!s.ok()) return fail(s.error().message);
    guest_ = std::move(k->guest);
    dir_ = std::move(k->dir);
    key_ = k->key;
    sink_ = std::move(s).value();
    // Tomcat listens long before its first page is compiled under TCG: every test starts
    // with a JVM that has answered one.
    Result<std::unique_ptr<test::GatewayClient>> page = make_error(ErrorKind::Timeout, "not tried");
    for (Deadline d(Millis(300000)); !page.ok() && !d.expired();)
      page = test::GatewayClient::open(guest_->bed, guest_->bed.guest_ip(kIndex),
                                       {GatewayUse::Kind::Http, 8180, "/counter", "count 1"});
    if (!page.ok()) return fail("Tomcat answers no page: " + page.error().message);
  }
  static void TearDownTestSuite() {
    if (guest_) (void)guest_->bed.end_redirect(test::Testbed::guest_mac(kIndex));
    guest_.reset();
    sink_.reset();
    dir_.reset();
  }
  void SetUp() override { require(guest_ != nullptr && sink_ != nullptr); }
  void TearDown() override {
    if (HasFailure() && guest_) {
      // A journey that failed half-way leaves the VM paused and its traffic at the sink.
      (void)guest_->monitor->call("cont", "", Millis(30000));
      (void)guest_->bed.end_redirect(test::Testbed::guest_mac(kIndex));
    }
    if (HasFailure() && sink_) {
      qmp::RunOptions ro;
      ro.timeout = Millis(20000);
      auto log = qmp::guest_run_ok(*sink_->agent, "/bin/sh", {"-c", "tail -n 30 /var/log/seamless/sinkd.log"}, ro);
      std::printf("--- sinkd's log\n%s\n", log.ok() ? log->c_str() : log.error().message.c_str());
    }
  }

  static Result<std::string> sh(const std::string& command, Millis timeout = Millis(60000)) {
    qmp::RunOptions ro;
    ro.timeout = timeout;
    return qmp::guest_run_ok(*guest_->agent, "/bin/sh", {"-c", command}, ro);
  }
  static test::HelperRun helper(std::vector<std::string> args) {
    return test::run_guest_helper(*guest_->agent, args, Millis(300000));
  }
  // `systemctl show` of the properties the tests look at.
  static std::map<std::string, std::string> unit(const std::string& name) {
    std::map<std::string, std::string> out;
    auto text = sh("systemctl show -p MainPID -p NRestarts -p ActiveState -p RefuseManualStop -p ControlGroup " + name);
    if (!text.ok()) return out;
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);)
      if (auto eq = line.find('='); eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
    return out;
  }
  // The pids listening on a TCP port in the guest ("" when none).
  static std::string listeners(uint16_t port) {
    auto text = sh(cat("ss -ltnpH 'sport = :", port, "' | grep -o 'pid=[0-9]*' | sort -u | tr '\\n' ' '"));
    return text.ok() ? *text : "?";
  }
  static std::string journal(const std::string& unit_name) {
    auto text = sh("journalctl -u " + unit_name + " -o cat --no-pager");
    return text.ok() ? *text : "";
  }
  static bool accepts(uint16_t port) {
    return test::GatewayClient::accepts(guest_->bed, guest_->bed.guest_ip(kIndex), port);
  }

  static inline double boot_seconds_ = 0;
  static inline std::string key_;
  static test::SinkPair vms() { return {*guest_, kIndex, *sink_, kSink}; }

  static inline std::unique_ptr<test::LibvirtGuest> guest_, sink_;
  static inline std::unique_ptr<TempDir> dir_;
};

TEST_F(SystemdGuest, BootsWithSystemdAndEveryGatewayIsItsUnit) {
  std::printf("systemd template: services ready %.1f s after the domain started (TCG)\n", boot_seconds_);
  RecordProperty("boot_seconds", cat(boot_seconds_));
  auto pid1 = sh("cat /proc/1/comm; systemctl is-active systemd-journald");
  ASSERT_TRUE(pid1.ok()) << pid1.error().message;
  EXPECT_EQ(*pid1, "systemd\nactive\n");
  auto o = helper({"discover"});
  ASSERT_EQ(o.code, 0) << o.text;
  std::map<std::string, std::string> unit_of;  // exe -> unit
  for (const auto& g : o.json.root()["gateways"].GetArray())
    unit_of[g["exe"].GetString()] = g.HasMember("unit") ? g["unit"].GetString() : "";
  EXPECT_EQ(unit_of["/usr/sbin/sshd"], "ssh.service") << o.text;
  EXPECT_EQ(unit_of["/usr/sbin/dropbear"], "dropbear.service") << o.text;
  EXPECT_EQ(unit_of["/usr/sbin/lighttpd"], "lighttpd.service") << o.text;
  EXPECT_EQ(unit_of["/usr/sbin/apache2"], "apache2.service") << o.text;
  EXPECT_EQ(unit_of["/usr/sbin/vsftpd"], "vsftpd.service") << o.text;
  EXPECT_EQ(unit_of["/usr/lib/jvm/java-17-openjdk-amd64/bin/java"], "tomcat10.service") << o.text;
}

struct Case {
  const char* unit;
  GatewayUse use;
  const char* after;  // what the client gets on its connection after the round trip
  // A journal line the unit logs when a new connection comes in ("" = it logs to files).
  const char* logs_connections;
};

// sshd's login sessions log through syslog: a datagram socket connected to the journal's
// dev-log. CRIU dumps it as external and connects it to the journal again on restore: the
// session round-trips in place with sshd, typed into before and after, the unit whole.
TEST_F(SystemdGuest, AnSshdLoginSessionRoundTripsInPlace) {
  auto before = unit("ssh.service");
  auto session = test::GatewayClient::open(guest_->bed, guest_->bed.guest_ip(kIndex), {GatewayUse::Kind::Ssh, 22}, key_,
                                           dir_->path());
  ASSERT_TRUE(session.ok()) << session.error().message;
  auto dumped = helper({"dump", "--port", "22", "--compress", "gzip", "--out", "/run/session.pack"});
  ASSERT_EQ(dumped.code, 0) << dumped.text;
  EXPECT_NE(dumped.text.find("\"unit\":\"ssh.service\""), std::string::npos) << dumped.text;
  auto restored = helper({"restore", "/run/session.pack"});
  ASSERT_EQ(restored.code, 0) << restored.text;
  auto typed = (*session)->exchange();
  EXPECT_TRUE(typed.ok()) << "the session goes on: " << typed.error().message;
  auto after = unit("ssh.service");
  EXPECT_EQ(after["MainPID"], before["MainPID"]);
  EXPECT_EQ(after["NRestarts"], before["NRestarts"]);
  EXPECT_EQ(after["ActiveState"], "active");
  EXPECT_TRUE(accepts(22)) << "new connections are accepted again";
  // sshd logs the session's end through the restored datagram socket (syslog identifier sshd).
  session->reset();
  bool logged = false;
  std::string lines;
  for (Deadline d(Millis(30000)); !logged && !d.expired(); std::this_thread::sleep_for(Millis(500))) {
    auto text = sh("journalctl -t sshd -o cat --no-pager");
    lines = text.ok() ? *text : text.error().message;
    logged = lines.find("session closed for user root") != std::string::npos;
  }
  EXPECT_TRUE(logged) << lines;
}

TEST_F(SystemdGuest, EveryGatewayRoundTripsInPlaceAsItsUnit) {
  const std::string ip = guest_->bed.guest_ip(kIndex);
  const GatewayUse ssh{GatewayUse::Kind::SshBanner, 22}, dropbear{GatewayUse::Kind::Ssh, 2222},
      lighttpd{GatewayUse::Kind::Http, 80}, apache{GatewayUse::Kind::Http, 8080}, ftp{GatewayUse::Kind::Ftp, 21},
      tomcat{GatewayUse::Kind::Http, 8180, "/counter", "count 1"};
  for (const Case& c : {Case{"ssh.service", ssh, "", "Connection closed by"},
                        Case{"dropbear.service", dropbear, "", "Child connection from"},
                        Case{"lighttpd.service", lighttpd, "php ok", ""}, Case{"apache2.service", apache, "php ok", ""},
                        Case{"vsftpd.service", ftp, "", ""}, Case{"tomcat10.service", tomcat, "count 2", ""}}) {
    SCOPED_TRACE(c.unit);
    const uint16_t port = c.use.port;
    auto before = unit(c.unit);
    ASSERT_EQ(before["ActiveState"], "active");
    const std::string main = before["MainPID"];
    auto client = test::GatewayClient::open(guest_->bed, ip, c.use, key_, dir_->path());
    ASSERT_TRUE(client.ok()) << client.error().message;

    const std::string pack = cat("/run/sd-", port, ".pack");
    auto t0 = Clock::now();
    auto dumped = helper({"dump", "--port", std::to_string(port), "--compress", "gzip", "--out", pack});
    std::printf("%s: dump %.1f s\n", c.unit, seconds_since(t0));
    ASSERT_EQ(dumped.code, 0) << dumped.text;
    ASSERT_EQ(dumped.json.root()["gateways"].Size(), 1u) << dumped.text;
    EXPECT_EQ(qmp::opt_string(dumped.json.root()["gateways"][0], "unit").value_or(""), c.unit) << dumped.text;

    // Away: the unit stays active, a stand-in is its main process, nobody took the port.
    auto away = unit(c.unit);
    EXPECT_EQ(away["ActiveState"], "active");
    EXPECT_NE(away["MainPID"], main);
    auto comm = sh("cat /proc/" + away["MainPID"] + "/comm");
    EXPECT_EQ(comm.ok() ? *comm : "", "sl-standin\n");
    auto stop = qmp::guest_run(*guest_->agent, "/bin/systemctl", {"stop", c.unit});
    ASSERT_TRUE(stop.ok());
    EXPECT_NE(stop->exitcode.value_or(0), 0) << "systemd refuses to stop a unit whose gateway is away";
    std::this_thread::sleep_for(Millis(2000));
    EXPECT_EQ(listeners(port), "") << "systemd started no second copy";
    EXPECT_EQ(unit(c.unit)["NRestarts"], before["NRestarts"]);

    t0 = Clock::now();
    auto restored = helper({"restore", pack});
    std::printf("%s: restore %.1f s\n", c.unit, seconds_since(t0));
    ASSERT_EQ(restored.code, 0) << restored.text;
    EXPECT_NE(restored.text.find("\"warnings\":[]"), std::string::npos) << restored.text;

    // Home: the same process is the unit's main process, in its cgroup.
    auto after = unit(c.unit);
    EXPECT_EQ(after["ActiveState"], "active");
    EXPECT_EQ(after["MainPID"], main);
    EXPECT_EQ(after["NRestarts"], before["NRestarts"]);
    auto cgroup = sh("cat /proc/" + main + "/cgroup");
    EXPECT_EQ(cgroup.ok() ? *cgroup : "", "0::" + after["ControlGroup"] + "\n");
    auto dropin = sh(cat("ls /run/systemd/system/", c.unit, ".d 2>/dev/null | wc -l"));
    EXPECT_EQ(dropin.ok() ? *dropin : "", "0\n") << "the runtime drop-in is gone";
    auto used = (*client)->exchange(c.after);
    EXPECT_TRUE(used.ok()) << "the connection opened before goes on: " << used.error().message;
    EXPECT_TRUE(accepts(port)) << "new connections are accepted again";
    if (*c.logs_connections) {
      bool logged = false;
      for (Deadline d(Millis(20000)); !logged && !d.expired(); std::this_thread::sleep_for(Millis(500)))
        logged = journal(c.unit).find(c.logs_connections) != std::string::npos;
      EXPECT_TRUE(logged) << "the restored gateway logs to the journal under its unit: " << journal(c.unit);
    }

    // The unit's own settings are back once systemd has reread them (in the background):
    // `systemctl restart` starts a fresh copy that answers.
    bool own = false;
    for (Deadline d(Millis(60000)); !own && !d.expired(); std::this_thread::sleep_for(Millis(500)))
      own = unit(c.unit)["RefuseManualStop"] == "no";
    EXPECT_TRUE(own);
    auto restart = sh(cat("systemctl restart ", c.unit), Millis(240000));
    EXPECT_TRUE(restart.ok()) << restart.error().message;
    auto fresh = unit(c.unit);
    EXPECT_EQ(fresh["ActiveState"], "active");
    EXPECT_NE(fresh["MainPID"], main);
    bool answers = false;
    for (Deadline d(Millis(240000)); !answers && !d.expired(); std::this_thread::sleep_for(Millis(1000)))
      answers = accepts(port);
    EXPECT_TRUE(answers) << "the restarted unit answers";
  }
}

// The six gateways with their connections go to a sink container together, as a park
// moves them: an sshd connection before login, a dropbear login session (TCP keep-alives
// every 10 s; the session's processes look at /etc/localtime now and then, which the tree
// answers with the guest's time zone),
// HTTP keep-alive connections to lighttpd and apache2 that fetched a PHP page, an FTP
// control connection, a Tomcat HTTP session. Two minutes there wake nothing (the servers
// end the connections their own timeouts end, in the sink as at home; Tomcat's background
// processor, GC, JIT and timer threads run there); a new SSH connection wakes them once;
// at home the dropbear session is typed into and the FTP control connection goes on,
// Tomcat's session goes on over a new connection, every gateway answers, each unit has
// the same main PID and no restart, its journal goes on, and `systemctl restart` works.
TEST_F(SystemdGuest, EveryGatewayRoundTripsThroughASinkAsItsUnit) {
  const test::Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kIndex);
  auto c = test::sink_control(*sink_);
  ASSERT_TRUE(c.ok()) << c.error().message;
  // TCP keep-alives every 10 s: the client's kernel gives up after 9 unanswered ones, and
  // the six take up to a minute from the freeze in the sink to their restore at home on a
  // loaded 2-core host (their held packets are answered then).
  test::ClientKeepalives tcp_keepalives(bed, 10);
  // sshd's login sessions are tried in place above; here an sshd connection before login.
  auto sshd = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::SshBanner, 22});
  ASSERT_TRUE(sshd.ok()) << sshd.error().message;
  auto dropbear = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Ssh, 2222}, key_, dir_->path());
  ASSERT_TRUE(dropbear.ok()) << dropbear.error().message;
  auto lighttpd = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Http, 80});
  ASSERT_TRUE(lighttpd.ok()) << lighttpd.error().message;
  auto apache = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Http, 8080});
  ASSERT_TRUE(apache.ok()) << apache.error().message;
  auto ftp = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Ftp, 21});
  ASSERT_TRUE(ftp.ok()) << ftp.error().message;
  // Tomcat restarted at the end of the test before: its connector may accept before its
  // web application answers (a JSP compiled under TCG), so its session waits for that.
  auto tomcat = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Http, 8180, "/counter", "count 1"});
  for (Deadline d(Millis(240000)); !tomcat.ok() && !d.expired(); std::this_thread::sleep_for(Millis(2000)))
    tomcat = test::GatewayClient::open(bed, ip, {GatewayUse::Kind::Http, 8180, "/counter", "count 1"});
  ASSERT_TRUE(tomcat.ok()) << tomcat.error().message;
  const std::vector<std::string> units = {"ssh.service",     "dropbear.service", "lighttpd.service",
                                          "apache2.service", "vsftpd.service",   "tomcat10.service"};
  std::map<std::string, std::map<std::string, std::string>> before;
  for (const auto& u : units) before[u] = unit(u);
  const std::string ssh_log = journal("ssh.service"), dropbear_log = journal("dropbear.service");
  EXPECT_NE(dropbear_log.find("Child connection from " + bed.client_ip), std::string::npos) << dropbear_log;

  auto moved = test::move_to_sink(**c, vms(), {22, 2222, 80, 8080, 21, 8180}, "six", {"--compress", "gzip"});
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  std::printf("six gateways: dump %.1f s, pack %lld bytes (gzip), the sink lacked %lld files, %lld shipped\n",
              moved->dump_seconds, static_cast<long long>(moved->pack_bytes),
              static_cast<long long>(moved->shipment.missing),
              static_cast<long long>(moved->shipment.outcome.included));
  EXPECT_GE(moved->shipment.outcome.included, 1) << "the JVM's perf-data file is the guest's own";
  EXPECT_EQ(moved->added.gateways.size(), 6u);
  ASSERT_TRUE(test::speak_for(**c, vms(), "six").ok());
  auto metrics = (*c)->call("query-metrics", "", Millis(60000));
  ASSERT_TRUE(metrics.ok()) << metrics.error().message;
  for (const auto& ct : metrics->root()["containers"].GetArray())
    std::printf("%s in the sink: PSS %lld kB (+ container init %lld kB)\n", ct["id"].GetString(),
                static_cast<long long>(ct["pss_kb"].GetInt64()), static_cast<long long>(ct["init_pss_kb"].GetInt64()));

  // Housekeeping (Tomcat's background processor, the JVM's GC, JIT and timer threads,
  // the others' timers) wakes nothing.
  auto idle = (*c)->wait_event("ACTIVITY", Millis(120000));
  EXPECT_FALSE(idle.ok()) << "the idle gateways woke: " << idle->data.dump();

  // Tomcat ended the kept-alive connection after 20 s; the session lives in its memory. The
  // session's next page, on a new connection, wakes them all and is answered at home.
  auto page = std::async(std::launch::async, [&]() -> Result<std::string> {
    SL_TRY((*tomcat)->reconnect());
    // Answered once all six are handed back and restored at home: minutes under TCG.
    return (*tomcat)->exchange("count 2", Millis(300000));
  });
  auto woke = (*c)->wait_event("ACTIVITY", Millis(60000));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  std::printf("the page's activity: %s\n", woke->data.dump().c_str());
  const std::string reason = qmp::opt_string(woke->data.root(), "reason").value_or("");
  // (Tomcat listens on IPv6: its peer is the client's v4-mapped address.)
  EXPECT_NE(reason.find("new connection from "), std::string::npos) << woke->data.dump();
  EXPECT_NE(reason.find(bed.client_ip + "]:"), std::string::npos) << woke->data.dump();
  EXPECT_EQ(cat(woke->data.root()["pid"].GetInt64()), before["tomcat10.service"]["MainPID"])
      << "Tomcat woke them: " << woke->data.dump();
  const auto woken_at = Clock::now();
  auto back = test::sink_client(**c).hand_back({"six", "/run/six-back.pack"});
  ASSERT_TRUE(back.ok()) << back.error().message;
  std::printf("six handed back in %.1f s\n", seconds_since(woken_at));
  auto again = (*c)->wait_event("ACTIVITY", Millis(1000));
  EXPECT_FALSE(again.ok()) << "a second activity event: " << again->data.dump();
  auto home = test::come_home(**c, vms(), "six", back->pack);
  ASSERT_TRUE(home.ok()) << home.error().message;
  std::printf("six home %.1f s after the activity\n", seconds_since(woken_at));

  auto answered = page.get();
  EXPECT_TRUE(answered.ok()) << "the session's next page, at home: " << answered.error().message;
  // The FTP control connection goes on (vsftpd drops an idle one after 5 minutes). The
  // others were closed by their servers while idle in the sink, as at home: lighttpd and
  // apache2 end a kept-alive connection after seconds, sshd one that has not logged in
  // after LoginGraceTime (2 minutes). Each gateway answers a new client.
  auto used = (*ftp)->exchange();
  EXPECT_TRUE(used.ok()) << "the FTP control connection opened before goes on: " << used.error().message;
  auto typed = (*dropbear)->exchange();
  EXPECT_TRUE(typed.ok()) << "the dropbear login session goes on: " << typed.error().message;
  auto counted = (*tomcat)->exchange("count 3");
  EXPECT_TRUE(counted.ok()) << "Tomcat's session goes on at home: " << counted.error().message;
  for (const GatewayUse& use : {GatewayUse{GatewayUse::Kind::SshBanner, 22}, GatewayUse{GatewayUse::Kind::Http, 80},
                                GatewayUse{GatewayUse::Kind::Http, 8080}, GatewayUse{GatewayUse::Kind::Ftp, 21}}) {
    auto client = test::GatewayClient::open(bed, ip, use);
    EXPECT_TRUE(client.ok() && (*client)->exchange().ok()) << "port " << use.port << " answers a new client at home";
  }
  EXPECT_TRUE(accepts(2222)) << "dropbear accepts a new client at home";
  for (const auto& u : units) {
    SCOPED_TRACE(u);
    auto after = unit(u);
    EXPECT_EQ(after["ActiveState"], "active");
    EXPECT_EQ(after["MainPID"], before[u]["MainPID"]) << "the same process is the unit's main PID";
    EXPECT_EQ(after["NRestarts"], before[u]["NRestarts"]) << "systemd started no second copy";
  }
  // The journal goes on under each unit: sshd logs a connection's end, dropbear a new
  // connection.
  auto fresh = bed.connect_from_client(ip, 22);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_TRUE(test::read_until(fresh->get(), "SSH-").ok());
  fresh->reset();
  EXPECT_TRUE(accepts(2222));
  bool logged = false;
  std::string ssh_now, dropbear_now;
  for (Deadline d(Millis(30000)); !logged && !d.expired(); std::this_thread::sleep_for(Millis(500))) {
    ssh_now = journal("ssh.service");
    dropbear_now = journal("dropbear.service");
    logged = ssh_now.size() > ssh_log.size() &&
             ssh_now.find("Connection closed by", ssh_log.size()) != std::string::npos &&
             dropbear_now.size() > dropbear_log.size() &&
             dropbear_now.find("Child connection from", dropbear_log.size()) != std::string::npos;
  }
  EXPECT_TRUE(logged) << "ssh.service since:\n"
                      << ssh_now.substr(std::min(ssh_log.size(), ssh_now.size())) << "dropbear.service since:\n"
                      << dropbear_now.substr(std::min(dropbear_log.size(), dropbear_now.size()));

  // `systemctl restart` of every unit starts fresh copies that answer.
  bool own = false;
  for (Deadline d(Millis(60000)); !own && !d.expired(); std::this_thread::sleep_for(Millis(500))) {
    own = true;
    for (const auto& u : units) own = own && unit(u)["RefuseManualStop"] == "no";
  }
  EXPECT_TRUE(own);
  auto restart = sh("systemctl restart ssh dropbear lighttpd apache2 vsftpd tomcat10", Millis(240000));
  EXPECT_TRUE(restart.ok()) << restart.error().message;
  for (const auto& u : units) {
    SCOPED_TRACE(u);
    auto fresh_unit = unit(u);
    EXPECT_EQ(fresh_unit["ActiveState"], "active");
    EXPECT_NE(fresh_unit["MainPID"], before[u]["MainPID"]);
  }
  for (uint16_t port : {22, 2222, 80, 8080, 21, 8180}) {
    bool answers = false;
    for (Deadline d(Millis(180000)); !answers && !d.expired(); std::this_thread::sleep_for(Millis(1000)))
      answers = accepts(port);
    EXPECT_TRUE(answers) << "port " << port << " answers after the restart";
  }
}

// A socket-activated service: systemd (PID 1) holds the listening socket and would go on
// accepting while the service is away. Refused by name with the reason; it goes on.
TEST_F(SystemdGuest, ASocketActivatedServiceIsRefusedByName) {
  auto made =
      sh("printf '[Socket]\\nListenStream=2399\\nAccept=yes\\n' > /run/systemd/system/sl-echo.socket && "
         "printf '[Service]\\nExecStart=/bin/echo activated\\nStandardInput=socket\\nStandardOutput=socket\\n' "
         "> /run/systemd/system/sl-echo@.service && systemctl daemon-reload && systemctl start sl-echo.socket");
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto o = helper({"discover"});
  ASSERT_EQ(o.code, 0) << o.text;
  EXPECT_NE(o.text.find("socket activation"), std::string::npos) << o.text;
  auto refused = helper({"dump", "--port", "2399", "--out", "/run/socket.pack"});
  EXPECT_EQ(refused.code, 1) << refused.text;
  EXPECT_NE(refused.text.find("port 2399 (systemd, pid 1) cannot be moved"), std::string::npos) << refused.text;
  EXPECT_NE(refused.text.find("socket activation"), std::string::npos) << refused.text;
  auto r = run({"ip", "netns", "exec", guest_->bed.netns, "timeout", "20", "bash", "-c",
                cat("exec 3<>/dev/tcp/", guest_->bed.guest_ip(kIndex), "/2399; cat <&3")});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "activated\n") << "the service goes on answering";
  (void)sh("systemctl stop sl-echo.socket; rm -f /run/systemd/system/sl-echo*; systemctl daemon-reload");
}

}  // namespace
}  // namespace seamless::guest
