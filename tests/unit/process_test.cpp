// SPDX-License-Identifier: Apache-2.0
// Child processes: output capture, exit codes, deadlines, kill on drop.
#include "common/process.h"

#include <gtest/gtest.h>
#include <signal.h>

namespace seamless {
namespace {

TEST(Process, CapturesOutputAndExitCode) {
  auto r = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_EQ(r->status.code, 3);
}

TEST(Process, RunOkNamesTheCommandAndItsError) {
  auto r = run_ok({"sh", "-c", "echo broken >&2; exit 1"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "`sh -c echo broken >&2; exit 1` failed (exit code 1): broken");
}

TEST(Process, DeadlineKillsTheChild) {
  auto r = run({"sleep", "10"}, Millis(100));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Timeout);
}

TEST(Process, DroppingAChildKillsAndReapsIt) {
  pid_t pid;
  {
    auto child = ChildProcess::spawn({"sleep", "30"});
    ASSERT_TRUE(child.ok());
    pid = child->pid();
    EXPECT_TRUE(child->running());
  }
  EXPECT_EQ(::kill(pid, 0), -1);  // reaped: no zombie left
  EXPECT_EQ(errno, ESRCH);
}

TEST(Process, MissingProgramFailsWith127) {
  auto r = run({"/nonexistent/program"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 127);
}

}  // namespace
}  // namespace seamless
