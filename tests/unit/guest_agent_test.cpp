// SPDX-License-Identifier: Apache-2.0
// Unit tests of the in-guest helper's library: /proc parsing, gateway discovery, the
// configuration, file identities, manifests, and dump/restore against a fake CRIU and
// a fake netfilter. The pack reader's hostile-input tests are in pack_test.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/discover.h"
#include "guest-agent/gateway.h"
#include "guest-agent/procfs.h"
#include "guest-agent/streams.h"
#include "pack/criu_images.h"
#include "pack/identity.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "qmp/json.h"
#include "tests/support/fake_criu.h"

namespace seamless::guest {
namespace {

constexpr const char* kTcpHeader =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

TEST(NetTable, ParsesListeningAndEstablishedV4) {
  std::string text =
      std::string(kTcpHeader) +
      "   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 "
      "0000000000000000 100 0 0 10 0\n"
      "   1: 0C004D0A:08AE 01004D0A:C350 01 00000000:00000000 02:000A7E5B 00000000     0        0 2222 4 "
      "0000000000000000 20 4 30 10 -1\n";
  auto socks = parse_net_table(text, Proto::Tcp, Family::V4);
  ASSERT_TRUE(socks.ok()) << socks.error().message;
  ASSERT_EQ(socks->size(), 2u);
  EXPECT_TRUE((*socks)[0].listening());
  EXPECT_EQ((*socks)[0].local_addr, "0.0.0.0");
  EXPECT_EQ((*socks)[0].local_port, 2222);
  EXPECT_EQ((*socks)[0].inode, 1111u);
  EXPECT_TRUE((*socks)[1].established());
  EXPECT_EQ((*socks)[1].local_addr, "10.77.0.12");
  EXPECT_EQ((*socks)[1].remote_addr, "10.77.0.1");
  EXPECT_EQ((*socks)[1].remote_port, 50000);
}

TEST(NetTable, ParsesV6AndUdp) {
  std::string text = std::string(kTcpHeader) +
                     "  0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 "
                     "00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 0\n";
  auto socks = parse_net_table(text, Proto::Udp, Family::V6);
  ASSERT_TRUE(socks.ok()) << socks.error().message;
  ASSERT_EQ(socks->size(), 1u);
  EXPECT_EQ((*socks)[0].local_addr, "::1");
  EXPECT_EQ((*socks)[0].local_port, 53);
  EXPECT_TRUE((*socks)[0].listening());
}

TEST(NetTable, MalformedLinesNameTheLine) {
  auto r =
      parse_net_table(std::string(kTcpHeader) + "   0: XYZ 00000000:0000 0A a b c d e 7\n", Proto::Tcp, Family::V4);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;
  EXPECT_FALSE(parse_net_table(std::string(kTcpHeader) + "   0: 00000000:0016\n", Proto::Tcp, Family::V4).ok());
}

TEST(Stat, CommWithSpacesAndParentheses) {
  auto st = parse_stat("42 (my (odd) daemon) S 1 42 42 0 -1 4194560 ...");
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->pid, 42);
  EXPECT_EQ(st->comm, "my (odd) daemon");
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->session, 42);
  EXPECT_FALSE(parse_stat("garbage").ok());
  EXPECT_FALSE(parse_stat("42 (x) S one 2 3").ok());
  // A whole line: field 22 is the start time.
  auto full = parse_stat(
      "163 (seamless-sinkd) S 1 162 162 0 -1 4194368 120 0 0 0 0 1 0 0 20 0 1 0 31337 3944448 197 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0");
  ASSERT_TRUE(full.ok()) << full.error().message;
  EXPECT_EQ(full->start_time, 31337u);
}

TEST(Cmdline, SplitNul) {
  using V = std::vector<std::string>;
  EXPECT_EQ(sys::split_nul(std::string("qemu\0-name\0sl-x\0", 16)), (V{"qemu", "-name", "sl-x"}));
  EXPECT_EQ(sys::split_nul(std::string("a\0\0b", 4)), (V{"a", "", "b"})) << "empty arguments kept";
  EXPECT_EQ(sys::split_nul(""), V{});
}

TEST(Maps, FileBackedPathsOnceEach) {
  auto paths = parse_maps(
      "55d0-55d1 r--p 00000000 fe:00 131 /usr/sbin/dropbear\n"
      "55d1-55d2 r-xp 00001000 fe:00 131 /usr/sbin/dropbear\n"
      "7f00-7f01 rw-p 00000000 00:00 0 \n"
      "7f01-7f02 r--p 00000000 fe:00 77 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
      "7f02-7f03 rw-s 00000000 00:05 9 /dev/zero (deleted)\n"
      "7ffd-7ffe r-xp 00000000 00:00 0 [vdso]\n");
  ASSERT_EQ(paths.size(), 3u);
  EXPECT_EQ(paths[0], "/usr/sbin/dropbear");
  EXPECT_EQ(paths[1], "/usr/lib/x86_64-linux-gnu/libc.so.6");
  EXPECT_EQ(paths[2], "/dev/zero (deleted)");
}

// A JVM writes its performance counters into /tmp/hsperfdata_USER/PID through a shared
// writable mapping: data, not code. Read-only shared mappings and private ones are not.
TEST(Maps, SharedWritableMappingsAreTheGatewaysData) {
  auto paths = parse_shared_writable_maps(
      "7f00-7f08 rw-s 00000000 00:1f 12 /tmp/hsperfdata_tomcat/239\n"
      "7f08-7f09 r--s 00000000 fe:00 40 /usr/share/zoneinfo/UTC\n"
      "7f09-7f0a rw-p 00000000 fe:00 41 /usr/lib/libx.so\n"
      "7f0a-7f0b rw-s 00000000 00:00 0 \n");
  EXPECT_EQ(paths, std::vector<std::string>{"/tmp/hsperfdata_tomcat/239"});
}

TEST(KbFields, MeminfoAndSmapsRollupLines) {
  const char* rollup =
      "55d0-7ffe ---p 00000000 00:00 0 [rollup]\n"
      "Rss:                2412 kB\n"
      "Pss:                 731 kB\n"
      "Pss_Anon:            402 kB\n";
  auto pss = parse_kb_field(rollup, "Pss");
  ASSERT_TRUE(pss.ok()) << pss.error().message;
  EXPECT_EQ(*pss, 731u) << "Pss, not Pss_Anon";
  EXPECT_EQ(*parse_kb_field("MemTotal:  2030000 kB\nMemAvailable:  1500000 kB\n", "MemAvailable"), 1500000u);
  EXPECT_EQ(parse_kb_field(rollup, "Swap").error().kind, ErrorKind::NotFound);
  auto bad = parse_kb_field("Pss: lots\n", "Pss");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("lots"), std::string::npos);
}

// A fake /proc: processes with stat, exe, cmdline, fds and tasks, and the socket tables.
class FakeProc {
 public:
  FakeProc() : dir_(TempDir::create().value()) { std::filesystem::create_directories(dir_ / "net"); }
  void process(pid_t pid, pid_t ppid, const std::string& comm, const std::string& exe,
               std::vector<uint64_t> sockets = {}) {
    std::string p = dir_ / std::to_string(pid);
    std::filesystem::create_directories(p + "/fd");
    std::filesystem::create_directories(p + "/task/" + std::to_string(pid));
    write(p + "/stat", cat(pid, " (", comm, ") S ", ppid, " ", pid, " ", pid, " 0 -1 0"));
    write(p + "/cmdline", exe + std::string(1, '\0'));
    std::filesystem::create_symlink(exe, p + "/exe");
    int fd = 3;
    for (uint64_t inode : sockets) std::filesystem::create_symlink(cat("socket:[", inode, "]"), cat(p, "/fd/", fd++));
    std::filesystem::create_symlink("/var/log/daemon.log", cat(p, "/fd/", fd++));
  }
  void tcp(const std::string& lines) { write(dir_ / "net/tcp", std::string(kTcpHeader) + lines); }
  // systemd's view: the process's cgroup and its mount namespace ("self" is the reader).
  void systemd(const std::string& pid, const std::string& cgroup, uint64_t mnt_ns) {
    const std::string p = dir_ / pid;
    std::filesystem::create_directories(p + "/ns");
    if (!cgroup.empty()) write(p + "/cgroup", "0::" + cgroup + "\n");
    std::filesystem::create_symlink(cat("mnt:[", mnt_ns, "]"), p + "/ns/mnt");
  }
  // A descriptor on `target` from mount `mnt_id`; the process sees the mounts `mounts`.
  void fd_on(pid_t pid, int fd, const std::string& target, int mnt_id, const std::vector<int>& mounts) {
    std::string p = dir_ / std::to_string(pid);
    std::filesystem::create_directories(p + "/fdinfo");
    std::filesystem::create_symlink(target, cat(p, "/fd/", fd));
    write(cat(p, "/fdinfo/", fd), cat("pos:\t0\nflags:\t02\nmnt_id:\t", mnt_id, "\nino:\t5\n"));
    std::string info;
    for (int m : mounts) info += cat(m, " 1 0:5 / /x rw - tmpfs tmpfs rw\n");
    write(p + "/mountinfo", info);
  }
  std::string path() const { return dir_.path(); }

 private:
  static void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  TempDir dir_;
};

std::string tcp_line(const char* local, const char* remote, const char* state, uint64_t inode) {
  return cat("   0: ", local, " ", remote, " ", state, " 00000000:00000000 00:00000000 00000000     0        0 ", inode,
             " 1 0000000000000000 100 0 0 10 0\n");
}

class Discovery_ : public ::testing::Test {
 protected:
  void SetUp() override {
    proc_.process(1, 0, "init", "/bin/busybox");
    proc_.process(100, 1, "dropbear", "/usr/sbin/dropbear", {5001});
    proc_.process(120, 100, "dropbear", "/usr/sbin/dropbear", {5002});
    proc_.process(121, 120, "bash", "/usr/bin/bash");
    proc_.process(200, 1, "lighttpd", "/usr/sbin/lighttpd", {6001});
    proc_.process(300, 1, "qemu-ga", "/usr/sbin/qemu-ga");
    proc_.process(301, 300, "sh", "/bin/sh", {7001});
    proc_.tcp(tcp_line("00000000:08AE", "00000000:0000", "0A", 5001) +
              tcp_line("0C004D0A:08AE", "01004D0A:C350", "01", 5002) +
              tcp_line("00000000:0050", "00000000:0000", "0A", 6001) +
              tcp_line("0100007F:1F90", "00000000:0000", "0A", 7001));
    auto snap = snapshot(proc_.path());
    ASSERT_TRUE(snap.ok()) << snap.error().message;
    snap_ = std::move(snap).value();
  }
  FakeProc proc_;
  Snapshot snap_;
};

TEST_F(Discovery_, SnapshotReadsProcessesAndSockets) {
  ASSERT_EQ(snap_.processes.size(), 7u);
  EXPECT_EQ(snap_.processes.at(120).stat.ppid, 100);
  EXPECT_EQ(snap_.processes.at(120).exe, "/usr/sbin/dropbear");
  EXPECT_EQ(snap_.processes.at(100).open_files, std::vector<std::string>{"/var/log/daemon.log"});
  EXPECT_EQ(snap_.inode_owner.at(5002), 120);
  EXPECT_EQ(snap_.tree(100), (std::vector<pid_t>{100, 120, 121}));
  EXPECT_EQ(snap_.sockets.size(), 4u);
}

TEST_F(Discovery_, GatewaysAreTreesOwningListeningSockets) {
  auto d = discover(snap_, Config{}, {300});
  ASSERT_EQ(d.gateways.size(), 2u);
  const Gateway& db = d.gateways[0];
  EXPECT_EQ(db.root, 100);
  EXPECT_EQ(db.name, "dropbear");
  EXPECT_EQ(db.pids, (std::vector<pid_t>{100, 120, 121}));
  EXPECT_EQ(db.ports(), std::vector<uint16_t>{2222});
  ASSERT_EQ(db.established.size(), 1u);
  EXPECT_EQ(db.established_owner[0], 120);
  EXPECT_EQ(db.established[0].remote_port, 50000);
  EXPECT_EQ(d.gateways[1].name, "lighttpd");
  ASSERT_EQ(d.excluded.size(), 1u);
  EXPECT_EQ(d.excluded[0].root, 300);
  EXPECT_NE(d.excluded[0].reason.find("guest agent"), std::string::npos);
  auto json = qmp::parse(to_json(d));
  ASSERT_TRUE(json.ok()) << json.error().message;
}

TEST_F(Discovery_, ConfigIncludesAndExcludes) {
  auto only_ssh = parse_config("# just ssh\ninclude port 2222\n");
  ASSERT_TRUE(only_ssh.ok());
  auto d = discover(snap_, *only_ssh, {300});
  ASSERT_EQ(d.gateways.size(), 1u);
  EXPECT_EQ(d.gateways[0].name, "dropbear");

  auto no_web = parse_config("exclude exe /usr/sbin/lighttpd\n");
  ASSERT_TRUE(no_web.ok());
  d = discover(snap_, *no_web, {300});
  ASSERT_EQ(d.gateways.size(), 1u);
  EXPECT_EQ(d.gateways[0].name, "dropbear");
  bool reported = false;
  for (const auto& e : d.excluded) reported |= e.name == "lighttpd" && e.reason.find("excluded") != std::string::npos;
  EXPECT_TRUE(reported);
}

// On a systemd guest: each gateway's unit, and whether it runs in a mount namespace of its
// own (a service's PrivateTmp=); neither is reported where there is none.
TEST(DiscoverySystemd, UnitAndOwnMountNamespace) {
  FakeProc proc;
  proc.process(1, 0, "systemd", "/lib/systemd/systemd");
  proc.process(100, 1, "sshd", "/usr/sbin/sshd", {5001});
  proc.process(200, 1, "apache2", "/usr/sbin/apache2", {6001});
  proc.systemd("self", "", 4026531841);
  proc.systemd("100", "/system.slice/ssh.service", 4026531841);
  proc.systemd("200", "/system.slice/apache2.service", 4026532229);
  proc.tcp(tcp_line("00000000:0016", "00000000:0000", "0A", 5001) +
           tcp_line("00000000:1F90", "00000000:0000", "0A", 6001));
  auto snap = snapshot(proc.path());
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  auto d = discover(*snap, Config{}, {});
  ASSERT_EQ(d.gateways.size(), 2u);
  EXPECT_EQ(d.gateways[0].unit, "ssh.service");
  EXPECT_FALSE(d.gateways[0].own_mount_ns);
  EXPECT_EQ(d.gateways[1].unit, "apache2.service");
  EXPECT_TRUE(d.gateways[1].own_mount_ns);
  const std::string json = to_json(d);
  EXPECT_NE(json.find("\"unit\":\"apache2.service\",\"own_mount_ns\":true"), std::string::npos) << json;
}

// A descriptor from outside the process's mount namespace (systemd opened the service's
// stdin before it set the namespace up): a carried device is recorded once, by its mount
// and inode; anything else is refused by name; one from its own mounts is no concern.
TEST(ForeignDevices, CarriedDevicesAreRecordedAndOthersRefused) {
  struct stat null {};
  ASSERT_EQ(::stat("/dev/null", &null), 0);
  FakeProc proc;
  proc.process(100, 1, "java", "/usr/bin/java");
  proc.systemd("self", "", 4026531841);
  proc.systemd("100", "", 4026532229);
  proc.fd_on(100, 0, "/dev/null", 23, {300, 301});
  proc.fd_on(100, 7, "/dev/null", 23, {300, 301});
  proc.fd_on(100, 8, "/dev/zero", 300, {300, 301});
  auto found = foreign_devices({100}, proc.path());
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_EQ(found->size(), 1u) << "one entry per file";
  EXPECT_EQ((*found)[0].path, "/dev/null");
  EXPECT_EQ((*found)[0].key(), cat("file[17:", std::hex, null.st_ino, "]"));

  FakeProc other;
  other.process(100, 1, "java", "/usr/bin/java");
  other.systemd("self", "", 4026531841);
  other.systemd("100", "", 4026532229);
  other.fd_on(100, 0, "/etc/hostname", 23, {300});
  auto refused = foreign_devices({100}, other.path());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("fd 0 of pid 100 is `/etc/hostname` from outside"), std::string::npos)
      << refused.error().message;

  // In our own mount namespace (a chrooted worker sees fewer mounts): CRIU knows them all.
  FakeProc chrooted;
  chrooted.process(100, 1, "vsftpd", "/usr/sbin/vsftpd");
  chrooted.systemd("self", "", 4026531841);
  chrooted.systemd("100", "", 4026531841);
  chrooted.fd_on(100, 9, "/var/log/vsftpd.log", 23, {300});
  auto mine = foreign_devices({100}, chrooted.path());
  ASSERT_TRUE(mine.ok()) << mine.error().message;
  EXPECT_TRUE(mine->empty());
}

TEST(Config, BadLinesAreRefused) {
  for (const char* bad : {"include port 0", "exclude port 70000", "include port http", "exclude exe relative/path",
                          "allow port 22", "include socket 22", "include port 22 23"}) {
    auto c = parse_config(cat("# ok\n", bad, "\n"));
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.error().message.find("line 2"), std::string::npos) << c.error().message;
  }
  auto missing = load_config("/nonexistent/guest.conf");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_includes());
}

TEST(Identity, ElfBuildIdAndHash) {
  auto self = identify("/proc/self/exe");
  ASSERT_TRUE(self.ok()) << self.error().message;
  EXPECT_EQ(self->build_id.size(), 40u) << "Debian's toolchain links with --build-id (SHA-1)";
  EXPECT_TRUE(self->sha256.empty());
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(sys::write_file(*dir / "conf", "hello").ok());
  auto conf = identify(*dir / "conf");
  ASSERT_TRUE(conf.ok());
  EXPECT_TRUE(conf->build_id.empty());
  EXPECT_EQ(conf->sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  EXPECT_EQ(conf->size, 5u);
  EXPECT_FALSE(identify(dir->path()).ok()) << "directories are not files";
  EXPECT_EQ(elf_build_id("\x7f"
                         "ELF garbage"),
            "");
  EXPECT_EQ(elf_build_id(""), "");
}

TEST(Identity, DifferencesAreNamed) {
  FileIdentity a{"/usr/lib/libx.so", 100, "abcd", "", "map"};
  FileIdentity b = a;
  EXPECT_TRUE(same_file(a, b).ok());
  b.size = 101;
  auto e = same_file(a, b);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("101 bytes here, 100 in the pack"), std::string::npos) << e.error().message;
  b = a;
  b.build_id = "ffff";
  e = same_file(a, b);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("build-id ffff here, abcd in the pack"), std::string::npos);
}

Manifest sample_manifest() {
  Manifest m;
  m.hostname = "sl-guest";
  m.kernel = "6.1.0-test";
  m.criu_version = "3.17.1";
  m.interfaces.push_back({"eth0", "52:54:00:5e:a0:0c", {"10.77.0.12/24"}});
  m.routes.push_back({"default", "10.77.0.1", "eth0", false});
  PackedGateway g;
  g.root = 100;
  g.name = "dropbear";
  g.exe = "/usr/sbin/dropbear";
  g.dir = "gw/100";
  g.pids = {100, 120};
  g.listening.push_back({"tcp", "0.0.0.0", 2222});
  g.established.push_back({120, "10.77.0.12:2222", "10.77.0.1:50000"});
  g.streams.push_back({4711, "/run/systemd/journal/stdout", "dropbear", "dropbear.service", {{100, 1}, {100, 2}}});
  g.unit = "dropbear.service";
  g.unit_main = 100;
  g.devices.push_back({"/dev/null", 0x17, 5});
  m.gateways.push_back(g);
  m.files.push_back({"/usr/sbin/dropbear", 1234, "ab12", "", "exe"});
  m.files.push_back({"/var/log/apache2/error.log", 77, "", "cd34", "open", 0640, 0, 4});
  return m;
}

TEST(ManifestJson, RoundTrips) {
  Manifest m = sample_manifest();
  auto back = Manifest::parse(m.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->to_json(), m.to_json());
  EXPECT_EQ(back->gateways[0].established[0].remote, "10.77.0.1:50000");
  EXPECT_EQ(back->files[0].role, "exe");
  EXPECT_EQ(back->files[1].mode, 0640u);
  EXPECT_EQ(back->files[1].gid, 4u);
  ASSERT_EQ(back->gateways[0].streams.size(), 1u);
  EXPECT_EQ(back->gateways[0].streams[0].holders.size(), 2u);
  EXPECT_TRUE(back->gateways[0].streams[0].journal());
  EXPECT_EQ(back->gateways[0].unit, "dropbear.service");
  EXPECT_EQ(back->gateways[0].unit_main, 100);
  ASSERT_EQ(back->gateways[0].devices.size(), 1u);
  EXPECT_EQ(back->gateways[0].devices[0].key(), "file[17:5]");
  // Packs from before streams were recorded have none.
  std::string old = m.to_json();
  const std::string from = ",\"streams\":[";
  old.erase(old.find(from), old.find("]}]", old.find(from)) + 3 - old.find(from));
  auto older = Manifest::parse(old);
  ASSERT_TRUE(older.ok()) << older.error().message << "\n" << old;
  EXPECT_TRUE(older->gateways[0].streams.empty());
}

TEST(ManifestJson, RefusesWhatItCannotTrust) {
  auto refused = [](std::string json, const char* expect) {
    auto m = Manifest::parse(json);
    ASSERT_FALSE(m.ok()) << json;
    EXPECT_NE(m.error().message.find(expect), std::string::npos) << m.error().message;
  };
  std::string good = sample_manifest().to_json();
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  refused(replace("\"format\":1", "\"format\":2"), "format 2 is not supported");
  refused(replace("\"gw/100\"", "\"../../etc\""), "`..`");
  refused(replace("\"gw/100\"", "\"/etc\""), "absolute path");
  refused(replace("\"role\":\"exe\"", "\"role\":\"x\""), "unknown role");
  refused(replace("\"path\":\"/usr/sbin/dropbear\"", "\"path\":\"usr/sbin/dropbear\""), "bad path");
  refused(replace("\"root\":100", "\"root\":1"), "out of range");
  refused(replace("\"mode\":416", "\"mode\":4096"), "out of range");
  refused(replace("\"gid\":4", "\"gid\":-1"), "out of range");
  refused(replace("\"hostname\":\"sl-guest\",", ""), "missing field `hostname`");
  // A stream's peer is connected to and its header written on restore: only a unix address,
  // and header lines that stay one line each.
  refused(replace("\"peer\":\"/run/systemd/journal/stdout\"", "\"peer\":\"run/x\""), "not a unix socket address");
  refused(replace("\"peer\":\"/run/systemd/journal/stdout\"", "\"peer\":\"/" + std::string(120, 'a') + "\""),
          "not a unix socket address");
  refused(replace("\"identifier\":\"dropbear\"", "\"identifier\":\"drop\\nbear\""), "control byte");
  refused(replace("\"holders\":[{\"pid\":100,\"fd\":1},{\"pid\":100,\"fd\":2}]", "\"holders\":[]"), "no holder");
  refused(replace("\"inode\":4711", "\"inode\":0"), "out of range");
  // The unit names a drop-in path and a systemctl argument in the guest: a service name only.
  refused(replace("\"unit\":\"dropbear.service\"", "\"unit\":\"../../etc/x.service\""), "not a service unit name");
  refused(replace("\"unit\":\"dropbear.service\"", "\"unit\":\"-x.service\""), "not a service unit name");
  refused(replace("\"unit\":\"dropbear.service\"", "\"unit\":\"dropbear.socket\""), "not a service unit name");
  refused(replace("\"unit_main\":100", "\"unit_main\":1"), "out of range");
  refused(replace("\"unit_main\":100", "\"unit_main\":555"), "is not one of its");
  // A restoring side opens a carried device: the harmless ones only.
  refused(replace("\"path\":\"/dev/null\"", "\"path\":\"/etc/shadow\""), "not a device a pack may ask for");
  refused(replace("\"path\":\"/dev/null\"", "\"path\":\"/dev/sda\""), "not a device a pack may ask for");
  refused(replace("\"mnt_id\":23", "\"mnt_id\":0"), "out of range");
  refused("[1,2]", "not an object");
  refused("{\"format\":", "manifest");
}

// Every identity and network field has a schema: shell metacharacters, newlines (which
// became lines of an `ip -b` batch once), wrong formats, pids that are not the gateway's
// own (an fd limit once lowered the sink's own) and huge counts are refused by name.
TEST(ManifestJson, RefusesHostileFieldsByName) {
  const std::string good = sample_manifest().to_json();
  auto refused = [&](const std::string& from, const std::string& to, const char* expect) {
    std::string s = good;
    ASSERT_NE(s.find(from), std::string::npos) << from;
    s.replace(s.find(from), from.size(), to);
    auto m = Manifest::parse(s);
    ASSERT_FALSE(m.ok()) << to;
    EXPECT_NE(m.error().message.find(expect), std::string::npos) << to << " -> " << m.error().message;
  };
  const std::string host = "\"hostname\":\"sl-guest\"";
  for (const char* bad : {"a;reboot", "a b", "a\\nb", "$(id)", "-x", "a..b", "", "x`id`"})
    refused(host, cat("\"hostname\":\"", bad, "\""), "field `hostname`");
  refused(host, cat("\"hostname\":\"", std::string(65, 'a'), "\""), "field `hostname`");
  refused("\"kernel\":\"6.1.0-test\"", "\"kernel\":\"6.1\\nx\"", "field `kernel`");
  refused("\"criu\":\"3.17.1\"", cat("\"criu\":\"", std::string(100, '1'), "\""), "field `criu`");
  const std::string name = "\"name\":\"eth0\"";
  for (const char* bad : {"eth0\\nlink set lo down", "eth 0", "a/b", "..", "-eth", "eth0;id", "averyveryverylongname"})
    refused(name, cat("\"name\":\"", bad, "\""), "is not an interface name");
  const std::string mac = "\"mac\":\"52:54:00:5e:a0:0c\"";
  for (const char* bad : {"52:54:00:5e:a0", "53:54:00:5e:a0:0c", "00:00:00:00:00:00", "52:54:00:5e:a0:0g",
                          "52-54-00-5e-a0-0c", "52:54:00:5e:a0:0c\\n"})
    refused(mac, cat("\"mac\":\"", bad, "\""), "is not a unicast MAC address");
  const std::string addr = "\"10.77.0.12/24\"";
  for (const char* bad : {"10.77.0.12", "10.77.0.12/33", "10.77.0.12/24 dev lo", "fe80::1/129", "10.77.0.300/24",
                          "10.77.0.12/24\\nroute add", "/24", "10.77.0.12/"})
    refused(addr, cat("\"", bad, "\""), "is not an address with its prefix length");
  refused("\"dst\":\"default\"", "\"dst\":\"default via 1.2.3.4\"", "is not an IPv4 prefix");
  refused("\"dst\":\"default\"", "\"dst\":\"fe80::/64\"", "is not an IPv4 prefix");
  refused("\"via\":\"10.77.0.1\"", "\"via\":\"10.77.0.1 onlink\"", "is not an IPv4 address");
  refused("\"dev\":\"eth0\"", "\"dev\":\"eth1\"", "none of the manifest's interfaces");
  refused("\"name\":\"dropbear\"", "\"name\":\"drop\\nbear\"", "is not a process name");
  refused("\"exe\":\"/usr/sbin/dropbear\"", "\"exe\":\"/usr/../bin/sh\"", "is not a plain absolute path");
  refused("\"pids\":[100,120]", "\"pids\":[100,0]", "bad pid");
  refused("\"pids\":[100,120]", "\"pids\":[100,5000000]", "bad pid");
  refused("\"pids\":[100,120]", "\"pids\":[100,120,120]", "twice");
  refused("\"pids\":[100,120]", "\"pids\":[120,100]", "do not start with its root");
  refused("\"addr\":\"0.0.0.0\"", "\"addr\":\"0.0.0.0;id\"", "is not an IP address");
  refused("\"local\":\"10.77.0.12:2222\"", "\"local\":\"10.77.0.12:99999\"", "is not a pair of socket addresses");
  refused("\"remote\":\"10.77.0.1:50000\"", "\"remote\":\"[::1:50000\"", "is not a pair of socket addresses");
  refused("{\"pid\":120,\"local\"", "{\"pid\":777,\"local\"", "is not one of its");
  refused("{\"pid\":100,\"fd\":1}", "{\"pid\":1234,\"fd\":1}", "is not one of its");
  refused("\"fd_limits\":[]", "\"fd_limits\":[{\"pid\":1,\"soft\":3,\"hard\":3}]", "not one of its");
  refused("\"fd_limits\":[]", "\"fd_limits\":[{\"pid\":120,\"soft\":9,\"hard\":3}]", "soft limit above");
  // Huge counts are refused before anything is built from them.
  std::string many = "\"interfaces\":[";
  for (size_t i = 0; i <= packfmt::kMaxInterfaces; ++i)
    many += cat(i ? "," : "", "{\"name\":\"e", i, "\",\"mac\":\"52:54:00:00:00:01\",\"addresses\":[]}");
  refused("\"interfaces\":[", many + "],\"x\":[", "field `interfaces` has 17 entries");
  std::string pids = "\"pids\":[100";
  for (int i = 0; i < int(packfmt::kMaxGatewayPids); ++i) pids += cat(",", 1000 + i);
  refused("\"pids\":[100,120]", pids + "]", "field `pids` has 4097 entries");
  // What the guest writes itself passes.
  Manifest v6 = sample_manifest();
  v6.interfaces[0].addresses.push_back("fe80::5054:ff:fe5e:a00c/64");
  v6.routes.push_back({"fe80::/64", "", "eth0", true});
  v6.routes.push_back({"default", "fe80::1", "eth0", true});
  v6.gateways[0].established.push_back({120, "[fe80::5054:ff:fe5e:a00c]:2222", "[fe80::1]:40000"});
  auto parsed = Manifest::parse(v6.to_json());
  EXPECT_TRUE(parsed.ok()) << parsed.error().message;
}

// A listening unix stream socket at `path`.
UniqueFd listen_unix(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), 4) != 0) fd.reset();
  return fd;
}

// A fake at the netfilter boundary (the CRIU one is tests/support/fake_criu.h).
struct FakeNetfilter : Netfilter {
  Activity activity;
  bool watching = false;
  int cleared = 0;
  const std::vector<std::string>* restored = nullptr;  // the fake CRIU's restores
  size_t restored_at_clear = 0;
  Result<void> watch(const std::vector<uint16_t>&, const std::vector<uint16_t>&) override {
    watching = true;
    return ok();
  }
  Result<Activity> read_watch() override { return activity; }
  void unwatch() override { watching = false; }
  Result<int> clear_criu_locks() override {
    if (restored) restored_at_clear = restored->size();
    return ++cleared;
  }
  bool holding = false;
  Result<void> hold_new(const std::vector<uint16_t>&) override {
    holding = true;
    return ok();
  }
  void release_new() override { holding = false; }
};

class GatewayOps : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two "gateways" made of this very process, so that its maps and exe are real files.
    pid_t self = ::getpid();
    Process p;
    p.stat.pid = self;
    p.stat.ppid = 1;
    p.stat.session = self;
    p.stat.pgrp = self;
    p.exe = std::filesystem::read_symlink("/proc/self/exe");
    snap_.processes.emplace(self, p);
    Gateway g;
    g.root = self;
    g.name = "first";
    g.exe = p.exe;
    g.pids = {self};
    g.listening.push_back(NetSocket{Proto::Tcp, Family::V4, "0.0.0.0", "", 2222, 0, kTcpListen, 1});
    gateways_.push_back(g);
    env_.criu = &criu_;
    nf_.restored = &criu_.restored;
    env_.netfilter = &nf_;
    env_.work_dir = work_.path();
    env_.unix_sockets = [this]() -> Result<std::vector<UnixSocket>> { return unix_; };
  }
  void add_second(pid_t pid) {
    Process p = snap_.processes.begin()->second;
    p.stat.pid = pid;
    snap_.processes.emplace(pid, p);
    Gateway g = gateways_[0];
    g.root = pid;
    g.name = "second";
    g.pids = {pid};
    gateways_.push_back(g);
  }
  TempDir work_ = TempDir::create().value();
  FakeCriu criu_;
  FakeNetfilter nf_;
  Env env_;
  Snapshot snap_;
  std::vector<Gateway> gateways_;
  std::vector<UnixSocket> unix_;  // what the fake sock_diag reports
};

// The gateway's stdout and stderr on one connection to a listener outside (as a systemd
// unit's go to the journal): dumped as one external socket, and every restore hands CRIU a
// fresh connection to the same listener in its place.
TEST_F(GatewayOps, AStreamToTheOutsideIsDumpedAsExternalAndReconnectedOnRestore) {
  auto listener = listen_unix(work_ / "log.sock");
  ASSERT_TRUE(listener.valid());
  Process& p = snap_.processes.begin()->second;
  p.stat.comm = "sshd";
  p.socket_inodes = {9001, 9001, 9003};
  p.socket_fds = {1, 2, 7};
  unix_ = {{9001, 9002, SOCK_STREAM, 1, ""},
           {9002, 9001, SOCK_STREAM, 1, work_ / "log.sock"},
           {9003, 0, SOCK_DGRAM, 7, ""}};  // an unconnected datagram socket: no peer to lose
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(criu_.external_unix, std::vector<uint64_t>{9001});
  ASSERT_EQ(r->manifest.gateways[0].streams.size(), 1u);
  const OutsideStream& s = r->manifest.gateways[0].streams[0];
  EXPECT_EQ(s.peer, work_ / "log.sock");
  EXPECT_EQ(s.identifier, "sshd");
  EXPECT_EQ(s.holders.size(), 2u) << "stdout and stderr, one socket";
  EXPECT_FALSE(s.journal());

  // The fake CRIU writes into what it was handed: it arrives at the listener.
  criu_.write_to_inherited = "restored\n";
  auto back = restore(env_, pack);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(back->warnings.empty());
  ASSERT_EQ(criu_.inherited.size(), 1u);
  EXPECT_EQ(criu_.inherited[0], "socket:[9001]");
  UniqueFd conn(::accept(listener.get(), nullptr, nullptr));
  ASSERT_TRUE(conn.valid());
  char buf[32] = {};
  EXPECT_EQ(::read(conn.get(), buf, sizeof buf - 1), 9);
  EXPECT_STREQ(buf, "restored\n") << "no header for a listener that is not the journal";

  // The listener is gone: the gateway still comes back, its output to /dev/null, and says so.
  listener.reset();
  std::filesystem::remove(work_ / "log.sock");
  auto again = restore(env_, pack);
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_EQ(again->warnings.size(), 1u);
  EXPECT_NE(again->warnings[0].find("/dev/null"), std::string::npos) << again->warnings[0];
  EXPECT_NE(to_json(*again).find("\"warnings\":[\"gateway `first`: connecting to"), std::string::npos)
      << to_json(*again);
}

// A connection whose other end has no name cannot be made again after a restore: refused
// before anything is touched, naming process, fd and peer.
TEST_F(GatewayOps, AStreamToAnUnnamedOutsideSocketIsRefusedBeforeAnythingIsTouched) {
  Process& p = snap_.processes.begin()->second;
  p.stat.comm = "sshd";
  p.socket_inodes = {9001};
  p.socket_fds = {2};
  unix_ = {{9001, 9002, SOCK_STREAM, 1, ""}, {9002, 9001, SOCK_STREAM, 1, ""}};
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_FALSE(r.ok());
  const std::string& why = r.error().message;
  EXPECT_EQ(r.error().kind, ErrorKind::Invalid);
  EXPECT_NE(why.find("gateway `first`: cannot checkpoint: fd 2 (stderr) of sshd (pid " + std::to_string(::getpid()) +
                     ") is a unix stream connection to an unnamed socket of another process"),
            std::string::npos)
      << why;
  EXPECT_TRUE(criu_.dumped.empty());
  EXPECT_FALSE(nf_.watching);
  EXPECT_FALSE(std::filesystem::exists(pack));

  // A datagram socket connected to a logger by a name CRIU cannot connect again (an
  // abstract one, or a path outside /run, /var/run and /dev/log): refused.
  for (const char* name : {"@hidden-logger", "/etc/not-a-logger"}) {
    unix_ = {{9001, 9002, SOCK_DGRAM, 1, ""}, {9002, 0, SOCK_DGRAM, 7, name}};
    auto dgram = dump(env_, snap_, gateways_, pack);
    ASSERT_FALSE(dgram.ok()) << name;
    EXPECT_NE(dgram.error().message.find(
                  cat("is a unix datagram socket connected to `", name, "`, which cannot be connected again")),
              std::string::npos)
        << dgram.error().message;
    EXPECT_TRUE(criu_.dumped.empty());
  }

  // Both ends inside the gateway (a worker's socketpair): nothing outside.
  add_second(::getpid() + 100000);
  gateways_.resize(1);
  gateways_[0].pids.push_back(::getpid() + 100000);
  Process& worker = snap_.processes.at(::getpid() + 100000);
  worker.socket_inodes = {9002};
  worker.socket_fds = {5};
  auto ok = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_TRUE(criu_.external_unix.empty());
  EXPECT_FALSE(criu_.external_datagrams);
}

// discover names what cannot move, with the reason, and keeps it out of the gateways: a
// park of all gateways is refused while it runs (seamless-guest dump).
TEST_F(GatewayOps, WhatCannotMoveIsExcludedWithTheReason) {
  add_second(::getpid() + 100000);
  Process& p = snap_.processes.at(::getpid());
  p.socket_inodes = {9001};
  p.socket_fds = {4};
  unix_ = {{9001, 9002, SOCK_STREAM, 1, ""}, {9002, 9001, SOCK_STREAM, 1, ""}};
  Discovery d;
  d.gateways = gateways_;
  ASSERT_TRUE(exclude_unmovable(env_, snap_, &d).ok());
  ASSERT_EQ(d.gateways.size(), 1u);
  EXPECT_EQ(d.gateways[0].name, "second");
  ASSERT_EQ(d.excluded.size(), 1u);
  EXPECT_EQ(d.excluded[0].name, "first");
  EXPECT_TRUE(d.excluded[0].cannot_move);
  EXPECT_EQ(d.excluded[0].ports, std::vector<uint16_t>{2222});
  EXPECT_NE(d.excluded[0].reason.find("cannot move: fd 4 of"), std::string::npos) << d.excluded[0].reason;
  EXPECT_NE(to_json(d).find("\"cannot_move\":true"), std::string::npos) << to_json(d);
  EXPECT_TRUE(criu_.dumped.empty()) << "nothing touched";

  // A mount namespace of its own that no unit keeps.
  Discovery own;
  own.gateways = {gateways_[1]};
  own.gateways[0].own_mount_ns = true;
  ASSERT_TRUE(exclude_unmovable(env_, snap_, &own).ok());
  ASSERT_EQ(own.excluded.size(), 1u);
  EXPECT_NE(own.excluded[0].reason.find("mount namespace of its own"), std::string::npos) << own.excluded[0].reason;
}

// sshd's login sessions (and tftpd, and most daemons that syslog) keep a datagram socket
// connected to the journal's dev-log: CRIU dumps it as external and connects it again by
// name; the pack names the logger so that a sink can bind one there first.
TEST_F(GatewayOps, ADatagramSocketConnectedToANamedLoggerMovesWithItsName) {
  Process& p = snap_.processes.begin()->second;
  p.socket_inodes = {9001};
  p.socket_fds = {3};
  const std::string pack = work_ / "p.pack";
  unix_ = {{9001, 9002, SOCK_DGRAM, 1, ""}, {9002, 0, SOCK_DGRAM, 7, "/run/systemd/journal/dev-log"}};
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(criu_.external_datagrams);
  ASSERT_FALSE(r->manifest.gateways.empty());
  EXPECT_EQ(r->manifest.gateways[0].loggers, std::vector<std::string>{"/run/systemd/journal/dev-log"});
  auto back = Manifest::parse(r->manifest.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->gateways[0].loggers, r->manifest.gateways[0].loggers);
}

TEST(Streams, UnitAndJournalHeader) {
  EXPECT_EQ(unit_of_cgroup("0::/system.slice/ssh.service\n"), "ssh.service");
  EXPECT_EQ(unit_of_cgroup("12:memory:/x\n1:name=systemd:/system.slice/cron.service\n0::/\n"), "cron.service");
  EXPECT_EQ(unit_of_cgroup("0::/\n"), "");
  EXPECT_EQ(unit_of_cgroup("0::/user.slice\n"), "");
  EXPECT_EQ(unit_of_cgroup(""), "");
  OutsideStream s;
  s.identifier = "sshd";
  s.unit = "ssh.service";
  EXPECT_EQ(journal_header(s), "sshd\nssh.service\n6\n1\n0\n0\n0\n");
}

// Throw-away restores get a socketpair per stream, never a connection to the real peer.
TEST(Streams, DummyEndsAreSocketpairs) {
  OutsideStream s;
  s.inode = 77;
  s.peer = "/nonexistent/log.sock";
  auto ends = open_stream_ends({s}, StreamMode::Dummy);
  ASSERT_TRUE(ends.ok()) << ends.error().message;
  ASSERT_EQ(ends->inherit.size(), 1u);
  EXPECT_EQ(ends->inherit[0].key, "socket:[77]");
  EXPECT_EQ(::fcntl(ends->inherit[0].fd, F_GETFD) & FD_CLOEXEC, 0) << "CRIU must inherit it";
  EXPECT_EQ(::write(ends->inherit[0].fd, "x", 1), 1) << "the other end is open";
  EXPECT_TRUE(ends->warnings.empty());
}

TEST_F(GatewayOps, AFailingSockDiagFailsTheDumpClearly) {
  env_.unix_sockets = []() -> Result<std::vector<UnixSocket>> {
    return make_error(ErrorKind::System, "sock_diag: socket: Protocol not supported");
  };
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("listing the guest's unix sockets: sock_diag"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(criu_.dumped.empty());
}

TEST_F(GatewayOps, DumpWritesAPackThatRestores) {
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->aborted);
  EXPECT_FALSE(nf_.watching) << "the watch is removed";
  EXPECT_TRUE(nf_.holding) << "new connections are dropped (not refused) while the gateway is away";
  EXPECT_GT(r->pack_bytes, 0u);
  ASSERT_EQ(r->manifest.gateways.size(), 1u);
  bool exe_recorded = false;
  for (const auto& f : r->manifest.files) exe_recorded |= f.role == "exe" && !f.build_id.empty();
  EXPECT_TRUE(exe_recorded);

  auto back = restore(env_, pack);
  ASSERT_TRUE(back.ok()) << back.error().message;
  ASSERT_EQ(criu_.restored.size(), 1u);
  EXPECT_EQ(back->restored[0].first, "first");
  EXPECT_EQ(nf_.cleared, 1);
  EXPECT_EQ(nf_.restored_at_clear, 1u) << "CRIU's leftover locks are cleared after the restore, not before";
  EXPECT_FALSE(nf_.holding) << "the gateway listens again: new connections come in";
}

// The dump keeps who it dumped beside its pack; a hand-back is restored only if it holds
// those tasks (checked before anything is restored), and not without that record.
TEST_F(GatewayOps, AHandBackIsRestoredOnlyIfItHoldsWhatWasDumped) {
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto ids = sys::read_file(identities_path(pack));
  ASSERT_TRUE(ids.ok()) << ids.error().message;
  EXPECT_NE(ids->find(cat("\"pid\":", gateways_[0].root)), std::string::npos) << *ids;
  // A sink's pack of the same tasks (the dump's own pack stands in for it).
  auto same = restore(env_, pack, {}, pack);
  ASSERT_TRUE(same.ok()) << same.error().message;
  EXPECT_EQ(criu_.restored.size(), 1u);
  // A record of other tasks: the pack holds a task that was not dumped here.
  auto other = packfmt::criu_images::identities_from_json(*ids).value();
  auto task = other.begin()->second;
  other.clear();
  other[uint32_t(gateways_[0].root) + 1] = task;
  ASSERT_TRUE(sys::write_file(identities_path(pack), packfmt::criu_images::identities_to_json(other)).ok());
  auto refused = restore(env_, pack, {}, pack);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find(cat("pid ", gateways_[0].root, " was not dumped here")), std::string::npos)
      << refused.error().message;
  EXPECT_EQ(criu_.restored.size(), 1u) << "nothing restored";
  ASSERT_EQ(::unlink(identities_path(pack).c_str()), 0);
  auto unrecorded = restore(env_, pack, {}, pack);
  ASSERT_FALSE(unrecorded.ok());
  EXPECT_NE(unrecorded.error().message.find("the record of what"), std::string::npos) << unrecorded.error().message;
  EXPECT_EQ(criu_.restored.size(), 1u);
}

TEST_F(GatewayOps, ActivityDuringTheDumpPutsEverythingBack) {
  nf_.activity.new_connections = 1;
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->aborted);
  EXPECT_NE(r->abort_reason.find("1 new connection"), std::string::npos) << r->abort_reason;
  EXPECT_EQ(criu_.restored.size(), 1u) << "restored in place";
  EXPECT_EQ(nf_.restored_at_clear, 1u) << "the locks stay until the gateway is back";
  EXPECT_FALSE(nf_.holding);
  EXPECT_FALSE(std::filesystem::exists(work_ / "out.pack"));
}

TEST_F(GatewayOps, DataOnAnOpenConnectionDuringTheDumpGoesWithTheGateway) {
  nf_.activity.data_packets = 3;  // an SSH keep-alive, or a keystroke: the sink tells them apart
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->aborted) << r->abort_reason;
  EXPECT_TRUE(criu_.restored.empty());
  EXPECT_TRUE(std::filesystem::exists(work_ / "out.pack"));
}

TEST_F(GatewayOps, AFailedDumpRestoresTheOnesBefore) {
  add_second(::getpid() + 100000);
  criu_.fail_dump_of = ::getpid() + 100000;
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("dumping gateway `second`"), std::string::npos) << r.error().message;
  EXPECT_EQ(criu_.dumped.size(), 1u);
  EXPECT_EQ(criu_.restored.size(), 1u) << "the first gateway went back";
  EXPECT_FALSE(nf_.watching);
}

TEST_F(GatewayOps, AConnectionWaitingToBeAcceptedIsActivity) {
  add_second(::getpid() + 100000);
  criu_.fail_dump_of = ::getpid() + 100000;
  criu_.failure = "Error (criu/sk-inet.c:174): inet: In-flight connection (l) for 31e0";
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->aborted);
  EXPECT_NE(r->abort_reason.find("waiting to be accepted"), std::string::npos) << r->abort_reason;
  EXPECT_EQ(criu_.restored.size(), 1u) << "the first gateway went back";
}

// A fake systemd: records holds and releases (unit, main pid) in order.
struct FakeServices : ServiceManager {
  std::map<std::string, pid_t> mains;
  std::vector<std::string> calls;
  std::string fail_hold;
  Result<pid_t> main_pid(const std::string& unit) override { return mains.count(unit) ? mains[unit] : 0; }
  Result<pid_t> stand_in(const std::string& unit) override { return main_pid(unit); }
  Result<void> hold(const std::vector<std::string>& units) override {
    for (const auto& unit : units)
      if (unit == fail_hold) return make_error(ErrorKind::System, "daemon-reload failed (test)");
    for (const auto& unit : units) calls.push_back("hold " + unit);
    return ok();
  }
  std::vector<pid_t> released;  // the pids of the last release
  Result<void> release(const std::string& unit, pid_t main, const std::vector<pid_t>& pids) override {
    released = pids;
    calls.push_back(cat("release ", unit, " ", main));
    return ok();
  }
  void apply() override { calls.push_back("apply"); }
};

// A gateway that is a service's main process: its unit is held before the dump, recorded
// in the pack, and given the restored process back after the restore.
TEST_F(GatewayOps, AServiceIsHeldWhileAwayAndGetsItsProcessBack) {
  FakeServices services;
  const pid_t self = ::getpid();
  services.mains["ssh.service"] = self;
  env_.services = &services;
  gateways_[0].unit = "ssh.service";
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(services.calls, std::vector<std::string>{"hold ssh.service"});
  EXPECT_EQ(r->manifest.gateways[0].unit, "ssh.service");
  EXPECT_EQ(r->manifest.gateways[0].unit_main, self);
  auto back = restore(env_, pack);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(services.calls, (std::vector<std::string>{"hold ssh.service", cat("release ssh.service ", self), "apply"}));
  EXPECT_TRUE(back->warnings.empty());

  // Restored where systemd does not run (a sink, a guest without it): a warning.
  env_.services = nullptr;
  auto elsewhere = restore(env_, pack);
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.error().message;
  ASSERT_EQ(elsewhere->warnings.size(), 1u);
  EXPECT_NE(elsewhere->warnings[0].find("systemd does not run here"), std::string::npos);
}

// The pids a pack names are its word: only those of the restored tree join the unit.
TEST_F(GatewayOps, OnlyTheRestoredTreeJoinsTheUnit) {
  FakeServices services;
  const pid_t self = ::getpid();
  services.mains["ssh.service"] = self;
  env_.services = &services;
  gateways_[0].unit = "ssh.service";
  const pid_t other = 4000000;  // a process of the guest's that is no part of the restored tree
  gateways_[0].pids = {self, other};
  Process stranger = snap_.processes.at(self);
  stranger.stat.pid = other;
  snap_.processes.emplace(other, stranger);
  const std::string pack = work_ / "out.pack";
  auto r = dump(env_, snap_, gateways_, pack);
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto back = restore(env_, pack);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(services.released, std::vector<pid_t>{self});
}

// Not the unit's main process (a worker of a wrapper), or not a service: nothing is held.
TEST_F(GatewayOps, OnlyAServicesMainProcessHoldsItsUnit) {
  FakeServices services;
  services.mains["wrapped.service"] = 1;  // someone else
  env_.services = &services;
  gateways_[0].unit = "wrapped.service";
  auto r = dump(env_, snap_, gateways_, work_ / "a.pack");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(services.calls.empty());
  EXPECT_EQ(r->manifest.gateways[0].unit, "");
  gateways_[0].unit = "session-3.scope";
  auto s = dump(env_, snap_, gateways_, work_ / "b.pack");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(services.calls.empty());
}

// Undone on every path: a failed dump releases the units of the gateways it did not dump
// (CRIU left them running) and of those it put back; a failed hold touches nothing.
TEST_F(GatewayOps, AFailedDumpGivesEveryHeldUnitItsProcessBack) {
  FakeServices services;
  const pid_t self = ::getpid(), other = ::getpid() + 100000;
  add_second(other);
  services.mains = {{"a.service", self}, {"b.service", other}};
  env_.services = &services;
  gateways_[0].unit = "a.service";
  gateways_[1].unit = "b.service";
  criu_.fail_dump_of = other;
  auto r = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(services.calls,
            (std::vector<std::string>{"hold a.service", "hold b.service", cat("release b.service ", other), "apply",
                                      cat("release a.service ", self), "apply"}));

  services.calls.clear();
  criu_.fail_dump_of = 0;
  services.fail_hold = "b.service";
  auto h = dump(env_, snap_, gateways_, work_ / "out.pack");
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.error().message.find("keeping the gateways' units whole while they are away: daemon-reload failed"),
            std::string::npos)
      << h.error().message;
  EXPECT_TRUE(services.calls.empty());
  EXPECT_TRUE(criu_.dumped.size() == 1u) << "nothing more was dumped";
  EXPECT_FALSE(nf_.watching);
}

TEST_F(GatewayOps, RestoreRefusesAPackForOtherFiles) {
  Manifest m = sample_manifest();
  m.files = {FileIdentity{"/proc/self/exe", 1, "00", "", "exe"}};
  auto dir = work_ / "src";
  std::filesystem::create_directories(dir + "/gw/100");
  ASSERT_TRUE(sys::write_file(dir + "/gw/100/core-100.img", "x").ok());
  ASSERT_TRUE(write_pack(work_ / "bad.pack", m.to_json(), dir, {"gw/100/core-100.img"}).ok());
  auto r = restore(env_, work_ / "bad.pack");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("does not match the pack"), std::string::npos) << r.error().message;
  EXPECT_TRUE(criu_.restored.empty());
  EXPECT_EQ(nf_.cleared, 0) << "nothing touched";
}

TEST(NetfilterText, WatchCountersAndCriuLocks) {
  auto a = parse_watch_counters(
      "Chain SEAMLESS-WATCH (1 references)\n"
      "    pkts      bytes target     prot opt in     out     source               destination\n"
      "       2      120 RETURN     6    --  *      *       0.0.0.0/0            0.0.0.0/0  tcp flags:0x17/0x02 "
      "multiport dports 2222\n"
      "       0        0 RETURN     6    --  *      *       0.0.0.0/0            0.0.0.0/0  tcp flags:!0x17/0x02 tcp "
      "flags:0x08/0x08 multiport dports 2222\n"
      "       5      500 RETURN     17   --  *      *       0.0.0.0/0            0.0.0.0/0  multiport dports 0\n");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->new_connections, 2u);
  EXPECT_EQ(a->data_packets, 0u);
  EXPECT_EQ(a->datagrams, 5u);
  EXPECT_TRUE(a->any());
  EXPECT_FALSE(parse_watch_counters("Chain X\n").ok());

  auto dels = criu_lock_deletions(
      "*raw\n-A PREROUTING -j SEAMLESS-WATCH\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n"
      "-A INPUT -s 10.77.0.1/32 -d 10.77.0.12/32 -p tcp -m tcp --sport 50000 --dport 2222 -m mark ! --mark 0xc114 -j "
      "DROP\n"
      "-A INPUT -p tcp --dport 22 -j ACCEPT\n"
      "-A OUTPUT -s 10.77.0.12/32 -d 10.77.0.1/32 -p tcp -m tcp --sport 2222 --dport 50000 -m mark ! --mark 0xc114 -j "
      "DROP\n"
      "COMMIT\n");
  ASSERT_EQ(dels.size(), 2u);
  EXPECT_EQ(dels[0][0], "-D");
  EXPECT_EQ(dels[0][1], "INPUT");
  EXPECT_EQ(dels[1][1], "OUTPUT");
  EXPECT_EQ(dels[1].back(), "DROP");
}

}  // namespace
}  // namespace seamless::guest
