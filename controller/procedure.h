// SPDX-License-Identifier: Apache-2.0
// A procedure with side effects as a list of named steps, each with its undo. Steps run
// in order; when one fails, the undos of the steps already done run in reverse order, so
// the system ends where it started. A step that fails must leave nothing behind itself. Every step is timed; a progress
// callback sees each step begin and end (the operator commands print one line per step).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/time.h"

namespace seamless::ctl {

struct Step {
  std::string name;
  std::function<Result<void>()> run;
  std::function<Result<void>()> undo;  // empty: nothing to undo
};

struct StepRecord {
  std::string name;
  double seconds = 0;
  bool ok = false;
  bool undone = false;
  std::string error;  // of the step, or of its undo
};

struct ProcedureReport {
  std::vector<StepRecord> steps;
  double seconds = 0;
  std::string failed_step;   // empty on success
  bool rolled_back = false;  // every undo succeeded
  double step_seconds(const std::string& name) const;
};

enum class Progress { Begin, Done, Failed, Undoing, Undone };
using ProgressFn = std::function<void(Progress what, const std::string& step, const std::string& detail)>;

class Procedure {
 public:
  explicit Procedure(std::string name) : name_(std::move(name)) {}
  Procedure& step(std::string name, std::function<Result<void>()> run, std::function<Result<void>()> undo = {});
  // Test seam: the named step fails before running (SEAMLESS_FAIL_STEP in the daemon).
  void fail_at(std::string step) { fail_at_ = std::move(step); }
  // Runs the steps; on a failure runs the undos of the steps done, newest first, and
  // returns the step's error (with the undos' errors appended when some failed).
  Result<void> run(ProcedureReport* report = nullptr, const ProgressFn& progress = {}) const;
  const std::vector<Step>& steps() const { return steps_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::vector<Step> steps_;
  std::string fail_at_;
};

}  // namespace seamless::ctl
