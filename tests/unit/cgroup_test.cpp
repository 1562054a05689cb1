// SPDX-License-Identifier: Apache-2.0
// Memory cgroup discovery for libvirt's layouts (v1/v2, with and without systemd), and
// the limit guard on fake v1 and v2 trees, including failures half-way.
#include "hooks/cgroup.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "common/sys.h"
#include "common/tempdir.h"

namespace seamless::cgroup {
namespace {

// This host's shape: v1 controllers plus an empty v2 mount (hybrid).
constexpr const char* kHybridMounts =
    "25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    "29 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 25 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
constexpr const char* kUnifiedMounts =
    "25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

TEST(CgroupLocate, V1WithoutSystemd) {
  auto g = locate(kHybridMounts,
                  "12:memory:/machine/qemu-1-vm1.libvirt-qemu\n"
                  "4:cpu:/machine/qemu-1-vm1.libvirt-qemu/emulator\n"
                  "0::/\n");
  ASSERT_TRUE(g.ok()) << g.error().message;
  EXPECT_EQ(g->version, Version::V1);
  EXPECT_EQ(g->dir(), "/sys/fs/cgroup/memory/machine/qemu-1-vm1.libvirt-qemu");
}

TEST(CgroupLocate, V1WithSystemd) {
  auto g = locate(kHybridMounts, "9:memory:/machine.slice/machine-qemu\\x2d3\\x2dweb.scope\n1:name=systemd:/x\n");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dir(), "/sys/fs/cgroup/memory/machine.slice/machine-qemu\\x2d3\\x2dweb.scope");
}

TEST(CgroupLocate, V2WithSystemdGoesToTheDomainLevel) {
  auto g = locate(kUnifiedMounts, "0::/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt/emulator\n");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->version, Version::V2);
  EXPECT_EQ(g->dir(), "/sys/fs/cgroup/machine.slice/machine-qemu\\x2d3\\x2dweb.scope/libvirt");
}

TEST(CgroupLocate, V2WithoutSystemd) {
  auto g = locate(kUnifiedMounts, "0::/machine/qemu-2-db.libvirt-qemu/vcpu0\n");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dir(), "/sys/fs/cgroup/machine/qemu-2-db.libvirt-qemu");
}

TEST(CgroupLocate, CgroupNamespaceRootIsStripped) {
  auto g =
      locate("40 30 0:30 /machine /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/machine/qemu-1-a.libvirt-qemu\n");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dir(), "/sys/fs/cgroup/qemu-1-a.libvirt-qemu");
}

TEST(CgroupLocate, ClearErrors) {
  auto none = locate("", "0::/\n");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("no cgroup file system"), std::string::npos);
  // Memory not listed for v1: the v2 entry is the answer (for_pid then checks memory.max).
  auto unlisted = locate(kHybridMounts, "4:cpu:/x\n0::/user.slice\n");
  ASSERT_TRUE(unlisted.ok());
  EXPECT_EQ(unlisted->version, Version::V2);
  EXPECT_EQ(unlisted->dir(), "/sys/fs/cgroup/unified/user.slice");
  auto neither = locate(kHybridMounts, "4:cpu:/x\n");
  ASSERT_FALSE(neither.ok());
  EXPECT_EQ(neither.error().kind, ErrorKind::NotFound);
}

TEST(CgroupLimits, ParseAndFormat) {
  EXPECT_EQ(parse_limit("max").value(), std::nullopt);
  EXPECT_EQ(parse_limit("9223372036854771712").value(), std::nullopt);
  EXPECT_EQ(parse_limit("10485760").value(), std::optional<int64_t>(10485760));
  EXPECT_FALSE(parse_limit("lots").ok());
  EXPECT_EQ(format_limit(Version::V1, std::nullopt), "-1");
  EXPECT_EQ(format_limit(Version::V2, std::nullopt), "max");
}

// A fake cgroup directory with the knobs of one version.
struct FakeGroup {
  TempDir dir = TempDir::create("/tmp/seamless-cg-").value();
  MemoryGroup group;
  explicit FakeGroup(Version v) {
    group = {v, dir.path(), "/machine/qemu-1-vm.libvirt-qemu"};
    std::filesystem::create_directories(group.dir());
    if (v == Version::V1) {
      put("memory.limit_in_bytes", "9223372036854771712\n");
      put("memory.memsw.limit_in_bytes", "1073741824\n");
      put("memory.swappiness", "0\n");
      put("memory.usage_in_bytes", "536870912\n");
      put("memory.memsw.usage_in_bytes", "600000000\n");
      put("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
    } else {
      put("memory.max", "max\n");
      put("memory.swap.max", "0\n");
      put("memory.current", "536870912\n");
      put("memory.swap.current", "1000\n");
    }
  }
  void put(const std::string& knob, const std::string& value) {
    ASSERT_TRUE(sys::write_file(group.dir() + "/" + knob, value).ok());
  }
  std::string get(const std::string& knob) {
    auto v = sys::read_file(group.dir() + "/" + knob).value();
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  }
  // Makes writes to a knob fail: a directory cannot be opened for writing.
  void break_knob(const std::string& knob) {
    std::filesystem::remove(group.dir() + "/" + knob);
    std::filesystem::create_directory(group.dir() + "/" + knob);
  }
};

TEST(CgroupThrottle, V1LowersLimitAllowsSwapAndRestoresEverything) {
  FakeGroup fake(Version::V1);
  Memory mem(fake.group, file_knobs(fake.group));
  EXPECT_EQ(mem.usage().value(), 536870912);
  EXPECT_EQ(mem.limit().value(), std::nullopt);
  EXPECT_EQ(mem.swap_usage().value(), std::optional<int64_t>(600000000 - 536870912));
  {
    auto guard = throttle(mem, 10 << 20);
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    EXPECT_EQ(fake.get("memory.limit_in_bytes"), "10485760");
    EXPECT_EQ(fake.get("memory.memsw.limit_in_bytes"), "-1");
    EXPECT_EQ(fake.get("memory.swappiness"), "60");
    EXPECT_EQ(fake.get("memory.oom_control"), "1") << "no OOM kill of QEMU while throttled";
    ASSERT_TRUE(guard->restore().ok());
    EXPECT_FALSE(guard->active());
  }
  EXPECT_EQ(fake.get("memory.limit_in_bytes"), "9223372036854771712");
  EXPECT_EQ(fake.get("memory.memsw.limit_in_bytes"), "1073741824");
  EXPECT_EQ(fake.get("memory.swappiness"), "0");
  EXPECT_EQ(fake.get("memory.oom_control"), "0");
}

// A run killed while the VM is throttled (no destructor runs): the record it kept lets the
// next run put every knob back; a record naming anything but a memory knob is refused.
TEST(CgroupThrottle, AKilledRunLeavesARecordTheNextOnePutsBack) {
  FakeGroup fake(Version::V1);
  const std::string record = fake.dir.path() + "/limits.json";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    Memory mem(fake.group, file_knobs(fake.group));
    auto guard = throttle(mem, 10 << 20, Millis(30000), record);
    if (guard.ok()) ::raise(SIGKILL);  // throttled, and killed
    ::_exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run did not get to throttle";
  EXPECT_EQ(fake.get("memory.limit_in_bytes"), "10485760") << "left throttled";
  ASSERT_TRUE(std::filesystem::exists(record));

  Memory mem(fake.group, file_knobs(fake.group));
  auto put = put_back_recorded(mem.knobs(), record);
  ASSERT_TRUE(put.ok()) << put.error().message;
  EXPECT_EQ(*put, 4u);
  EXPECT_EQ(fake.get("memory.limit_in_bytes"), "9223372036854771712");
  EXPECT_EQ(fake.get("memory.memsw.limit_in_bytes"), "1073741824");
  EXPECT_EQ(fake.get("memory.swappiness"), "0");
  EXPECT_EQ(fake.get("memory.oom_control"), "0");
  EXPECT_FALSE(std::filesystem::exists(record));
  EXPECT_EQ(put_back_recorded(mem.knobs(), record).value(), 0u) << "nothing left to put back";

  // A completed throttle leaves no record.
  {
    auto guard = throttle(mem, 10 << 20, Millis(30000), record);
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    EXPECT_TRUE(std::filesystem::exists(record));
    ASSERT_TRUE(guard->restore().ok());
  }
  EXPECT_FALSE(std::filesystem::exists(record));

  for (const char* bad : {R"({"knobs":[["tasks","1"]]})", R"({"knobs":[["memory.x/../../tasks","1"]]})",
                          R"({"knobs":[["memory.max"]]})", R"({"knobs":{}})", "not json"}) {
    ASSERT_TRUE(sys::write_file(record, bad).ok());
    auto refused = put_back_recorded(mem.knobs(), record);
    EXPECT_FALSE(refused.ok()) << bad;
  }
}

// File knobs that log each limit written, with the swappiness in force then, and call
// `after_limit` (the kernel's reclaim, played by the test) once it is written.
class LimitLog final : public Knobs {
 public:
  LimitLog(const MemoryGroup& g, std::vector<std::string>& log, std::function<void()> after_limit)
      : files_(file_knobs(g)), log_(log), after_limit_(std::move(after_limit)) {}
  Result<std::string> read(const std::string& knob) override { return files_->read(knob); }
  Result<void> write(const std::string& knob, const std::string& value) override {
    if (knob != "memory.limit_in_bytes") return files_->write(knob, value);
    log_.push_back(value + "@swappiness=" + files_->read("memory.swappiness").value());
    auto r = files_->write(knob, value);
    after_limit_();
    return r;
  }
  bool has(const std::string& knob) override { return files_->has(knob); }
  std::string describe() const override { return files_->describe(); }

 private:
  std::unique_ptr<Knobs> files_;
  std::vector<std::string>& log_;
  std::function<void()> after_limit_;
};

// A paused VM's page cache goes first with swappiness 0 (limit reclaim stays off anonymous
// memory, the guest's RAM), the limit usage minus the cache plus an eighth; then the swap
// cache nobody maps, anonymous memory scanned, in eighths, until mapped memory shrinks.
TEST(CgroupEvict, V1EvictsPageCacheThenUnmappedSwapCacheAndRestoresEverything) {
  FakeGroup fake(Version::V1);
  fake.put("memory.swappiness", "60");
  // The hierarchy's totals count; shmem is neither droppable page cache nor swap cache.
  auto stat = [&](int64_t mapped) {
    fake.put("memory.stat", cat("cache 104857600\nrss 400000000\nshmem 0\ntotal_cache 125829120\n",
                                "total_shmem 20971520\ntotal_rss ", mapped, "\ntotal_inactive_anon 430000000\n",
                                "total_active_anon 41943040\ntotal_swapcached 90000000\n"));
  };
  stat(400000000);
  std::vector<std::string> limits;
  int reclaimed = 0, mapped_goes_at = 0;  // the limit written last at which mapped memory shrinks (0: never)
  Memory mem(fake.group, std::make_unique<LimitLog>(fake.group, limits, [&] {
               if (++reclaimed == mapped_goes_at) stat(400000000 - (3 << 20));
             }));
  auto what = mem.reclaimable();
  ASSERT_TRUE(what.ok()) << what.error().message;
  EXPECT_EQ(what->file_cache, 125829120 - 20971520);
  EXPECT_EQ(what->swap_cache, 430000000 + 41943040 - 400000000 - 20971520) << "anonymous LRU less mapped and shmem";
  EXPECT_EQ(what->mapped, 400000000);
  {
    // The swap cache counted is at most what the group has in its swap cache.
    FakeGroup few(Version::V1);
    few.put("memory.stat", "total_rss 100\ntotal_inactive_anon 5000\ntotal_swapcached 300\n");
    Memory m(few.group, file_knobs(few.group));
    EXPECT_EQ(m.reclaimable().value().swap_cache, 300);
    few.put("memory.stat", "total_rss 9000\ntotal_inactive_anon 5000\ntotal_swapcached 300\n");
    EXPECT_EQ(m.reclaimable().value().swap_cache, 0) << "never negative";
  }
  {
    auto guard = evict_reclaimable(mem, *what);
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    EXPECT_EQ(fake.get("memory.oom_control"), "1") << "an allocation waits instead of killing QEMU";
  }
  // The fake's usage stays 512 MiB: each step lowers the limit from the usage it reads.
  // Page cache: all but an eighth at once; swap cache: eighths, all but the last.
  const int64_t step = what->swap_cache / 8;
  std::vector<std::string> expected{std::to_string(536870912 - what->file_cache + what->file_cache / 8) +
                                    "@swappiness=0"};
  for (int i = 0; i < 7; ++i) expected.push_back(std::to_string(536870912 - step) + "@swappiness=60");
  expected.push_back("9223372036854771712@swappiness=60");  // put back
  EXPECT_EQ(limits, expected);
  EXPECT_EQ(fake.get("memory.limit_in_bytes"), "9223372036854771712");
  EXPECT_EQ(fake.get("memory.swappiness"), "60");
  EXPECT_EQ(fake.get("memory.oom_control"), "0");

  // Reclaim that takes 3 MiB of mapped memory at the swap cache's third step stops there.
  limits.clear();
  reclaimed = 0;
  mapped_goes_at = 3;
  ASSERT_TRUE(evict_reclaimable(mem, Reclaimable{0, what->swap_cache, 400000000}).ok());
  EXPECT_EQ(limits.size(), 4u) << "three steps, then the limit put back";
  stat(400000000);

  // A group whose swappiness is 0 gets 100 for the swap cache (else nothing anonymous is
  // scanned), and 0 back.
  fake.put("memory.swappiness", "0");
  limits.clear();
  mapped_goes_at = 0;
  ASSERT_TRUE(evict_reclaimable(mem, Reclaimable{0, 64 << 20, 400000000}).ok());
  ASSERT_EQ(limits.size(), 8u) << "seven eighths of 64 MiB, then the limit put back";
  EXPECT_EQ(limits[0], std::to_string(536870912 - (8 << 20)) + "@swappiness=100");
  EXPECT_EQ(fake.get("memory.swappiness"), "0");

  FakeGroup v2(Version::V2);
  Memory mem2(v2.group, file_knobs(v2.group));
  EXPECT_EQ(mem2.reclaimable().value().total(), 0) << "no memory.stat";
  v2.put("memory.stat", "anon 100\nfile 7000\nshmem 1000\ninactive_anon 400\nswapcached 4096\n");
  EXPECT_EQ(mem2.reclaimable().value().file_cache, 6000) << "v2's names";
  EXPECT_EQ(mem2.reclaimable().value().swap_cache, 0) << "all of the anonymous LRU is mapped or shmem";
  EXPECT_EQ(mem2.reclaimable().value().mapped, 100);
  auto refused = evict_reclaimable(mem2, Reclaimable{1 << 20, 0});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("cgroup v1"), std::string::npos) << refused.error().message;
}

TEST(CgroupThrottle, V2LowersMaxAllowsSwapAndRestoresOnDestruction) {
  FakeGroup fake(Version::V2);
  Memory mem(fake.group, file_knobs(fake.group));
  EXPECT_EQ(mem.swap_usage().value(), std::optional<int64_t>(1000));
  {
    auto guard = throttle(mem, 10 << 20);
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    EXPECT_EQ(fake.get("memory.max"), "10485760");
    EXPECT_EQ(fake.get("memory.swap.max"), "max");
  }  // no explicit restore: the destructor does it
  EXPECT_EQ(fake.get("memory.max"), "max");
  EXPECT_EQ(fake.get("memory.swap.max"), "0");
}

TEST(CgroupThrottle, FailureHalfWayRestoresWhatWasChanged) {
  FakeGroup fake(Version::V1);
  fake.break_knob("memory.limit_in_bytes");
  // Reading the broken knob fails before anything is written to it.
  Memory mem(fake.group, file_knobs(fake.group));
  auto guard = throttle(mem, 10 << 20);
  ASSERT_FALSE(guard.ok());
  EXPECT_NE(guard.error().message.find("memory.limit_in_bytes"), std::string::npos) << guard.error().message;
  EXPECT_EQ(fake.get("memory.memsw.limit_in_bytes"), "1073741824") << "memsw restored";
  EXPECT_EQ(fake.get("memory.swappiness"), "0") << "swappiness restored";
}

TEST(CgroupThrottle, RestoreFailureIsReported) {
  FakeGroup fake(Version::V2);
  Memory mem(fake.group, file_knobs(fake.group));
  auto guard = throttle(mem, 10 << 20);
  ASSERT_TRUE(guard.ok());
  fake.break_knob("memory.swap.max");
  auto r = guard->restore();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("restoring memory limits"), std::string::npos);
  EXPECT_EQ(fake.get("memory.max"), "max") << "the other knob is still restored";
}

TEST(CgroupPid, PidFileErrorsNameTheDomain) {
  auto dir = TempDir::create().value();
  auto missing = qemu_pid("vm9", dir.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("`vm9`"), std::string::npos);
  ASSERT_TRUE(sys::write_file(dir / "bad.pid", "12x\n").ok());
  EXPECT_FALSE(qemu_pid("bad", dir.path()).ok());
  ASSERT_TRUE(sys::write_file(dir / "good.pid", "4242\n").ok());
  EXPECT_EQ(qemu_pid("good", dir.path()).value(), 4242);
}

}  // namespace
}  // namespace seamless::cgroup
