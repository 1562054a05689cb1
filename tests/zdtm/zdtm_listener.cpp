// SPDX-License-Identifier: Apache-2.0
// ZDTM-style state holder for activity detection: a TCP listener that idles in poll and
// clock calls (housekeeping that must not wake anything), greets each accepted client
// with "hello\n", and creates CREATE_PATH when a byte arrives on FIFO.
//   zdtm_listener PORT FIFO CREATE_PATH   (writes CREATE_PATH.ready when listening)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: zdtm_listener PORT FIFO CREATE_PATH\n");
    return 2;
  }
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::atoi(argv[1])));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(l, 8) != 0) return perror("listen"), 1;
  int f = open(argv[2], O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return perror("open fifo"), 1;
  const std::string ready = std::string(argv[3]) + ".ready";
  close(open(ready.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  for (;;) {
    pollfd p[2] = {{l, POLLIN, 0}, {f, POLLIN, 0}};
    poll(p, 2, 50);
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (p[0].revents & POLLIN) {
      int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        (void)!write(c, "hello\n", 6);
        close(c);
      }
    }
    if (p[1].revents & POLLIN) {
      char b;
      (void)!read(f, &b, 1);
      int o = openat(AT_FDCWD, argv[3], O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
      if (o >= 0) close(o);
    }
  }
}
