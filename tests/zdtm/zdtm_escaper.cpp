// SPDX-License-Identifier: Apache-2.0
// ZDTM-style hostile gateway for the tracer's confinement: idles in poll and clock calls,
// and when a byte arrives on FIFO tries a way out of a sink container by MODE:
//   int80    a system call through the 32-bit ABI (getpid, number 20)
//   unshare  new namespaces
//   uring    an io_uring (I/O the tracer would not see as system calls)
//   zdtm_escaper FIFO MODE   (writes FIFO.ready when idling)
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

long escape(const std::string& mode) {
  if (mode == "int80") {
    long r = 20;  // getpid in the i386 table
    asm volatile("int $0x80" : "+a"(r) : : "memory");
    return r;
  }
  if (mode == "unshare") return syscall(SYS_unshare, CLONE_NEWNS | CLONE_NEWNET);
  if (mode == "uring") {
    char params[120] = {};  // struct io_uring_params
    return syscall(SYS_io_uring_setup, 1, params);
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: zdtm_escaper FIFO int80|unshare|uring\n");
    return 2;
  }
  int f = open(argv[1], O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (f < 0) return perror("open fifo"), 1;
  const std::string ready = std::string(argv[1]) + ".ready";
  close(open(ready.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
  for (;;) {
    pollfd p{f, POLLIN, 0};
    poll(&p, 1, 50);
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (p.revents & POLLIN) {
      char b;
      (void)!read(f, &b, 1);
      std::printf("%ld\n", escape(argv[2]));
      std::fflush(stdout);
    }
  }
}
