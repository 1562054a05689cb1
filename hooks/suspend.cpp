// SPDX-License-Identifier: Apache-2.0
// Suspend-to-{ram,disk,swap}: pre-checks, the procedures, resume and rollback.
#include "hooks/suspend.h"

#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "common/sys.h"
#include "qmp/guest.h"

namespace seamless::suspend {
namespace {

constexpr int64_t kMiB = 1 << 20;

std::string mib(int64_t bytes) { return cat(bytes / kMiB, " MiB"); }

// Times the steps of one procedure into a Report (if any).
class Steps {
 public:
  explicit Steps(Report* r) : report_(r), start_(Clock::now()) {}
  void done(const char* step) {
    if (report_) report_->steps.push_back({step, seconds_since(start_)});
    start_ = Clock::now();
  }

 private:
  Report* report_;
  Clock::time_point start_;
};

// Polls query-balloon until the guest holds `target` (within 1 MiB; `at_least`: that or
// more) or time runs out. Returns what the guest holds then.
Result<int64_t> wait_balloon(qmp::Channel& monitor, int64_t target, Millis timeout, bool at_least = false) {
  Deadline deadline(timeout);
  for (;;) {
    auto actual = SL_TRY(qmp::execute(monitor, qmp::QueryBalloon{})).actual;
    const bool there = at_least ? actual >= target - kMiB : std::abs(actual - target) <= kMiB;
    if (there || deadline.expired()) return actual;
    std::this_thread::sleep_for(Millis(at_least ? 50 : 100));
  }
}

// Waits until the cgroup's usage fits the throttle or stops falling.
Result<int64_t> wait_settled(cgroup::Memory& mem, int64_t limit, Millis timeout) {
  Deadline deadline(timeout);
  int64_t last = SL_TRY(mem.usage());
  int stable = 0;
  while (!deadline.expired()) {
    std::this_thread::sleep_for(Millis(100));
    int64_t now = SL_TRY(mem.usage());
    if (now <= limit + 2 * kMiB) return now;
    stable = (last - now < kMiB) ? stable + 1 : 0;
    if (stable >= 10) return now;  // a second without progress: the rest is not swappable
    last = now;
  }
  return mem.usage();
}

// Undoes a half-done suspend: the VM runs again with its pre-park balloon.
class Rollback {
 public:
  Rollback(Domain& d, int64_t balloon_before) : domain_(d), balloon_before_(balloon_before) {}
  Rollback(const Rollback&) = delete;
  Rollback& operator=(const Rollback&) = delete;
  ~Rollback() {
    if (dismissed_) return;
    SL_LOG(Warn, "suspend", "rolling back `", domain_.name(), "`");
    auto& m = domain_.monitor();
    if (auto st = qmp::execute(m, qmp::QueryStatus{}); st.ok() && !st->running) (void)qmp::execute(m, qmp::Cont{});
    if (balloon_before_ > 0) {
      if (auto r = qmp::execute(m, qmp::Balloon{balloon_before_}); !r.ok())
        SL_LOG(Error, "suspend", "rollback of `", domain_.name(), "`: balloon: ", r.error().message);
    }
  }
  void dismiss() { dismissed_ = true; }

 private:
  Domain& domain_;
  int64_t balloon_before_;
  bool dismissed_ = false;
};

Result<qmp::BalloonStats> fresh_stats(qmp::Channel& monitor, Millis timeout) {
  auto stats = SL_TRY(qmp::balloon_stats(monitor));
  if (stats.last_update > 0 && stats.total) return stats;
  // Statistics are off (plain QEMU): switch polling on and wait for the first report.
  SL_TRY(qmp::set_balloon_stats_period(monitor, 1));
  for (Deadline d(timeout); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
    stats = SL_TRY(qmp::balloon_stats(monitor));
    if (stats.last_update > 0 && stats.total) return stats;
  }
  return make_error(ErrorKind::Timeout,
                    "the balloon driver in the guest reports no memory statistics (is "
                    "virtio_balloon loaded in the guest?)");
}

// Balloon statistics the guest reported after `stamp` (seconds since the epoch).
Result<qmp::BalloonStats> stats_after(qmp::Channel& monitor, int64_t stamp, Millis timeout) {
  for (Deadline d(timeout);; std::this_thread::sleep_for(Millis(200))) {
    auto stats = SL_TRY(qmp::balloon_stats(monitor));
    if (stats.last_update > stamp && stats.total) return stats;
    if (d.expired()) return make_error(ErrorKind::Timeout, "no balloon statistics newer than ", stamp);
  }
}

// After the balloon inflated to `reached`: while the guest's next reports show memory
// pressure, it gets a margin back (never more than it had before the park). A guest
// that reports nothing in time is taken as it is.
int64_t relieve_pressure(Domain& domain, qmp::BalloonStats before, int64_t reached, int64_t ceiling,
                         const Options& opts, Report* report) {
  auto& monitor = domain.monitor();
  for (int round = 0; round < 3 && reached < ceiling; ++round) {
    auto after = stats_after(monitor, before.last_update, opts.stats_timeout);
    if (!after.ok()) break;
    const std::string why = memory_pressure(before, *after, opts.margin_bytes);
    if (why.empty()) break;
    const int64_t relieved = std::min(ceiling, reached + std::max<int64_t>(opts.margin_bytes, 16 * kMiB));
    SL_LOG(Warn, "suspend", "`", domain.name(), "` is short of memory at ", mib(reached), " (", why, "): gives back ",
           mib(relieved - reached));
    if (!qmp::execute(monitor, qmp::Balloon{relieved}).ok()) break;
    auto now = wait_balloon(monitor, relieved, opts.balloon_timeout);
    if (report) report->pressure_relief += (now.ok() ? *now : relieved) - reached;
    reached = now.ok() ? *now : relieved;
    before = *after;
  }
  return reached;
}

Result<Parked> suspend_swap(Domain& domain, const Options& opts, Report* report) {
  Steps steps(report);
  auto& monitor = domain.monitor();
  Parked parked{Mode::Swap, SL_TRY(qmp::execute(monitor, qmp::QueryBalloon{})).actual};
  // QEMU's cgroup is checked (its own, writable) before anything moves.
  cgroup::Memory* mem = SL_TRY(domain.memory());
  Rollback rollback(domain, parked.balloon_before);

  // (1) Inflate the balloon to what the guest uses plus a margin.
  auto stats = SL_TRY_CTX(fresh_stats(monitor, opts.stats_timeout), "balloon");
  int64_t target = SL_TRY(balloon_target(stats, parked.balloon_before, opts.margin_bytes, opts.floor_bytes));
  SL_TRY_CTX(qmp::execute(monitor, qmp::Balloon{target}), "inflating the balloon to ", mib(target));
  int64_t reached = SL_TRY(wait_balloon(monitor, target, opts.balloon_timeout));
  if (report) report->balloon_target = target;
  // The balloon cannot move once the VM is paused: parking a guest whose driver does
  // not give memory back would reclaim little and hide the fault, so it fails instead.
  // A guest that gave back most of it and stops short (it needs a few MiB more than its
  // statistics said, just after its services came back) keeps what it needs.
  const bool most = parked.balloon_before - reached >= (parked.balloon_before - target) / 2;
  if (reached - target > kMiB && !most)
    return make_error(ErrorKind::Timeout, "the balloon of `", domain.name(), "` did not reach ", mib(target),
                      " within ", opts.balloon_timeout.count(), " ms (stopped at ", mib(reached), ")");
  if (reached - target > kMiB)
    SL_LOG(Info, "suspend", "`", domain.name(), "` keeps ", mib(reached), " (balloon target ", mib(target), ")");
  // The pause follows the prefetch at once: step 5 may squeeze a relieved guest again.
  reached = relieve_pressure(domain, stats, reached, parked.balloon_before, opts, report);
  steps.done("balloon");

  // (2) Squeeze QEMU's cgroup so the host swaps the rest out; (3) lift the limit again.
  if (report) report->usage_before = SL_TRY(mem->usage());
  {
    auto guard = SL_TRY_CTX(cgroup::throttle(*mem, opts.throttle_bytes, Millis(30000), opts.limits_record),
                            "throttling `", domain.name(), "`");
    auto settled = wait_settled(*mem, opts.throttle_bytes, opts.settle_timeout);
    auto restored = guard.restore();
    if (!settled.ok()) return std::move(settled).error().wrap("waiting for the swap-out");
    SL_TRY(std::move(restored));
    if (report) report->usage_after = *settled;
  }
  steps.done("swap-out");

  // (4) Prefetch: the caller's command brings back the pages a wake-up needs.
  int64_t stamp = stats.last_update;
  int64_t current = reached;  // the balloon's size now
  if (auto latest = qmp::balloon_stats(monitor); latest.ok()) stamp = std::max(stamp, latest->last_update);
  if (!opts.prefetch.empty()) {
    qmp::Channel* agent = domain.agent();
    if (!agent) return make_error(ErrorKind::Invalid, "prefetch needs the guest agent of `", domain.name(), "`");
    if (opts.prefetch_room_bytes > 0) {
      const int64_t room = std::min(reached + opts.prefetch_room_bytes, parked.balloon_before);
      current = room;
      SL_TRY_CTX(qmp::execute(monitor, qmp::Balloon{room}), "deflating the balloon to ", mib(room),
                 " for the prefetch");
      (void)wait_balloon(monitor, room, opts.balloon_timeout);
    }
    qmp::RunOptions ro;
    ro.timeout = opts.prefetch_timeout;
    SL_TRY_CTX(qmp::guest_run_ok(*agent, opts.prefetch[0], {opts.prefetch.begin() + 1, opts.prefetch.end()}, ro),
               "prefetch");
  }
  steps.done("prefetch");

  // (5) Inflate again: whatever the guest freed since goes too (what the prefetch allocated
  // and freed, a decompressor's window, CRIU's buffers, is resident on the host until the
  // balloon takes it): once the guest has reported its memory after the prefetch.
  // (6) pause.
  std::optional<int64_t> t2;
  if (auto again = stats_after(monitor, stamp, opts.stats_timeout); again.ok()) {
    if (auto t = balloon_target(*again, current, opts.margin_bytes, opts.floor_bytes); t.ok()) t2 = *t;
  }
  if (!t2 && current > reached) t2 = reached;  // no news from the guest: back to where it was
  if (t2 && *t2 < current) {
    SL_TRY(qmp::execute(monitor, qmp::Balloon{*t2}));
    (void)wait_balloon(monitor, *t2, opts.balloon_timeout / 4);
  }
  SL_TRY_CTX(qmp::execute(monitor, qmp::Stop{}), "pausing `", domain.name(), "`");
  steps.done("pause");
  rollback.dismiss();
  // (7) What QEMU's group holds that is a copy of something stored elsewhere goes: the
  // host's page cache of what the guest read from its disk (the prefetch's files among it),
  // which the guest caches itself, and the swap cache that the prefetch's swap-ins read
  // ahead and nobody mapped (26-49 MiB of a 2 GiB apache2+PHP guest, a third of what it
  // held besides TCG's cache), a second copy of what is in swap. Nothing of the guest's
  // memory that is mapped goes. Best effort: the VM is parked either way.
  if (auto what = mem->reclaimable();
      what.ok() && what->total() > 8 * kMiB && mem->group().version == cgroup::Version::V1) {
    const int64_t before = mem->usage().ok() ? *mem->usage() : 0;
    auto guard = cgroup::evict_reclaimable(*mem, *what, Millis(2000), opts.limits_record);
    if (guard.ok()) {
      if (auto r = guard->restore(); !r.ok()) SL_LOG(Error, "suspend", "`", domain.name(), "`: ", r.error().message);
      if (auto after = mem->usage(); after.ok() && report) report->evicted = std::max<int64_t>(0, before - *after);
    } else {
      SL_LOG(Info, "suspend", "`", domain.name(), "` keeps its page and swap cache: ", guard.error().message);
    }
  }
  steps.done("evict-cache");
  if (auto held = mem->usage(); held.ok() && report) report->usage_parked = *held;
  return parked;
}

}  // namespace

Result<Mode> parse_mode(std::string_view text) {
  if (text == "ram") return Mode::Ram;
  if (text == "disk") return Mode::Disk;
  if (text == "swap") return Mode::Swap;
  return make_error(ErrorKind::Invalid, "unknown suspend mode `", text, "` (ram, disk or swap)");
}

std::string_view to_string(Mode mode) {
  switch (mode) {
    case Mode::Ram: return "ram";
    case Mode::Disk: return "disk";
    case Mode::Swap: return "swap";
  }
  return "?";
}

Result<int64_t> balloon_target(const qmp::BalloonStats& stats, int64_t current_bytes, int64_t margin_bytes,
                               int64_t floor_bytes) {
  if (!stats.total) return make_error(ErrorKind::Protocol, "balloon statistics lack the guest's total memory");
  int64_t free_ish;
  if (stats.available)
    free_ish = *stats.available;
  else if (stats.free)
    free_ish = *stats.free + stats.caches.value_or(0);
  else
    return make_error(ErrorKind::Protocol, "balloon statistics lack free and available memory");
  // total is what the guest has now (after any earlier inflation), not its RAM size.
  int64_t used = std::max<int64_t>(0, *stats.total - free_ish);
  int64_t target = std::max(used + margin_bytes, floor_bytes);
  return std::min(target, current_bytes);
}

std::string memory_pressure(const qmp::BalloonStats& before, const qmp::BalloonStats& after, int64_t margin_bytes) {
  // A few MiB of paging between two reports is a guest that reads a file; more is a guest
  // that lost its working set.
  constexpr int64_t kMajorFaults = 1000, kSwapIn = 16 * kMiB;
  if (after.available && *after.available < margin_bytes / 2)
    return cat("MemAvailable ", *after.available / kMiB, " MiB, below half the margin");
  if (before.major_faults && after.major_faults && *after.major_faults - *before.major_faults > kMajorFaults)
    return cat(*after.major_faults - *before.major_faults, " major faults since its last report");
  if (before.swap_in && after.swap_in && *after.swap_in - *before.swap_in > kSwapIn)
    return cat((*after.swap_in - *before.swap_in) / kMiB, " MiB swapped in since its last report");
  return "";
}

Result<HostMemory> parse_meminfo(std::string_view text) {
  HostMemory h;
  bool total = false, free = false;
  std::istringstream in{std::string(text)};
  std::string key;
  int64_t kib = 0;
  while (in >> key >> kib) {
    if (key == "SwapTotal:") h.swap_total = kib * 1024, total = true;
    if (key == "SwapFree:") h.swap_free = kib * 1024, free = true;
    in.ignore(1 << 10, '\n');
  }
  if (!total || !free) return make_error(ErrorKind::Protocol, "meminfo lacks SwapTotal/SwapFree");
  return h;
}

Result<HostMemory> host_memory(const std::string& path) {
  return SL_TRY_CTX(parse_meminfo(SL_TRY(sys::read_file(path))), "`", path, "`");
}

std::string Parked::to_json() const {
  return cat("{\"mode\":\"", to_string(mode), "\",\"balloon_before\":", balloon_before, "}");
}

Result<Parked> Parked::from_json(std::string_view text) {
  auto j = SL_TRY_CTX(qmp::parse(text), "parked state");
  Parked p;
  p.mode = SL_TRY_CTX(parse_mode(SL_TRY(qmp::get_string(j.root(), "mode"))), "parked state");
  p.balloon_before = SL_TRY_CTX(qmp::get_int(j.root(), "balloon_before"), "parked state");
  if (p.balloon_before < 0) return make_error(ErrorKind::Invalid, "parked state: negative balloon size");
  return p;
}

Result<void> precheck(Domain& domain, const Options& opts, const HostMemory& host) {
  auto ctx = cat("cannot suspend `", domain.name(), "` to ", to_string(opts.mode));
  auto& monitor = domain.monitor();
  auto st = SL_TRY_CTX(qmp::execute(monitor, qmp::QueryStatus{}), ctx);
  if (!st.running) return make_error(ErrorKind::Invalid, ctx, ": it is not running (status `", st.status, "`)");
  if (opts.mode != Mode::Swap) return ok();

  if (host.swap_total <= 0) return make_error(ErrorKind::Invalid, ctx, ": the host has no active swap");
  auto balloon = qmp::execute(monitor, qmp::QueryBalloon{});
  if (!balloon.ok()) {
    if (balloon.error().remote_class == "DeviceNotActive")
      return make_error(ErrorKind::Invalid, ctx, ": it has no balloon device");
    return std::move(balloon).error().wrap(ctx);
  }
  auto stats = SL_TRY_CTX(fresh_stats(monitor, opts.stats_timeout), ctx);
  int64_t target = SL_TRY_CTX(balloon_target(stats, balloon->actual, opts.margin_bytes, opts.floor_bytes), ctx);
  int64_t needed = std::max<int64_t>(0, target - opts.throttle_bytes);
  if (host.swap_free < needed)
    return make_error(ErrorKind::Invalid, ctx, ": the host has ", mib(host.swap_free), " of swap free, ",
                      "swapping out the guest needs about ", mib(needed));
  cgroup::Memory* mem = SL_TRY_CTX(domain.memory(), ctx);
  const char* knob = mem->group().version == cgroup::Version::V1 ? "memory.limit_in_bytes" : "memory.max";
  if (::access((mem->group().dir() + "/" + knob).c_str(), W_OK) != 0)
    return errno_error(cat(ctx, ": cgroup knob `", mem->group().dir(), "/", knob, "` is not writable"));
  if (!opts.prefetch.empty()) {
    qmp::Channel* agent = domain.agent();
    if (!agent) return make_error(ErrorKind::Invalid, ctx, ": prefetch needs a guest agent channel");
    SL_TRY_CTX(qmp::execute(*agent, qmp::GuestPing{}, Millis(5000)), ctx, ": guest agent (needed for prefetch)");
  }
  return ok();
}

Result<size_t> put_back_limits(Domain& domain, const std::string& record) {
  if (record.empty() || ::access(record.c_str(), F_OK) != 0) return size_t(0);
  cgroup::Memory* mem = SL_TRY(domain.memory());
  return SL_TRY_CTX(cgroup::put_back_recorded(mem->knobs(), record), "`", domain.name(), "`");
}

Result<Parked> suspend(Domain& domain, const Options& opts, Report* report) {
  SL_TRY(put_back_limits(domain, opts.limits_record));
  switch (opts.mode) {
    case Mode::Ram: {
      Steps steps(report);
      Parked p{Mode::Ram, SL_TRY(qmp::execute(domain.monitor(), qmp::QueryBalloon{})).actual};
      SL_TRY_CTX(qmp::execute(domain.monitor(), qmp::Stop{}), "pausing `", domain.name(), "`");
      steps.done("pause");
      return p;
    }
    case Mode::Disk: {
      Steps steps(report);
      Parked p{Mode::Disk, SL_TRY(qmp::execute(domain.monitor(), qmp::QueryBalloon{})).actual};
      SL_TRY_CTX(domain.save_to_disk(), "saving `", domain.name(), "` to disk");
      steps.done("save");
      return p;
    }
    case Mode::Swap: return suspend_swap(domain, opts, report);
  }
  return make_error(ErrorKind::Invalid, "unknown mode");
}

Result<void> resume(Domain& domain, const Parked& parked, Report* report, Deflate deflate, int64_t room_bytes) {
  Steps steps(report);
  if (parked.mode == Mode::Disk) {
    SL_TRY_CTX(domain.restore_from_disk(), "restoring `", domain.name(), "` from disk");
    steps.done("restore");
    return ok();
  }
  auto& monitor = domain.monitor();
  // What the guest holds while parked (its balloon stays where the park left it).
  int64_t held_before = 0;
  if (auto b = qmp::execute(monitor, qmp::QueryBalloon{}); b.ok()) held_before = b->actual;
  SL_TRY_CTX(qmp::execute(monitor, qmp::Cont{}), "resuming `", domain.name(), "`");
  steps.done("cont");
  if (parked.mode == Mode::Swap && parked.balloon_before > 0) {
    // The guest has its use plus a margin until the driver has given the rest back: what
    // runs first (a gateway's restore) would make it reclaim its own cache, the prefetched
    // pages among it, and page them in again from the disk. The wake overlaps this wait
    // with the sink's hand-back.
    // Room for that (room_bytes) is waited for, not the whole deflation: under TCG the
    // driver gives back about half a GiB a second, and the rest follows while it runs
    // (Deflate::Full) or when the caller asks for it (Deflate::Room).
    const int64_t enough = std::min(parked.balloon_before, held_before + std::max<int64_t>(room_bytes, 0));
    const int64_t target = deflate == Deflate::Full ? parked.balloon_before : std::max(enough, held_before);
    SL_TRY_CTX(qmp::execute(monitor, qmp::Balloon{target}), "deflating the balloon of `", domain.name(), "`");
    auto actual = wait_balloon(monitor, enough, Millis(15000), true);
    if (actual.ok() && *actual < enough - kMiB)
      SL_LOG(Info, "suspend", "`", domain.name(), "` resumed with ", mib(*actual), " of ", mib(parked.balloon_before));
    steps.done("deflate");
  }
  return ok();
}

Result<void> deflate_rest(Domain& domain, const Parked& parked, Millis timeout) {
  if (parked.mode != Mode::Swap || parked.balloon_before <= 0) return ok();
  auto& monitor = domain.monitor();
  SL_TRY_CTX(qmp::execute(monitor, qmp::Balloon{parked.balloon_before}), "deflating the balloon of `", domain.name(),
             "`");
  const int64_t actual = SL_TRY(wait_balloon(monitor, parked.balloon_before, timeout, true));
  if (actual < parked.balloon_before - kMiB)
    return make_error(ErrorKind::Timeout, "the balloon of `", domain.name(), "` gave back ", mib(actual), " of ",
                      mib(parked.balloon_before), " within ", timeout.count(), " ms");
  return ok();
}

}  // namespace seamless::suspend
