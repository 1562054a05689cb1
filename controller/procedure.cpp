// SPDX-License-Identifier: Apache-2.0
// The step runner.
#include "controller/procedure.h"

#include <optional>

#include "common/log.h"

namespace seamless::ctl {

double ProcedureReport::step_seconds(const std::string& name) const {
  for (const auto& s : steps)
    if (s.name == name) return s.seconds;
  return 0;
}

Procedure& Procedure::step(std::string name, std::function<Result<void>()> run, std::function<Result<void>()> undo) {
  steps_.push_back(Step{std::move(name), std::move(run), std::move(undo)});
  return *this;
}

Result<void> Procedure::run(ProcedureReport* report, const ProgressFn& progress) const {
  ProcedureReport local;
  ProcedureReport& r = report ? *report : local;
  r = ProcedureReport{};
  const auto t0 = Clock::now();
  auto tell = [&](Progress p, const std::string& step, const std::string& detail) {
    if (progress) progress(p, step, detail);
  };
  size_t done = 0;
  std::optional<Error> failure;
  for (; done < steps_.size(); ++done) {
    const Step& s = steps_[done];
    tell(Progress::Begin, s.name, "");
    const auto ts = Clock::now();
    Result<void> res = s.name == fail_at_ ? Result<void>(make_error(ErrorKind::Invalid, "injected failure")) : s.run();
    r.steps.push_back(StepRecord{s.name, seconds_since(ts), res.ok(), false, res.ok() ? "" : res.error().message});
    if (!res.ok()) {
      tell(Progress::Failed, s.name, res.error().message);
      failure = std::move(res).error().wrap(cat(name_, ": step `", s.name, "`"));
      r.failed_step = s.name;
      break;
    }
    tell(Progress::Done, s.name, cat(r.steps.back().seconds));
  }
  if (!failure) {
    r.seconds = seconds_since(t0);
    return ok();
  }
  // A step that fails leaves nothing behind (each is written so); the steps done before
  // it are undone, newest first.
  std::string undo_errors;
  r.rolled_back = true;
  for (size_t i = done; i-- > 0;) {
    const Step& s = steps_[i];
    if (!s.undo) continue;
    tell(Progress::Undoing, s.name, "");
    auto u = s.undo();
    r.steps[i].undone = u.ok();
    if (!u.ok()) {
      r.rolled_back = false;
      r.steps[i].error += cat(r.steps[i].error.empty() ? "" : "; ", "undo: ", u.error().message);
      undo_errors += cat("; undoing `", s.name, "` failed too: ", u.error().message);
      SL_LOG(Error, "procedure", name_, ": undoing `", s.name, "`: ", u.error().message);
    } else {
      tell(Progress::Undone, s.name, "");
    }
  }
  r.seconds = seconds_since(t0);
  Error e = std::move(*failure);
  e.message += undo_errors.empty() ? " (rolled back)" : undo_errors;
  return e;
}

}  // namespace seamless::ctl
