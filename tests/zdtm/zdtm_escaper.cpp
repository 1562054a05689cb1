// SPDX-License-Identifier: Apache-2.0
// ZDTM-style hostile gateway for the tracer's confinement: idles in poll and clock calls,
// and when a byte arrives on FIFO tries a way out of a sink container by MODE:
//   int80    a system call through the 32-bit ABI (getpid, number 20)
//   unshare  new namespaces
//   uring    an io_uring (I/O the tracer would not see as system calls)
// and prints what the call returned (-errno on failure). With --filter FILE it first
// puts itself under that seccomp filter (struct sock_filter[], no_new_privs set), as a
// restored gateway is in a sink.
//   zdtm_escaper FIFO MODE [--filter FILE]   (writes FIFO.ready when idling)
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
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
  long r = -1;
  if (mode == "unshare") r = syscall(SYS_unshare, CLONE_NEWNS | CLONE_NEWNET);
  if (mode == "uring") {
    char params[120] = {};  // struct io_uring_params
    r = syscall(SYS_io_uring_setup, 1, params);
  }
  return r < 0 ? -errno : r;
}

bool confine(const char* path) {
  static char buf[4096 * 8];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
  if (n <= 0 || n % sizeof(sock_filter)) return false;
  close(fd);
  sock_fprog prog{static_cast<unsigned short>(n / sizeof(sock_filter)), reinterpret_cast<sock_filter*>(buf)};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--filter")) {
    std::fprintf(stderr, "usage: zdtm_escaper FIFO int80|unshare|uring [--filter FILE]\n");
    return 2;
  }
  if (argc == 5 && !confine(argv[4])) return perror("seccomp filter"), 1;
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
