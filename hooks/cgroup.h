// SPDX-License-Identifier: Apache-2.0
// Memory cgroups of QEMU processes, v1 and v2: where a process's group is, its memory
// knobs behind a seam (libcgroup on real hosts, plain files on fake trees in tests),
// and LimitGuard, which restores every value it changed on every path.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/time.h"

namespace seamless::cgroup {

enum class Version { V1, V2 };

struct MemoryGroup {
  Version version = Version::V1;
  std::string mount;     // "/sys/fs/cgroup/memory" (v1) or "/sys/fs/cgroup/unified" (v2)
  std::string relative;  // "/machine/qemu-1-vm.libvirt-qemu", as in /proc/PID/cgroup
  std::string dir() const { return mount + relative; }
};

// Finds the memory cgroup from the texts of /proc/self/mountinfo and /proc/PID/cgroup.
// v1 wins when the memory controller is mounted there (hybrid hosts); otherwise v2.
Result<MemoryGroup> locate(std::string_view mountinfo, std::string_view proc_cgroup);
// As locate(), reading `proc_root`/self/mountinfo and `proc_root`/PID/cgroup.
Result<MemoryGroup> for_pid(pid_t pid, const std::string& proc_root = "/proc");
// QEMU's pid for a libvirt domain, from libvirt's pid file.
Result<pid_t> qemu_pid(const std::string& domain, const std::string& run_dir = "/run/libvirt/qemu");

// The seam: read and write one knob ("memory.max") of one group.
class Knobs {
 public:
  virtual ~Knobs() = default;
  virtual Result<std::string> read(const std::string& knob) = 0;
  virtual Result<void> write(const std::string& knob, const std::string& value) = 0;
  virtual bool has(const std::string& knob) = 0;
  virtual std::string describe() const = 0;
};

// Files under group.dir(): for fake trees in unit tests.
std::unique_ptr<Knobs> file_knobs(const MemoryGroup& group);
// libcgroup (cgroup_get_cgroup / cgroup_modify_cgroup): for real hosts.
Result<std::unique_ptr<Knobs>> libcgroup_knobs(const MemoryGroup& group);

// Memory charged to a group that is a clean copy of something stored elsewhere.
struct Reclaimable {
  // Page cache (v1 total_cache, v2 file) less shared memory, which has no copy on disk.
  int64_t file_cache = 0;
  // Swap cache no process maps: pages a swap-in's readahead read next to the one faulted
  // in, still in swap. The anonymous LRU less the mapped anonymous pages and shmem,
  // at most the group's swap cache (memory.stat swapcached).
  int64_t swap_cache = 0;
  // Not reclaimable: anonymous memory a process maps (v1 total_rss, v2 anon), which an
  // eviction must leave in place.
  int64_t mapped = 0;
  int64_t total() const { return file_cache + swap_cache; }
};

// Version-neutral memory operations. Limits are bytes; nullopt means unlimited.
class Memory {
 public:
  Memory(MemoryGroup group, std::unique_ptr<Knobs> knobs) : group_(std::move(group)), knobs_(std::move(knobs)) {}
  const MemoryGroup& group() const { return group_; }
  Knobs& knobs() { return *knobs_; }
  Result<int64_t> usage();                 // memory.usage_in_bytes | memory.current
  Result<std::optional<int64_t>> limit();  // memory.limit_in_bytes | memory.max
  Result<void> set_limit(std::optional<int64_t> bytes);
  Result<std::optional<int64_t>> swap_usage();  // v1: memsw - usage (if accounted); v2: memory.swap.current
  // What the group holds that the host gets back without writing anything (memory.stat;
  // zeros when the group has none).
  Result<Reclaimable> reclaimable();

 private:
  MemoryGroup group_;
  std::unique_ptr<Knobs> knobs_;
};

// Parses "max" / a v1 "unlimited" value (>= 2^62) / a byte count.
Result<std::optional<int64_t>> parse_limit(std::string_view text);
std::string format_limit(Version v, std::optional<int64_t> bytes);

// Records knobs before changing them and writes the old values back, in reverse order,
// on restore() or destruction. A failed restore is retried once and logged loudly.
class LimitGuard {
 public:
  explicit LimitGuard(Knobs& knobs) : knobs_(&knobs) {}
  LimitGuard(LimitGuard&& other) noexcept
      : knobs_(other.knobs_), saved_(std::move(other.saved_)), record_(std::move(other.record_)) {
    other.saved_.clear();
    other.record_.clear();
  }
  LimitGuard& operator=(LimitGuard&&) = delete;
  LimitGuard(const LimitGuard&) = delete;
  ~LimitGuard();
  // Saves the knob's current value (first time only), then writes `value`. A knob whose
  // read form is not its write form (v1's memory.oom_control) passes `previous`.
  Result<void> set(const std::string& knob, const std::string& value,
                   std::optional<std::string> previous = std::nullopt);
  Result<void> restore();
  bool active() const { return !saved_.empty(); }
  // Keeps the values to put back in a file as well (written before each change, removed
  // once restored): a process killed while a VM is throttled leaves it for the next run,
  // which puts the limits back with put_back_recorded().
  void keep_record(std::string path) { record_ = std::move(path); }

 private:
  Result<void> write_record() const;
  Knobs* knobs_;
  std::vector<std::pair<std::string, std::string>> saved_;
  std::string record_;
};

// Puts back the values a killed run recorded (LimitGuard::keep_record) at `record`, newest
// first, and removes the record; how many knobs it wrote (0: there was no record). A knob
// that cannot be written keeps the record for the next attempt.
Result<size_t> put_back_recorded(Knobs& knobs, const std::string& record);

// Lowers the group's memory limit to `bytes` (v1: memory.limit_in_bytes; v2: memory.max),
// returning the guard that lifts it again. The limit steps down by halves, and a write
// the kernel refuses with EBUSY (a reclaim pass that freed nothing while swap write-back
// is in flight) is retried until `timeout`. On v1 the group's OOM killer is off while
// throttled: a vCPU thread faulting faster than the host swaps would otherwise get QEMU
// killed (seen under TCG); with it off the thread waits until the limit is lifted.
// (v2 has no such switch.)
// `record`: where the guard keeps its values until restored (keep_record; "" = nowhere).
Result<LimitGuard> throttle(Memory& memory, int64_t bytes, Millis timeout = Millis(30000),
                            const std::string& record = "");

// Evicts what `what` names and nothing else (v1 only), the OOM killer off meanwhile (an
// allocation waits instead): first the page cache, with swappiness 0 (limit reclaim stays
// off anonymous memory) and the limit lowered to usage minus the cache plus an eighth; then
// the unmapped swap cache, anonymous memory scanned (swappiness 100 if it was 0), the limit
// lowered in eighths of it: reclaim drops those pages, clean and unmapped, but takes a
// mapped page seen once in a while too (one the process touched since being scanned is
// kept), so it stops as soon as mapped memory shrinks by 2 MiB. The kernel reclaims while
// the limit is written; the returned guard puts every knob back. For a paused VM: QEMU's
// page cache is the host's copy of what the guest read from its disk, which it caches
// itself, and the swap cache a second copy of what is in swap.
Result<LimitGuard> evict_reclaimable(Memory& memory, const Reclaimable& what, Millis timeout = Millis(2000),
                                     const std::string& record = "");

}  // namespace seamless::cgroup
