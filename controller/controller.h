// SPDX-License-Identifier: Apache-2.0
// The park/wake controller: the only place the order of a park and of a wake lives.
// Each is a Procedure of named steps with their undo; the daemon (seamlessd), its
// control commands, the e2e tests and the benchmark all run them through here.
//
// Park: dump in the guest (retried on user activity) -> pack to the sink -> the sink
// restores it in a quiet container -> pause the VM -> switch its traffic to the sink ->
// the sink speaks -> suspend (swap by default, prewarm as the prefetch) -> record the
// park state in the domain's metadata.
// Wake: the sink hands the gateway back while the VM resumes (in parallel) -> pack into
// the guest -> restore there -> switch the traffic back + announce-self -> release the
// held packets -> drop the container -> clear the metadata. A wake that fails after the
// VM resumed brings the VM home with the gateway it parked with (fallback), so every
// failure ends with the VM running its gateway or parked behind the sink.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "controller/config.h"
#include "controller/ovs.h"
#include "controller/park_state.h"
#include "controller/procedure.h"
#include "controller/sink_link.h"
#include "qmp/libvirt.h"

namespace seamless::ctl {

struct ParkOptions {
  std::string mode;  // empty: the configured default
};

struct ParkResult {
  std::string domain;
  ParkState state;
  ProcedureReport report;
  std::vector<std::string> gateways;
  int64_t pack_bytes = 0;
  // Files the sink lacked, shipped with the pack (their shipment's size).
  int64_t shipped_files = 0, shipped_bytes = 0;
  std::string to_json() const;
};

struct WakeResult {
  std::string domain, trigger;
  ProcedureReport report;
  double activity_to_event = -1;     // seconds from the sink's event stamp to its arrival here
  double hand_back = 0, resume = 0;  // the two halves of the parallel step
  int64_t released = 0;
  bool fallback = false;  // came home with the gateway it parked with
  // The VM yielded the CPU to the sink during the hand-back (wake-sink-first); the
  // weight it had, put back afterwards.
  bool sink_first = false;
  int64_t finished_at = 0;
  std::string to_json() const;
};

// Container ids in the sink for a domain: its name when the sink accepts it as an id.
std::string container_id_for(const std::string& domain);

class Controller {
 public:
  Controller(Config config, virt::Connection& conn, Switch& sw);
  ~Controller();
  // Connects the sinks, picks up parked domains (metadata), reconciles flows.
  void start();
  Result<ParkResult> park(const std::string& domain, const ParkOptions& opts, const ProgressFn& progress = {});
  // `event_delay`: seconds from the sink's activity event to its arrival here (-1: none).
  Result<WakeResult> wake(const std::string& domain, const std::string& trigger, const ProgressFn& progress = {},
                          double event_delay = -1);
  // The parked domains with their state and the last wake of each domain, as JSON.
  Result<std::string> status_json();
  // The domain stopped or went away (hook): its container, flows and metadata go; with
  // `unless_saved`, not when it stopped into a managed save (a park to disk).
  Result<void> forget(const std::string& domain, bool unless_saved = false);
  // A libvirt lifecycle notice (from the hook), acted on in the background: the hook
  // runs inside libvirtd, which waits for it, so nothing here may call libvirt before the
  // hook has its answer. stopped/release: forget (unless the domain was parked to disk:
  // its managed save is the park); reconnect: reconcile.
  void notice(const std::string& domain, const std::string& operation);
  // Notices the hook spooled while seamlessd was down (`dir`/DOMAIN.OPERATION).
  void read_spool(const std::string& dir);
  // Reconciles flows and containers with the parked domains.
  Result<std::string> reconcile();
  // The configuration's wake-sink-first, changed for the next wakes (the park-wake
  // benchmark compares the two in one run).
  void set_wake_sink_first(bool on) { wake_sink_first_ = on; }
  // The configuration's wake-deflate-early, likewise.
  void set_wake_deflate_early(bool on) { wake_deflate_early_ = on; }
  // The configuration's wake-room-mib, likewise.
  void set_wake_room_mib(int64_t mib) { wake_room_mib_ = mib; }
  // Test seam: "park:STEP" or "wake:STEP" fails that step before it runs.
  void fail_at(std::string where) { fail_at_ = std::move(where); }
  std::string sinks_json();
  // The last wake of `domain` (WakeResult::to_json), if any since this controller started.
  std::optional<std::string> last_wake(const std::string& domain);

 private:
  std::shared_ptr<std::mutex> lock_for(const std::string& domain);
  SinkLink* link(const std::string& sink);
  void on_event(const std::string& sink, const qmp::Event& ev);
  void wake_async(const std::string& domain, const std::string& trigger, double event_delay = -1);
  void watchdog();
  // A parked domain's QMP events: POWERDOWN (`virsh shutdown` of a paused VM: the guest
  // would never see it) wakes it, and the guest then shuts down with its gateway home.
  void watch_powerdown(const std::string& domain);
  void unwatch(const std::string& domain);
  struct Watch;
  Result<std::map<std::string, ParkState>> parked_domains();
  void remember_wake(const WakeResult& w);

  Config cfg_;
  std::atomic<bool> wake_sink_first_;
  std::atomic<bool> wake_deflate_early_;
  std::atomic<int64_t> wake_room_mib_;
  virt::Connection& conn_;
  Switch& switch_;
  std::string fail_at_;
  std::map<std::string, std::unique_ptr<SinkLink>> links_;
  std::mutex mu_;  // guards the maps below
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
  // "sink/container" -> domain: parked, or being parked or woken (set before the
  // procedure runs): reconcile leaves what is here alone.
  std::map<std::string, std::string> container_domain_;
  std::map<std::string, std::string> last_wakes_;  // domain -> WakeResult JSON
  std::set<std::string> waking_;
  std::mutex watch_mu_;
  std::map<std::string, std::unique_ptr<Watch>> watches_;  // guarded by watch_mu_
  std::atomic<bool> stop_{false};
  std::thread watchdog_;
  // Runs `work` on a thread of its own (wakes, notices, reconciles), joined when done.
  void spawn(std::function<void()> work);
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex workers_mu_;
  std::vector<Worker> workers_;
};

}  // namespace seamless::ctl
