// SPDX-License-Identifier: Apache-2.0
// Unix socket diagnostics: the sock_diag reply parser on crafted and damaged replies, and
// the real kernel interface on this host (a socketpair, a named listener and a child
// process holding one end of a connection, as a journald stream is held).
#include "guest-agent/unix_diag.h"

#include <gtest/gtest.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "common/fd.h"
#include "common/tempdir.h"

namespace seamless::guest {
namespace {

// One SOCK_DIAG_BY_FAMILY message: a unix_diag_msg and its attributes.
std::string message(uint32_t inode, uint8_t type, const std::vector<std::pair<uint16_t, std::string>>& attrs) {
  std::string body(NLMSG_ALIGN(sizeof(unix_diag_msg)), '\0');
  unix_diag_msg m{};
  m.udiag_family = AF_UNIX;
  m.udiag_type = type;
  m.udiag_state = 1;
  m.udiag_ino = inode;
  std::memcpy(body.data(), &m, sizeof m);
  for (const auto& [kind, payload] : attrs) {
    rtattr a{};
    a.rta_len = uint16_t(RTA_LENGTH(payload.size()));
    a.rta_type = kind;
    std::string attr(RTA_SPACE(payload.size()), '\0');
    std::memcpy(attr.data(), &a, sizeof a);
    std::memcpy(attr.data() + RTA_LENGTH(0), payload.data(), payload.size());
    body += attr;
  }
  nlmsghdr h{};
  h.nlmsg_len = uint32_t(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  std::string out(NLMSG_HDRLEN, '\0');
  std::memcpy(out.data(), &h, sizeof h);
  return out + body;
}

std::string done() {
  nlmsghdr h{};
  h.nlmsg_len = NLMSG_HDRLEN + sizeof(int);
  h.nlmsg_type = NLMSG_DONE;
  std::string out(h.nlmsg_len, '\0');
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

std::string u32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

TEST(UnixDiag, ParsesNamesPeersAndAbstractNames) {
  const std::string replies =
      message(10, SOCK_STREAM, {{UNIX_DIAG_PEER, u32(11)}}) +
      message(11, SOCK_STREAM,
              {{UNIX_DIAG_NAME, std::string("/run/systemd/journal/stdout") + '\0'}, {UNIX_DIAG_PEER, u32(10)}}) +
      message(12, SOCK_DGRAM, {{UNIX_DIAG_NAME, std::string("\0hidden", 7)}}) + done();
  auto socks = parse_unix_diag(replies);
  ASSERT_TRUE(socks.ok()) << socks.error().message;
  ASSERT_EQ(socks->size(), 3u);
  EXPECT_EQ((*socks)[0].inode, 10u);
  EXPECT_EQ((*socks)[0].peer, 11u);
  EXPECT_EQ((*socks)[0].name, "");
  EXPECT_EQ((*socks)[1].name, "/run/systemd/journal/stdout");
  EXPECT_EQ((*socks)[1].peer, 10u);
  EXPECT_EQ((*socks)[2].name, "@hidden");
  EXPECT_EQ((*socks)[2].type, SOCK_DGRAM);
}

TEST(UnixDiag, DamagedRepliesAreRefusedByName) {
  const std::string good = message(10, SOCK_STREAM, {{UNIX_DIAG_PEER, u32(11)}});
  auto truncated = parse_unix_diag(good.substr(0, good.size() - 3) + done());
  ASSERT_FALSE(truncated.ok());
  EXPECT_NE(truncated.error().message.find("sock_diag"), std::string::npos) << truncated.error().message;
  auto unfinished = parse_unix_diag(good);
  ASSERT_FALSE(unfinished.ok());
  EXPECT_NE(unfinished.error().message.find("without NLMSG_DONE"), std::string::npos);
  // An attribute claiming more bytes than its message has.
  std::string overrun = message(10, SOCK_STREAM, {{UNIX_DIAG_PEER, u32(11)}});
  rtattr a{};
  std::memcpy(&a, overrun.data() + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(unix_diag_msg)), sizeof a);
  a.rta_len = 200;
  std::memcpy(overrun.data() + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(unix_diag_msg)), &a, sizeof a);
  auto bad = parse_unix_diag(overrun + done());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("overruns socket 10"), std::string::npos) << bad.error().message;
  // A short peer attribute, and a netlink error.
  auto short_peer = parse_unix_diag(message(10, SOCK_STREAM, {{UNIX_DIAG_PEER, "ab"}}) + done());
  ASSERT_FALSE(short_peer.ok());
  nlmsghdr h{};
  h.nlmsg_len = NLMSG_HDRLEN + sizeof(int);
  h.nlmsg_type = NLMSG_ERROR;
  std::string err(h.nlmsg_len, '\0');
  std::memcpy(err.data(), &h, sizeof h);
  const int eperm = -EPERM;
  std::memcpy(err.data() + NLMSG_HDRLEN, &eperm, sizeof eperm);
  auto denied = parse_unix_diag(err);
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.error().message.find(std::strerror(EPERM)), std::string::npos) << denied.error().message;
}

uint64_t inode_of(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

// The real kernel: a child (the "gateway") holds one end of a connection to a named
// listener this process accepted (the "journal"), and both ends of a socketpair.
TEST(UnixDiag, TheKernelReportsAConnectionToTheOutside) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  const std::string path = *dir / "journal.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(listener.get(), 1), 0);
  UniqueFd client(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
  UniqueFd journal_end(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(journal_end.valid());
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);

  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(client.get(), 2);  // stderr to the "journal", as systemd connects a unit's
    // The child keeps only that: the rest is this process's.
    for (int fd : {client.get(), journal_end.get(), listener.get(), a.get(), b.get(), ready[0]}) ::close(fd);
    (void)!::write(ready[1], "x", 1);
    ::close(ready[1]);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char x;
  ASSERT_EQ(::read(ready[0], &x, 1), 1);
  ::close(ready[0]);
  client.reset();
  auto snap = snapshot();
  auto socks = list_unix_sockets();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  ASSERT_TRUE(socks.ok()) << socks.error().message;

  const uint64_t ja = inode_of(journal_end.get());
  bool pair_seen = false, journal_seen = false;
  for (const auto& s : *socks) {
    if (s.inode == inode_of(a.get())) pair_seen = s.peer == inode_of(b.get()) && s.type == SOCK_STREAM;
    if (s.inode == ja) journal_seen = s.name == path && s.peer != 0;
  }
  EXPECT_TRUE(pair_seen) << "the socketpair's ends name each other";
  EXPECT_TRUE(journal_seen) << "the accepted end carries the listener's name";

  // The child's stderr goes outside its tree (to this process); this process's own
  // socketpair and its accepted end stay inside its tree.
  auto outside = external_streams(*snap, {child}, *socks);
  ASSERT_EQ(outside.size(), 1u);
  EXPECT_EQ(outside[0].pid, child);
  EXPECT_EQ(outside[0].fd, 2);
  EXPECT_EQ(outside[0].peer_name, path);
  EXPECT_FALSE(outside[0].journal());
  EXPECT_NE(outside[0].describe(*snap).find(cat("fd 2 (stderr) of ")), std::string::npos) << outside[0].describe(*snap);
  auto mine = external_streams(*snap, {::getpid(), child}, *socks);
  EXPECT_TRUE(mine.empty()) << mine[0].describe(*snap);
}

}  // namespace
}  // namespace seamless::guest
