// SPDX-License-Identifier: Apache-2.0
// libvirt pass-through transports: QMP through virDomainQemuMonitorCommand and QGA
// through virDomainQemuAgentCommand, for domains whose sockets libvirt owns.
#pragma once

#include <libvirt/libvirt.h>

#include <memory>
#include <string>
#include <vector>

#include "qmp/channel.h"

namespace seamless::virt {

// The current libvirt error as an Error (kind from its code), wrapped with `operation`.
Error last_error(std::string_view operation);

class Domain;

// A libvirt connection. Opening one also starts libvirt's event loop thread (once per
// process) so that monitor events can be delivered.
class Connection {
 public:
  static Result<Connection> open(const std::string& uri = "qemu:///system");
  Connection(Connection&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}
  Connection& operator=(Connection&&) = delete;
  Connection(const Connection&) = delete;
  ~Connection();
  virConnectPtr get() const { return conn_; }
  Result<Domain> lookup(const std::string& name) const;
  Result<Domain> define_and_start(const std::string& xml) const;
  Result<std::vector<Domain>> list() const;  // active and defined

 private:
  explicit Connection(virConnectPtr c) : conn_(c) {}
  virConnectPtr conn_;
};

class Domain {
 public:
  explicit Domain(virDomainPtr d) : dom_(d) {}
  Domain(Domain&& other) noexcept : dom_(std::exchange(other.dom_, nullptr)) {}
  Domain& operator=(Domain&&) = delete;
  Domain(const Domain&) = delete;
  ~Domain();
  virDomainPtr get() const { return dom_; }
  std::string name() const;
  Result<bool> active() const;
  Result<void> destroy();           // hard stop
  Result<void> undefine();          // removes the persistent definition
  Result<std::string> xml() const;  // the live definition (the persistent one when off)
  // Sets (or, with an empty `element`, removes) the metadata element of namespace `uri`
  // in the live definition (when running) and the persistent one (when defined): a
  // domain parked to disk is not running, and its park state must survive that.
  Result<void> set_metadata(const std::string& key, const std::string& uri, const std::string& element);
  // The running domain's CPU weight against other domains (libvirt's cpu_shares: its
  // cgroup's cpu.shares, or cpu.weight on cgroup v2); set_cpu_shares changes it live only.
  Result<uint64_t> cpu_shares() const;
  Result<void> set_cpu_shares(uint64_t shares);

 private:
  virDomainPtr dom_;
};

}  // namespace seamless::virt

namespace seamless::qmp {

class LibvirtMonitor final : public Channel, public EventSource {
 public:
  // Subscribes to the domain's QMP events; `domain` must outlive the monitor.
  static Result<std::unique_ptr<LibvirtMonitor>> attach(const virt::Domain& domain, Limits limits = {});
  ~LibvirtMonitor() override;
  // libvirt applies its own monitor timeout; `timeout` bounds only our wait for events.
  Result<Json> call(std::string_view command, std::string_view args, Millis timeout) override;
  Result<Event> wait_event(std::string_view name, Millis timeout) override;
  std::string describe() const override { return peer_; }

 private:
  LibvirtMonitor(const virt::Domain& domain, Limits limits);
  friend struct EventRegistry;
  const virt::Domain& domain_;
  std::string peer_;
  std::string uuid_;  // key of the shared event registration
};

class LibvirtAgent final : public Channel {
 public:
  explicit LibvirtAgent(const virt::Domain& domain);
  // libvirt syncs with the agent itself before each command.
  Result<Json> call(std::string_view command, std::string_view args, Millis timeout) override;
  std::string describe() const override { return peer_; }
  // libvirt 9.0 stalls on agent requests of a few hundred KiB (measured: a 192 KiB
  // guest-file-write passes, 256 KiB times out and marks the agent unavailable).
  size_t transfer_chunk() const override { return 128 << 10; }

 private:
  const virt::Domain& domain_;
  std::string peer_;
};

}  // namespace seamless::qmp
