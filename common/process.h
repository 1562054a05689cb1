// SPDX-License-Identifier: Apache-2.0
// Child processes: ChildProcess owns a pid (kill + reap unless released) and run() captures output.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "common/time.h"

namespace seamless {

struct ExitStatus {
  int code = -1;   // exit code, or -1 when killed by a signal
  int signal = 0;  // terminating signal, 0 when it exited
  bool success() const { return code == 0; }
  std::string describe() const;
};

struct SpawnOptions {
  std::optional<std::string> stdout_path;  // redirect stdout (append); default: inherit
  std::optional<std::string> stderr_path;  // redirect stderr (append); default: inherit
  bool capture = false;                    // pipe stdout/stderr back (see ChildProcess::out_fd)
  bool new_session = false;                // setsid() in the child
};

class ChildProcess {
 public:
  ChildProcess() = default;
  static Result<ChildProcess> spawn(const std::vector<std::string>& argv, const SpawnOptions& opts = {});
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();  // SIGKILL + reap if still owned

  pid_t pid() const { return pid_; }
  bool running();  // false once it exited (reaps it)
  Result<ExitStatus> wait(Deadline deadline);
  // SIGTERM, wait up to grace, then SIGKILL; reaps.
  ExitStatus stop(Millis grace = Millis(2000));
  pid_t release() { return std::exchange(pid_, -1); }
  int out_fd() const { return out_.get(); }
  int err_fd() const { return err_.get(); }

 private:
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
  UniqueFd out_, err_;
};

struct RunResult {
  ExitStatus status;
  std::string out, err;
};

// Runs argv to completion (killing it at the deadline) and captures its output.
Result<RunResult> run(const std::vector<std::string>& argv, Millis timeout = Millis(60000));
// As run(), but an unsuccessful exit is an error carrying its stderr.
Result<std::string> run_ok(const std::vector<std::string>& argv, Millis timeout = Millis(60000));

}  // namespace seamless
