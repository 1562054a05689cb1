// SPDX-License-Identifier: Apache-2.0
// The suspend engine's Domain for libvirt-managed VMs: QMP/QGA through libvirt, the
// QEMU cgroup through libcgroup, disk mode through managed save.
#pragma once

#include <memory>
#include <optional>

#include "hooks/suspend.h"
#include "qmp/libvirt.h"

namespace seamless::suspend {

class LibvirtDomain final : public Domain {
 public:
  // `domain` must outlive this object.
  static Result<std::unique_ptr<LibvirtDomain>> open(virt::Domain& domain);
  std::string name() const override { return domain_.name(); }
  qmp::Channel& monitor() override { return *monitor_; }
  qmp::Channel* agent() override { return agent_.get(); }
  Result<cgroup::Memory*> memory() override;
  Result<void> save_to_disk() override;
  Result<void> restore_from_disk() override;

 private:
  explicit LibvirtDomain(virt::Domain& d) : domain_(d) {}
  virt::Domain& domain_;
  std::unique_ptr<qmp::LibvirtMonitor> monitor_;
  std::unique_ptr<qmp::LibvirtAgent> agent_;
  std::optional<cgroup::Memory> memory_;
};

}  // namespace seamless::suspend
