// SPDX-License-Identifier: Apache-2.0
// libvirt connection, domain handles and the pass-through QMP/QGA transports.
#include "qmp/libvirt.h"

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/log.h"

namespace seamless::virt {
namespace {

void quiet(void*, virErrorPtr) {}  // errors are reported through Result, not libvirt's stderr

void ensure_event_loop() {
  static std::once_flag once;
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, quiet);
    if (virEventRegisterDefaultImpl() < 0) {
      SL_LOG(Warn, "libvirt", "cannot register the default event loop: monitor events unavailable");
      return;
    }
    std::thread([] {
      for (;;) {
        if (virEventRunDefaultImpl() < 0) SL_LOG(Warn, "libvirt", "event loop iteration failed");
      }
    }).detach();
  });
}

}  // namespace

Error last_error(std::string_view operation) {
  virErrorPtr e = virGetLastError();
  Error err;
  err.kind = ErrorKind::System;
  err.message = cat(operation, ": ", e && e->message ? e->message : "unknown libvirt error");
  if (e) {
    switch (e->code) {
      case VIR_ERR_NO_DOMAIN: err.kind = ErrorKind::NotFound; break;
      case VIR_ERR_AGENT_UNRESPONSIVE:
      case VIR_ERR_OPERATION_TIMEOUT: err.kind = ErrorKind::Timeout; break;
      case VIR_ERR_OPERATION_INVALID:
      case VIR_ERR_INVALID_ARG: err.kind = ErrorKind::Invalid; break;
      default:
        // The guest agent's own refusal, relayed ("unable to execute QEMU agent command
        // 'guest-exec': ..."): the peer's answer, as over a direct socket.
        if (e->message &&
            std::string_view(e->message).find("unable to execute QEMU agent command") != std::string_view::npos)
          err.kind = ErrorKind::Remote;
        break;
    }
  }
  virResetLastError();
  return err;
}

Result<Connection> Connection::open(const std::string& uri) {
  ensure_event_loop();
  virConnectPtr c = virConnectOpen(uri.c_str());
  if (c == nullptr) return last_error(cat("connecting to libvirt at `", uri, "`"));
  return Connection(c);
}

Connection::~Connection() {
  if (conn_) virConnectClose(conn_);
}

Result<Domain> Connection::lookup(const std::string& name) const {
  virDomainPtr d = virDomainLookupByName(conn_, name.c_str());
  if (d == nullptr) return last_error(cat("looking up domain `", name, "`"));
  return Domain(d);
}

Result<Domain> Connection::define_and_start(const std::string& xml) const {
  virDomainPtr d = virDomainDefineXML(conn_, xml.c_str());
  if (d == nullptr) return last_error("defining domain");
  Domain dom(d);
  if (virDomainCreate(d) < 0) return last_error(cat("starting domain `", dom.name(), "`"));
  return dom;
}

Result<std::vector<Domain>> Connection::list() const {
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(conn_, &doms, 0);
  if (n < 0) return last_error("listing domains");
  std::vector<Domain> out;
  for (int i = 0; i < n; ++i) out.emplace_back(doms[i]);
  std::free(doms);
  return out;
}

Domain::~Domain() {
  if (dom_) virDomainFree(dom_);
}

std::string Domain::name() const {
  const char* n = virDomainGetName(dom_);
  return n ? n : "?";
}

Result<bool> Domain::active() const {
  int r = virDomainIsActive(dom_);
  if (r < 0) return last_error(cat("querying domain `", name(), "`"));
  return r == 1;
}

Result<void> Domain::destroy() {
  if (virDomainDestroy(dom_) < 0) return last_error(cat("destroying domain `", name(), "`"));
  return ok();
}

Result<std::string> Domain::xml() const {
  char* x = virDomainGetXMLDesc(dom_, 0);
  if (x == nullptr) return last_error(cat("reading the XML of domain `", name(), "`"));
  std::string out(x);
  std::free(x);
  return out;
}

Result<void> Domain::set_metadata(const std::string& key, const std::string& uri, const std::string& element) {
  unsigned int flags = 0;
  if (virDomainIsActive(dom_) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (virDomainIsPersistent(dom_) == 1) flags |= VIR_DOMAIN_AFFECT_CONFIG;
  if (flags == 0) return ok();
  if (virDomainSetMetadata(dom_, VIR_DOMAIN_METADATA_ELEMENT, element.empty() ? nullptr : element.c_str(),
                           element.empty() ? nullptr : key.c_str(), uri.c_str(), flags) < 0)
    return last_error(cat(element.empty() ? "removing" : "setting", " the seamless metadata of domain `", name(), "`"));
  return ok();
}

Result<uint64_t> Domain::cpu_shares() const {
  int n = 0;
  char* type = virDomainGetSchedulerType(dom_, &n);
  if (type == nullptr) return last_error(cat("the scheduler of domain `", name(), "`"));
  std::free(type);
  std::vector<virTypedParameter> params(size_t(std::max(n, 1)));
  if (virDomainGetSchedulerParametersFlags(dom_, params.data(), &n, VIR_DOMAIN_AFFECT_LIVE) < 0)
    return last_error(cat("the scheduler parameters of domain `", name(), "`"));
  for (int i = 0; i < n; ++i)
    if (std::string_view(params[size_t(i)].field) == VIR_DOMAIN_SCHEDULER_CPU_SHARES &&
        params[size_t(i)].type == VIR_TYPED_PARAM_ULLONG)
      return uint64_t(params[size_t(i)].value.ul);
  return make_error(ErrorKind::NotFound, "domain `", name(), "` has no CPU weight (cpu_shares)");
}

Result<void> Domain::set_cpu_shares(uint64_t shares) {
  virTypedParameter p{};
  std::snprintf(p.field, sizeof p.field, "%s", VIR_DOMAIN_SCHEDULER_CPU_SHARES);
  p.type = VIR_TYPED_PARAM_ULLONG;
  p.value.ul = shares;
  if (virDomainSetSchedulerParametersFlags(dom_, &p, 1, VIR_DOMAIN_AFFECT_LIVE) < 0)
    return last_error(cat("setting the CPU weight of domain `", name(), "` to ", shares));
  return ok();
}

Result<void> Domain::undefine() {
  if (virDomainUndefine(dom_) < 0) return last_error(cat("undefining domain `", name(), "`"));
  return ok();
}

}  // namespace seamless::virt

namespace seamless::qmp {

// libvirt accepts one QMP event registration per domain and connection at a time, so
// every LibvirtMonitor of a domain shares one, and events fan out to each monitor's bus.
struct EventRegistry {
  struct Entry {
    virConnectPtr conn = nullptr;
    int callback_id = -1;
    std::vector<LibvirtMonitor*> monitors;
  };
  std::mutex mu;
  std::map<std::string, Entry> entries;

  static EventRegistry& get() {
    static EventRegistry r;
    return r;
  }

  static void on_event(virConnectPtr, virDomainPtr dom, const char* event, long long seconds, unsigned int micros,
                       const char* details, void*) {
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(dom, uuid) < 0) return;
    auto& r = get();
    std::lock_guard lock(r.mu);
    auto it = r.entries.find(uuid);
    if (it == r.entries.end()) return;
    for (LibvirtMonitor* m : it->second.monitors) {
      Event ev;
      ev.name = event ? event : "";
      ev.timestamp = static_cast<double>(seconds) + micros / 1e6;
      if (details != nullptr) {
        if (auto data = parse(details); data.ok()) ev.data = std::move(data).value();
      }
      m->bus_.publish(std::move(ev));
    }
  }

  Result<void> add(LibvirtMonitor* m) {
    std::lock_guard lock(mu);
    Entry& e = entries[m->uuid_];
    if (e.monitors.empty()) {
      e.conn = virDomainGetConnect(m->domain_.get());
      e.callback_id =
          virConnectDomainQemuMonitorEventRegister(e.conn, m->domain_.get(), nullptr, on_event, nullptr, nullptr, 0);
      if (e.callback_id < 0) {
        entries.erase(m->uuid_);
        return virt::last_error(cat("subscribing to QMP events of domain `", m->domain_.name(), "`"));
      }
    }
    e.monitors.push_back(m);
    return ok();
  }

  void remove(LibvirtMonitor* m) {
    std::lock_guard lock(mu);
    auto it = entries.find(m->uuid_);
    if (it == entries.end()) return;
    std::erase(it->second.monitors, m);
    if (it->second.monitors.empty()) {
      virConnectDomainQemuMonitorEventDeregister(it->second.conn, it->second.callback_id);
      entries.erase(it);
    }
  }
};

LibvirtMonitor::LibvirtMonitor(const virt::Domain& domain, Limits limits)
    : EventSource(limits.max_events), domain_(domain), peer_(cat("libvirt monitor of domain `", domain.name(), "`")) {
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(domain.get(), uuid) == 0) uuid_ = uuid;
}

Result<std::unique_ptr<LibvirtMonitor>> LibvirtMonitor::attach(const virt::Domain& domain, Limits limits) {
  std::unique_ptr<LibvirtMonitor> m(new LibvirtMonitor(domain, limits));
  if (m->uuid_.empty()) return virt::last_error(cat("reading the UUID of domain `", domain.name(), "`"));
  if (auto r = EventRegistry::get().add(m.get()); !r.ok()) {
    m->uuid_.clear();  // not registered: the destructor has nothing to remove
    return std::move(r).error();
  }
  return m;
}

LibvirtMonitor::~LibvirtMonitor() {
  if (!uuid_.empty()) EventRegistry::get().remove(this);
}

Result<Json> LibvirtMonitor::call(std::string_view command, std::string_view args, Millis) {
  std::string request = encode_request(command, args, {});
  char* reply = nullptr;
  if (virDomainQemuMonitorCommand(domain_.get(), request.c_str(), &reply, 0) < 0)
    return virt::last_error(cat(peer_, ": `", command, "`"));
  std::unique_ptr<char, decltype(&std::free)> owned(reply, &std::free);
  auto message = SL_TRY_CTX(parse(reply ? reply : ""), peer_, ": reply to `", command, "`");
  return decode_reply(std::move(message), command, peer_);
}

Result<Event> LibvirtMonitor::wait_event(std::string_view name, Millis timeout) {
  if (auto ev = bus_.wait(name, Deadline(timeout))) return std::move(*ev);
  return make_error(ErrorKind::Timeout, "no `", name.empty() ? "any" : name, "` event from ", peer_, " within ",
                    timeout.count(), " ms");
}

LibvirtAgent::LibvirtAgent(const virt::Domain& domain)
    : domain_(domain), peer_(cat("libvirt guest agent of domain `", domain.name(), "`")) {}

Result<Json> LibvirtAgent::call(std::string_view command, std::string_view args, Millis timeout) {
  std::string request = encode_request(command, args, {});
  int seconds = static_cast<int>(std::max<long long>(1, (timeout.count() + 999) / 1000));
  char* reply = virDomainQemuAgentCommand(domain_.get(), request.c_str(), seconds, 0);
  if (reply == nullptr) return virt::last_error(cat(peer_, ": `", command, "`"));
  std::unique_ptr<char, decltype(&std::free)> owned(reply, &std::free);
  auto message = SL_TRY_CTX(parse(reply), peer_, ": reply to `", command, "`");
  return decode_reply(std::move(message), command, peer_);
}

}  // namespace seamless::qmp
