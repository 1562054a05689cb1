// SPDX-License-Identifier: Apache-2.0
// The CRIU seam: dump and restore of one process tree. The real runner executes the
// `criu` binary; unit tests put a fake here.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/result.h"
#include "common/time.h"

namespace seamless::guest {

struct DumpRequest {
  pid_t root = 0;
  std::string images;  // directory, created by the caller
  bool shell_job = false;
  // Unix sockets of the tree whose peer lives outside it, dumped as external
  // (`--external unix[INODE]`); a restore must hand each one in.
  std::vector<uint64_t> external_unix;
  // Files dumped as external (`--external KEY`, e.g. "file[17:5]"); a restore hands each in.
  std::vector<std::string> external_files;
  // Datagram sockets connected to a named socket outside (a logger: syslog's /dev/log, the
  // journal's dev-log) are dumped as external (`--ext-unix-sk`); a restore connects them
  // to the same name again, which must exist there.
  bool external_datagrams = false;
  // CRIU runs in this process's mount namespace (a service's private one, e.g. systemd's
  // PrivateTmp=): the tree's mounts are its own and are not dumped; 0: ours.
  pid_t mount_ns_of = 0;
};

// An open descriptor of the restoring process that stands in for a file of the images
// (`--inherit-fd fd[FD]:KEY`, KEY e.g. "socket:[1234]"). It must not be close-on-exec.
struct InheritFd {
  int fd = -1;
  std::string key;
};

struct RestoreRequest {
  std::string images;
  bool shell_job = false;
  // Commands to run CRIU under (e.g. `unshare ...` for a throw-away restore); empty: none.
  std::vector<std::string> wrapper;
  std::string log_name = "restore.log";
  // Pids the images take back. The tree a dump just killed holds them until its parent
  // (init) has reaped it; restoring before that fails ("Can't fork for PID: File exists").
  std::vector<pid_t> pids;
  std::vector<InheritFd> inherit;
  // The restored tree stays stopped (SIGSTOP) instead of running on.
  bool leave_stopped = false;
  // Restored into this process's mount namespace (see DumpRequest); 0: ours.
  pid_t mount_ns_of = 0;
  // The images hold external datagram sockets (see DumpRequest).
  bool external_datagrams = false;
  // The restored tree stays in CRIU's cgroup (a sink container's, with its limits) rather
  // than the cgroups the images name.
  bool keep_cgroup = false;
};

class Criu {
 public:
  virtual ~Criu() = default;
  // Checkpoints the tree and kills it, leaving its TCP connections locked (no RST).
  virtual Result<void> dump(const DumpRequest& req) = 0;
  // Restores detached; returns the restored root pid (as seen by the caller).
  virtual Result<pid_t> restore(const RestoreRequest& req) = 0;
  virtual Result<std::string> version() = 0;
};

class CriuBinary final : public Criu {
 public:
  // Runs a command line to its end (default: here, seamless::run).
  using Runner = std::function<Result<RunResult>(const std::vector<std::string>& argv, Millis timeout)>;
  explicit CriuBinary(std::string path = "criu") : path_(std::move(path)) {}
  // CRIU run elsewhere, e.g. in a container's namespaces: the requests' paths are as CRIU
  // sees them, and this side reads its logs and pid files below `root` (the container's
  // root as seen from here). Pids to wait for are not ours there: leave them empty.
  CriuBinary(std::string path, Runner runner, std::string root)
      : path_(std::move(path)), runner_(std::move(runner)), root_(std::move(root)) {}
  Result<void> dump(const DumpRequest& req) override;
  Result<pid_t> restore(const RestoreRequest& req) override;
  Result<std::string> version() override;

 private:
  Result<void> run_criu(const std::vector<std::string>& argv, const std::string& log, const std::string& what);
  std::string path_;
  Runner runner_;
  std::string root_;
};

// The lines of a CRIU log that say what went wrong (the "Error" lines, else its tail).
std::string criu_log_summary(std::string_view log);

}  // namespace seamless::guest
