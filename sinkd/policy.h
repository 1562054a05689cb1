// SPDX-License-Identifier: Apache-2.0
// Which system calls of a transplanted gateway need the real VM. The lists are data
// (a small text format, one section per daemon over a default section), not code.
//
//   # comment
//   before openat execve clone ...   activity: stop at entry, cancel, rewind (re-run in the VM)
//   after accept accept4              activity once it succeeded (its result moves with the gateway)
//   peer recvfrom recvmmsg sendto ...  UDP: a datagram from a peer the gateway is not
//                                     connected to and has not sent to is activity (after it
//                                     was received); sends make their destination known
//   data read recvfrom ...            a read that returned data from a TCP connection's peer is
//                                     activity (after it: the request moves with the gateway)
//   serve wait4                       served in the sink (overrides the lists above)
//   [apache2]                         what follows applies to that daemon only
//
// Anything not listed is served: reads, writes and polls on descriptors the gateway
// already has, timers, clocks, futexes, housekeeping. What no gateway needs in a sink
// (modules, kexec, BPF, ptrace, mounts, namespaces, raw devices, io_uring...) is always
// `before`, and a policy line that says otherwise is refused; a system call through
// another ABI (int 0x80, x32) wakes the VM too (see Tracer).
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>

#include "common/result.h"

namespace seamless::sink {

enum class Verdict { Serve, WakeBefore, WakeAfterSuccess, NewPeer, DataFromPeer };

class Policy {
 public:
  // The sections that apply to `daemon` (the default section always does).
  static Result<Policy> parse(std::string_view text, const std::string& daemon);
  static Result<Policy> builtin(const std::string& daemon);
  Verdict verdict(long nr) const;

 private:
  std::map<long, Verdict> rules_;
};

// x86-64 system call numbers and names, for the policy's text and for reasons.
long syscall_number(std::string_view name);  // -1 when unknown
std::string syscall_name(long nr);           // "syscall N" when unknown

extern const char* const kBuiltinPolicy;

// The seccomp filter each restored gateway gets in a sink (struct sock_filter[] as bytes,
// for criu_images::confine): what never runs in a sink fails with EPERM, and so does any
// system call through another ABI (int 0x80, x32). Under a living tracer these calls stop
// first and wake the VM (ptrace reports a call before seccomp judges it, and a cancelled
// call, number -1, is let through); the filter is what holds when no tracer does.
std::string seccomp_program();

}  // namespace seamless::sink
