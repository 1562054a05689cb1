// SPDX-License-Identifier: Apache-2.0
// fork/exec with owned pids and captured output.
#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "common/sys.h"

namespace seamless {
namespace {

ExitStatus decode(int wstatus) {
  ExitStatus s;
  if (WIFEXITED(wstatus)) s.code = WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) s.signal = WTERMSIG(wstatus);
  return s;
}

std::string join(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signal != 0) return cat("killed by signal ", signal, " (", strsignal(signal), ")");
  return cat("exit code ", code);
}

Result<ChildProcess> ChildProcess::spawn(const std::vector<std::string>& argv, const SpawnOptions& opts) {
  if (argv.empty()) return make_error(ErrorKind::Invalid, "spawn: empty argv");
  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  if (opts.capture && (::pipe2(out_pipe, O_CLOEXEC) < 0 || ::pipe2(err_pipe, O_CLOEXEC) < 0))
    return errno_error("pipe2");
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) return errno_error(cat("fork for `", argv[0], "`"));
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    if (opts.new_session) ::setsid();
    auto redirect = [](const std::optional<std::string>& path, int target) {
      if (!path) return;
      int fd = ::open(path->c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) ::dup2(fd, target);
    };
    redirect(opts.stdout_path, 1);
    redirect(opts.stderr_path, 2);
    if (opts.capture) {
      ::dup2(out_pipe[1], 1);
      ::dup2(err_pipe[1], 2);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    const char msg[] = "exec failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ChildProcess child;
  child.pid_ = pid;
  if (opts.capture) {
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    child.out_.reset(out_pipe[0]);
    child.err_.reset(err_pipe[0]);
  }
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(other.status_),
      out_(std::move(other.out_)),
      err_(std::move(other.err_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) stop(Millis(0));
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
    out_ = std::move(other.out_);
    err_ = std::move(other.err_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) stop(Millis(0));
}

bool ChildProcess::running() {
  if (pid_ <= 0 || status_) return false;
  int ws = 0;
  pid_t r = ::waitpid(pid_, &ws, WNOHANG);
  if (r == pid_) {
    status_ = decode(ws);
    return false;
  }
  return r == 0;
}

Result<ExitStatus> ChildProcess::wait(Deadline deadline) {
  if (pid_ <= 0) return make_error(ErrorKind::Invalid, "wait: no process");
  // Polling keeps this free of SIGCHLD handling; children here live for seconds, not microseconds.
  auto pause = Millis(1);
  while (running()) {
    if (deadline.expired()) return make_error(ErrorKind::Timeout, "process ", pid_, " still running");
    std::this_thread::sleep_for(std::min(pause, deadline.left()));
    pause = std::min(pause * 2, Millis(50));
  }
  if (!status_) return make_error(ErrorKind::System, "process ", pid_, " vanished");
  return *status_;
}

ExitStatus ChildProcess::stop(Millis grace) {
  if (pid_ <= 0) return {};
  if (!status_ && running()) {
    if (grace.count() > 0) {
      ::kill(pid_, SIGTERM);
      if (auto st = wait(Deadline(grace)); st.ok()) return *st;
    }
    ::kill(pid_, SIGKILL);
    int ws = 0;
    while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
    }
    status_ = decode(ws);
  }
  return status_ ? *status_ : ExitStatus{};
}

Result<RunResult> run(const std::vector<std::string>& argv, Millis timeout) {
  SpawnOptions opts;
  opts.capture = true;
  auto child = SL_TRY(ChildProcess::spawn(argv, opts));
  Deadline deadline(timeout);
  RunResult result;
  pollfd fds[2] = {{child.out_fd(), POLLIN, 0}, {child.err_fd(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    int rc = ::poll(fds, 2, deadline.poll_timeout());
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) {
      child.stop(Millis(0));
      return make_error(ErrorKind::Timeout, "`", join(argv), "` did not finish within ", timeout.count(), " ms");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  result.status = SL_TRY(child.wait(deadline));
  return result;
}

Result<std::string> run_ok(const std::vector<std::string>& argv, Millis timeout) {
  auto r = SL_TRY(run(argv, timeout));
  if (!r.status.success()) {
    std::string err = r.err.empty() ? r.out : r.err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return make_error(ErrorKind::System, "`", join(argv), "` failed (", r.status.describe(), "): ", err);
  }
  return std::move(r.out);
}

}  // namespace seamless
