// SPDX-License-Identifier: Apache-2.0
// Integration: the memory cgroup code against a real kernel's cgroups through libcgroup.
// A child holding random data in a fresh memory cgroup is throttled to 10 MiB: its
// memory must go to swap, the limit must come back, the data must survive. Runs on the
// host (cgroup v1 here) and, linked statically, inside a test guest with cgroup2
// mounted (cgroup_v2_guest_test), so both versions are exercised for real.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "hooks/cgroup.h"
#include "hooks/suspend.h"
#include "tests/support/require.h"

namespace seamless::cgroup {
namespace {

constexpr size_t kHogBytes = 192 << 20;

// A child that waits for "go" (so the parent can move it into the test group before it
// allocates: pages are charged to the group that first touches them), fills kHogBytes
// with a seeded random pattern, says "ready", and then obeys: 's' and 'w' (once swapped
// out) ask for the second half with MADV_WILLNEED, which reads it into the swap cache
// without mapping it, and read the first half back in: 's' the first half after, 'w'
// before; each then says "ready"; 'v' re-reads everything and exits 0 only if the pattern
// is intact.
struct Hog {
  pid_t pid = -1;
  int to_child = -1, from_child = -1;
  ~Hog() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (to_child >= 0) ::close(to_child);
    if (from_child >= 0) ::close(from_child);
  }
};

void hog_main(int in, int out) {
  char go;
  if (::read(in, &go, 1) != 1) ::_exit(2);
  std::vector<uint64_t> data(kHogBytes / 8);
  std::mt19937_64 rng(99);
  for (auto& v : data) v = rng();
  (void)!::write(out, "r", 1);
  char c = 0;
  while (::read(in, &c, 1) == 1 && (c == 's' || c == 'w')) {
    volatile uint64_t sum = 0;
    auto read_first_half = [&] {
      for (size_t i = 0; i < data.size() / 2; i += 512) sum = sum + data[i];
    };
    if (c == 'w') read_first_half();
    const long page = ::sysconf(_SC_PAGESIZE);
    auto* half = reinterpret_cast<char*>(data.data() + data.size() / 2);
    auto* start = reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(half) / page * page + page);
    (void)::madvise(start, kHogBytes / 2 - 2 * page, MADV_WILLNEED);
    if (c == 's') read_first_half();
    (void)!::write(out, "r", 1);
  }
  std::mt19937_64 check(99);
  for (auto v : data) {
    if (v != check()) ::_exit(3);
  }
  ::_exit(0);
}

bool start_hog(Hog& hog, const std::string& group_dir) {
  int a[2], b[2];
  if (::pipe(a) != 0 || ::pipe(b) != 0) return false;
  hog.pid = ::fork();
  if (hog.pid == 0) {
    ::close(a[1]);
    ::close(b[0]);
    hog_main(a[0], b[1]);
  }
  ::close(a[0]);
  ::close(b[1]);
  hog.to_child = a[1];
  hog.from_child = b[0];
  if (!sys::write_file(group_dir + "/cgroup.procs", std::to_string(hog.pid)).ok()) return false;
  if (::write(hog.to_child, "g", 1) != 1) return false;
  char c = 0;
  return ::read(hog.from_child, &c, 1) == 1 && c == 'r';
}

class CgroupHost : public ::testing::Test {
 protected:
  void SetUp() override {
    SL_REQUIRE(::geteuid() == 0, "needs root to create cgroups");
    auto host = suspend::host_memory();
    SL_REQUIRE(host.ok() && host->swap_free > int64_t(kHogBytes), "needs active swap (tests/testbed/up adds it)");
    // The test's own group may be a root without memory knobs (v2): only its mount matters.
    auto mountinfo = sys::read_file("/proc/self/mountinfo");
    auto own = sys::read_file("/proc/self/cgroup");
    ASSERT_TRUE(mountinfo.ok() && own.ok());
    auto self = locate(*mountinfo, *own);
    SL_REQUIRE(self.ok(), self.ok() ? "" : self.error().message);
    // A sibling of the v1 root or a child of the v2 root, named for this test.
    self_version_ = self->version;
    dir_ = self->mount + "/seamless-test-" + std::to_string(::getpid());
    std::filesystem::create_directory(dir_);
    if (self->version == Version::V2) {
      ASSERT_TRUE(sys::write_file(self->mount + "/cgroup.subtree_control", "+memory").ok());
    }
  }
  void TearDown() override {
    if (dir_.empty()) return;
    // Move anything left back to the root, then remove the group.
    auto procs = sys::read_file(dir_ + "/cgroup.procs");
    if (procs.ok() && !procs->empty())
      (void)sys::write_file(std::filesystem::path(dir_).parent_path() / "cgroup.procs", *procs);
    ::rmdir(dir_.c_str());
  }
  // Starts the hog in the test group and opens the group as the product does (libcgroup);
  // null, with the failure recorded, if that cannot be done.
  std::unique_ptr<Memory> hog_memory(Hog& hog) {
    if (!start_hog(hog, dir_)) {
      ADD_FAILURE() << "the child did not start in " << dir_;
      return nullptr;
    }
    auto group = for_pid(hog.pid);
    if (!group.ok()) {
      ADD_FAILURE() << group.error().message;
      return nullptr;
    }
    EXPECT_EQ(group->dir(), dir_);
    auto knobs = libcgroup_knobs(*group);
    if (!knobs.ok()) {
      ADD_FAILURE() << knobs.error().message;
      return nullptr;
    }
    return std::make_unique<Memory>(*group, std::move(knobs).value());
  }
  // Evicting needs v1's swappiness: v2 refuses it by name.
  void expect_refused_on_v2(Memory& mem, const Reclaimable& what) {
    auto refused = evict_reclaimable(mem, what);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("cgroup v1"), std::string::npos) << refused.error().message;
  }
  std::string dir_;
  Version self_version_ = Version::V1;
};

TEST_F(CgroupHost, ThrottleSwapsOutAndRestoreBringsItBack) {
  RecordProperty("cgroup_version", self_version_ == Version::V1 ? "v1" : "v2");
  std::printf("cgroup version under test: %s\n", self_version_ == Version::V1 ? "v1" : "v2");
  Hog hog;
  auto held = hog_memory(hog);
  ASSERT_TRUE(held);
  Memory& mem = *held;

  auto before = mem.usage();
  ASSERT_TRUE(before.ok()) << before.error().message;
  EXPECT_GE(*before, static_cast<int64_t>(kHogBytes)) << "the child's memory is charged to the test group";
  auto old_limit = mem.limit();
  ASSERT_TRUE(old_limit.ok()) << old_limit.error().message;
  EXPECT_EQ(*old_limit, std::nullopt) << "a fresh group is unlimited";

  {
    auto guard = throttle(mem, 10 << 20);
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    auto limit = mem.limit();
    ASSERT_TRUE(limit.ok());
    EXPECT_EQ(*limit, std::optional<int64_t>(10 << 20));
    auto during = mem.usage();
    ASSERT_TRUE(during.ok());
    EXPECT_LE(*during, 10 << 20) << "usage must fit the limit: the rest went to swap";
    if (self_version_ == Version::V1) {
      EXPECT_NE(sys::read_file(dir_ + "/memory.oom_control").value().find("oom_kill_disable 1"), std::string::npos)
          << "the OOM killer is off while throttled";
    }
    auto swapped = mem.swap_usage();
    ASSERT_TRUE(swapped.ok()) << swapped.error().message;
    if (swapped->has_value()) {
      EXPECT_GE(**swapped, static_cast<int64_t>(kHogBytes) - (20 << 20));
    }
    ASSERT_TRUE(guard->restore().ok());
  }
  auto limit = mem.limit();
  ASSERT_TRUE(limit.ok());
  EXPECT_EQ(*limit, std::nullopt) << "limit restored";
  if (self_version_ == Version::V1) {
    EXPECT_NE(sys::read_file(dir_ + "/memory.oom_control").value().find("oom_kill_disable 0"), std::string::npos)
        << "the OOM killer is back";
  }

  ASSERT_EQ(::write(hog.to_child, "v", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(hog.pid, &status, 0), hog.pid);
  hog.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's data came back intact from swap";
}

// After a park, QEMU's page cache (its copy of what the guest read from disk) goes and the
// guest's memory stays: a child holding random data reads a file in the group; evicting
// the group's page cache frees most of the file's pages and swaps none of the data out.
TEST_F(CgroupHost, EvictingThePageCacheKeepsAnonymousMemoryInPlace) {
  Hog hog;
  auto held = hog_memory(hog);
  ASSERT_TRUE(held);
  Memory& mem = *held;
  if (self_version_ != Version::V1) return expect_refused_on_v2(mem, Reclaimable{64 << 20, 0});
  // A file on a disk (not a tmpfs: shmem is no page cache to drop), read by a process of
  // the group so that its pages are charged there.
  const std::string file = "/var/tmp/seamless-cache-" + std::to_string(::getpid());
  ASSERT_EQ(run({"dd", "if=/dev/urandom", "of=" + file, "bs=1M", "count=96", "status=none"}, Millis(60000))
                .value()
                .status.code,
            0);
  ASSERT_EQ(run({"sh", "-c", "sync && echo 1 > /proc/sys/vm/drop_caches"}, Millis(30000)).value().status.code, 0);
  const std::string read_in_group = "echo $$ > " + dir_ + "/cgroup.procs && cat " + file + " > /dev/null";
  ASSERT_EQ(run({"sh", "-c", read_in_group}, Millis(60000)).value().status.code, 0);
  const int64_t cache = mem.reclaimable().value().file_cache;
  EXPECT_GE(cache, 64 << 20) << "the file's pages are charged to the group";
  const auto swap_before = mem.swap_usage().value();
  const std::string swappiness = sys::read_file(dir_ + "/memory.swappiness").value();
  const int64_t usage_before = mem.usage().value();
  {
    auto guard = evict_reclaimable(mem, Reclaimable{cache, 0});
    ASSERT_TRUE(guard.ok()) << guard.error().message;
    ASSERT_TRUE(guard->restore().ok());
  }
  const int64_t cache_after = mem.reclaimable().value().file_cache;
  std::filesystem::remove(file);
  EXPECT_LE(cache_after, cache / 4) << "most of the page cache went";
  EXPECT_LE(mem.usage().value(), usage_before - cache / 2);
  EXPECT_GE(mem.usage().value(), static_cast<int64_t>(kHogBytes)) << "the anonymous memory stayed";
  if (swap_before && mem.swap_usage().value()) {
    EXPECT_LE(*mem.swap_usage().value() - *swap_before, 8 << 20) << "nothing was swapped out";
  }
  EXPECT_EQ(mem.limit().value(), std::nullopt) << "limit restored";
  EXPECT_EQ(sys::read_file(dir_ + "/memory.swappiness").value(), swappiness) << "swappiness restored";

  ASSERT_EQ(::write(hog.to_child, "v", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(hog.pid, &status, 0), hog.pid);
  hog.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's data is intact";
}

// After a park, the swap cache that swap-ins read ahead and nobody mapped goes, and the
// pages that were read back stay: a child's memory, swapped out, half read back and half
// only read into the swap cache (MADV_WILLNEED). Read back last (as a paused VM's pages
// that the guest used until the pause), the mapped pages all stay while most of the swap
// cache goes; read back first, reclaim reaches them too, and the eviction stops within a
// step of that.
TEST_F(CgroupHost, EvictingTheSwapCacheKeepsTheMappedPages) {
  Hog hog;
  auto held = hog_memory(hog);
  ASSERT_TRUE(held);
  Memory& mem = *held;
  if (self_version_ != Version::V1) return expect_refused_on_v2(mem, Reclaimable{0, 64 << 20});
  auto resident = [&] {
    auto status = sys::read_file("/proc/" + std::to_string(hog.pid) + "/status").value();
    return std::atoll(status.c_str() + status.find("VmRSS:") + 6) * int64_t(1024);
  };
  for (const char order : {'s', 'w'}) {
    SCOPED_TRACE(order == 's' ? "mapped pages read back last" : "mapped pages read back first");
    {
      auto guard = throttle(mem, 10 << 20);
      ASSERT_TRUE(guard.ok()) << guard.error().message;
      ASSERT_TRUE(guard->restore().ok());
    }
    ASSERT_EQ(::write(hog.to_child, &order, 1), 1);
    char c = 0;
    ASSERT_EQ(::read(hog.from_child, &c, 1), 1);
    // The readahead is asynchronous: wait for it to land.
    Reclaimable what;
    for (Deadline d(Millis(20000)); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
      what = mem.reclaimable().value();
      if (what.swap_cache >= int64_t(kHogBytes) / 2 - (16 << 20)) break;
    }
    EXPECT_GE(what.swap_cache, int64_t(kHogBytes) / 4) << "the unmapped half is in the swap cache";
    const int64_t rss_before = resident(), usage_before = mem.usage().value();
    EXPECT_GE(rss_before, int64_t(kHogBytes) / 2 - (16 << 20)) << "the first half is mapped again";
    {
      auto guard = evict_reclaimable(mem, what);
      ASSERT_TRUE(guard.ok()) << guard.error().message;
      ASSERT_TRUE(guard->restore().ok());
    }
    const int64_t left = mem.reclaimable().value().swap_cache;
    std::printf("%s: swap cache %lld -> %lld MiB, resident %lld -> %lld MiB\n",
                order == 's' ? "read back last" : "read back first", (long long)(what.swap_cache >> 20),
                (long long)(left >> 20), (long long)(rss_before >> 20), (long long)(resident() >> 20));
    if (order == 's') {
      EXPECT_LE(left, what.swap_cache / 4) << "most of the swap cache went";
      EXPECT_LE(mem.usage().value(), usage_before - what.swap_cache / 2);
      EXPECT_GE(resident(), rss_before - (2 << 20)) << "the pages read back stayed";
    } else {
      EXPECT_GE(resident(), rss_before - what.swap_cache / 8 - (4 << 20)) << "at most a step more went";
    }
    EXPECT_EQ(mem.limit().value(), std::nullopt) << "limit restored";
  }

  ASSERT_EQ(::write(hog.to_child, "v", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(hog.pid, &status, 0), hog.pid);
  hog.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child's data is intact";
}

}  // namespace
}  // namespace seamless::cgroup
