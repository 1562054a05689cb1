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
#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/gateway_client.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::guest {
namespace {

constexpr int kIndex = 22;
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
    auto t0 = Clock::now();
    auto k = test::KeyedGuest::boot(spec);
    if (!k.ok()) return fail(k.error().message);
    boot_seconds_ = seconds_since(t0);
    guest_ = std::move(k->guest);
    dir_ = std::move(k->dir);
    key_ = k->key;
  }
  static void TearDownTestSuite() {
    guest_.reset();
    dir_.reset();
  }
  void SetUp() override { require(guest_ != nullptr); }

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
  static inline std::unique_ptr<test::LibvirtGuest> guest_;
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
