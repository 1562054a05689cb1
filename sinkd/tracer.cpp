// SPDX-License-Identifier: Apache-2.0
// The ptrace loop behind activity detection (x86-64).
#include "sinkd/tracer.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "common/log.h"

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

}  // namespace

Result<std::unique_ptr<Tracer>> Tracer::attach(pid_t pid, Policy policy) {
  std::unique_ptr<Tracer> t(new Tracer(pid, std::move(policy)));
  SL_TRY(t->seize_all());
  return t;
}

Result<void> Tracer::seize_all() {
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(cat("/proc/", pid_, "/task"), ec)) {
    pid_t tid = std::atoi(task.path().filename().c_str());
    if (threads_.count(tid)) continue;
    if (::ptrace(PTRACE_SEIZE, tid, nullptr, PTRACE_O_TRACESYSGOOD) != 0)
      return errno_error(cat("ptrace(PTRACE_SEIZE) of thread ", tid, " of pid ", pid_));
    threads_[tid] = Thread{};
    // Interrupt it so that syscall tracing starts from a known stop.
    if (::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) return errno_error(cat("PTRACE_INTERRUPT ", tid));
  }
  if (ec) return make_error(ErrorKind::NotFound, "pid ", pid_, " is gone: ", ec.message());
  return ok();
}

Tracer::~Tracer() {
  if (detached_) return;
  // Detach requires a stopped tracee: interrupt, wait for each stop, detach.
  for (auto& [tid, th] : threads_) {
    ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    int status = 0;
    ::waitpid(tid, &status, __WALL);
    ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
  }
}

std::string Tracer::describe(pid_t tid, long nr, const uint64_t args[6]) const {
  std::string name = syscall_name(nr);
  uint64_t addr = reads_path(nr) ? args[0] : reads_path_at(nr) ? args[1] : 0;
  if (!addr) return name;
  char buf[512] = {};
  int fd = ::open(cat("/proc/", tid, "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return name;
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, off_t(addr));
  ::close(fd);
  if (n <= 0) return name;
  return cat(name, " `", std::string(buf, strnlen(buf, size_t(n))), "`");
}

void Tracer::stop_and_detach() {
  // The SIGSTOP stays pending while the threads sit in ptrace stops; once they are
  // detached it puts the whole process into group-stop, where CRIU can take it.
  ::kill(pid_, SIGSTOP);
  for (auto& [tid, th] : threads_) {
    if (::ptrace(PTRACE_DETACH, tid, nullptr, nullptr) != 0 && errno == ESRCH) {
      // Not in a ptrace stop right now: stop it first.
      ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
      int status = 0;
      ::waitpid(tid, &status, __WALL);
      ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
    }
  }
  detached_ = true;
}

Result<std::optional<Activity>> Tracer::run(Deadline deadline) {
  if (detached_) return make_error(ErrorKind::Invalid, "pid ", pid_, " is no longer traced");
  for (;;) {
    // Only our threads: the daemon has other children (CRIU runs) that are not ours to reap.
    int status = 0;
    pid_t tid = 0;
    for (const auto& entry : threads_) {
      pid_t got = ::waitpid(entry.first, &status, __WALL | WNOHANG);
      if (got < 0 && errno != ECHILD) return errno_error(cat("waitpid for thread ", entry.first));
      if (got > 0) {
        tid = got;
        break;
      }
    }
    if (tid == 0) {
      if (deadline.expired()) return std::optional<Activity>();
      std::this_thread::sleep_for(Millis(1));
      continue;
    }
    auto it = threads_.find(tid);
    if (it == threads_.end()) continue;  // not ours
    Thread& th = it->second;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
      threads_.erase(it);
      if (tid == pid_ || threads_.empty()) {
        detached_ = true;
        return make_error(ErrorKind::Closed, "gateway pid ", pid_, " exited (",
                          WIFEXITED(status) ? cat("code ", WEXITSTATUS(status)) : cat("signal ", WTERMSIG(status)),
                          ")");
      }
      continue;
    }
    if (!WIFSTOPPED(status)) continue;
    const int sig = WSTOPSIG(status);
    const int event = status >> 16;
    int inject = 0;
    if (sig == (SIGTRAP | 0x80)) {
      __ptrace_syscall_info info{};
      if (::ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof info, &info) <= 0)
        return errno_error(cat("PTRACE_GET_SYSCALL_INFO of ", tid));
      if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
        th.nr = long(info.entry.nr);
        if (policy_.verdict(th.nr) == Verdict::WakeBefore) {
          Activity a{tid, th.nr, describe(tid, th.nr, reinterpret_cast<const uint64_t*>(info.entry.args))};
          // Cancel: the kernel skips a syscall whose number is -1 (it returns -ENOSYS).
          user_regs_struct regs{};
          if (::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_GETREGS");
          regs.orig_rax = uint64_t(-1);
          if (::ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_SETREGS");
          if (::ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) != 0) return errno_error("PTRACE_SYSCALL");
          int st = 0;
          if (::waitpid(tid, &st, __WALL) != tid || !WIFSTOPPED(st))
            return make_error(ErrorKind::System, "thread ", tid, " did not stop at the cancelled call's exit");
          // Rewind over `syscall` (2 bytes) with the original number: it runs again on resume.
          if (::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_GETREGS");
          regs.rax = uint64_t(th.nr);
          regs.rip -= 2;
          if (::ptrace(PTRACE_SETREGS, tid, nullptr, &regs) != 0) return errno_error("PTRACE_SETREGS");
          stop_and_detach();
          return std::optional<Activity>(std::move(a));
        }
      } else if (info.op == PTRACE_SYSCALL_INFO_EXIT) {
        if (policy_.verdict(th.nr) == Verdict::WakeAfterSuccess && !info.exit.is_error && info.exit.rval >= 0) {
          Activity a{tid, th.nr, cat(syscall_name(th.nr), ": new connection")};
          stop_and_detach();
          return std::optional<Activity>(std::move(a));
        }
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
