// SPDX-License-Identifier: Apache-2.0
// The suspend engine against a fake QEMU (balloon model on the fake monitor), a fake
// guest agent and a fake cgroup tree: plans, pre-checks, step order, rollback.
#include "hooks/suspend.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

#include "common/encoding.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "qmp/socket.h"
#include "tests/support/fake_monitor.h"

namespace seamless::suspend {
namespace {

using test::FakeMonitor;
constexpr int64_t kMiB = 1 << 20;

qmp::BalloonStats stats(int64_t total, std::optional<int64_t> available, std::optional<int64_t> free = {},
                        std::optional<int64_t> caches = {}) {
  qmp::BalloonStats s;
  s.last_update = 1;
  s.total = total;
  s.available = available;
  s.free = free;
  s.caches = caches;
  return s;
}

TEST(BalloonTarget, UsedPlusMarginClampedToFloorAndCurrent) {
  EXPECT_EQ(balloon_target(stats(1024 * kMiB, 900 * kMiB), 1024 * kMiB, 48 * kMiB, 96 * kMiB).value(), 172 * kMiB);
  EXPECT_EQ(balloon_target(stats(1024 * kMiB, 1000 * kMiB), 1024 * kMiB, 48 * kMiB, 96 * kMiB).value(), 96 * kMiB);
  EXPECT_EQ(balloon_target(stats(1024 * kMiB, 10 * kMiB), 1024 * kMiB, 48 * kMiB, 96 * kMiB).value(), 1024 * kMiB);
  // Without MemAvailable: free + caches.
  EXPECT_EQ(balloon_target(stats(512 * kMiB, {}, 300 * kMiB, 100 * kMiB), 512 * kMiB, 0, 0).value(), 112 * kMiB);
  EXPECT_FALSE(balloon_target(stats(512 * kMiB, {}), 512 * kMiB, 0, 0).ok());
  qmp::BalloonStats none;
  EXPECT_FALSE(balloon_target(none, 512 * kMiB, 0, 0).ok());
}

TEST(HostMemoryInfo, ParsesSwap) {
  auto h = parse_meminfo("MemTotal: 100 kB\nSwapTotal:     2048 kB\nSwapFree:  1024 kB\n");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->swap_total, 2048 * 1024);
  EXPECT_EQ(h->swap_free, 1024 * 1024);
  EXPECT_FALSE(parse_meminfo("MemTotal: 1 kB\n").ok());
}

TEST(ParkedState, JsonRoundTripAndBadInput) {
  Parked p{Mode::Swap, 512 * kMiB};
  auto back = Parked::from_json(p.to_json());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->mode, Mode::Swap);
  EXPECT_EQ(back->balloon_before, 512 * kMiB);
  EXPECT_FALSE(Parked::from_json("{\"mode\":\"hibernate\",\"balloon_before\":1}").ok());
  EXPECT_FALSE(Parked::from_json("{\"mode\":\"ram\"}").ok());
  EXPECT_FALSE(Parked::from_json("not json").ok());
  EXPECT_FALSE(Parked::from_json("{\"mode\":\"ram\",\"balloon_before\":-5}").ok());
  EXPECT_FALSE(parse_mode("hibernate").ok());
}

// A QEMU whose balloon moves at once and whose guest uses `used` bytes.
struct FakeQemu {
  FakeMonitor qmp{FakeMonitor::Kind::Qmp};
  std::mutex mu;
  int64_t actual = 512 * kMiB, used = 100 * kMiB;
  bool running = true, has_balloon = true, stats_on = true, balloon_stuck = false;
  // Reports advance (a fresh last-update on each read) and the guest pages (major faults
  // grow) while its balloon leaves it less than `pages_below`.
  bool advancing = false;
  int64_t update = 1700000000, faults = 0, pages_below = 0;
  std::vector<std::string> log;

  FakeQemu() {
    qmp.expect("qmp_capabilities", {R"({"return": {}, "id": %ID%})"});
    auto record = [this](const std::string& what) {
      std::lock_guard l(mu);
      log.push_back(what);
    };
    qmp.on("query-status", [this](const qmp::Value&) {
      return std::vector<std::string>{std::string(R"({"return": {"running": )") + (running ? "true" : "false") +
                                      R"(, "status": ")" + (running ? "running" : "paused") + R"("}, "id": %ID%})"};
    });
    qmp.on("query-balloon", [this](const qmp::Value&) {
      if (!has_balloon)
        return std::vector<std::string>{
            R"({"error": {"class": "DeviceNotActive", "desc": "No balloon device has been activated"}, "id": %ID%})"};
      return std::vector<std::string>{R"({"return": {"actual": )" + std::to_string(actual) + R"(}, "id": %ID%})"};
    });
    qmp.on("balloon", [this, record](const qmp::Value& a) {
      int64_t requested = a["value"].GetInt64();
      if (!balloon_stuck) actual = requested;
      record("balloon " + std::to_string(requested / kMiB));
      return std::vector<std::string>{R"({"return": {}, "id": %ID%})"};
    });
    qmp.on("qom-get", [this](const qmp::Value&) {
      int64_t upd = stats_on ? (advancing ? ++update : update) : 0;
      if (actual < pages_below) faults += 5000;
      return std::vector<std::string>{
          R"({"return": {"last-update": )" + std::to_string(upd) + R"(, "stats": {"stat-major-faults": )" +
          std::to_string(faults) + R"(, "stat-total-memory": )" + std::to_string(actual) +
          R"(, "stat-available-memory": )" + std::to_string(actual - used) + R"(}}, "id": %ID%})"};
    });
    qmp.on("qom-set", [](const qmp::Value&) { return std::vector<std::string>{R"({"return": {}, "id": %ID%})"}; });
    qmp.on("stop", [this, record](const qmp::Value&) {
      running = false;
      record("stop");
      return std::vector<std::string>{R"({"return": {}, "id": %ID%})"};
    });
    qmp.on("cont", [this, record](const qmp::Value&) {
      running = true;
      record("cont");
      return std::vector<std::string>{R"({"return": {}, "id": %ID%})"};
    });
  }
  std::vector<std::string> events() {
    std::lock_guard l(mu);
    return log;
  }
};

// A guest agent whose programs exit with `exit_code`.
struct FakeAgent {
  FakeMonitor qga{FakeMonitor::Kind::Qga};
  int exit_code = 0;
  int runs = 0;
  FakeAgent() {
    qga.on("guest-ping", [](const qmp::Value&) { return std::vector<std::string>{R"({"return": {}})"}; });
    qga.on("guest-exec", [this](const qmp::Value&) {
      ++runs;
      return std::vector<std::string>{R"({"return": {"pid": 7}})"};
    });
    qga.on("guest-exec-status", [this](const qmp::Value&) {
      return std::vector<std::string>{R"({"return": {"exited": true, "exitcode": )" + std::to_string(exit_code) +
                                      R"(, "err-data": ")" + base64_encode("prefetch broke\n") + "\"}}"};
    });
  }
};

class FakeDomain final : public Domain {
 public:
  FakeDomain(FakeQemu& q, FakeAgent* a) : dir_(TempDir::create("/tmp/seamless-susp-").value()) {
    monitor_ = qmp::QmpSocket::connect(q.qmp.path()).value();
    if (a) agent_ = qmp::QgaSocket::connect(a->qga.path()).value();
    cgroup::MemoryGroup g{cgroup::Version::V1, dir_.path(), "/qemu"};
    std::filesystem::create_directories(g.dir());
    put(g, "memory.limit_in_bytes", "9223372036854771712");
    put(g, "memory.usage_in_bytes", "600000000");
    put(g, "memory.swappiness", "60");
    memory_.emplace(g, cgroup::file_knobs(g));
  }
  static void put(const cgroup::MemoryGroup& g, const std::string& k, const std::string& v) {
    ASSERT_TRUE(sys::write_file(g.dir() + "/" + k, v).ok());
  }
  std::string knob(const std::string& k) { return sys::read_file(memory_->group().dir() + "/" + k).value(); }
  void break_knob(const std::string& k) {
    std::filesystem::remove(memory_->group().dir() + "/" + k);
    std::filesystem::create_directory(memory_->group().dir() + "/" + k);
  }

  std::string name() const override { return "fake"; }
  qmp::Channel& monitor() override { return *monitor_; }
  qmp::Channel* agent() override { return agent_.get(); }
  Result<cgroup::Memory*> memory() override { return &*memory_; }
  Result<void> save_to_disk() override { return make_error(ErrorKind::Invalid, "no disk in the fake"); }
  Result<void> restore_from_disk() override { return make_error(ErrorKind::Invalid, "no disk in the fake"); }

 private:
  TempDir dir_;
  std::unique_ptr<qmp::QmpSocket> monitor_;
  std::unique_ptr<qmp::QgaSocket> agent_;
  std::optional<cgroup::Memory> memory_;
};

Options fast_swap() {
  Options o;
  o.mode = Mode::Swap;
  o.settle_timeout = Millis(300);
  o.balloon_timeout = Millis(300);
  o.stats_timeout = Millis(300);
  return o;
}

const HostMemory kPlentyOfSwap{8LL << 30, 8LL << 30};

TEST(Suspend, ThePrefetchGetsRoomThatTheBalloonTakesBackBeforeThePause) {
  FakeQemu q;
  FakeAgent a;
  FakeDomain d(q, &a);
  auto opts = fast_swap();
  opts.prefetch = {"/usr/sbin/seamless-guest", "prewarm"};
  opts.prefetch_room_bytes = 64 * kMiB;
  auto parked = suspend(d, opts);
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  EXPECT_EQ(a.runs, 1);
  // 100 used + 48 margin; 64 MiB more while the prefetch runs; back before the pause.
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "balloon 212", "balloon 148", "stop"}));
}

TEST(MemoryPressure, PagingOrTooLittleAvailableIsPressure) {
  auto report = [](int64_t available, int64_t faults, int64_t swap_in) {
    qmp::BalloonStats s = stats(512 * kMiB, available);
    s.major_faults = faults;
    s.swap_in = swap_in;
    return s;
  };
  const int64_t margin = 48 * kMiB;
  EXPECT_EQ(memory_pressure(report(200 * kMiB, 10, 0), report(100 * kMiB, 500, 4 * kMiB), margin), "");
  EXPECT_NE(memory_pressure(report(200 * kMiB, 10, 0), report(20 * kMiB, 10, 0), margin).find("MemAvailable 20 MiB"),
            std::string::npos);
  EXPECT_NE(memory_pressure(report(200 * kMiB, 10, 0), report(100 * kMiB, 5010, 0), margin).find("5000 major faults"),
            std::string::npos);
  EXPECT_NE(
      memory_pressure(report(200 * kMiB, 10, 0), report(100 * kMiB, 10, 64 * kMiB), margin).find("64 MiB swapped"),
      std::string::npos);
  qmp::BalloonStats bare = stats(512 * kMiB, 100 * kMiB);
  EXPECT_EQ(memory_pressure(bare, bare, margin), "") << "no paging counters: only what is available counts";
}

// A guest that starts paging once squeezed to its use plus the margin gets a margin back
// for the swap-out and the prefetch (where it runs on); step 5 squeezes it again just
// before the pause, and resume waits for room.
TEST(Suspend, AGuestUnderMemoryPressureGetsAMarginBack) {
  FakeQemu q;
  q.advancing = true;
  q.pages_below = 190 * kMiB;
  FakeDomain d(q, nullptr);
  Report report;
  auto parked = suspend(d, fast_swap(), &report);
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "balloon 196", "balloon 148", "stop"}))
      << "100 used + the margin right before the pause";
  EXPECT_EQ(report.pressure_relief, 48 * kMiB);
}

TEST(Suspend, AGuestWithRoomIsNotGivenMore) {
  FakeQemu q;
  q.advancing = true;
  FakeDomain d(q, nullptr);
  Report report;
  ASSERT_TRUE(suspend(d, fast_swap(), &report).ok());
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "stop"}));
  EXPECT_EQ(report.pressure_relief, 0);
}

TEST(Suspend, SwapRunsTheStepsInOrderAndResumeUndoesThem) {
  FakeQemu q;
  FakeAgent a;
  FakeDomain d(q, &a);
  auto opts = fast_swap();
  opts.prefetch = {"/usr/sbin/seamless-guest", "prewarm"};
  ASSERT_TRUE(precheck(d, opts, kPlentyOfSwap).ok());
  Report report;
  auto parked = suspend(d, opts, &report);
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  EXPECT_EQ(parked->balloon_before, 512 * kMiB);
  EXPECT_EQ(report.balloon_target, 148 * kMiB);  // 100 used + 48 margin
  EXPECT_EQ(a.runs, 1) << "prefetch ran once";
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "stop"}));
  EXPECT_EQ(d.knob("memory.limit_in_bytes"), "9223372036854771712") << "limit restored after the swap-out";
  std::vector<std::string> steps;
  for (const auto& s : report.steps) steps.push_back(s.step);
  EXPECT_EQ(steps, (std::vector<std::string>{"balloon", "swap-out", "prefetch", "pause", "evict-cache"}));

  ASSERT_TRUE(resume(d, *parked).ok());
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "stop", "cont", "balloon 512"}));
  EXPECT_TRUE(q.running);
}

// A wake's resume gives a 2 GiB guest room for its restore (what it holds + 512 MiB) and
// the rest only when asked: the balloon does not deflate gigabytes beside the hand-back.
TEST(Suspend, AWakeGivesRoomFirstAndTheRestWhenAsked) {
  FakeQemu q;
  q.actual = 2048 * kMiB;
  FakeDomain d(q, nullptr);
  auto parked = suspend(d, fast_swap());
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  EXPECT_EQ(parked->balloon_before, 2048 * kMiB);
  ASSERT_TRUE(resume(d, *parked, nullptr, Deflate::Room).ok());
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "stop", "cont", "balloon 404"}));
  ASSERT_TRUE(deflate_rest(d, *parked, Millis(300)).ok());
  EXPECT_EQ(q.events().back(), "balloon 2048");
  EXPECT_EQ(q.actual, 2048 * kMiB);
  // Less room when asked (wake-room-mib).
  auto again = suspend(d, fast_swap());
  ASSERT_TRUE(again.ok()) << again.error().message;
  q.log.clear();
  ASSERT_TRUE(resume(d, *again, nullptr, Deflate::Room, 128 * kMiB).ok());
  EXPECT_EQ(q.events(), (std::vector<std::string>{"cont", "balloon 276"}));
  // A balloon that no longer moves is named, with what it reached.
  q.balloon_stuck = true;
  q.actual = 700 * kMiB;
  auto stuck = deflate_rest(d, *parked, Millis(300));
  ASSERT_FALSE(stuck.ok());
  EXPECT_NE(stuck.error().message.find("gave back 700 MiB of 2048 MiB"), std::string::npos) << stuck.error().message;
  // Nothing to give back in other modes.
  q.log.clear();
  EXPECT_TRUE(deflate_rest(d, Parked{Mode::Ram, 2048 * kMiB}).ok());
  EXPECT_TRUE(q.events().empty());
}

TEST(Suspend, CgroupFailureRollsBack) {
  FakeQemu q;
  FakeDomain d(q, nullptr);
  d.break_knob("memory.limit_in_bytes");
  auto parked = suspend(d, fast_swap());
  ASSERT_FALSE(parked.ok());
  EXPECT_NE(parked.error().message.find("throttling `fake`"), std::string::npos) << parked.error().message;
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "balloon 512"})) << "balloon deflated again";
  EXPECT_TRUE(q.running);
}

TEST(Suspend, PrefetchFailureRollsBackWithLimitRestored) {
  FakeQemu q;
  FakeAgent a;
  a.exit_code = 1;
  FakeDomain d(q, &a);
  auto opts = fast_swap();
  opts.prefetch = {"/bin/false"};
  auto parked = suspend(d, opts);
  ASSERT_FALSE(parked.ok());
  EXPECT_NE(parked.error().message.find("prefetch broke"), std::string::npos) << parked.error().message;
  EXPECT_EQ(d.knob("memory.limit_in_bytes"), "9223372036854771712");
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "balloon 512"}));
  EXPECT_TRUE(q.running);
}

TEST(Suspend, BalloonThatDoesNotMoveFailsTheParkAndRollsBack) {
  FakeQemu q;
  q.balloon_stuck = true;
  FakeDomain d(q, nullptr);
  auto parked = suspend(d, fast_swap());
  ASSERT_FALSE(parked.ok());
  EXPECT_EQ(parked.error().kind, ErrorKind::Timeout);
  EXPECT_NE(parked.error().message.find("did not reach 148 MiB within 300 ms (stopped at 512 MiB)"), std::string::npos)
      << parked.error().message;
  EXPECT_EQ(q.events(), (std::vector<std::string>{"balloon 148", "balloon 512"}));
  EXPECT_EQ(d.knob("memory.limit_in_bytes"), "9223372036854771712") << "never throttled";
  EXPECT_TRUE(q.running);
}

TEST(Suspend, RamModePausesAndResumes) {
  FakeQemu q;
  FakeDomain d(q, nullptr);
  Options o;
  o.mode = Mode::Ram;
  auto parked = suspend(d, o);
  ASSERT_TRUE(parked.ok());
  EXPECT_FALSE(q.running);
  ASSERT_TRUE(resume(d, *parked).ok());
  EXPECT_EQ(q.events(), (std::vector<std::string>{"stop", "cont"}));
}

TEST(Precheck, EachFailureNamesItsCause) {
  auto expect_fail = [](FakeQemu& q, FakeDomain& d, const Options& o, const HostMemory& h, const char* want) {
    auto r = precheck(d, o, h);
    ASSERT_FALSE(r.ok()) << want;
    EXPECT_NE(r.error().message.find(want), std::string::npos) << r.error().message;
    EXPECT_TRUE(q.events().empty()) << "a failed pre-check touches nothing";
  };
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    q.running = false;
    expect_fail(q, d, fast_swap(), kPlentyOfSwap, "not running (status `paused`)");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    expect_fail(q, d, fast_swap(), HostMemory{0, 0}, "the host has no active swap");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    expect_fail(q, d, fast_swap(), HostMemory{1 << 30, 50 * kMiB}, "50 MiB of swap free");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    q.has_balloon = false;
    expect_fail(q, d, fast_swap(), kPlentyOfSwap, "no balloon device");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    q.stats_on = false;
    expect_fail(q, d, fast_swap(), kPlentyOfSwap, "reports no memory statistics");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    auto o = fast_swap();
    o.prefetch = {"x"};
    expect_fail(q, d, o, kPlentyOfSwap, "prefetch needs a guest agent");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    // Root passes access(W_OK) on any file, so make the knob vanish instead.
    auto mem = d.memory();
    std::filesystem::remove((*mem)->group().dir() + "/memory.limit_in_bytes");
    expect_fail(q, d, fast_swap(), kPlentyOfSwap, "is not writable");
  }
  {
    FakeQemu q;
    FakeDomain d(q, nullptr);
    Options ram;
    ram.mode = Mode::Ram;
    EXPECT_TRUE(precheck(d, ram, HostMemory{0, 0}).ok()) << "ram mode needs no swap";
  }
}

}  // namespace
}  // namespace seamless::suspend
