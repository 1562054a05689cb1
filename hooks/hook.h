// SPDX-License-Identifier: Apache-2.0
// The libvirt qemu hook (/etc/libvirt/hooks/qemu.d/50-seamless): keeps seamless in step
// with domain lifecycle. It parses, acts on the host only, and exits 0 quickly; it never
// calls libvirt (libvirtd waits for hooks and would deadlock).
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::hook {

struct Env {
  std::string libvirt_run_dir = "/run/libvirt/qemu";  // DOMAIN.pid
  std::string state_dir = "/run/seamless/suspend";    // DOMAIN.json of parked domains
  std::string proc = "/proc";
  bool file_knobs = false;  // tests: plain files instead of libcgroup
  int swappiness = 100;     // v1: QEMU's anonymous memory may go to swap as readily as cache
};

// args: DOMAIN OPERATION [SUB-OPERATION [EXTRA]] as libvirt passes them.
// "started": allow the domain's memory cgroup to swap (v1: memsw unlimited, swappiness;
// v2: memory.swap.max=max). "release": forget the domain's parked state. Others: nothing.
Result<void> handle(const std::vector<std::string>& args, const Env& env);

}  // namespace seamless::hook
