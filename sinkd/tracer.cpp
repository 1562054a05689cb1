// SPDX-License-Identifier: Apache-2.0
// The ptrace loop behind activity detection (x86-64).
#include "sinkd/tracer.h"

#include <arpa/inet.h>
#include <asm/unistd.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <vector>

#include "common/fd.h"
#include "common/log.h"
#include "common/sys.h"
#include "guest-agent/procfs.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "tracer";

bool reads_path(long nr) {
  return nr == SYS_open || nr == SYS_creat || nr == SYS_stat || nr == SYS_lstat || nr == SYS_access ||
         nr == SYS_readlink || nr == SYS_execve || nr == SYS_truncate || nr == SYS_chdir || nr == SYS_mkdir ||
         nr == SYS_unlink || nr == SYS_rename;
}
bool reads_path_at(long nr) {
  return nr == SYS_openat || nr == SYS_openat2 || nr == SYS_newfstatat || nr == SYS_statx || nr == SYS_faccessat ||
         nr == SYS_faccessat2 || nr == SYS_readlinkat || nr == SYS_execveat || nr == SYS_mkdirat ||
         nr == SYS_unlinkat || nr == SYS_renameat || nr == SYS_renameat2;
}

// The tracing thread blocks in waitpid(); a thread-directed signal with a handler that
// does nothing (and no SA_RESTART) makes it return EINTR, for deadlines and interrupt().
int wake_signal() { return SIGRTMIN + 1; }
void on_wake_signal(int) {}
void install_wake_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_wake_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(wake_signal(), &sa, nullptr);
  });
}

// Signals this thread at the deadline and every 50 ms after it: a signal that lands just
// before waitpid() blocks would be lost otherwise.
class DeadlineTimer {
 public:
  explicit DeadlineTimer(Deadline deadline) {
    if (deadline.poll_timeout() < 0) return;
    sigevent ev{};
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = wake_signal();
    ev._sigev_un._tid = ::gettid();  // sigev_notify_thread_id (glibc < 2.37 lacks the name)
    if (::timer_create(CLOCK_MONOTONIC, &ev, &id_) != 0) return;
    armed_ = true;
    const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.left()).count() + 1;
    itimerspec spec{};
    spec.it_value = {time_t(left / 1000000000), long(left % 1000000000)};
    spec.it_interval = {0, 50 * 1000 * 1000};
    ::timer_settime(id_, 0, &spec, nullptr);
  }
  ~DeadlineTimer() {
    if (armed_) ::timer_delete(id_);
  }
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

 private:
  timer_t id_{};
  bool armed_ = false;
};

pid_t wait_for(pid_t tid, int* status) {
  for (;;) {
    pid_t got = ::waitpid(tid, status, __WALL);
    if (got >= 0 || errno != EINTR) return got;
  }
}

// The peer of the socket a tracee holds as descriptor fd ("" when unknown).
std::string socket_peer(pid_t pid, long fd) {
  const auto socket = guest::fd_socket_inode(pid, int(fd));
  if (!socket) return "";
  const uint64_t inode = *socket;
  using guest::Family;
  using guest::Proto;
  for (auto [name, family] : {std::pair{"tcp", Family::V4}, std::pair{"tcp6", Family::V6}}) {
    auto text = sys::read_file(cat("/proc/", pid, "/net/", name));
    if (!text.ok()) continue;
    auto table = guest::parse_net_table(*text, Proto::Tcp, family);
    if (!table.ok()) continue;
    for (const auto& s : *table)
      if (s.inode == inode)
        return family == Family::V6 ? cat("[", s.remote_addr, "]:", s.remote_port)
                                    : cat(s.remote_addr, ":", s.remote_port);
  }
  return "";
}

// Copies `len` bytes at `addr` out of a tracee; false when it cannot.
bool peek(pid_t tid, uint64_t addr, void* out, size_t len) {
  if (addr == 0 || len == 0) return false;
  iovec local{out, len}, remote{reinterpret_cast<void*>(addr), len};
  return ::process_vm_readv(tid, &local, 1, &remote, 1, 0) == ssize_t(len);
}

// "10.77.0.1:5353" / "[fe80::1]:5353" of a sockaddr in a tracee ("" when unreadable or
// not IP).
std::string peek_sockaddr(pid_t tid, uint64_t addr, uint64_t len) {
  sockaddr_storage ss{};
  if (len < sizeof(sa_family_t) || !peek(tid, addr, &ss, std::min<size_t>(len, sizeof ss))) return "";
  char text[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
    return cat(text, ":", ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
    return cat("[", text, "]:", ntohs(a->sin6_port));
  }
  return "";
}

// The addresses a recvfrom/recvmsg/recvmmsg filled in (`after`, `count` messages for
// recvmmsg), or a sendto/sendmsg/sendmmsg names; empty strings where none is known.
std::vector<std::string> call_addresses(pid_t tid, long nr, const uint64_t args[6], bool after, long count) {
  if (nr == SYS_recvfrom || nr == SYS_sendto) {
    uint64_t len = args[5];
    if (nr == SYS_recvfrom) {
      socklen_t got = 0;
      if (!after || !peek(tid, args[5], &got, sizeof got)) return {};
      len = got;
    }
    return {peek_sockaddr(tid, args[4], len)};
  }
  if (nr == SYS_recvmsg || nr == SYS_sendmsg) {
    msghdr msg{};
    if (!peek(tid, args[1], &msg, sizeof msg)) return {};
    return {peek_sockaddr(tid, reinterpret_cast<uint64_t>(msg.msg_name), msg.msg_namelen)};
  }
  // recvmmsg/sendmmsg: a vector of messages (the kernel takes at most UIO_MAXIOV).
  const size_t n = size_t(std::clamp<long>(nr == SYS_sendmmsg ? long(args[2]) : count, 0, 1024));
  std::vector<mmsghdr> vec(n);
  if (n == 0 || !peek(tid, args[1], vec.data(), n * sizeof(mmsghdr))) return {};
  std::vector<std::string> out;
  for (const auto& m : vec)
    out.push_back(peek_sockaddr(tid, reinterpret_cast<uint64_t>(m.msg_hdr.msg_name), m.msg_hdr.msg_namelen));
  return out;
}

// For a UDP socket a tracee holds as fd: its connected peer ("" when unconnected).
// nullopt when fd is no UDP socket.
std::optional<std::string> udp_peer_of(pid_t pid, long fd) {
  const auto socket = guest::fd_socket_inode(pid, int(fd));
  if (!socket) return std::nullopt;
  const uint64_t inode = *socket;
  using guest::Family;
  for (auto [name, family] : {std::pair{"udp", Family::V4}, std::pair{"udp6", Family::V6}}) {
    auto text = sys::read_file(cat("/proc/", pid, "/net/", name));
    if (!text.ok()) continue;
    auto table = guest::parse_net_table(*text, guest::Proto::Udp, family);
    if (!table.ok()) continue;
    for (const auto& s : *table) {
      if (s.inode != inode) continue;
      if (s.remote_port == 0) return std::string();
      return family == Family::V6 ? cat("[", s.remote_addr, "]:", s.remote_port)
                                  : cat(s.remote_addr, ":", s.remote_port);
    }
  }
  return std::nullopt;
}

}  // namespace

void Tracer::note_destination(pid_t tid, long nr, const uint64_t args[6]) {
  if (nr != SYS_sendto && nr != SYS_sendmsg && nr != SYS_sendmmsg) return;
  for (auto& to : call_addresses(tid, nr, args, false, 0))
    if (!to.empty()) udp_peers_.insert(std::move(to));
}

std::string Tracer::new_peer(pid_t pid, pid_t tid, long nr, const uint64_t args[6], long rval) const {
  if (nr != SYS_recvfrom && nr != SYS_recvmsg && nr != SYS_recvmmsg) return "";
  auto connected = udp_peer_of(pid, long(args[0]));
  if (!connected) return "";  // not UDP: a stream socket's reads are served
  auto froms = call_addresses(tid, nr, args, true, rval);
  if (froms.empty()) froms.push_back("");
  for (std::string& from : froms) {
    if (from.empty()) from = *connected;  // no address asked for: a connected socket's peer
    if (from.empty() || from == *connected || udp_peers_.count(from)) continue;
    return cat(syscall_name(nr), ": datagram from new peer ", from);
  }
  return "";
}

Tracer::Tracer(std::vector<TracedProcess> processes) {
  for (auto& p : processes) {
    if (!first_) first_ = p.pid;
    processes_.emplace(p.pid, std::move(p));
  }
}

Result<std::unique_ptr<Tracer>> Tracer::attach(std::vector<TracedProcess> processes) {
  if (processes.empty()) return make_error(ErrorKind::Invalid, "no processes to trace");
  install_wake_handler();
  std::unique_ptr<Tracer> t(new Tracer(std::move(processes)));
  t->tracer_ = ::gettid();
  SL_TRY(t->seize_all());
  return t;
}

Result<std::unique_ptr<Tracer>> Tracer::attach(pid_t pid, Policy policy) {
  return attach(std::vector<TracedProcess>{TracedProcess{pid, std::move(policy)}});
}

Result<void> Tracer::seize_all() {
  // A process that ended since it was listed is no longer part of the gateway.
  for (auto it = processes_.begin(); it != processes_.end();)
    it = std::filesystem::exists(cat("/proc/", it->first, "/task")) ? std::next(it) : processes_.erase(it);
  if (processes_.empty()) return make_error(ErrorKind::NotFound, "every process of the gateway is gone");
  if (!processes_.count(first_)) first_ = processes_.begin()->first;
  for (const auto& [pid, p] : processes_) {
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(cat("/proc/", pid, "/task"), ec)) {
      pid_t tid = std::atoi(task.path().filename().c_str());
      if (threads_.count(tid)) continue;
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, PTRACE_O_TRACESYSGOOD) != 0)
        return errno_error(cat("ptrace(PTRACE_SEIZE) of thread ", tid, " of pid ", pid));
      threads_[tid] = Thread{pid, -1};
      // Interrupt it so that syscall tracing starts from a known stop.
      if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) return errno_error(cat("PTRACE_INTERRUPT ", tid));
    }
    if (ec) return make_error(ErrorKind::NotFound, "pid ", pid, " is gone: ", ec.message());
  }
  return ok();
}

Tracer::~Tracer() {
  if (detached_) return;
  // Detach requires a stopped tracee: interrupt, wait for each stop, detach.
  for (auto& [tid, th] : threads_) {
    ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    int status = 0;
    wait_for(tid, &status);
    ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
  }
}

void Tracer::interrupt() {
  interrupted_ = true;
  if (tracer_) ::tgkill(::getpid(), tracer_, wake_signal());
}

namespace {

// The NUL-terminated path at `addr` in thread `tid` (nullopt: unreadable, or longer than
// PATH_MAX).
std::optional<std::string> read_path(pid_t tid, uint64_t addr) {
  UniqueFd fd(::open(cat("/proc/", tid, "/mem").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || !addr) return std::nullopt;
  std::string out;
  char buf[256];
  while (out.size() < 4096) {
    // Page by page: a short path may end just before an unmapped page.
    const uint64_t at = addr + out.size();
    const size_t want = std::min<uint64_t>(sizeof buf, 4096 - at % 4096);
    ssize_t n = ::pread(fd.get(), buf, want, off_t(at));
    if (n <= 0) return std::nullopt;
    if (const void* nul = std::memchr(buf, 0, size_t(n))) {
      out.append(buf, static_cast<const char*>(nul) - buf);
      return out;
    }
    out.append(buf, size_t(n));
  }
  return std::nullopt;
}

}  // namespace

std::string Tracer::describe(pid_t tid, long nr, const uint64_t args[6]) const {
  std::string name = syscall_name(nr);
  // Who asked: the thread's command name (the wake reason tells the daemon apart).
  auto read = sys::read_file(cat("/proc/", tid, "/comm"), 64);
  std::string comm = read.ok() ? *read : "";
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  const std::string who = comm.empty() ? "" : cat(" by `", comm, "`");
  if (nr == SYS_socket) {
    const int family = int(args[0]), type = int(args[1]) & 0xf;
    const char* f = family == AF_UNIX ? "unix" : family == AF_INET ? "inet" : family == AF_INET6 ? "inet6" : nullptr;
    const char* t = type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "dgram" : type == SOCK_RAW ? "raw" : nullptr;
    return cat(name, " (", f ? std::string(f) : cat("family ", family), ", ", t ? std::string(t) : cat("type ", type),
               ")", who);
  }
  const uint64_t addr = reads_path(nr) ? args[0] : reads_path_at(nr) ? args[1] : 0;
  const auto path = addr ? read_path(tid, addr) : std::nullopt;
  if (!path) return name + who;
  if (path->empty() && reads_path_at(nr)) {
    // About a descriptor (glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH)): name it.
    auto target = sys::read_link(cat("/proc/", tid, "/fd/", int(args[0])));
    return cat(name, " of fd ", int(args[0]), target.ok() ? cat(" `", *target, "`") : "", who);
  }
  return cat(name, " `", *path, "`", who);
}

bool Tracer::answered_by_tree(pid_t tid, const packfmt::TreeView& tree, long nr, const uint64_t args[6]) const {
  if (tree.empty()) return false;
  // Where the path is, whether its last name is followed, and whether only its type matters.
  uint64_t addr = 0;
  bool follow = true, type_only = false, listing = false;
  int flags = 0;
  switch (nr) {
    case SYS_stat:
    case SYS_access: addr = args[0]; break;
    case SYS_lstat: addr = args[0], follow = false; break;
    case SYS_readlink: addr = args[0], follow = false, type_only = true; break;
    case SYS_readlinkat: addr = args[1], follow = false, type_only = true; break;
    case SYS_newfstatat:
    case SYS_faccessat2: addr = args[1], flags = int(args[3]); break;
    case SYS_statx: addr = args[1], flags = int(args[2]); break;
    case SYS_faccessat: addr = args[1]; break;
    case SYS_open: addr = args[0], listing = true, flags = int(args[1]); break;
    case SYS_openat: addr = args[1], listing = true, flags = int(args[2]); break;
    default: return false;
  }
  if (listing) {
    // Opened to be read: nothing created, truncated or written.
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)) || (flags & __O_TMPFILE) == __O_TMPFILE)
      return false;
  } else if (flags & AT_SYMLINK_NOFOLLOW) {
    follow = false;
  }
  auto path = read_path(tid, addr);
  if (path && path->empty() && (flags & AT_EMPTY_PATH)) {
    // About a descriptor (glibc's fstat): one on a directory the tree lists (opendir checks
    // it) or on a file whose contents came along (stdio sizes its buffer by it).
    auto target = sys::read_link(cat("/proc/", tid, "/fd/", int(args[0])));
    return target.ok() && !target->empty() && (*target)[0] == '/' && (tree.lists(*target) || tree.reads(*target));
  }
  // Absolute paths only: a relative one depends on the working directory or a descriptor.
  if (!path || path->empty() || (*path)[0] != '/') return false;
  // A directory to be listed (opendir), a file whose contents came along, or a name the
  // guest did not have (it fails here as it did there).
  if (listing) return tree.lists(*path) || (!(flags & O_DIRECTORY) && (tree.reads(*path) || tree.absent(*path)));
  return tree.answers(*path, follow, type_only);
}

void Tracer::stop_and_detach() {
  if (detached_) return;
  // The SIGSTOP stays pending while the threads sit in ptrace stops; once they are
  // detached it puts each process into group-stop, where CRIU can take it.
  for (const auto& [pid, p] : processes_) ::kill(pid, SIGSTOP);
  for (auto& [tid, th] : threads_) {
    if (::ptrace(PTRACE_DETACH, tid, nullptr, nullptr) != 0 && errno == ESRCH) {
      // Not in a ptrace stop right now: stop it first.
      ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
      int status = 0;
      wait_for(tid, &status);
      ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
    }
  }
  detached_ = true;
}

Result<std::optional<Activity>> Tracer::wake(pid_t tid, long nr, std::string reason) {
  Activity a{threads_[tid].pid, tid, nr, std::move(reason)};
  stop_and_detach();
  return std::optional<Activity>(std::move(a));
}

Result<std::optional<Activity>> Tracer::run(Deadline deadline) {
  if (detached_) return make_error(ErrorKind::Invalid, "the gateway is no longer traced");
  DeadlineTimer timer(deadline);
  for (;;) {
    if (interrupted_.exchange(false) || deadline.expired()) return std::optional<Activity>();
    // __WNOTHREAD: our tracees only, not children the daemon's other threads started.
    int status = 0;
    pid_t tid = ::waitpid(-1, &status, __WALL | __WNOTHREAD);
    if (tid < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) {
        detached_ = true;
        return make_error(ErrorKind::Closed, "every process of the gateway is gone");
      }
      return errno_error("waitpid for the traced gateway");
    }
    auto it = threads_.find(tid);
    if (it == threads_.end()) continue;  // not ours
    Thread& th = it->second;
    const pid_t pid = th.pid;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      threads_.erase(it);
      bool last_thread = true;
      for (const auto& [t, other] : threads_) last_thread = last_thread && other.pid != pid;
      if (!last_thread) continue;
      processes_.erase(pid);
      const std::string how = WIFEXITED(status) ? cat("code ", WEXITSTATUS(status)) : cat("signal ", WTERMSIG(status));
      if (pid == first_ || processes_.empty())
        return make_error(ErrorKind::Closed, "gateway process ", pid, " exited (", how, ")");
      SL_LOG(Info, kModule, "process ", pid, " of the gateway exited (", how, ")");
      continue;
    }
    if (!WIFSTOPPED(status)) continue;
    const int sig = WSTOPSIG(status);
    const int event = status >> 16;
    const Policy& policy = processes_.at(pid).policy;
    int inject = 0;
    if (sig == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof info, &info) <= 0)
        return errno_error(cat("PTRACE_GET_SYSCALL_INFO of ", tid));
      if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
        th.nr = long(info.entry.nr);
        for (int i = 0; i < 6; ++i) th.args[i] = info.entry.args[i];
        if (policy.verdict(th.nr) == Verdict::NewPeer) note_destination(tid, th.nr, th.args);
        const TracedProcess& proc = processes_.at(pid);
        // Another ABI (int 0x80's 32-bit calls, x32) numbers its calls otherwise: none is
        // served, the policy speaks of x86-64 ones.
        const bool foreign = info.arch != AUDIT_ARCH_X86_64 || (th.nr & __X32_SYSCALL_BIT) != 0;
        if (foreign || (policy.verdict(th.nr) == Verdict::WakeBefore &&
                        !(proc.tree && answered_by_tree(tid, *proc.tree, th.nr, th.args)))) {
          std::string reason = foreign ? cat(info.arch == AUDIT_ARCH_X86_64 ? "x32" : "32-bit", " system call ",
                                             th.nr & ~long(__X32_SYSCALL_BIT))
                                       : describe(tid, th.nr, reinterpret_cast<const uint64_t*>(info.entry.args));
          // Cancel: the kernel skips a syscall whose number is -1 (it returns -ENOSYS).
          user_regs_struct regs{};
          if (::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_GETREGS");
          regs.orig_rax = uint64_t(-1);
          if (::ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_SETREGS");
          if (::ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) != 0) return errno_error("PTRACE_SYSCALL");
          int st = 0;
          if (wait_for(tid, &st) != tid || !WIFSTOPPED(st))
            return make_error(ErrorKind::System, "thread ", tid, " did not stop at the cancelled call's exit");
          // Rewind over `syscall` (2 bytes) with the original number: it runs again on resume.
          if (::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_GETREGS");
          regs.rax = uint64_t(th.nr);
          regs.rip -= 2;
          if (::ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_SETREGS");
          return wake(tid, th.nr, std::move(reason));
        }
      } else if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
        if (policy.verdict(th.nr) == Verdict::WakeAfterSuccess && !info.exit.is_error && info.exit.rval >= 0) {
          std::string peer = socket_peer(pid, long(info.exit.rval));
          return wake(tid, th.nr, cat(syscall_name(th.nr), ": new connection", peer.empty() ? "" : " from " + peer));
        }
        if (policy.verdict(th.nr) == Verdict::NewPeer && !info.exit.is_error && info.exit.rval >= 0)
          if (std::string reason = new_peer(pid, tid, th.nr, th.args, long(info.exit.rval)); !reason.empty())
            return wake(tid, th.nr, std::move(reason));
        if (policy.verdict(th.nr) == Verdict::DataFromPeer && !info.exit.is_error && info.exit.rval > 0)
          if (std::string peer = socket_peer(pid, long(th.args[0])); !peer.empty())
            return wake(tid, th.nr, cat(syscall_name(th.nr), ": ", info.exit.rval, " bytes from ", peer));
        ++served_;
      }
    } else if (event == PTRACE_EVENT_STOP) {
      // Group-stop or our PTRACE_INTERRUPT: just go on tracing.
    } else if (sig != SIGTRAP) {
      inject = sig;  // a signal for the gateway: deliver it
    }
    if (::ptrace(PTRACE_SYSCALL, tid, nullptr, reinterpret_cast<void*>(long(inject))) != 0 && errno != ESRCH)
      return errno_error(cat("PTRACE_SYSCALL ", tid));
  }
}

}  // namespace seamless::sink
