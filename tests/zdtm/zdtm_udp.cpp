// SPDX-License-Identifier: Apache-2.0
// ZDTM-style UDP gateway for the tracer's tests: a server socket on 127.0.0.1:PORT that
// echoes every datagram to its sender (recvfrom/sendto), and a socket on PORT+1 connected
// to 127.0.0.1:PEER (an existing "session") that echoes what its peer sends (recvmsg/send).
// With --mmsg the server socket works in batches (recvmmsg/sendmmsg) and, while idle,
// sends "tick" to PEER every 200 ms (a client's heartbeat: PEER becomes a known peer).
//   zdtm_udp PORT PEER READY_FILE [--mmsg]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

sockaddr_in local(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Echoes up to four datagrams at once back to their senders.
void echo_batch(int server) {
  constexpr int kBatch = 4;
  char bufs[kBatch][512];
  sockaddr_in from[kBatch] = {};
  iovec iov[kBatch];
  mmsghdr msgs[kBatch] = {};
  for (int i = 0; i < kBatch; ++i) {
    iov[i] = {bufs[i], sizeof bufs[i]};
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  int n = ::recvmmsg(server, msgs, kBatch, MSG_WAITFORONE, nullptr);
  if (n <= 0) return;
  for (int i = 0; i < n; ++i) iov[i].iov_len = msgs[i].msg_len;
  ::sendmmsg(server, msgs, unsigned(n), 0);
}

void tick(int server, const sockaddr_in& peer) {
  char text[] = "tick";
  iovec iov{text, 4};
  mmsghdr m{};
  m.msg_hdr.msg_name = const_cast<sockaddr_in*>(&peer);
  m.msg_hdr.msg_namelen = sizeof peer;
  m.msg_hdr.msg_iov = &iov;
  m.msg_hdr.msg_iovlen = 1;
  ::sendmmsg(server, &m, 1, 0);
}

}  // namespace

int main(int argc, char** argv) {
  const bool mmsg = argc == 5 && std::strcmp(argv[4], "--mmsg") == 0;
  if (argc != 4 && !mmsg) {
    std::fprintf(stderr, "usage: zdtm_udp PORT PEER READY_FILE [--mmsg]\n");
    return 2;
  }
  int server = ::socket(AF_INET, SOCK_DGRAM, 0), session = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in at = local(std::atoi(argv[1])), at2 = local(std::atoi(argv[1]) + 1), peer = local(std::atoi(argv[2]));
  if (::bind(server, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 ||
      ::bind(session, reinterpret_cast<sockaddr*>(&at2), sizeof at2) != 0 ||
      ::connect(session, reinterpret_cast<sockaddr*>(&peer), sizeof peer) != 0) {
    std::perror("zdtm_udp: bind/connect");
    return 1;
  }
  if (FILE* f = std::fopen(argv[3], "w")) std::fclose(f);
  char buf[2048];
  for (;;) {
    pollfd fds[2] = {{server, POLLIN, 0}, {session, POLLIN, 0}};
    if (::poll(fds, 2, 200) <= 0) {
      if (mmsg) tick(server, peer);
      continue;
    }
    if ((fds[0].revents & POLLIN) && mmsg) {
      echo_batch(server);
    } else if (fds[0].revents & POLLIN) {
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = ::recvfrom(server, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n > 0) ::sendto(server, buf, size_t(n), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
    if (fds[1].revents & POLLIN) {
      sockaddr_in from{};
      iovec iov{buf, sizeof buf};
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof from;
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      ssize_t n = ::recvmsg(session, &msg, 0);
      if (n > 0) ::send(session, buf, size_t(n), 0);
    }
  }
}
