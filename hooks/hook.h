// SPDX-License-Identifier: Apache-2.0
// The libvirt qemu hook (/etc/libvirt/hooks/qemu.d/50-seamless): keeps seamless in step
// with domain lifecycle. It parses, acts on the host only, and exits 0 quickly; it never
// calls libvirt (libvirtd waits for hooks and would deadlock).
#pragma once

#include <string>
#include <vector>

#include "common/result.h"
#include "common/time.h"

namespace seamless::hook {

struct Env {
  std::string libvirt_run_dir = "/run/libvirt/qemu";  // DOMAIN.pid
  std::string state_dir = "/run/seamless/suspend";    // DOMAIN.json of parked domains
  std::string proc = "/proc";
  bool file_knobs = false;  // tests: plain files instead of libcgroup
  int swappiness = 100;     // v1: QEMU's anonymous memory may go to swap as readily as cache
  std::string controller_socket = "/run/seamless/seamlessd.sock";  // seamlessd
  std::string spool_dir = "/run/seamless/hook-spool";              // notices seamlessd was not there for
  Millis notify_timeout = Millis(2000);
};

// Notices seamlessd acts on. Each is sent to its control socket (`hook` command, a short
// timeout); when seamlessd is down the notice waits in the spool until it starts.
bool is_notice(const std::string& operation);
Result<void> notify(const std::string& domain, const std::string& operation, const Env& env);

// A parked domain must not migrate: its gateway lives in a sink on this host. libvirt
// passes the domain's XML on the hook's stdin; the park state is in its metadata. The
// error is the message libvirt shows.
Result<void> check_migration(const std::string& domain, const std::string& domain_xml);

// args: DOMAIN OPERATION [SUB-OPERATION [EXTRA]] as libvirt passes them.
// "started": allow the domain's memory cgroup to swap (v1: memsw unlimited, swappiness;
// v2: memory.swap.max=max). "release": forget the domain's suspend state. "stopped",
// "release", "reconnect": notify seamlessd. Others: nothing.
Result<void> handle(const std::vector<std::string>& args, const Env& env);

}  // namespace seamless::hook
