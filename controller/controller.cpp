// SPDX-License-Identifier: Apache-2.0
// Park and wake, step by step.
#include "controller/controller.h"

#include <cctype>
#include <ctime>
#include <filesystem>
#include <future>

#include "common/encoding.h"
#include "common/log.h"
#include "common/sys.h"
#include "controller/guest_helper.h"
#include "controller/shipping.h"
#include "hooks/libvirt_domain.h"
#include "hooks/suspend.h"
#include "qmp/guest.h"
#include "qmp/json.h"

namespace seamless::ctl {
namespace {

constexpr const char* kModule = "controller";
constexpr const char* kGuestPark = "/run/seamless-guest/park.pack";

// Where a park records the memory knobs its swap-out changes until they are back (see
// suspend::Options::limits_record): a seamlessd killed meanwhile leaves them for the next
// park or wake of the domain. The name as a file name, anything but [A-Za-z0-9._-] as `_`.
std::string limits_record(const std::string& domain) {
  const std::string dir = "/run/seamless/limits";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string file;
  for (char c : domain) file += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ? c : '_';
  return cat(dir, "/", file, ".json");
}
constexpr const char* kGuestWake = "/run/seamless-guest/wake.pack";
// libvirt's lowest cpu_shares: what a waking VM runs at while its sink hands back.
constexpr uint64_t kYieldedCpuShares = 2;
constexpr const char* kGuestShipment = "/run/seamless-guest/park.files";
constexpr const char* kWakeDir = "/run/seamless/wakes";
constexpr const char* kAnnounce = "{\"initial\":50,\"max\":550,\"rounds\":5,\"step\":100}";

std::string sink_pack(const std::string& id) { return cat("/run/seamless-pack-", id, ".pack"); }
std::string sink_back_pack(const std::string& id) { return cat("/run/seamless-pack-", id, "-back.pack"); }
std::string sink_shipment(const std::string& id) { return cat("/run/seamless-pack-", id, ".files"); }
std::string key(const std::string& sink, const std::string& container) { return sink + "/" + container; }

std::string report_json(const ProcedureReport& r) {
  std::string steps = "[";
  for (size_t i = 0; i < r.steps.size(); ++i) {
    const auto& s = r.steps[i];
    qmp::ArgWriter w;
    w.str("step", s.name).raw("seconds", cat(s.seconds)).boolean("ok", s.ok);
    if (s.undone) w.boolean("undone", true);
    if (!s.error.empty()) w.str("error", s.error);
    steps += (i ? "," : "") + w.finish();
  }
  return steps + "]";
}

Result<bool> running(qmp::Channel& monitor) {
  auto st = SL_TRY(qmp::execute(monitor, qmp::QueryStatus{}));
  return st.running;
}

// The monitor is reached through libvirt; a domain that is not running has none.
Result<void> cont_and_announce(qmp::Channel& monitor) {
  if (!SL_TRY(running(monitor))) SL_TRY_CTX(qmp::execute(monitor, qmp::Cont{}), "resuming");
  SL_TRY_CTX(monitor.call("announce-self", kAnnounce, Millis(30000)), "announce-self");
  return ok();
}

// The VM's IP addresses on its NIC `mac`, as the guest reported them (validated here:
// only well-formed addresses of that very interface reach a flow).
void addresses_of(const Added& added, const std::string& mac, Redirect* r) {
  for (const auto& iface : added.interfaces) {
    if (strcasecmp(iface.mac.c_str(), mac.c_str()) != 0) continue;
    for (const auto& a : iface.addresses) {
      std::string ip = a.substr(0, a.find('/'));
      if (check_ipv4(ip).ok())
        r->ipv4.push_back(ip);
      else if (check_ipv6(ip).ok())
        r->ipv6.push_back(ip);
    }
  }
}

// The suspend engine's view of a libvirt domain, with a guest agent that rides out
// libvirt's "not available for now" (a guest paging in after a swap-out answers slowly).
class PatientDomain final : public suspend::Domain {
 public:
  explicit PatientDomain(suspend::LibvirtDomain& d) : d_(d), agent_(*d.agent()) {}
  std::string name() const override { return d_.name(); }
  qmp::Channel& monitor() override { return d_.monitor(); }
  qmp::Channel* agent() override { return &agent_; }
  Result<cgroup::Memory*> memory() override { return d_.memory(); }
  Result<void> save_to_disk() override { return d_.save_to_disk(); }
  Result<void> restore_from_disk() override { return d_.restore_from_disk(); }

 private:
  suspend::LibvirtDomain& d_;
  PatientAgent agent_;
};

Result<void> ignore_not_found(Result<void> r) {
  if (!r.ok() && r.error().message.find("hosts no gateway") != std::string::npos) return ok();
  return r;
}

}  // namespace

std::string container_id_for(const std::string& domain) {
  bool fine = !domain.empty() && domain.size() <= 64 && domain[0] != '.';
  for (char c : domain)
    fine = fine && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  if (fine) return domain;
  return cat("vm-", sha256_hex(domain).substr(0, 16));
}

std::string ParkResult::to_json() const {
  qmp::ArgWriter w;
  w.str("domain", domain)
      .str("mode", state.mode)
      .str("sink", state.sink)
      .str("container", state.container)
      .strings("gateways", gateways)
      .num("pack_bytes", pack_bytes)
      .num("shipped_files", shipped_files)
      .num("shipped_bytes", shipped_bytes)
      .num("memory_before", state.memory_before)
      .num("memory_after", state.memory_after)
      .raw("seconds", cat(report.seconds))
      .raw("steps", report_json(report));
  return w.finish();
}

std::string WakeResult::to_json() const {
  qmp::ArgWriter w;
  w.str("domain", domain).str("trigger", trigger).raw("seconds", cat(report.seconds));
  if (activity_to_event >= 0) w.raw("activity_to_event", cat(activity_to_event));
  w.raw("hand_back", cat(hand_back)).raw("resume", cat(resume));
  for (const char* s : {"transfer", "restore", "switch", "release"}) w.raw(s, cat(report.step_seconds(s)));
  w.num("released", released).boolean("fallback", fallback).boolean("sink_first", sink_first);
  w.num("finished_at", finished_at);
  w.raw("steps", report_json(report));
  return w.finish();
}

struct Controller::Watch {
  virt::Domain dom;
  std::unique_ptr<qmp::LibvirtMonitor> monitor;
  int subscription = 0;
  ~Watch() {
    if (monitor) monitor->events().unsubscribe(subscription);
    monitor.reset();  // before the domain it refers to
  }
};

void Controller::watch_powerdown(const std::string& domain) {
  auto dom = conn_.lookup(domain);
  if (!dom.ok() || !dom->active().ok() || !*dom->active()) return;  // parked to disk: no QEMU
  auto w = std::unique_ptr<Watch>(new Watch{std::move(dom).value(), nullptr, 0});
  auto m = qmp::LibvirtMonitor::attach(w->dom);
  if (!m.ok()) {
    SL_LOG(Warn, kModule, "`", domain, "`: ", m.error().message);
    return;
  }
  w->monitor = std::move(m).value();
  w->subscription = w->monitor->events().subscribe([this, domain](const qmp::Event& ev) {
    if (ev.name == "POWERDOWN") wake_async(domain, "powerdown requested (shutdown of a parked domain)");
  });
  std::lock_guard<std::mutex> lock(watch_mu_);
  watches_[domain] = std::move(w);
}

void Controller::unwatch(const std::string& domain) {
  std::unique_ptr<Watch> gone;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    auto it = watches_.find(domain);
    if (it == watches_.end()) return;
    gone = std::move(it->second);
    watches_.erase(it);
  }
}

Controller::Controller(Config config, virt::Connection& conn, Switch& sw)
    : cfg_(std::move(config)),
      wake_sink_first_(cfg_.wake_sink_first),
      wake_deflate_early_(cfg_.wake_deflate_early),
      wake_room_mib_(cfg_.wake_room_mib),
      conn_(conn),
      switch_(sw) {}

Controller::~Controller() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> lock(watch_mu_);
    watches_.clear();
  }
  if (watchdog_.joinable()) watchdog_.join();
  std::vector<Worker> ws;
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    ws.swap(workers_);
  }
  for (auto& w : ws) w.thread.join();
  links_.clear();
}

void Controller::spawn(std::function<void()> work) {
  std::lock_guard<std::mutex> lock(workers_mu_);
  // The finished ones are joined here: a long-running daemon wakes many times.
  std::erase_if(workers_, [](Worker& w) {
    if (!*w.done) return false;
    w.thread.join();
    return true;
  });
  auto done = std::make_shared<std::atomic<bool>>(false);
  workers_.push_back(Worker{std::thread([work = std::move(work), done] {
                              work();
                              *done = true;
                            }),
                            done});
}

std::shared_ptr<std::mutex> Controller::lock_for(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& m = locks_[domain];
  if (!m) m = std::make_shared<std::mutex>();
  return m;
}

SinkLink* Controller::link(const std::string& sink) {
  auto it = links_.find(sink);
  return it == links_.end() ? nullptr : it->second.get();
}

void Controller::start() {
  for (const auto& name : cfg_.sinks) {
    auto socket_of = [this, name]() -> std::string {
      auto dom = conn_.lookup(name);
      if (!dom.ok() || !dom->active().ok() || !*dom->active()) return "";
      auto x = dom->xml();
      auto f = x.ok() ? parse_domain_xml(*x) : Result<DomainFacts>(x.error());
      return f.ok() ? f->sink_socket : "";
    };
    auto l = std::make_unique<SinkLink>(name, socket_of,
                                        [this](const std::string& s, const qmp::Event& e) { on_event(s, e); });
    l->start();
    links_[name] = std::move(l);
  }
  if (auto parked = parked_domains(); parked.ok()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [domain, st] : *parked) container_domain_[key(st.sink, st.container)] = domain;
    }
    for (const auto& [domain, st] : *parked) watch_powerdown(domain);
    SL_LOG(Info, kModule, parked->size(), " parked domain(s) found");
  }
  if (auto r = reconcile(); !r.ok()) SL_LOG(Warn, kModule, "reconcile: ", r.error().message);
  watchdog_ = std::thread([this] { watchdog(); });
}

Result<std::map<std::string, ParkState>> Controller::parked_domains() {
  std::map<std::string, ParkState> out;
  for (auto& d : SL_TRY(conn_.list())) {
    auto x = d.xml();
    if (!x.ok()) continue;
    auto f = parse_domain_xml(*x);
    if (!f.ok() || !f->park_xml) continue;
    auto st = ParkState::from_xml(*f->park_xml);
    if (!st.ok()) {
      SL_LOG(Warn, kModule, "domain `", d.name(), "`: ", st.error().message);
      continue;
    }
    out[d.name()] = *st;
  }
  return out;
}

Result<std::string> Controller::reconcile() {
  // The parked domains (metadata) and the ones being parked or woken (mapped before their
  // procedure runs) own their flows and containers; nothing else does.
  auto parked = SL_TRY(parked_domains());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [d, st] : parked) container_domain_.emplace(key(st.sink, st.container), d);
  }
  auto owner_of = [&](const std::string& k) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = container_domain_.find(k);
    return it == container_domain_.end() ? std::string() : it->second;
  };
  auto cookie_owned = [&](uint64_t c) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, d] : container_domain_)
      if (cookie_for(d) == c) return true;
    return false;
  };
  int flows = 0, containers = 0;
  if (auto cookies = switch_.cookies(); cookies.ok())
    for (uint64_t c : *cookies)
      if (!cookie_owned(c) && switch_.clear(c).ok()) ++flows;
  for (auto& [name, l] : links_) {
    if (!l->connected()) continue;
    auto listed = l->list_gateways();
    if (!listed.ok()) continue;
    for (const auto& g : *listed) {
      const std::string owner = owner_of(key(name, g.id));
      if (owner.empty()) {
        SL_LOG(Info, kModule, "sink `", name, "`: container `", g.id, "` belongs to no parked domain: removed");
        if (l->remove_gateway(g.id).ok()) ++containers;
      } else if (g.state == GatewayState::Woken || g.state == GatewayState::Stopped ||
                 g.state == GatewayState::Crashed || g.state == GatewayState::Lost) {
        // Activity (or a crash) while nobody listened: wake it (after any operation on it).
        wake_async(owner, cat("sink state ", to_string(g.state), " found at reconnect"));
      }
    }
  }
  qmp::ArgWriter w;
  w.num("parked", int64_t(parked.size())).num("flows_removed", flows).num("containers_removed", containers);
  return w.finish();
}

void Controller::on_event(const std::string& sink, const qmp::Event& ev) {
  if (ev.name == "CONNECTED") {
    // Events may have been missed while the link was down.
    spawn([this] {
      if (auto r = reconcile(); !r.ok()) SL_LOG(Warn, kModule, "reconcile: ", r.error().message);
    });
    return;
  }
  namespace proto = sink::proto;
  const bool activity = ev.name == proto::kActivity;
  if (!activity && ev.name != proto::kError) return;
  // The container the event is about, and why its VM is needed.
  auto about = [&]() -> Result<std::pair<std::string, std::string>> {
    if (activity) {
      auto a = SL_TRY(proto::ActivityEvent::parse(ev.data.root()));
      return std::pair{a.id, cat("activity: ", a.reason.empty() ? "?" : a.reason)};
    }
    auto e = SL_TRY(proto::ErrorEvent::parse(ev.data.root()));
    return std::pair{e.id, cat("gateway error in the sink: ", e.error.empty() ? "?" : e.error)};
  }();
  if (!about.ok()) {
    SL_LOG(Warn, kModule, "sink `", sink, "`: a bad ", ev.name, " event: ", about.error().message);
    return;
  }
  const auto& [id, trigger] = *about;
  std::string domain;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A park still under way is finished first: the wake waits for the domain's lock.
    auto it = container_domain_.find(key(sink, id));
    if (it == container_domain_.end()) return;
    domain = it->second;
  }
  SL_LOG(Info, kModule, "domain `", domain, "`: ", trigger);
  if (activity && !cfg_.auto_wake) return;
  // The sink stamped the event when it saw the activity, with its own clock: brought to
  // the host's by the offset its status answers showed.
  double delay = -1;
  if (ev.timestamp > 0) {
    const SinkLink* l = link(sink);
    const double stamped = ev.timestamp - (l ? l->clock_offset() : 0);
    const double now = wall_seconds();
    if (now >= stamped && now - stamped < 60) delay = now - stamped;
  }
  wake_async(domain, trigger, delay);
}

void Controller::wake_async(const std::string& domain, const std::string& trigger, double event_delay) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (waking_.count(domain)) return;
    waking_.insert(domain);
  }
  spawn([this, domain, trigger, event_delay] {
    auto r = wake(domain, trigger, {}, event_delay);
    if (!r.ok() && r.error().message.find("is not parked") != std::string::npos)
      SL_LOG(Info, kModule, "`", domain, "` is home already (", trigger, ")");
    else if (!r.ok())
      SL_LOG(Error, kModule, "waking `", domain, "`: ", r.error().message);
    std::lock_guard<std::mutex> l(mu_);
    waking_.erase(domain);
  });
}

void Controller::watchdog() {
  std::map<std::string, Clock::time_point> down_since;
  while (!stop_) {
    for (int i = 0; i < 20 && !stop_; ++i) std::this_thread::sleep_for(Millis(100));
    for (auto& [name, l] : links_) {
      if (l->connected()) {
        down_since.erase(name);
        continue;
      }
      auto [it, fresh] = down_since.emplace(name, Clock::now());
      if (fresh || seconds_since(it->second) < 20) continue;
      // A sink VM that stopped took its containers with it: its parked VMs come home.
      // One that runs but whose sinkd does not answer keeps them (its containers still
      // answer for the VMs, and would keep speaking for a VM woken without them).
      if (auto sd = conn_.lookup(name); sd.ok() && sd->active().ok() && *sd->active()) {
        SL_LOG(Warn, kModule, "sink `", name, "` runs but its sinkd does not answer");
        it->second = Clock::now();
        continue;
      }
      std::vector<std::string> orphans;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& [k, d] : container_domain_)
          if (k.rfind(name + "/", 0) == 0) orphans.push_back(d);
      }
      for (const auto& d : orphans) wake_async(d, cat("sink `", name, "` stopped"));
      it->second = Clock::now();
    }
  }
}

Result<ParkResult> Controller::park(const std::string& name, const ParkOptions& opts, const ProgressFn& progress) {
  auto guard_mu = lock_for(name);
  std::unique_lock<std::mutex> guard(*guard_mu, std::try_to_lock);
  if (!guard.owns_lock()) return make_error(ErrorKind::Invalid, "domain `", name, "` is being parked or woken already");

  // --- pre-checks: each a clear error, nothing touched ---
  auto dom = SL_TRY(conn_.lookup(name));
  if (!SL_TRY(dom.active())) return make_error(ErrorKind::Invalid, "domain `", name, "` is not running");
  auto facts = SL_TRY(parse_domain_xml(SL_TRY(dom.xml())));
  if (facts.park_xml) return make_error(ErrorKind::Invalid, "domain `", name, "` is parked already");
  if (facts.macs.empty()) return make_error(ErrorKind::Invalid, "domain `", name, "` has no network interface");
  if (!facts.sink_socket.empty()) return make_error(ErrorKind::Invalid, "domain `", name, "` is a sink");
  if (links_.empty())
    return make_error(ErrorKind::Invalid, "no sink is configured (add `sink NAME` to ", kDefaultConfig, ")");
  SinkLink* sink = nullptr;
  std::string sink_errors;
  for (auto& [n, l] : links_) {
    if (!l->connected()) {
      const std::string sock = l->socket();
      sink_errors += sock.empty() ? cat("; sink `", n, "` has no running domain with a `", kSinkChannel, "` channel")
                                  : cat("; sink `", n, "` does not answer at `", sock, "`");
      continue;
    }
    auto st = l->call("query-status", "", Millis(10000));
    if (st.ok()) {
      sink = l.get();
      break;
    }
    sink_errors += cat("; ", st.error().message);
  }
  if (!sink) return make_error(ErrorKind::Closed, "no configured sink answers", sink_errors);
  auto sink_dom = SL_TRY_CTX(conn_.lookup(sink->name()), "sink");
  qmp::LibvirtAgent sink_raw(sink_dom);
  PatientAgent sink_agent(sink_raw);
  qmp::LibvirtAgent raw_agent(dom);
  PatientAgent agent(raw_agent, Millis(15000));
  SL_TRY_CTX(qmp::execute(raw_agent, qmp::GuestPing{}, Millis(10000)), "the guest agent of `", name, "`");
  auto libvirt_dom = SL_TRY(suspend::LibvirtDomain::open(dom));
  auto ldom = std::make_unique<PatientDomain>(*libvirt_dom);
  suspend::Options sopt;
  sopt.mode = SL_TRY(suspend::parse_mode(opts.mode.empty() ? cfg_.mode : opts.mode));
  sopt.margin_bytes = cfg_.margin_mib << 20;
  sopt.throttle_bytes = cfg_.throttle_mib << 20;
  sopt.prefetch_timeout = cfg_.prefetch_timeout;
  sopt.limits_record = limits_record(name);
  if (sopt.mode == suspend::Mode::Swap) {
    sopt.prefetch = GuestHelper::prewarm_command(kGuestPark);
    sopt.prefetch_room_bytes = cfg_.prefetch_room_mib << 20;
  }
  SL_TRY(suspend::precheck(*ldom, sopt, SL_TRY(suspend::host_memory())));

  const std::string id = container_id_for(name);
  const std::string k = key(sink->name(), id);

  ParkResult result;
  result.domain = name;
  ParkState& st = result.state;
  st.mode = std::string(suspend::to_string(sopt.mode));
  st.sink = sink->name();
  st.container = id;
  st.mac = facts.macs.front();
  st.cookie = cookie_for(name);
  GuestHelper helper(agent);
  DumpOutcome dumped;
  Added added;
  suspend::Parked parked;
  suspend::Report srep;
  Redirect redirect{st.cookie, st.mac, {}, {}, ""};
  if (auto sf = parse_domain_xml(SL_TRY(sink_dom.xml())); sf.ok() && !sf->macs.empty()) redirect.to_mac = sf->macs[0];

  Procedure p(cat("park `", name, "`"));
  p.step(
      "dump",
      [&]() -> Result<void> {
        dumped = SL_TRY(helper.dump(kGuestPark, {}, cfg_.dump_attempts));
        result.gateways = dumped.gateways;
        return ok();
      },
      [&]() -> Result<void> { return helper.restore(kGuestPark); });
  p.step(
      "transfer",
      [&]() -> Result<void> {
        auto bytes = SL_TRY(qmp::read_guest_file(agent, kGuestPark));
        result.pack_bytes = int64_t(bytes.size());
        st.pack_sha256 = sha256_hex(bytes);
        SL_TRY_CTX(qmp::write_guest_file(sink_agent, sink_pack(id), bytes), "to sink `", sink->name(), "`");
        return ok();
      },
      [&]() -> Result<void> {
        (void)qmp::guest_run(sink_agent, "/bin/rm", {"-f", sink_pack(id)});
        return ok();
      });
  std::string shipment;  // in the sink, when the pack needs files the sink lacks
  p.step(
      "ship",
      [&]() -> Result<void> {
        sink::proto::Client client([&](std::string_view command, const std::string& args, Millis timeout) {
          return sink->call(command, args, timeout);
        });
        auto shipped = SL_TRY(
            ship_missing(client, agent, sink_agent, {kGuestPark, sink_pack(id), kGuestShipment, sink_shipment(id)}));
        result.shipped_files = shipped.outcome.included;
        result.shipped_bytes = shipped.outcome.shipment_bytes;
        shipment = shipped.sink_path;
        return ok();
      },
      [&]() -> Result<void> {
        if (!shipment.empty()) (void)qmp::guest_run(sink_agent, "/bin/rm", {"-f", shipment});
        return ok();
      });
  p.step(
      "sink-restore",
      [&]() -> Result<void> {
        added = SL_TRY(sink->add_gateway(sink_pack(id), id, true, shipment));
        if (!shipment.empty()) (void)qmp::guest_run(sink_agent, "/bin/rm", {"-f", shipment});
        addresses_of(added, st.mac, &redirect);
        return ok();
      },
      [&]() -> Result<void> { return ignore_not_found(sink->remove_gateway(id)); });
  p.step(
      "pause",
      [&]() -> Result<void> {
        SL_TRY_CTX(qmp::execute(ldom->monitor(), qmp::Stop{}), "pausing");
        return ok();
      },
      [&]() -> Result<void> { return cont_and_announce(ldom->monitor()); });
  p.step(
      "switch", [&]() -> Result<void> { return switch_.redirect(redirect); },
      [&]() -> Result<void> { return switch_.clear(st.cookie); });
  p.step(
      "speak", [&]() -> Result<void> { return sink->speak(id); },
      // Off the wire before the VM announces itself again.
      [&]() -> Result<void> { return ignore_not_found(sink->remove_gateway(id)); });
  p.step(
      "suspend",
      [&]() -> Result<void> {
        // The traffic stays with the sink while the guest runs to give memory back.
        SL_TRY(qmp::execute(ldom->monitor(), qmp::Cont{}));
        parked = SL_TRY(suspend::suspend(*ldom, sopt, &srep));
        st.balloon_before = parked.balloon_before;
        st.memory_before = srep.usage_before;
        // What the parked VM holds: the prefetch brought pages back after the squeeze.
        st.memory_after = srep.usage_parked > 0 ? srep.usage_parked : srep.usage_after;
        return ok();
      },
      [&]() -> Result<void> { return suspend::resume(*ldom, parked); });
  p.step(
      "record",
      [&]() -> Result<void> {
        st.parked_at = int64_t(std::time(nullptr));
        return dom.set_metadata(kMetadataKey, kMetadataUri, st.to_xml());
      },
      [&]() -> Result<void> { return dom.set_metadata(kMetadataKey, kMetadataUri, ""); });
  if (fail_at_.rfind("park:", 0) == 0) p.fail_at(fail_at_.substr(5));
  {
    std::lock_guard<std::mutex> lock(mu_);
    container_domain_[k] = name;
  }
  auto r = p.run(&result.report, progress);
  if (!r.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    container_domain_.erase(k);
    return std::move(r).error();
  }
  st.park_seconds = result.report.seconds;
  watch_powerdown(name);
  SL_LOG(Info, kModule, "parked `", name, "` on sink `", st.sink, "` in ", result.report.seconds, " s");
  return result;
}

Result<WakeResult> Controller::wake(const std::string& name, const std::string& trigger, const ProgressFn& progress,
                                    double event_delay) {
  auto guard_mu = lock_for(name);
  std::lock_guard<std::mutex> guard(*guard_mu);
  auto dom = SL_TRY(conn_.lookup(name));
  auto facts = SL_TRY(parse_domain_xml(SL_TRY(dom.xml())));
  if (!facts.park_xml) return make_error(ErrorKind::Invalid, "domain `", name, "` is not parked");
  const ParkState st = SL_TRY(ParkState::from_xml(*facts.park_xml));
  SinkLink* sink = link(st.sink);
  const std::string k = key(st.sink, st.container);

  WakeResult result;
  result.domain = name;
  result.trigger = trigger;
  result.activity_to_event = event_delay;
  auto libvirt_dom = SL_TRY(suspend::LibvirtDomain::open(dom));
  auto ldom = std::make_unique<PatientDomain>(*libvirt_dom);
  qmp::LibvirtAgent raw_agent(dom);
  PatientAgent agent(raw_agent);
  GuestHelper helper(agent);
  std::optional<virt::Domain> sink_dom;
  if (auto sd = conn_.lookup(st.sink); sd.ok()) sink_dom.emplace(std::move(sd).value());
  std::unique_ptr<qmp::LibvirtAgent> sink_raw;
  std::unique_ptr<PatientAgent> sink_agent;
  if (sink_dom) {
    sink_raw = std::make_unique<qmp::LibvirtAgent>(*sink_dom);
    sink_agent = std::make_unique<PatientAgent>(*sink_raw, Millis(15000));
  }
  suspend::Parked parked;
  parked.mode = SL_TRY(suspend::parse_mode(st.mode));
  parked.balloon_before = st.balloon_before;
  HandedBack back;
  bool home = false;       // the sink's gateway is restored in the VM
  bool came_home = false;  // the fallback brought the VM home

  // Whatever failed after the VM runs again: the VM comes home with the gateway it parked
  // with (its pack is still in the guest), its traffic back, the sink's copy gone.
  auto deflate_rest = [&] {
    if (auto d = suspend::deflate_rest(*ldom, parked); !d.ok())
      SL_LOG(Warn, kModule, "`", name, "`: ", d.error().message);
  };
  auto fallback = [&]() -> Result<void> {
    result.fallback = true;
    SL_TRY(cont_and_announce(ldom->monitor()));
    // The resume gave room for a restore; the rest comes once the gateway is home.
    if (!home) SL_TRY_CTX(helper.restore(kGuestPark), "restoring the gateway the VM parked with");
    deflate_rest();
    SL_TRY(switch_.clear(st.cookie));
    (void)ldom->monitor().call("announce-self", kAnnounce, Millis(30000));
    if (sink) {
      if (auto rel = sink->release_packets(st.container); !rel.ok())
        SL_LOG(Warn, kModule, "`", name, "`: ", rel.error().message);
      if (auto rm = ignore_not_found(sink->remove_gateway(st.container)); !rm.ok())
        SL_LOG(Warn, kModule, "`", name, "`: ", rm.error().message);
    }
    SL_TRY(dom.set_metadata(kMetadataKey, kMetadataUri, ""));
    came_home = true;
    return ok();
  };

  Procedure p(cat("wake `", name, "`"));
  p.step(
      "hand-back+resume",
      [&]() -> Result<void> {
        // The VM resumes (and its balloon deflates) while the sink checkpoints the gateway.
        // With wake-sink-first the VM runs at the lowest CPU weight until the hand-back is
        // done, then gets its own back (off by default: on a 2-core TCG host it delayed the
        // resume and did not speed the hand-back up; see the park-wake benchmark).
        std::optional<uint64_t> weight;
        auto running = [&] {  // a VM parked to disk has no process yet: nothing to weigh
          auto a = dom.active();
          return a.ok() && *a;
        };
        if (wake_sink_first_ && running()) {
          auto w = dom.cpu_shares();
          auto low = w.ok() ? dom.set_cpu_shares(kYieldedCpuShares) : Result<void>(w.error());
          if (low.ok())
            weight = *w;
          else
            SL_LOG(Warn, kModule, "`", name, "`: the sink cannot go first: ", low.error().message);
        }
        auto weight_back = [&] {
          if (!weight) return;
          if (auto r = dom.set_cpu_shares(*weight); !r.ok()) SL_LOG(Warn, kModule, "`", name, "`: ", r.error().message);
          result.sink_first = true;
          weight.reset();
        };
        auto resumed = std::async(std::launch::async, [&]() -> Result<void> {
          const auto t0 = Clock::now();
          if (auto put = suspend::put_back_limits(*ldom, limits_record(name)); !put.ok()) return std::move(put).error();
          auto r = suspend::resume(*ldom, parked, nullptr,
                                   wake_deflate_early_ ? suspend::Deflate::Full : suspend::Deflate::Room,
                                   wake_room_mib_.load() << 20);
          result.resume = seconds_since(t0);
          return r;
        });
        const auto t0 = Clock::now();
        Result<HandedBack> hb =
            sink ? sink->hand_back(st.container, sink_back_pack(st.container))
                 : Result<HandedBack>(make_error(ErrorKind::NotFound, "sink `", st.sink, "` is not configured"));
        result.hand_back = seconds_since(t0);
        weight_back();
        auto r = resumed.get();
        if (!r.ok()) {
          // The VM cannot run: it stays parked, and its gateway must stay reachable.
          if (hb.ok() && sink)
            return std::move(r).error().wrap(cat("resuming the VM (its gateway was handed back: the sink holds ",
                                                 "its packets in `", hb->pack, "`; operator action needed)"));
          return std::move(r).error().wrap("resuming the VM (it stays parked)");
        }
        if (!hb.ok()) {
          // The VM runs but the sink's copy of the gateway cannot come: it comes home with
          // the one it parked with.
          auto fb = fallback();
          if (!fb.ok())
            return std::move(hb).error().wrap(cat("hand-back (and the fallback: ", fb.error().message, ")"));
          return std::move(hb).error().wrap("hand-back failed; woken with the gateway it parked with");
        }
        back = *hb;
        return ok();
      },
      fallback);
  p.step("transfer", [&]() -> Result<void> {
    if (!sink_agent) return make_error(ErrorKind::NotFound, "sink domain `", st.sink, "` is gone");
    auto bytes = SL_TRY(qmp::read_guest_file(*sink_agent, back.pack, {}, size_t(1) << 30));
    return qmp::write_guest_file(agent, kGuestWake, bytes);
  });
  p.step("restore", [&]() -> Result<void> {
    // The sink's pack holds only what the VM dumped (checked in the guest).
    SL_TRY(helper.restore(kGuestWake, kGuestPark));
    home = true;
    return ok();
  });
  p.step("switch", [&]() -> Result<void> {
    SL_TRY(switch_.clear(st.cookie));
    SL_TRY_CTX(ldom->monitor().call("announce-self", kAnnounce, Millis(30000)), "announce-self");
    return ok();
  });
  p.step("release", [&]() -> Result<void> {
    if (!sink) return make_error(ErrorKind::NotFound, "sink `", st.sink, "` is not configured");
    result.released = SL_TRY(sink->release_packets(st.container));
    return ok();
  });
  p.step("drop-container", [&]() -> Result<void> {
    if (!sink) return make_error(ErrorKind::NotFound, "sink `", st.sink, "` is not configured");
    SL_TRY(ignore_not_found(sink->remove_gateway(st.container)));
    // The packs in the sink VM go after the wake: a guest-exec under TCG takes a second.
    // Under the domain's lock, so never amid its next park (which no longer needs them once
    // its container exists).
    spawn([this, name, sink_name = st.sink, packs = std::vector<std::string>{sink_pack(st.container), back.pack}] {
      auto domain_mu = lock_for(name);
      std::lock_guard<std::mutex> guard(*domain_mu);
      auto sd = conn_.lookup(sink_name);
      if (!sd.ok()) return;
      qmp::LibvirtAgent raw(*sd);
      PatientAgent agent(raw, Millis(15000));
      std::vector<std::string> args = {"-f"};
      args.insert(args.end(), packs.begin(), packs.end());
      if (auto rm = qmp::guest_run(agent, "/bin/rm", args); !rm.ok())
        SL_LOG(Warn, kModule, "removing the packs in sink `", sink_name, "`: ", rm.error().message);
    });
    return ok();
  });
  p.step("deflate", [&]() -> Result<void> {
    // The rest of the guest's memory, now that the client has its answer. The VM is home
    // either way: a balloon that is slow to give back is logged, not a failed wake.
    deflate_rest();
    return ok();
  });
  p.step("clear", [&]() -> Result<void> { return dom.set_metadata(kMetadataKey, kMetadataUri, ""); });
  if (fail_at_.rfind("wake:", 0) == 0) p.fail_at(fail_at_.substr(5));
  auto r = p.run(&result.report, progress);
  result.finished_at = int64_t(std::time(nullptr));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (r.ok() || came_home) container_domain_.erase(k);
  }
  if (r.ok() || came_home) unwatch(name);
  remember_wake(result);
  if (!r.ok()) {
    if (came_home)
      return std::move(r).error().wrap(
          cat("woken with the gateway it parked with (its connections since the park "
              "may be lost)"));
    return std::move(r).error();
  }
  SL_LOG(Info, kModule, "woke `", name, "` (", trigger, ") in ", result.report.seconds, " s");
  return result;
}

void Controller::remember_wake(const WakeResult& w) {
  const std::string json = w.to_json();
  {
    std::lock_guard<std::mutex> lock(mu_);
    last_wakes_[w.domain] = json;
  }
  std::error_code ec;
  std::filesystem::create_directories(kWakeDir, ec);
  (void)sys::write_file(cat(kWakeDir, "/", container_id_for(w.domain), ".json"), json, 0644);
}

std::optional<std::string> Controller::last_wake(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = last_wakes_.find(domain);
  if (it == last_wakes_.end()) return std::nullopt;
  return it->second;
}

Result<std::string> Controller::status_json() {
  auto parked = SL_TRY(parked_domains());
  std::string list = "[";
  bool first = true;
  for (const auto& [d, st] : parked) {
    qmp::ArgWriter w;
    w.str("domain", d)
        .str("mode", st.mode)
        .str("sink", st.sink)
        .str("container", st.container)
        .num("parked_at", st.parked_at)
        .num("memory_before", st.memory_before)
        .num("memory_after", st.memory_after)
        .num("reclaimed", std::max<int64_t>(0, st.memory_before - st.memory_after))
        .raw("park_seconds", cat(st.park_seconds));
    list += (first ? "" : ",") + w.finish();
    first = false;
  }
  std::string wakes = "{";
  first = true;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kWakeDir, ec)) {
    // The last wakes of domains that exist (their files outlive undefined ones).
    auto text = sys::read_file(e.path());
    auto parsed = text.ok() ? qmp::parse(*text) : Result<qmp::Json>(text.error());
    if (!parsed.ok() || !conn_.lookup(qmp::opt_string(parsed->root(), "domain").value_or("")).ok()) continue;
    wakes += cat(first ? "" : ",", qmp::quote(e.path().stem().string()), ":", *text);
    first = false;
  }
  return cat("{\"parked\":", list, "],\"last_wakes\":", wakes, "},\"sinks\":", sinks_json(), "}");
}

std::string Controller::sinks_json() {
  std::string out = "[";
  bool first = true;
  for (auto& [n, l] : links_) {
    qmp::ArgWriter w;
    w.str("name", n).str("socket", l->socket()).boolean("connected", l->connected());
    out += (first ? "" : ",") + w.finish();
    first = false;
  }
  return out + "]";
}

void Controller::notice(const std::string& domain, const std::string& op) {
  if (op != "stopped" && op != "release" && op != "reconnect") return;
  spawn([this, domain, op] {
    if (op == "reconnect") {
      if (auto r = reconcile(); !r.ok()) SL_LOG(Warn, kModule, "reconcile: ", r.error().message);
      return;
    }
    if (auto r = forget(domain, true); !r.ok()) SL_LOG(Warn, kModule, "forgetting `", domain, "`: ", r.error().message);
  });
}

void Controller::read_spool(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename();
    auto dot = name.rfind('.');
    std::filesystem::remove(e.path(), ec);
    if (dot == std::string::npos || dot == 0) continue;
    SL_LOG(Info, kModule, "spooled notice: `", name.substr(0, dot), "` ", name.substr(dot + 1));
    notice(name.substr(0, dot), name.substr(dot + 1));
  }
}

Result<void> Controller::forget(const std::string& name, bool unless_saved) {
  auto guard_mu = lock_for(name);
  std::lock_guard<std::mutex> guard(*guard_mu);
  // Checked under the domain's lock: a park to disk stops the domain (the hook's notice
  // comes) before the park has finished.
  if (auto dom = conn_.lookup(name); unless_saved && dom.ok() && virDomainHasManagedSaveImage(dom->get(), 0) == 1) {
    SL_LOG(Info, kModule, "`", name, "` stopped: parked to disk, kept");
    return ok();
  }
  std::vector<std::string> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, d] : container_domain_)
      if (d == name) gone.push_back(k);
    for (const auto& k : gone) container_domain_.erase(k);
  }
  for (const auto& k : gone) {
    auto slash = k.find('/');
    if (SinkLink* l = link(k.substr(0, slash)))
      if (auto rm = ignore_not_found(l->remove_gateway(k.substr(slash + 1))); !rm.ok())
        SL_LOG(Warn, kModule, "forgetting `", name, "`: ", rm.error().message);
  }
  unwatch(name);
  SL_TRY(switch_.clear(cookie_for(name)));
  if (auto dom = conn_.lookup(name); dom.ok()) (void)dom->set_metadata(kMetadataKey, kMetadataUri, "");
  SL_LOG(Info, kModule, "forgot `", name, "`");
  return ok();
}

}  // namespace seamless::ctl
