// SPDX-License-Identifier: Apache-2.0
// ZDTM-style hostile gateway for a sink container: a TCP listener on PORT (so a dump takes
// it like any gateway) that idles in poll and, woken by a signal rather than by a client
// (a client would wake the VM first), tries to get out of its container:
//   SIGUSR1  reads sink files by several ways (SECRET as it is, through /proc/1/root,
//            through ".."), opens and makes disk devices, loads a module, ptraces and
//            reads the memory of the container's pid 1, mounts, changes its root, makes
//            namespaces, opens a file by handle; then writes one line per attempt,
//            "NAME RESULT" (a result >= 0 or -errno; "read" lines add what was read),
//            to REPORT (default /tmp/attack.report)
//   SIGUSR2  takes MIB mebibytes of memory (default 256), touching every page, and
//            writes "memory survived" to REPORT if it is still alive afterwards.
// The first system call after SIGUSR1 is the open of SECRET.
//   zdtm_attacker PORT SECRET [REPORT] [MIB]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

volatile sig_atomic_t g_attack = 0, g_memory = 0;

void on_usr1(int) { g_attack = 1; }
void on_usr2(int) { g_memory = 1; }

std::string result(long r) { return std::to_string(r < 0 ? -errno : r); }

// Reads at most 200 bytes of `path`: "-errno" or "N <what was read>".
std::string read_path(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::to_string(-errno);
  char buf[200];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n < 0) return std::to_string(-errno);
  std::string text(buf, size_t(n));
  for (char& c : text)
    if (c == '\n') c = ' ';
  return std::to_string(n) + " " + text;
}

std::string attack(const std::string& secret) {
  std::string out;
  auto line = [&out](const std::string& name, const std::string& r) { out += name + " " + r + "\n"; };
  line("read " + secret, read_path(secret));  // first: the tracer stops this one
  line("read /proc/1/root" + secret, read_path("/proc/1/root" + secret));
  line("read /../.." + secret, read_path("/../.." + secret));
  line("read /etc/shadow", read_path("/etc/shadow"));
  for (const char* dev : {"/dev/vda", "/dev/sda", "/dev/mem", "/dev/kmsg", "/dev/virtio-ports/org.seamless.sinkd.0"}) {
    int fd = open(dev, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    line(std::string("open ") + dev, result(fd));
    if (fd >= 0) close(fd);
  }
  line("mknod /tmp/vda", result(mknod("/tmp/vda", S_IFBLK | 0600, makedev(254, 0))));
  static const char kModule[] = "\177ELF";
  line("init_module", result(syscall(SYS_init_module, kModule, sizeof kModule, "")));
  line("finit_module", result(syscall(SYS_finit_module, 0, "", 0)));
  line("ptrace init", result(ptrace(PTRACE_ATTACH, 1, nullptr, nullptr)));
  char word[8];
  iovec local{word, sizeof word}, remote{reinterpret_cast<void*>(0x400000), sizeof word};
  line("process_vm_readv init", result(process_vm_readv(1, &local, 1, &remote, 1, 0)));
  line("mount", result(mount("none", "/tmp", "tmpfs", 0, nullptr)));
  line("chroot", result(chroot("/tmp")));
  line("unshare", result(unshare(CLONE_NEWUSER | CLONE_NEWNS)));
  char handle[sizeof(unsigned) * 2 + 8] = {};
  line("open_by_handle_at", result(syscall(SYS_open_by_handle_at, AT_FDCWD, handle, O_RDONLY)));
  return out;
}

void report(const std::string& path, const std::string& text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  (void)!write(fd, text.data(), text.size());
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::fprintf(stderr, "usage: zdtm_attacker PORT SECRET [REPORT] [MIB]\n");
    return 2;
  }
  const std::string secret = argv[2];
  const std::string report_path = argc > 3 ? argv[3] : "/tmp/attack.report";
  const size_t mib = argc > 4 ? std::strtoul(argv[4], nullptr, 10) : 256;
  struct sigaction sa {};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, nullptr);
  sa.sa_handler = on_usr2;
  sigaction(SIGUSR2, &sa, nullptr);
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(std::atoi(argv[1])));
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(s, 8) != 0) return perror("listen"), 1;
  for (;;) {
    pollfd p{s, POLLIN, 0};
    int n = poll(&p, 1, 1000);
    if (g_attack) {
      g_attack = 0;
      report(report_path, attack(secret));
    }
    if (g_memory) {
      g_memory = 0;
      for (size_t i = 0; i < mib; ++i) {
        void* m = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) break;
        std::memset(m, 0x5a, 1 << 20);
      }
      report(report_path, "memory survived\n");
    }
    if (n == 1 && (p.revents & POLLIN)) {
      int c = accept4(s, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) close(c);
    }
  }
}
