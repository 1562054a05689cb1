// SPDX-License-Identifier: Apache-2.0
// Activity policy: parser and the built-in lists.
#include "sinkd/policy.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstddef>
#include <sstream>
#include <vector>

namespace seamless::sink {
namespace {

#define SL_SYSCALL(name) \
  { #name, SYS_##name }
const std::vector<std::pair<const char*, long>> kSyscalls = {
    SL_SYSCALL(read),          SL_SYSCALL(write),
    SL_SYSCALL(open),          SL_SYSCALL(openat),
    SL_SYSCALL(openat2),       SL_SYSCALL(creat),
    SL_SYSCALL(stat),          SL_SYSCALL(lstat),
    SL_SYSCALL(newfstatat),    SL_SYSCALL(statx),
    SL_SYSCALL(access),        SL_SYSCALL(faccessat),
    SL_SYSCALL(faccessat2),    SL_SYSCALL(readlink),
    SL_SYSCALL(readlinkat),    SL_SYSCALL(execve),
    SL_SYSCALL(execveat),      SL_SYSCALL(fork),
    SL_SYSCALL(vfork),         SL_SYSCALL(clone),
    SL_SYSCALL(clone3),        SL_SYSCALL(kill),
    SL_SYSCALL(tkill),         SL_SYSCALL(tgkill),
    SL_SYSCALL(socket),        SL_SYSCALL(connect),
    SL_SYSCALL(unlink),        SL_SYSCALL(unlinkat),
    SL_SYSCALL(rename),        SL_SYSCALL(renameat),
    SL_SYSCALL(renameat2),     SL_SYSCALL(mkdir),
    SL_SYSCALL(mkdirat),       SL_SYSCALL(truncate),
    SL_SYSCALL(chdir),         SL_SYSCALL(accept),
    SL_SYSCALL(accept4),       SL_SYSCALL(wait4),
    SL_SYSCALL(poll),          SL_SYSCALL(ppoll),
    SL_SYSCALL(select),        SL_SYSCALL(pselect6),
    SL_SYSCALL(epoll_wait),    SL_SYSCALL(epoll_pwait),
    SL_SYSCALL(nanosleep),     SL_SYSCALL(clock_nanosleep),
    SL_SYSCALL(futex),         SL_SYSCALL(recvfrom),
    SL_SYSCALL(sendto),        SL_SYSCALL(recvmsg),
    SL_SYSCALL(sendmsg),       SL_SYSCALL(close),
    SL_SYSCALL(getpid),        SL_SYSCALL(rt_sigreturn),
    SL_SYSCALL(clock_gettime), SL_SYSCALL(recvmmsg),
    SL_SYSCALL(sendmmsg),      SL_SYSCALL(readv),
};

// What no gateway needs in a sink and a hostile one would use to get out of its container
// or at the sink's kernel: modules, kexec, BPF, ptrace and other processes' memory or
// descriptors, mounts (old and new API), root changes, namespaces, raw devices and I/O
// ports, swap, reboot, the clock, the host name, keyrings, the kernel log, and io_uring
// (I/O that no system call shows the tracer). Never executed in a sink, whatever the
// policy file says: the call is cancelled and the VM wakes (it runs at home).
const std::vector<std::pair<const char*, long>> kNeverInSink = {
    SL_SYSCALL(init_module),
    SL_SYSCALL(finit_module),
    SL_SYSCALL(delete_module),
    SL_SYSCALL(kexec_load),
    SL_SYSCALL(kexec_file_load),
    SL_SYSCALL(bpf),
    SL_SYSCALL(ptrace),
    SL_SYSCALL(process_vm_readv),
    SL_SYSCALL(process_vm_writev),
    SL_SYSCALL(pidfd_getfd),
    SL_SYSCALL(kcmp),
    SL_SYSCALL(perf_event_open),
    SL_SYSCALL(mount),
    SL_SYSCALL(umount2),
    SL_SYSCALL(fsopen),
    SL_SYSCALL(fsconfig),
    SL_SYSCALL(fsmount),
    SL_SYSCALL(fspick),
    SL_SYSCALL(move_mount),
    SL_SYSCALL(open_tree),
    SL_SYSCALL(mount_setattr),
    SL_SYSCALL(pivot_root),
    SL_SYSCALL(chroot),
    SL_SYSCALL(setns),
    SL_SYSCALL(unshare),
    SL_SYSCALL(mknod),
    SL_SYSCALL(mknodat),
    SL_SYSCALL(iopl),
    SL_SYSCALL(ioperm),
    SL_SYSCALL(open_by_handle_at),
    SL_SYSCALL(swapon),
    SL_SYSCALL(swapoff),
    SL_SYSCALL(reboot),
    SL_SYSCALL(settimeofday),
    SL_SYSCALL(clock_settime),
    SL_SYSCALL(adjtimex),
    SL_SYSCALL(clock_adjtime),
    SL_SYSCALL(sethostname),
    SL_SYSCALL(setdomainname),
    SL_SYSCALL(add_key),
    SL_SYSCALL(request_key),
    SL_SYSCALL(keyctl),
    SL_SYSCALL(syslog),
    SL_SYSCALL(quotactl),
    SL_SYSCALL(acct),
    SL_SYSCALL(userfaultfd),
    SL_SYSCALL(io_uring_setup),
    SL_SYSCALL(io_uring_enter),
    SL_SYSCALL(io_uring_register),
    SL_SYSCALL(modify_ldt),
    SL_SYSCALL(vhangup),
    SL_SYSCALL(lookup_dcookie),
    SL_SYSCALL(name_to_handle_at),
    SL_SYSCALL(uselib),
};
#undef SL_SYSCALL

bool never_in_sink(long nr) {
  for (const auto& [n, number] : kNeverInSink)
    if (number == nr) return true;
  return false;
}

}  // namespace

std::string seccomp_program() {
  std::vector<sock_filter> prog;
  auto stmt = [&](uint16_t code, uint32_t k) { prog.push_back(BPF_STMT(code, k)); };
  auto jump = [&](uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) { prog.push_back(BPF_JUMP(code, k, jt, jf)); };
  const uint32_t deny = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  stmt(BPF_RET | BPF_K, deny);
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr));
  jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(-1), 0, 1);  // cancelled by the tracer
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  jump(BPF_JMP | BPF_JSET | BPF_K, __X32_SYSCALL_BIT, 0, 1);
  stmt(BPF_RET | BPF_K, deny);
  for (const auto& [name, nr] : kNeverInSink) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, uint32_t(nr), 0, 1);
    stmt(BPF_RET | BPF_K, deny);
  }
  stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  return std::string(reinterpret_cast<const char*>(prog.data()), prog.size() * sizeof(sock_filter));
}

const char* const kBuiltinPolicy = R"(# seamless activity policy (x86-64)
# Files: only dummies exist in the sink.
before open openat openat2 creat stat lstat newfstatat statx access faccessat faccessat2
before readlink readlinkat truncate chdir mkdir mkdirat unlink unlinkat rename renameat renameat2
# New processes and threads, signals to others, new outgoing sockets. (Mounts, modules,
# ptrace and the like never run in a sink: see kNeverInSink.)
before execve execveat fork vfork clone clone3 kill tkill tgkill socket connect
# A new connection: it exists once accept returns, and moves with the gateway.
after accept accept4
# UDP: a datagram from a new peer (it is in the gateway's memory once received).
peer recvfrom recvmsg recvmmsg sendto sendmsg sendmmsg
# A JVM (Tomcat) answers a page from memory once its classes are loaded: what it reads
# from a connection is a request. (SSH servers get keep-alives on their connections,
# HTTP servers in C open the page's file: they need no such entry.)
[java]
data read readv recvfrom recvmsg
)";

long syscall_number(std::string_view name) {
  for (const auto* table : {&kSyscalls, &kNeverInSink})
    for (const auto& [n, nr] : *table)
      if (name == n) return nr;
  return -1;
}

std::string syscall_name(long nr) {
  for (const auto* table : {&kSyscalls, &kNeverInSink})
    for (const auto& [n, number] : *table)
      if (number == nr) return n;
  return cat("syscall ", nr);
}

Result<Policy> Policy::parse(std::string_view text, const std::string& daemon) {
  Policy p;
  std::istringstream in{std::string(text)};
  std::string line, section;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string verb;
    if (!(words >> verb)) continue;
    if (verb.front() == '[') {
      if (verb.back() != ']' || verb.size() < 3)
        return make_error(ErrorKind::Invalid, "policy line ", lineno, ": bad section `", verb, "`");
      section = verb.substr(1, verb.size() - 2);
      continue;
    }
    Verdict v;
    if (verb == "before")
      v = Verdict::WakeBefore;
    else if (verb == "after")
      v = Verdict::WakeAfterSuccess;
    else if (verb == "serve")
      v = Verdict::Serve;
    else if (verb == "peer")
      v = Verdict::NewPeer;
    else if (verb == "data")
      v = Verdict::DataFromPeer;
    else
      return make_error(ErrorKind::Invalid, "policy line ", lineno, ": `", verb,
                        "` is not before, after, peer, data or serve");
    bool applies = section.empty() || section == daemon;
    for (std::string name; words >> name;) {
      long nr = syscall_number(name);
      if (nr < 0) return make_error(ErrorKind::Invalid, "policy line ", lineno, ": unknown system call `", name, "`");
      if (never_in_sink(nr) && v != Verdict::WakeBefore)
        return make_error(ErrorKind::Invalid, "policy line ", lineno, ": `", name,
                          "` never runs in a sink (the VM wakes for it)");
      if (applies) p.rules_[nr] = v;
    }
  }
  return p;
}

Result<Policy> Policy::builtin(const std::string& daemon) { return parse(kBuiltinPolicy, daemon); }

Verdict Policy::verdict(long nr) const {
  if (never_in_sink(nr)) return Verdict::WakeBefore;
  auto it = rules_.find(nr);
  return it == rules_.end() ? Verdict::Serve : it->second;
}

}  // namespace seamless::sink
