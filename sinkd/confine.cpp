// SPDX-License-Identifier: Apache-2.0
// A cgroup v2 per sink container, with memory and pids limits.
#include "sinkd/confine.h"

#include <errno.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "common/sys.h"

namespace seamless::sink {
namespace {

bool is_cgroup2(const std::string& path) {
  struct statfs fs {};
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC;
}

Result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) return errno_error(cat("mkdir `", path, "`"));
  return ok();
}

// Enables the controllers below `dir` (each named in the error if the kernel lacks it).
Result<void> enable_controllers(const std::string& dir) {
  for (const char* c : {"+memory", "+pids"})
    SL_TRY_CTX(sys::write_file(dir + "/cgroup.subtree_control", c), "enabling the ", c + 1, " controller below `", dir,
               "`");
  return ok();
}

uint64_t read_number(const std::string& path) {
  auto text = sys::read_file(path, 64);
  return text.ok() ? std::strtoull(text->c_str(), nullptr, 10) : 0;
}

// Every container's cgroup is below this one, below the mount.
constexpr const char* kParent = "/seamless";

}  // namespace

std::string container_cgroup(const std::string& mount, const std::string& id) { return mount + kParent + "/" + id; }

Result<std::string> prepare_container_cgroups(const std::string& mount) {
  SL_TRY(make_dir(mount));
  if (!is_cgroup2(mount) &&
      ::mount("cgroup2", mount.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return errno_error(cat("mounting cgroup2 at `", mount, "`"));
  SL_TRY(enable_controllers(mount));
  const std::string parent = mount + kParent;
  SL_TRY(make_dir(parent));
  SL_TRY(enable_controllers(parent));
  return parent;
}

Result<std::string> make_container_cgroup(const std::string& parent, const std::string& id,
                                          const ContainerLimits& limits) {
  const std::string dir = parent + "/" + id;
  if (::mkdir(dir.c_str(), 0700) != 0) return errno_error(cat("mkdir `", dir, "`"));
  auto limit = [&]() -> Result<void> {
    SL_TRY(sys::write_file(dir + "/memory.max", std::to_string(limits.memory_bytes)));
    // Swap would let a container outgrow its limit on the sink's swap.
    if (::access((dir + "/memory.swap.max").c_str(), F_OK) == 0) SL_TRY(sys::write_file(dir + "/memory.swap.max", "0"));
    SL_TRY(sys::write_file(dir + "/pids.max", std::to_string(limits.pids)));
    return ok();
  };
  if (auto r = limit(); !r.ok()) {
    ::rmdir(dir.c_str());
    return std::move(r).error().wrap(cat("limits of cgroup `", dir, "`"));
  }
  return dir;
}

Result<void> join_cgroup(const std::string& dir) {
  return sys::write_file(dir + "/cgroup.procs", std::to_string(::getpid()));
}

Result<void> remove_cgroup(const std::string& dir, Millis timeout) {
  bool killed = false;
  for (Deadline d(timeout);; std::this_thread::sleep_for(Millis(50))) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return ok();
    if (errno != EBUSY || d.expired()) return errno_error(cat("rmdir `", dir, "`"));
    if (!killed) killed = sys::write_file(dir + "/cgroup.kill", "1").ok();
  }
}

Result<CgroupUsage> cgroup_usage(const std::string& dir) {
  if (!is_cgroup2(dir)) return make_error(ErrorKind::NotFound, "`", dir, "` is no cgroup");
  CgroupUsage u;
  u.memory_bytes = read_number(dir + "/memory.current");
  u.memory_peak_bytes = read_number(dir + "/memory.peak");
  u.pids = read_number(dir + "/pids.current");
  return u;
}

}  // namespace seamless::sink
