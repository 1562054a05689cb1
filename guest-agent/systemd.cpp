// SPDX-License-Identifier: Apache-2.0
// Keeping a gateway's systemd unit whole while the gateway is away.
#include "guest-agent/systemd.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "common/log.h"
#include "common/process.h"
#include "common/sys.h"
#include "common/time.h"
#include "guest-agent/procfs.h"
#include "pack/manifest.h"

namespace seamless::guest {

using packfmt::valid_service_name;

namespace {

constexpr std::string_view kModule = "systemd";
constexpr const char* kNotifySocket = "/run/systemd/notify";
constexpr const char* kStandInName = "sl-standin";
constexpr Millis kMainPidTimeout(15000);

// The cgroup tree systemd keeps its units in: unified, hybrid or legacy.
std::string cgroup_root() {
  if (::access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) return "/sys/fs/cgroup";
  if (::access("/sys/fs/cgroup/unified/cgroup.controllers", F_OK) == 0) return "/sys/fs/cgroup/unified";
  return "/sys/fs/cgroup/systemd";
}

// Decimal digits of a pid into `out` (no allocation: used between fork and exit).
int format_pid(pid_t pid, char* out) {
  char rev[16];
  int n = 0;
  do rev[n++] = char('0' + pid % 10);
  while ((pid /= 10) > 0);
  for (int i = 0; i < n; ++i) out[i] = rev[n - 1 - i];
  return n;
}

// What a forked helper does: join the unit's cgroup (writing its own pid to `procs`) and
// tell systemd that `main` (0: itself) is the main PID. Async-signal-safe calls only.
void child_join_and_notify(const char* procs, pid_t main) {
  char pid[16];
  int n = format_pid(::getpid(), pid);
  int fd = ::open(procs, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, pid, size_t(n)) != n) ::_exit(10);
  ::close(fd);
  char message[32] = "MAINPID=";
  int len = 8 + format_pid(main > 0 ? main : ::getpid(), message + 8);
  message[len++] = '\n';
  int s = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, kNotifySocket, sizeof addr.sun_path - 1);
  // The kernel attaches our credentials: systemd asks for them (SO_PASSCRED).
  if (s < 0 || ::sendto(s, message, size_t(len), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) ::_exit(11);
  ::close(s);
}

void detach_stdio() {
  int null = ::open("/dev/null", O_RDWR);
  for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
  if (null > 2) ::close(null);
}

bool is_stand_in(pid_t pid) {
  auto comm = sys::read_file(cat("/proc/", pid, "/comm"));
  return comm.ok() && comm->rfind(kStandInName, 0) == 0;
}

}  // namespace

std::string hold_dropin_text() {
  return "# seamless: the gateway of this unit is parked (dumped, or in a sink); runtime only.\n"
         "[Unit]\nRefuseManualStop=yes\n[Service]\nRestart=no\nNotifyAccess=all\n";
}

std::string hold_dropin_path(const std::string& unit) {
  return cat("/run/systemd/system/", unit, ".d/50-seamless-park.conf");
}

bool Systemd::running() { return ::access("/run/systemd/system", F_OK) == 0; }

Result<std::string> Systemd::property(const std::string& unit, const std::string& name) {
  auto out = SL_TRY(run_ok({"systemctl", "show", "-P", name, "--", unit}));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

Result<pid_t> Systemd::main_pid(const std::string& unit) {
  if (!valid_service_name(unit)) return make_error(ErrorKind::Invalid, "`", unit, "` is not a service unit name");
  auto text = SL_TRY(property(unit, "MainPID"));
  char* end = nullptr;
  long pid = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || pid < 0)
    return make_error(ErrorKind::Protocol, "MainPID of ", unit, ": `", text, "`");
  return pid_t(pid);
}

Result<pid_t> Systemd::stand_in(const std::string& unit) {
  pid_t main = SL_TRY(main_pid(unit));
  if (main <= 0 || !is_stand_in(main))
    return make_error(ErrorKind::NotFound, unit, " is not held: its main process (", main, ") is not the stand-in");
  return main;
}

Result<std::string> Systemd::cgroup_dir(const std::string& unit) {
  auto cg = SL_TRY(property(unit, "ControlGroup"));
  if (cg.empty()) return make_error(ErrorKind::NotFound, "unit ", unit, " has no cgroup (it is not running)");
  if (cg[0] != '/' || cg.find("..") != std::string::npos || cg.find('\n') != std::string::npos)
    return make_error(ErrorKind::Protocol, "unit ", unit, ": unexpected cgroup `", cg, "`");
  return cgroup_root() + cg;
}

Result<void> Systemd::wait_main_pid(const std::string& unit, pid_t want) {
  pid_t now = 0;
  for (Deadline d(kMainPidTimeout); !d.expired(); std::this_thread::sleep_for(Millis(50))) {
    now = SL_TRY(main_pid(unit));
    if (now == want) return ok();
  }
  return make_error(ErrorKind::Timeout, "systemd did not take pid ", want, " as the main process of ", unit, " (it is ",
                    now, ")");
}

void Systemd::remove_dropin(const std::string& unit) {
  const std::string path = hold_dropin_path(unit);
  std::error_code ec;
  std::filesystem::remove(path, ec);
  std::filesystem::remove(std::filesystem::path(path).parent_path(), ec);  // only when empty
  reload_pending_ = true;
}

void Systemd::apply() {
  if (!reload_pending_) return;
  reload_pending_ = false;
  SpawnOptions opts;
  opts.stdout_path = "/dev/null";
  opts.stderr_path = "/dev/null";
  opts.new_session = true;
  auto reload = ChildProcess::spawn({"systemctl", "daemon-reload"}, opts);
  if (!reload.ok()) {
    SL_LOG(Warn, kModule, "systemctl daemon-reload: ", reload.error().message);
    return;
  }
  reload->release();  // init reaps it once we have exited
}

// The stand-in: a grandchild (so that init reaps it) that joins the unit's cgroup, makes
// itself the main PID and sleeps until release() ends it. Its pid comes back on a pipe.
Result<pid_t> Systemd::start_stand_in(const std::string& unit, pid_t main) {
  const std::string procs = SL_TRY(cgroup_dir(unit)) + "/cgroup.procs";
  // A service with a mount namespace of its own (PrivateTmp=, ProtectSystem=, ...): the
  // stand-in lives in it and keeps it for the restore.
  const std::string mount_ns = cat("/proc/", main, "/ns/mnt");
  const bool enter = main > 0 && namespace_inode(mount_ns) != namespace_inode("/proc/self/ns/mnt");
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return errno_error("pipe");
  pid_t child = ::fork();
  if (child < 0) return errno_error("fork");
  if (child == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
    detach_stdio();
    // Nothing of ours stays open in it (sockets, the agent's pipes) but the pipe back.
    ::close_range(3, unsigned(pipefd[1]) - 1, 0);
    ::close_range(unsigned(pipefd[1]) + 1, ~0U, 0);
    ::prctl(PR_SET_NAME, kStandInName);
    ::signal(SIGTERM, SIG_DFL);
    pid_t self = ::getpid();
    child_join_and_notify(procs.c_str(), 0);
    if (enter) {
      int ns = ::open(mount_ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNS) != 0) ::_exit(12);
      ::close(ns);
    }
    (void)!::write(pipefd[1], &self, sizeof self);
    ::close(pipefd[1]);
    for (;;) ::pause();
  }
  ::close(pipefd[1]);
  while (::waitpid(child, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_t stand_in = 0;
  ssize_t n;
  do n = ::read(pipefd[0], &stand_in, sizeof stand_in);
  while (n < 0 && errno == EINTR);
  ::close(pipefd[0]);
  if (n != sizeof stand_in || stand_in <= 0)
    return make_error(ErrorKind::System, "the stand-in for ", unit, " did not start (could not join `", procs,
                      "` or reach ", kNotifySocket, ")");
  if (auto w = wait_main_pid(unit, stand_in); !w.ok()) {
    ::kill(stand_in, SIGKILL);
    return w.error();
  }
  return stand_in;
}

Result<void> Systemd::hold(const std::vector<std::string>& units) {
  if (units.empty()) return ok();
  std::vector<std::pair<std::string, pid_t>> mains;  // unit, main before
  for (const auto& unit : units) {
    if (!valid_service_name(unit)) return make_error(ErrorKind::Invalid, "`", unit, "` is not a service unit name");
    mains.emplace_back(unit, SL_TRY(main_pid(unit)));
  }
  size_t held = 0;
  auto undo = [&](Error e) -> Error {
    for (size_t i = 0; i < held; ++i)
      if (auto r = release(mains[i].first, mains[i].second, {mains[i].second}); !r.ok())
        SL_LOG(Warn, kModule, "undoing the hold of ", mains[i].first, ": ", r.error().message);
    for (const auto& [unit, main] : mains) remove_dropin(unit);
    apply();
    return e;
  };
  for (const auto& unit : units) {
    const std::string path = hold_dropin_path(unit);
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    if (auto w = sys::write_file(path, hold_dropin_text(), 0644); !w.ok()) return undo(w.error());
  }
  // One reload for all of them: it takes seconds in a small VM.
  if (auto r = run_ok({"systemctl", "daemon-reload"}); !r.ok()) return undo(r.error().wrap("systemctl daemon-reload"));
  for (; held < units.size(); ++held) {
    auto stand_in = start_stand_in(units[held], mains[held].second);
    if (!stand_in.ok()) return undo(stand_in.error().wrap(cat("holding ", units[held])));
    SL_LOG(Info, kModule, units[held], ": stand-in ", *stand_in, " is the main process while the gateway is away");
  }
  return ok();
}

Result<void> Systemd::release(const std::string& unit, pid_t main, const std::vector<pid_t>& pids) {
  if (!valid_service_name(unit)) return make_error(ErrorKind::Invalid, "`", unit, "` is not a service unit name");
  remove_dropin(unit);  // whatever happens below, the unit gets its own settings back
  auto dir = SL_TRY_CTX(cgroup_dir(unit), "unit ", unit,
                        " stopped while its gateway was away; the gateway runs "
                        "outside it");
  const std::string procs = dir + "/cgroup.procs";
  for (pid_t p : pids) {
    // Threads follow their process (cgroup.procs); a process that has gone is no error.
    if (auto w = sys::write_file(procs, std::to_string(p)); !w.ok() && ::kill(p, 0) == 0)
      return w.error().wrap(cat("moving pid ", p, " into the cgroup of ", unit));
  }
  auto current = main_pid(unit);
  pid_t before = current.ok() ? *current : 0;
  if (before != main) {
    pid_t helper = ::fork();
    if (helper < 0) return errno_error("fork");
    if (helper == 0) {
      detach_stdio();
      ::close_range(3, ~0U, 0);
      child_join_and_notify(procs.c_str(), main);
      for (;;) ::pause();  // alive until systemd has read the message (it looks the sender up)
    }
    auto w = wait_main_pid(unit, main);
    ::kill(helper, SIGKILL);
    while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
    }
    SL_TRY(std::move(w));
  }
  if (before > 0 && before != main && is_stand_in(before)) ::kill(before, SIGKILL);
  SL_LOG(Info, kModule, unit, ": pid ", main, " is its main process again");
  return ok();
}

}  // namespace seamless::guest
