// SPDX-License-Identifier: Apache-2.0
// The metadata of the directory trees a gateway names, recorded at dump for a sink to
// answer the gateway's look-ups from (packfmt::TreeEntry, pack/tree.h). Which trees: the
// directories behind the absolute paths in a gateway's command line and environment and
// its working directory (Tomcat's -Dcatalina.base=/var/lib/tomcat10 and, through its
// links, /etc/tomcat10, /var/cache/tomcat10, ...), and the file the C library looks at by
// itself (/etc/localtime and the time zone it links to); nothing of the packaged system
// (/usr, /bin, /lib, ...: the sink checks and ships those files by content) and nothing
// of the kernel's (/proc, /sys, /dev). Bounded: a few thousand entries at most; a
// directory cut short, or holding something that is not recorded (a file the gateway
// holds open or maps: the sink has its real contents; a socket), is not complete, so a
// sink never answers for what it lacks.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "pack/tree.h"

namespace seamless::guest {

struct TreeLimits {
  size_t max_entries = 4000;  // in all
  int max_depth = 6;          // below a named directory
  size_t max_roots = 32;      // named directories and the directories links lead to
};

// The directories `pid` names (see above), lexically normal, as it sees them.
std::vector<std::string> named_dirs(pid_t pid, const std::string& proc_root = "/proc");

// The cgroup directories `pid` is in, as its mount namespace shows them (a JVM re-reads
// its CPU and memory limits there now and then): for each line of /proc/PID/cgroup, the
// cgroup or cgroup2 mount of that hierarchy (from /proc/PID/mountinfo) and the path below
// its root. Only directories below /sys/fs/cgroup (not the root cgroup itself).
std::vector<std::string> cgroup_dirs(pid_t pid, const std::string& proc_root = "/proc");

// Whether `path` (plain absolute) lies in a part of the file system that is never
// recorded: the packaged system, the kernel's, or a top-level directory itself.
bool outside_tree(const std::string& path);

// The trees below `dirs` as seen through `root` ("" = this process's view, or
// "/proc/PID/root" for a gateway in a mount namespace of its own). `skip` names the
// files the pack carries otherwise (not recorded; their directories are not complete).
// Adds to `out` (paths already there are kept) up to `limits`.
void collect_tree(const std::string& root, const std::vector<std::string>& dirs, const std::set<std::string>& skip,
                  const TreeLimits& limits, std::vector<packfmt::TreeEntry>* out);

// Records each of `dirs` (cgroup_dirs()) with the files in it and their contents as read
// now (the kernel's files have no size: a recorded size is what was read), not their
// subdirectories; within the same limits and budget as collect_tree.
void collect_cgroups(const std::string& root, const std::vector<std::string>& dirs, const TreeLimits& limits,
                     std::vector<packfmt::TreeEntry>* out);

}  // namespace seamless::guest
