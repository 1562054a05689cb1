// SPDX-License-Identifier: Apache-2.0
// LibvirtDomain: the real Domain behind the suspend engine.
#include "hooks/libvirt_domain.h"

#include <libvirt/libvirt.h>

namespace seamless::suspend {

Result<std::unique_ptr<LibvirtDomain>> LibvirtDomain::open(virt::Domain& domain) {
  std::unique_ptr<LibvirtDomain> d(new LibvirtDomain(domain));
  d->monitor_ = SL_TRY(qmp::LibvirtMonitor::attach(domain));
  d->agent_ = std::make_unique<qmp::LibvirtAgent>(domain);
  return d;
}

Result<cgroup::Memory*> LibvirtDomain::memory() {
  if (!memory_) {
    pid_t pid = SL_TRY(cgroup::qemu_pid(name()));
    auto group = SL_TRY(cgroup::for_pid(pid));
    memory_.emplace(group, SL_TRY(cgroup::libcgroup_knobs(group)));
  }
  return &*memory_;
}

Result<void> LibvirtDomain::save_to_disk() {
  if (virDomainManagedSave(domain_.get(), 0) < 0) return virt::last_error(cat("managed save of `", name(), "`"));
  memory_.reset();  // QEMU is gone; a restored one has a new pid
  return ok();
}

Result<void> LibvirtDomain::restore_from_disk() {
  if (virDomainCreate(domain_.get()) < 0) return virt::last_error(cat("restoring `", name(), "` from managed save"));
  return ok();
}

}  // namespace seamless::suspend
