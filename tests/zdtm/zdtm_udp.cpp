// SPDX-License-Identifier: Apache-2.0
// ZDTM-style UDP gateway for the tracer's tests: a server socket on 127.0.0.1:PORT that
// echoes every datagram to its sender (recvfrom/sendto), and a socket on PORT+1 connected
// to 127.0.0.1:PEER (an existing "session") that echoes what its peer sends (recvmsg/send).
//   zdtm_udp PORT PEER READY_FILE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace {

sockaddr_in local(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: zdtm_udp PORT PEER READY_FILE\n");
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
    if (::poll(fds, 2, 200) <= 0) continue;
    if (fds[0].revents & POLLIN) {
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
