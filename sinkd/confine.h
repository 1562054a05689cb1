// SPDX-License-Identifier: Apache-2.0
// Confinement of a sink container's processes beyond its namespaces: a cgroup v2 of its
// own below the sink's, with memory and pids limits, which the container's init and every
// CRIU run in it join (so the restored gateways are born there), seen through a cgroup
// namespace rooted at it (a hand-back's images name "/", never the sink's hierarchy).
//
// The sink's cgroup2 hierarchy is mounted below the daemon's state directory, which no
// container sees (their root is an overlay of the sink's root file system alone).
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"
#include "common/time.h"

namespace seamless::sink {

struct ContainerLimits {
  uint64_t memory_bytes = uint64_t(512) << 20;  // memory.max (and memory.swap.max 0)
  uint64_t pids = 1024;                         // pids.max: processes and threads
};

// Mounts cgroup2 at `mount` unless one is there, enables the memory and pids controllers
// at its root and in `mount`/seamless, and returns that directory: the parent of every
// container's cgroup.
Result<std::string> prepare_container_cgroups(const std::string& mount);

// Where a container's cgroup is below the hierarchy mounted at `mount` (whether mounted
// by this process or an earlier one).
std::string container_cgroup(const std::string& mount, const std::string& id);

// Makes `parent`/`id` with the limits; returns its path.
Result<std::string> make_container_cgroup(const std::string& parent, const std::string& id,
                                          const ContainerLimits& limits);

// Moves the calling process into the cgroup `dir`.
Result<void> join_cgroup(const std::string& dir);

// Removes the cgroup `dir`, killing what is still in it (cgroup.kill) and waiting up to
// `timeout` for it to be gone.
Result<void> remove_cgroup(const std::string& dir, Millis timeout);

// What the container's cgroup says now: memory.current, memory.peak (0 where the kernel
// has none), pids.current.
struct CgroupUsage {
  uint64_t memory_bytes = 0, memory_peak_bytes = 0, pids = 0;
};
Result<CgroupUsage> cgroup_usage(const std::string& dir);

}  // namespace seamless::sink
