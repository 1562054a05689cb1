// SPDX-License-Identifier: Apache-2.0
// The suspend engine: suspend-to-RAM, -disk and -swap of one VM and their resume paths.
// Everything external (monitor, agent, memory cgroup, save/restore) is reached through
// the Domain seam; every failure half-way rolls back to a running, unthrottled VM.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hooks/cgroup.h"
#include "qmp/commands.h"

namespace seamless::suspend {

enum class Mode { Ram, Disk, Swap };
Result<Mode> parse_mode(std::string_view text);
std::string_view to_string(Mode mode);

// The guest's memory as the balloon driver reports it, reduced to what the plan needs.
// Target = what the guest keeps: what it uses plus a margin, never below a floor and
// never above what it has now.
Result<int64_t> balloon_target(const qmp::BalloonStats& stats, int64_t current_bytes, int64_t margin_bytes,
                               int64_t floor_bytes);

// Signs, in two successive reports of the balloon driver, that the guest is short of
// memory after an inflation: it has less than half the margin available, or it pages
// (major faults or swap-in grew by more than a little between the reports). Returns why,
// or "" when it has room. Issue 4 saw a guest squeezed this far thrash until libvirt gave
// up on its agent.
std::string memory_pressure(const qmp::BalloonStats& before, const qmp::BalloonStats& after, int64_t margin_bytes);

struct HostMemory {
  int64_t swap_total = 0, swap_free = 0;  // bytes
};
Result<HostMemory> parse_meminfo(std::string_view text);
Result<HostMemory> host_memory(const std::string& path = "/proc/meminfo");

// What the engine drives. LibvirtDomain (suspend_libvirt.h) is the real one.
class Domain {
 public:
  virtual ~Domain() = default;
  virtual std::string name() const = 0;
  virtual qmp::Channel& monitor() = 0;
  virtual qmp::Channel* agent() = 0;             // null when the domain has none
  virtual Result<cgroup::Memory*> memory() = 0;  // QEMU's memory cgroup
  virtual Result<void> save_to_disk() = 0;       // disk mode: QEMU exits, memory freed
  virtual Result<void> restore_from_disk() = 0;
};

struct Options {
  Mode mode = Mode::Swap;
  int64_t throttle_bytes = 10 << 20;  // cgroup limit while swapping out
  int64_t margin_bytes = 48 << 20;    // balloon leaves used + margin to the guest
  int64_t floor_bytes = 96 << 20;     // never balloon the guest below this
  Millis balloon_timeout = Millis(20000);
  Millis stats_timeout = Millis(5000);  // first balloon statistics after enabling them
  Millis settle_timeout = Millis(30000);
  std::vector<std::string> prefetch;  // program + args run in the guest (step 4); empty: none
  // Memory the balloon gives back for the prefetch to run in (a dummy restore needs room:
  // in a guest squeezed to its use plus the margin it thrashes and its agent stops
  // answering); taken again in step 5.
  int64_t prefetch_room_bytes = 0;
  Millis prefetch_timeout = Millis(60000);
  // Where the memory knobs a swap-out changes are recorded until they are put back ("" =
  // nowhere): a run killed while the VM is throttled leaves them for the next one.
  std::string limits_record;
};

// What resume needs, kept by the caller (the CLI stores it as JSON).
struct Parked {
  Mode mode = Mode::Ram;
  int64_t balloon_before = 0;  // bytes the guest had before parking
  std::string to_json() const;
  static Result<Parked> from_json(std::string_view text);
};

struct StepTime {
  std::string step;
  double seconds;
};

struct Report {
  std::vector<StepTime> steps;
  int64_t balloon_target = 0;
  int64_t pressure_relief = 0;                // bytes given back to a guest under memory pressure
  int64_t usage_before = 0, usage_after = 0;  // cgroup usage (swap mode) before and at the squeeze
  int64_t usage_parked = 0;                   // cgroup usage once paused, after the eviction below
  int64_t evicted = 0;                        // page and swap cache evicted after the pause (usage before - after)
};

// Every pre-check for the mode, each failing with a clear error; touches nothing.
Result<void> precheck(Domain& domain, const Options& opts, const HostMemory& host);
// Puts back the knobs an interrupted run left recorded at `record` (see
// Options::limits_record); suspend() does it first itself, a resume's caller before it.
// How many it wrote (0: none were left).
Result<size_t> put_back_limits(Domain& domain, const std::string& record);
Result<Parked> suspend(Domain& domain, const Options& opts, Report* report = nullptr);
// How much memory a swap-mode resume gives back before it returns.
enum class Deflate {
  Full,  // all the guest had before the park (the balloon deflates on while it runs)
  // Only room for what runs first (held + room); deflate_rest() gives the rest later.
  // A wake uses it: the guest's driver, emulated under TCG, then does not give back
  // gigabytes beside the sink's hand-back on the same host.
  Room,
};
// The room a swap-mode resume waits for (either way) before it returns: what a gateway's
// restore needs without making the guest reclaim its own cache. 256 MiB: apache2+PHP's
// wake reacted 0.87x as long as with 512 MiB (the guest's emulated balloon driver has half
// as much to give back beside the sink's hand-back), vsftpd's 1.05x (park-wake benchmark).
inline constexpr int64_t kResumeRoomBytes = int64_t(256) << 20;
Result<void> resume(Domain& domain, const Parked& parked, Report* report = nullptr, Deflate deflate = Deflate::Full,
                    int64_t room_bytes = kResumeRoomBytes);
// After resume(..., Deflate::Room): the balloon goes back to what the guest had before the
// park, waited for up to `timeout` (a later park reads it as the guest's size). Nothing
// for other modes.
Result<void> deflate_rest(Domain& domain, const Parked& parked, Millis timeout = Millis(30000));

}  // namespace seamless::suspend
