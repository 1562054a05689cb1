// SPDX-License-Identifier: Apache-2.0
// The suspend engine's Domain for plain QEMU reached through its own sockets
// (`-qmp unix:...` and a guest-agent chardev). QEMU must run in a memory cgroup of its
// own. Disk mode saves the state with `migrate exec:cat > FILE` and quits; resume
// relaunches QEMU's command line with `-incoming` in the same cgroup.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hooks/suspend.h"
#include "qmp/socket.h"

namespace seamless::suspend {

class DirectDomain final : public Domain {
 public:
  // save_dir keeps the saved state (NAME.state) and how to relaunch (NAME.launch.json).
  // When `name` is given it must match QEMU's own -name (if it has one); and if QEMU is
  // gone because NAME was saved to disk, the domain opens offline: only
  // restore_from_disk() works until it has run, the monitor answers with an error.
  static Result<std::unique_ptr<DirectDomain>> open(const std::string& qmp_path, const std::string& qga_path,
                                                    const std::string& save_dir, const std::string& name = "");
  std::string name() const override { return name_; }
  qmp::Channel& monitor() override;
  qmp::Channel* agent() override;
  Result<cgroup::Memory*> memory() override;
  Result<void> save_to_disk() override;
  Result<void> restore_from_disk() override;

 private:
  DirectDomain() = default;
  Result<void> connect(Millis timeout);
  Result<void> online() const;
  std::string qmp_path_, qga_path_, save_dir_, name_;
  std::unique_ptr<qmp::QmpSocket> qmp_;
  std::unique_ptr<qmp::Channel> qga_;      // connects on first use
  std::unique_ptr<qmp::Channel> offline_;  // stands in for qmp_ while QEMU is saved to disk
  std::optional<cgroup::Memory> memory_;
};

}  // namespace seamless::suspend
