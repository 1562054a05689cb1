// SPDX-License-Identifier: Apache-2.0
// Activity detection: every thread of a gateway's processes is traced with ptrace
// (PTRACE_SEIZE + TRACESYSGOOD + GET_SYSCALL_INFO). Calls the policy serves run on; the
// first activity stops the gateway so that the triggering call re-runs where the gateway
// goes next: a call caught at entry is cancelled and its instruction pointer rewound over
// the `syscall` instruction (the original number back in rax); an accept that returned a
// connection needs no rewind, the connection moves with the process. Then every process
// is left stopped (SIGSTOP) and detached, so CRIU can checkpoint the gateway.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/time.h"
#include "pack/tree.h"
#include "sinkd/policy.h"

namespace seamless::sink {

struct Activity {
  pid_t pid = 0, tid = 0;
  long nr = -1;
  std::string reason;  // "accept4: new connection", "openat `/etc/motd`", ...
};

struct TracedProcess {
  pid_t pid = 0;
  Policy policy;
  // The guest's file tree laid into its container (pack/tree.h): a look-up it answers (a
  // stat, access or readlink of an absolute path, a directory opened to be listed) runs
  // in the sink instead of waking the VM.
  std::shared_ptr<const packfmt::TreeView> tree;
};

class Tracer {
 public:
  // Seizes every thread of every process. The calling thread becomes the tracer: it
  // must make every later call (but interrupt()) and must not start child processes
  // of its own meanwhile (run() waits for any of its children).
  static Result<std::unique_ptr<Tracer>> attach(std::vector<TracedProcess> processes);
  static Result<std::unique_ptr<Tracer>> attach(pid_t pid, Policy policy);
  ~Tracer();  // detaches (the processes run on) unless they were stopped already
  // Serves system calls until activity (returned: the gateway is stopped and detached),
  // the deadline or interrupt() (nullopt: still traced). The exit of the last process, or
  // of a gateway's first one, is an error; other processes may come and go.
  Result<std::optional<Activity>> run(Deadline deadline);
  // Any thread: makes a run() in progress return nullopt soon. Call it until run() did.
  void interrupt();
  // Stops every process (SIGSTOP) and detaches: the hand-back path, without activity.
  void stop_and_detach();
  bool detached() const { return detached_; }
  uint64_t served() const { return served_; }

 private:
  explicit Tracer(std::vector<TracedProcess> processes);
  Result<void> seize_all();
  Result<std::optional<Activity>> wake(pid_t tid, long nr, std::string reason);
  std::string describe(pid_t tid, long nr, const uint64_t args[6]) const;
  // Whether the call is a look-up `tree` answers (see TracedProcess::tree).
  bool answered_by_tree(pid_t tid, const packfmt::TreeView& tree, long nr, const uint64_t args[6]) const;
  // UDP (NewPeer calls): at entry a send's destination becomes known; at exit the reason
  // to wake for a datagram from a new peer ("" when there is none).
  void note_destination(pid_t tid, long nr, const uint64_t args[6]);
  std::string new_peer(pid_t pid, pid_t tid, long nr, const uint64_t args[6], long rval) const;
  struct Thread {
    pid_t pid = 0;          // its process
    long nr = -1;           // the system call it entered last (its exit stop carries no number)
    uint64_t args[6] = {};  // and its arguments
  };
  std::map<pid_t, TracedProcess> processes_;
  std::map<pid_t, Thread> threads_;
  pid_t first_ = 0;   // the gateway's first process: its exit ends the gateway
  pid_t tracer_ = 0;  // the tracing thread's tid (for interrupt())
  std::atomic<bool> interrupted_{false};
  uint64_t served_ = 0;
  bool detached_ = false;
  std::set<std::string> udp_peers_;  // destinations the gateway sent datagrams to
};

}  // namespace seamless::sink
