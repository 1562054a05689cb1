// SPDX-License-Identifier: Apache-2.0
// CRIU through its command line.
#include "guest-agent/criu.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <sstream>

#include "common/fd.h"
#include "common/process.h"
#include "common/sys.h"
#include "common/time.h"

namespace seamless::guest {

Result<void> CriuBinary::run_criu(const std::vector<std::string>& argv, const std::string& log,
                                  const std::string& what) {
  constexpr Millis kTimeout(300000);
  auto r = SL_TRY(runner_ ? runner_(argv, kTimeout) : run(argv, kTimeout));
  if (r.status.success()) return ok();
  auto text = sys::read_file(root_ + log);
  std::string why = text.ok() ? criu_log_summary(*text) : r.err;
  return make_error(ErrorKind::Remote, what, " failed (", r.status.describe(), "): ", why, " [log `", log, "`]");
}

std::string criu_log_summary(std::string_view log) {
  std::vector<std::string> errors, tail;
  std::istringstream in{std::string(log)};
  for (std::string line; std::getline(in, line);) {
    if (line.find("Error") != std::string::npos) errors.push_back(line);
    tail.push_back(line);
    if (tail.size() > 3) tail.erase(tail.begin());
  }
  const auto& pick = errors.empty() ? tail : errors;
  std::string out;
  for (size_t i = 0; i < pick.size() && i < 4; ++i) out += (i ? " | " : "") + pick[i];
  return out.empty() ? "no log" : out;
}

namespace {

// CRIU in another process's mount namespace (nsenter), where our images directory may be
// out of reach or read-only: it gets the directory as an inherited descriptor instead,
// named /proc/self/fd/N. Returns the path CRIU uses and keeps the descriptor open.
Result<std::string> enter_mount_ns(pid_t pid, const std::string& images, std::vector<std::string>* argv,
                                   UniqueFd* dir) {
  dir->reset(::open(images.c_str(), O_RDONLY | O_DIRECTORY));  // inherited: not close-on-exec
  if (!dir->valid()) return errno_error(cat("opening `", images, "`"));
  argv->insert(argv->begin(), {"nsenter", cat("--mount=/proc/", pid, "/ns/mnt"), "--"});
  return cat("/proc/self/fd/", dir->get());
}

}  // namespace

Result<void> CriuBinary::dump(const DumpRequest& req) {
  std::vector<std::string> argv;
  UniqueFd dir;
  std::string images = req.images;
  if (req.mount_ns_of > 0) images = SL_TRY(enter_mount_ns(req.mount_ns_of, req.images, &argv, &dir));
  argv.insert(argv.end(), {path_, "dump", "-t", std::to_string(req.root), "-D", images, "-o", "dump.log", "-v4",
                           "--tcp-established", "--file-locks"});
  if (req.shell_job) argv.push_back("--shell-job");
  for (uint64_t inode : req.external_unix) argv.insert(argv.end(), {"--external", cat("unix[", inode, "]")});
  if (req.external_datagrams) argv.push_back("--ext-unix-sk");
  for (const auto& key : req.external_files) argv.insert(argv.end(), {"--external", key});
  return run_criu(argv, req.images + "/dump.log", cat("criu dump of pid ", req.root));
}

Result<pid_t> CriuBinary::restore(const RestoreRequest& req) {
  // A few seconds for init to reap; a pid still taken after that makes CRIU say so.
  for (pid_t pid : req.pids)
    for (Deadline d(Millis(10000)); !d.expired() && ::kill(pid, 0) == 0;) ::usleep(20000);
  std::vector<std::string> argv = req.wrapper;
  const std::string pidfile = req.images + "/restore.pid";
  ::unlink((root_ + pidfile).c_str());
  UniqueFd dir;
  std::string images = req.images;
  if (req.mount_ns_of > 0) images = SL_TRY(enter_mount_ns(req.mount_ns_of, req.images, &argv, &dir));
  argv.insert(argv.end(), {path_, "restore", "-D", images, "-o", req.log_name, "-v4", "--tcp-established",
                           "--file-locks", "-d", "--pidfile", images + "/restore.pid"});
  // A service's namespace may see the cgroup tree read-only: the caller places the tree.
  if (req.mount_ns_of > 0 || req.keep_cgroup) argv.push_back("--manage-cgroups=ignore");
  if (req.shell_job) argv.push_back("--shell-job");
  if (req.leave_stopped) argv.push_back("--leave-stopped");
  if (req.external_datagrams) argv.push_back("--ext-unix-sk");
  for (const auto& i : req.inherit) argv.insert(argv.end(), {"--inherit-fd", cat("fd[", i.fd, "]:", i.key)});
  SL_TRY(run_criu(argv, req.images + "/" + req.log_name, cat("criu restore from `", req.images, "`")));
  if (!root_.empty()) return 0;  // restored elsewhere: no pid of ours to report
  auto text = sys::read_file(pidfile);
  if (!text.ok()) return 0;  // restored inside another pid namespace: no pid of ours to report
  return pid_t(std::atoi(text->c_str()));
}

Result<std::string> CriuBinary::version() {
  auto out = SL_TRY(run_ok({path_, "--version"}));
  // "Version: 3.17.1\n"
  auto colon = out.find(':');
  std::string v = colon == std::string::npos ? out : out.substr(colon + 1);
  while (!v.empty() && (v.front() == ' ')) v.erase(v.begin());
  if (auto nl = v.find('\n'); nl != std::string::npos) v.resize(nl);
  return v;
}

}  // namespace seamless::guest
