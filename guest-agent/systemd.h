// SPDX-License-Identifier: Apache-2.0
// Gateways that are systemd services. While a gateway is away (dumped, in a sink), its
// unit must stay active without systemd starting a second copy (Restart=) or stopping it,
// and once the gateway is restored, the restored process must be the unit's main PID in
// the unit's own cgroup, as if it had never left.
//
// How: a runtime drop-in (Restart=no, RefuseManualStop=yes, NotifyAccess=all) and a
// stand-in process ("sl-standin") in the unit's cgroup that becomes its main PID before
// the dump; after the restore the restored processes join the cgroup, the restored root
// becomes the main PID again (sd_notify MAINPID= from inside the cgroup), the stand-in
// ends and the drop-in goes. Everything is runtime only (/run) and undone on every path.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace seamless::guest {

// The seam: systemd for real, a fake in unit tests.
class ServiceManager {
 public:
  virtual ~ServiceManager() = default;
  // The unit's main PID (0 when it has none).
  virtual Result<pid_t> main_pid(const std::string& unit) = 0;
  // The stand-in hold() made the unit's main PID; an error when the unit is not held.
  virtual Result<pid_t> stand_in(const std::string& unit) = 0;
  // Before the dump of the units' main processes: from now on systemd neither restarts nor
  // stops them, and a stand-in is each one's main PID. All or nothing; undone by release().
  virtual Result<void> hold(const std::vector<std::string>& units) = 0;
  // After the restore (or when the dump is undone): `pids` join the unit's cgroup and
  // `main` is its main PID; the stand-in ends. The unit's own settings apply again at the
  // next apply().
  virtual Result<void> release(const std::string& unit, pid_t main, const std::vector<pid_t>& pids) = 0;
  // Makes systemd reread the released units' settings, in the background (a daemon-reload
  // takes seconds in a small VM, and a wake does not wait for it).
  virtual void apply() = 0;
};

// systemd as PID 1 of this machine, through systemctl, its notify socket and the cgroup tree.
class Systemd : public ServiceManager {
 public:
  // Whether systemd manages this machine (/run/systemd/system exists).
  static bool running();
  Result<pid_t> main_pid(const std::string& unit) override;
  Result<pid_t> stand_in(const std::string& unit) override;
  Result<void> hold(const std::vector<std::string>& units) override;
  Result<void> release(const std::string& unit, pid_t main, const std::vector<pid_t>& pids) override;
  void apply() override;

 private:
  Result<std::string> property(const std::string& unit, const std::string& name);
  Result<std::string> cgroup_dir(const std::string& unit);
  Result<void> wait_main_pid(const std::string& unit, pid_t want);
  Result<pid_t> start_stand_in(const std::string& unit, pid_t main);
  void remove_dropin(const std::string& unit);
  bool reload_pending_ = false;
};

// The drop-in that keeps a unit as it is while its gateway is away.
std::string hold_dropin_text();
// Where it lives: /run/systemd/system/UNIT.d/50-seamless-park.conf.
std::string hold_dropin_path(const std::string& unit);

}  // namespace seamless::guest
