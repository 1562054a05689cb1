// SPDX-License-Identifier: Apache-2.0
// Integration: PacketHold on the real kernel's nfnetlink_queue, between two network
// namespaces joined by a veth pair. Datagrams sent to the held side wait (the socket
// there sees nothing) until released: accept() hands them to the socket in order;
// forward() sends them back out of the held side's veth as Ethernet frames with the
// given MACs, and every later packet too; closing the hold removes its rules.
#include "sinkd/hold.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "tests/support/require.h"

namespace seamless::sink {
namespace {

constexpr const char* kMacA = "02:5e:00:00:00:0a";
constexpr const char* kMacB = "02:5e:00:00:00:0b";
constexpr uint16_t kPort = 47400;

class HoldTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SL_REQUIRE(::geteuid() == 0, "needs root for network namespaces and iptables");
    a_ = cat("slh-a-", ::getpid());
    b_ = cat("slh-b-", ::getpid());
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {"ip", "netns", "add", a_},
             {"ip", "netns", "add", b_},
             {"ip", "-n", a_, "link", "add", "va", "address", kMacA, "type", "veth", "peer", "name", "vb", "netns", b_},
             {"ip", "-n", b_, "link", "set", "vb", "address", kMacB},
             {"ip", "-n", a_, "addr", "add", "10.201.0.1/24", "dev", "va"},
             {"ip", "-n", b_, "addr", "add", "10.201.0.2/24", "dev", "vb"},
             {"ip", "-n", a_, "link", "set", "va", "up"},
             {"ip", "-n", b_, "link", "set", "vb", "up"},
         }) {
      auto r = run_ok(argv);
      ASSERT_TRUE(r.ok()) << r.error().message;
    }
  }
  void TearDown() override {
    for (const auto& ns : {a_, b_})
      if (!ns.empty()) (void)run({"ip", "netns", "del", ns});
  }
  std::string path(const std::string& ns) const { return "/run/netns/" + ns; }

  // A UDP socket made in namespace `ns`, bound to `ip`:`port` (port 0: any).
  UniqueFd udp(const std::string& ns, const char* ip, uint16_t port) {
    UniqueFd s;
    auto r = in_netns(path(ns), [&]() -> Result<void> {
      s.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      ::inet_pton(AF_INET, ip, &sa.sin_addr);
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return errno_error("bind");
      return ok();
    });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return s;
  }
  void send_to_b(int fd, const std::string& text) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(kPort);
    ::inet_pton(AF_INET, "10.201.0.2", &to.sin_addr);
    ASSERT_EQ(::sendto(fd, text.data(), text.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to),
              ssize_t(text.size()))
        << std::strerror(errno);
  }
  static std::string recv_for(int fd, Millis timeout) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, int(timeout.count())) != 1) return "";
    char buf[2048];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, size_t(n)) : "";
  }
  static void wait_held(PacketHold& h, size_t n) {
    for (Deadline d(Millis(10000)); h.held() < n && !d.expired();) std::this_thread::sleep_for(Millis(20));
  }

  std::string a_, b_;
};

TEST_F(HoldTest, HeldDatagramsReachTheSocketOnlyWhenAccepted) {
  auto rx = udp(b_, "10.201.0.2", kPort);
  auto tx = udp(a_, "10.201.0.1", 0);
  auto hold = PacketHold::open(path(b_));
  ASSERT_TRUE(hold.ok()) << hold.error().message;
  for (const char* m : {"one", "two", "three"}) send_to_b(tx.get(), m);
  wait_held(**hold, 3);
  EXPECT_EQ((*hold)->held(), 3u);
  EXPECT_EQ(recv_for(rx.get(), Millis(300)), "") << "a held datagram got through";

  auto n = (*hold)->accept();
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "one");
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "two");
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "three");
  // Accepting goes on for later packets.
  send_to_b(tx.get(), "four");
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "four");
  EXPECT_EQ((*hold)->held(), 0u);
}

TEST_F(HoldTest, ForwardSendsHeldAndLaterPacketsOutAsFrames) {
  auto rx = udp(b_, "10.201.0.2", kPort);
  auto tx = udp(a_, "10.201.0.1", 0);
  // A raw socket on va sees what comes back out of vb.
  UniqueFd cap;
  ASSERT_TRUE(in_netns(path(a_), [&]() -> Result<void> {
                cap.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IP)));
                sockaddr_ll sll{};
                sll.sll_family = AF_PACKET;
                sll.sll_protocol = htons(ETH_P_IP);
                sll.sll_ifindex = int(::if_nametoindex("va"));
                if (::bind(cap.get(), reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0) return errno_error("bind");
                return ok();
              }).ok());
  auto hold = PacketHold::open(path(b_));
  ASSERT_TRUE(hold.ok()) << hold.error().message;
  send_to_b(tx.get(), "held-1");
  send_to_b(tx.get(), "held-2");
  wait_held(**hold, 2);
  ASSERT_EQ((*hold)->held(), 2u);

  ForwardTarget to;
  to.netns = path(b_);
  to.nic = "vb";
  to.src_mac = "02:5e:00:00:00:99";
  to.dst_mac = kMacA;
  auto n = (*hold)->forward(to);
  ASSERT_TRUE(n.ok()) << n.error().message;
  EXPECT_EQ(*n, 2u);
  send_to_b(tx.get(), "later-3");
  std::vector<std::string> seen;
  for (Deadline d(Millis(5000)); seen.size() < 3 && !d.expired();) {
    std::string f = recv_for(cap.get(), Millis(500));
    // Frames from vb: dst va's MAC, src the given one, then the IP packet as sent.
    if (f.size() < 14 + 28 || std::memcmp(f.data() + 6, "\x02\x5e\x00\x00\x00\x99", 6) != 0) continue;
    EXPECT_EQ(std::memcmp(f.data(), "\x02\x5e\x00\x00\x00\x0a", 6), 0);
    seen.push_back(f.substr(14 + 28));
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"held-1", "held-2", "later-3"}));
  EXPECT_EQ(recv_for(rx.get(), Millis(300)), "") << "a forwarded packet reached the held side's socket";
}

TEST_F(HoldTest, ClosingTheHoldRemovesItsRules) {
  auto rx = udp(b_, "10.201.0.2", kPort);
  auto tx = udp(a_, "10.201.0.1", 0);
  {
    auto hold = PacketHold::open(path(b_));
    ASSERT_TRUE(hold.ok()) << hold.error().message;
    auto rules = run_ok({"ip", "netns", "exec", b_, "iptables", "-t", "raw", "-S", "PREROUTING"});
    ASSERT_TRUE(rules.ok());
    EXPECT_NE(rules->find("NFQUEUE"), std::string::npos) << *rules;
  }
  auto rules = run_ok({"ip", "netns", "exec", b_, "iptables", "-t", "raw", "-S", "PREROUTING"});
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->find("NFQUEUE"), std::string::npos) << *rules;
  auto rules6 = run_ok({"ip", "netns", "exec", b_, "ip6tables", "-t", "raw", "-S", "PREROUTING"});
  ASSERT_TRUE(rules6.ok());
  EXPECT_EQ(rules6->find("NFQUEUE"), std::string::npos) << *rules6;
  send_to_b(tx.get(), "free");
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "free");
}

// A daemon killed while it holds (its rules left behind, nobody bound to the queue): the
// traffic passes instead of being dropped for ever, and the next hold replaces the rules.
TEST_F(HoldTest, ADaemonKilledHoldingDropsNothingForEver) {
  auto rx = udp(b_, "10.201.0.2", kPort);
  auto tx = udp(a_, "10.201.0.1", 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto hold = PacketHold::open(path(b_));
    ::raise(SIGKILL);  // no destructor, no clean-up: as a crash
    ::_exit(hold.ok() ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the holder did not get to hold";
  auto rules = run_ok({"ip", "netns", "exec", b_, "iptables", "-t", "raw", "-S", "PREROUTING"});
  ASSERT_TRUE(rules.ok());
  EXPECT_NE(rules->find("NFQUEUE"), std::string::npos) << "its rules stay behind: " << *rules;
  send_to_b(tx.get(), "after the crash");
  EXPECT_EQ(recv_for(rx.get(), Millis(5000)), "after the crash");
  {
    auto again = PacketHold::open(path(b_));
    ASSERT_TRUE(again.ok()) << again.error().message;
    auto now = run_ok({"ip", "netns", "exec", b_, "iptables", "-t", "raw", "-S", "PREROUTING"});
    ASSERT_TRUE(now.ok());
    size_t rules_now = 0;
    for (size_t at = now->find("NFQUEUE"); at != std::string::npos; at = now->find("NFQUEUE", at + 1)) ++rules_now;
    EXPECT_EQ(rules_now, 2u) << "one rule for TCP and one for UDP, the old ones gone: " << *now;
    send_to_b(tx.get(), "held again");
    wait_held(**again, 1);
    EXPECT_EQ((*again)->held(), 1u);
  }
}

TEST_F(HoldTest, AMissingNamespaceIsNamed) {
  auto hold = PacketHold::open("/run/netns/no-such-namespace-here");
  ASSERT_FALSE(hold.ok());
  EXPECT_NE(hold.error().message.find("no-such-namespace-here"), std::string::npos) << hold.error().message;
}

}  // namespace
}  // namespace seamless::sink
