// SPDX-License-Identifier: Apache-2.0
// The sink's gateways: each pack gets a container, its gateways are restored there with
// CRIU and traced until activity; hand-back checkpoints them into a pack again. Packets
// for the VM are held while no gateway can take them: during the restore (then let in),
// and from hand-back on (then released toward the VM). Every gateway has a watcher
// thread that owns its tracer. Commands on different containers run concurrently (an
// add's CRIU restore does not hold up another VM's hand-back); those on one container
// run one at a time. Events go out through a callback:
//   READY {id}                              restored and traced
//   ACTIVITY {id, pid, reason}              a request needs the VM; the gateway is stopped
//   ERROR {id, error}                       a gateway process died, or tracing failed
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/result.h"
#include "guest-agent/criu.h"
#include "pack/manifest.h"
#include "pack/pack.h"
#include "sinkd/confine.h"
#include "sinkd/container.h"
#include "sinkd/file_cache.h"
#include "sinkd/hold.h"
#include "sinkd/tracer.h"

namespace seamless::sink {

struct SinkOptions {
  std::string state_dir = "/run/seamless-sinkd";
  std::string nic = "eth0";  // the working NIC: macvlans for the parked VMs go on it
  std::string self_exe;      // this daemon's binary (runs the containers' inits)
  std::string criu = "criu";
  // CRIU for a container's gateways; default: criu_in(container, criu).
  std::function<std::unique_ptr<guest::Criu>(const Container&)> criu_for;
  packfmt::PackLimits limits;
  // The activity policy: the built-in lists, then this text (an operator's policy file:
  // entries and [daemon] sections that override them). Checked when the sink starts.
  std::string policy_text;
  // Shipped files kept beyond what containers use (see FileCache).
  uint64_t file_cache_budget = uint64_t(2) << 30;
  // Each container's cgroup limits (confine.h).
  ContainerLimits container_limits;
};

// The `criu` binary run in every namespace of a container (Container::run).
std::unique_ptr<guest::Criu> criu_in(const Container& c, const std::string& criu);

using EventSink = std::function<void(const std::string& event, const std::string& data_json)>;

class Sink {
 public:
  Sink(SinkOptions options, EventSink events);
  ~Sink();  // stops watching (gateways keep running in their containers)
  Sink(const Sink&) = delete;
  Sink& operator=(const Sink&) = delete;

  // Adopts the containers a previous daemon left; the ones whose init is gone are kept
  // as "lost" (listed, and removed on request). Returns how many it found.
  size_t recover();
  // Restores a pack's gateways in a new container `id`. The reply: id, hostname,
  // interfaces (name, mac, addresses), gateways (name, pid inside), dummies, seconds.
  // A quiet container says nothing on the wire until speak().
  // `files`: a shipment with the files this sink lacks for the pack ("" = none).
  Result<std::string> add(const std::string& pack, const std::string& id, bool quiet = false,
                          const std::string& files = "");
  // What a guest must ship with `pack` (query-missing-files): the code and mapped files
  // that differ here, each with the cached objects that may be it; and the cache's size.
  Result<std::string> missing(const std::string& pack);
  // The file cache: objects, bytes, objects in use.
  std::string cache_stats();
  // Lets a quiet container answer for its VM (once the VM is paused and its traffic here).
  Result<void> speak(const std::string& id);
  std::string list();
  // Memory: per container the PSS of its processes (gateways, and its init apart), the
  // daemon's own PSS, and the machine's MemTotal/MemAvailable; all in kB.
  std::string metrics();
  // Checkpoints the gateways (stopped first unless activity stopped them) into a pack
  // at `out` (default: STATE/out/ID.pack). From the freeze on, packets for the VM are
  // held in the container; it stays until remove(). On failure the gateways stay here,
  // stopped, and the held packets go to them.
  Result<std::string> hand_back(const std::string& id, const std::string& out);
  // Sends the packets held since hand-back, and any that still come, to the VM (once
  // its gateways are home): out of the working NIC, to the VM's MAC.
  Result<std::string> release(const std::string& id);
  // Ends the container and everything in it.
  Result<void> remove(const std::string& id);
  size_t size();

 private:
  struct Gateway;
  // The gateway `id` with its operation lock held (commands on one container run one at a
  // time), or NotFound.
  struct Claimed {
    std::shared_ptr<Gateway> g;
    std::unique_lock<std::mutex> op;
    Gateway* operator->() const { return g.get(); }
    Gateway& operator*() const { return *g; }
  };
  Result<Claimed> claim(const std::string& id);
  // Drops a gateway from the map (its operation lock held).
  void forget(Gateway& g);
  Result<std::string> add_body(Gateway& g, const std::string& pack, bool quiet, const std::string& files);
  // `stopped`: the gateway's processes were restored stopped; they run once seized.
  Result<void> watch(Gateway& g, bool stopped = false);
  void watcher(Gateway* g, bool stopped, std::shared_ptr<std::promise<std::string>> attached);
  void stop_watching(Gateway& g, bool freeze);
  // CRIU dump of a frozen gateway into a pack; returns the pack's path.
  Result<std::string> checkpoint(Gateway& g, const std::string& out);
  SinkOptions opt_;
  EventSink events_;
  FileCache cache_;      // STATE/files: on the containers' file system
  std::string cgroups_;  // the parent of the containers' cgroups, once prepared
  std::mutex files_mu_;  // an add's use of the file cache, from taking a shipment to its container's layer
  std::mutex mu_;        // gateways_ (the map; each entry has its own locks) and cgroups_
  std::map<std::string, std::shared_ptr<Gateway>> gateways_;
};

}  // namespace seamless::sink
