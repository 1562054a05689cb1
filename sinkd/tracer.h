// SPDX-License-Identifier: Apache-2.0
// Activity detection: every thread of a gateway process is traced with ptrace
// (PTRACE_SEIZE + TRACESYSGOOD + GET_SYSCALL_INFO). Calls the policy serves run on; the
// first activity stops the process so that the triggering call re-runs where the gateway
// goes next: a call caught at entry is cancelled and its instruction pointer rewound over
// the `syscall` instruction (the original number back in rax); an accept that returned a
// connection needs no rewind, the connection moves with the process. Then the process is
// left stopped (SIGSTOP) and detached, so CRIU can checkpoint it.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "common/time.h"
#include "sinkd/policy.h"

namespace seamless::sink {

struct Activity {
  pid_t tid = 0;
  long nr = -1;
  std::string reason;  // "accept4: new connection", "openat `/etc/motd`", ...
};

class Tracer {
 public:
  // Seizes every thread of pid. The caller's thread must make every later call.
  static Result<std::unique_ptr<Tracer>> attach(pid_t pid, Policy policy);
  ~Tracer();  // detaches (the process runs on) unless activity already stopped it
  // Serves system calls until activity (returned: the process is stopped and detached)
  // or the deadline (nullopt: still traced). A process that exits is an error.
  Result<std::optional<Activity>> run(Deadline deadline);
  pid_t pid() const { return pid_; }
  uint64_t served() const { return served_; }

 private:
  Tracer(pid_t pid, Policy policy) : pid_(pid), policy_(std::move(policy)) {}
  Result<void> seize_all();
  void stop_and_detach();
  std::string describe(pid_t tid, long nr, const uint64_t args[6]) const;
  pid_t pid_;
  Policy policy_;
  struct Thread {
    long nr = -1;  // the system call it entered last (its exit stop carries no number)
  };
  std::map<pid_t, Thread> threads_;
  uint64_t served_ = 0;
  bool detached_ = false;
};

}  // namespace seamless::sink
