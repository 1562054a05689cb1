// SPDX-License-Identifier: Apache-2.0
// Integration: the suspend engine on a libvirt guest of the test bed (TCG). Each mode
// suspends and resumes with the guest's uptime continuing and its SSH service answering;
// swap reclaims at least 80% of the guest's RAM from QEMU's cgroup and restores the
// limit; a fault at each swap step (cgroup write, balloon timeout, dead guest agent)
// ends with the VM running, unthrottled, balloon deflated.
#include <gtest/gtest.h>

#include <thread>

#include "hooks/libvirt_domain.h"
#include "qmp/guest.h"
#include "tests/integration/transport_checks.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::suspend {
namespace {

constexpr int kRamMib = 512;
constexpr int64_t kRam = int64_t(kRamMib) << 20;
constexpr int kIndex = 8;

// Delegates to the real domain, failing writes of one cgroup knob on request.
class FaultyKnobs final : public cgroup::Knobs {
 public:
  FaultyKnobs(cgroup::Knobs& real, std::string broken) : real_(real), broken_(std::move(broken)) {}
  Result<std::string> read(const std::string& k) override { return real_.read(k); }
  Result<void> write(const std::string& k, const std::string& v) override {
    if (k == broken_) return make_error(ErrorKind::System, "injected fault writing `", k, "`");
    return real_.write(k, v);
  }
  bool has(const std::string& k) override { return real_.has(k); }
  std::string describe() const override { return real_.describe(); }

 private:
  cgroup::Knobs& real_;
  std::string broken_;
};

class FaultyDomain final : public Domain {
 public:
  FaultyDomain(Domain& real, std::string broken_knob) : real_(real), broken_(std::move(broken_knob)) {}
  std::string name() const override { return real_.name(); }
  qmp::Channel& monitor() override { return real_.monitor(); }
  qmp::Channel* agent() override { return real_.agent(); }
  Result<cgroup::Memory*> memory() override {
    cgroup::Memory* m = SL_TRY(real_.memory());
    if (!faulty_) faulty_.emplace(m->group(), std::make_unique<FaultyKnobs>(m->knobs(), broken_));
    return &*faulty_;
  }
  Result<void> save_to_disk() override { return real_.save_to_disk(); }
  Result<void> restore_from_disk() override { return real_.restore_from_disk(); }

 private:
  Domain& real_;
  std::string broken_;
  std::optional<cgroup::Memory> faulty_;
};

class SuspendModes : public test::VmSuite<SuspendModes> {
 protected:
  static void SetUpTestSuite() {
    test::VmSpec spec;
    spec.name = "sl-suspend";
    spec.index = kIndex;
    spec.memory_mib = kRamMib;
    auto g = test::LibvirtGuest::boot(spec);
    if (!g.ok()) return fail(g.error().message);
    guest_ = std::move(g).value();
    auto d = LibvirtDomain::open(guest_->vm->domain());
    if (!d.ok()) return fail(d.error().message);
    domain_ = std::move(d).value();
  }
  static void TearDownTestSuite() {
    domain_.reset();
    guest_.reset();
  }
  void SetUp() override { require(domain_ != nullptr); }

  static double uptime() {
    auto out = qmp::guest_run_ok(*domain_->agent(), "cat", {"/proc/uptime"});
    return out.ok() ? std::stod(*out) : -1;
  }
  // The guest's SSH server answers a new connection from the client namespace.
  static bool ssh_answers() {
    auto r = run({"ip", "netns", "exec", guest_->bed.netns, "timeout", "20", "bash", "-c",
                  "exec 3<>/dev/tcp/" + guest_->bed.guest_ip(kIndex) + "/2222; head -c 4 <&3"},
                 Millis(30000));
    return r.ok() && r->out == "SSH-";
  }
  static int64_t balloon() {
    auto b = qmp::execute(domain_->monitor(), qmp::QueryBalloon{});
    return b.ok() ? b->actual : -1;
  }
  static bool wait_balloon_full() {
    for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(200)))
      if (balloon() == kRam) return true;
    return false;
  }
  // Fills most of the guest's RAM with random data and frees it again, as a long-running
  // guest would leave it (QEMU skips zero pages, so the data must be random).
  static void fill_guest() {
    auto r = qmp::guest_run_ok(
        *domain_->agent(), "/bin/sh",
        {"-c", "mount -o remount,size=95% /dev/shm && head -c " + std::to_string((kRamMib * 3 / 4) << 20) +
                   " /dev/urandom > /dev/shm/fill; rm -f /dev/shm/fill"},
        {Millis(120000)});
    auto console = guest_->vm->console_log();
    ASSERT_TRUE(r.ok()) << r.error().message << "\nconsole (last 4000 bytes):\n"
                        << console.substr(console.size() > 4000 ? console.size() - 4000 : 0);
  }
  void check_round_trip(Mode mode) {
    double before = uptime();
    ASSERT_GT(before, 0);
    Options opts;
    opts.mode = mode;
    auto host = host_memory();
    ASSERT_TRUE(host.ok()) << host.error().message;
    ASSERT_TRUE(precheck(*domain_, opts, *host).ok());
    auto parked = suspend(*domain_, opts);
    ASSERT_TRUE(parked.ok()) << parked.error().message;
    if (mode == Mode::Ram) {
      auto st = qmp::execute(domain_->monitor(), qmp::QueryStatus{});
      ASSERT_TRUE(st.ok());
      EXPECT_EQ(st->status, "paused");
    }
    auto resumed = resume(*domain_, *parked);
    ASSERT_TRUE(resumed.ok()) << resumed.error().message;
    EXPECT_TRUE(guest_->vm->wait_for_agent(Millis(60000)).ok());
    EXPECT_GT(uptime(), before) << "the guest kept its state (no reboot)";
    EXPECT_TRUE(ssh_answers());
  }
  // After a failed park: running, limit as before, balloon back to full size.
  void check_rolled_back(std::optional<int64_t> limit_before) {
    auto st = qmp::execute(domain_->monitor(), qmp::QueryStatus{});
    ASSERT_TRUE(st.ok()) << st.error().message;
    EXPECT_TRUE(st->running);
    auto mem = domain_->memory();
    ASSERT_TRUE(mem.ok());
    auto limit = (*mem)->limit();
    ASSERT_TRUE(limit.ok());
    EXPECT_EQ(*limit, limit_before) << "cgroup limit restored";
    EXPECT_TRUE(wait_balloon_full()) << "balloon deflated (now " << balloon() << ")";
  }

  static inline std::unique_ptr<test::LibvirtGuest> guest_;
  static inline std::unique_ptr<LibvirtDomain> domain_;
};

TEST_F(SuspendModes, HookPreparedTheCgroupAtStart) {
  // libvirt ran /etc/libvirt/hooks/qemu.d/50-seamless at "started".
  auto mem = domain_->memory();
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  if ((*mem)->group().version == cgroup::Version::V1) {
    auto sw = (*mem)->knobs().read("memory.swappiness");
    ASSERT_TRUE(sw.ok()) << sw.error().message;
    EXPECT_EQ(*sw, "100");
  } else {
    EXPECT_EQ((*mem)->knobs().read("memory.swap.max").value(), "max");
  }
  // And it stays quick: run it by hand the way libvirt does, and report the time.
  auto start = Clock::now();
  auto r = run({"/etc/libvirt/hooks/qemu.d/50-seamless", "sl-suspend", "started", "begin", "-"});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 0);
  EXPECT_EQ(r->err, "");
  RecordProperty("hook_ms", std::to_string(seconds_since(start) * 1000));
}

TEST_F(SuspendModes, Ram) { check_round_trip(Mode::Ram); }
TEST_F(SuspendModes, Disk) { check_round_trip(Mode::Disk); }

TEST_F(SuspendModes, SwapReclaimsMemoryAndRestoresTheLimit) {
  fill_guest();
  auto mem = domain_->memory();
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  auto limit_before = (*mem)->limit();
  ASSERT_TRUE(limit_before.ok());
  auto usage_before = (*mem)->usage();
  ASSERT_TRUE(usage_before.ok());
  double up = uptime();

  Options opts;
  opts.prefetch = {"/bin/sh", "-c", "cat /usr/sbin/dropbear /bin/busybox > /dev/null"};
  auto host = host_memory();
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(precheck(*domain_, opts, *host).ok());
  Report report;
  auto parked = suspend(*domain_, opts, &report);
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  auto usage_parked = (*mem)->usage();
  ASSERT_TRUE(usage_parked.ok());
  EXPECT_GE(*usage_before - *usage_parked, kRam * 8 / 10)
      << "cgroup usage " << (*usage_before >> 20) << " -> " << (*usage_parked >> 20) << " MiB";
  auto limit_parked = (*mem)->limit();
  ASSERT_TRUE(limit_parked.ok());
  EXPECT_EQ(*limit_parked, *limit_before) << "the limit is lifted again before the pause";

  ASSERT_TRUE(resume(*domain_, *parked).ok());
  EXPECT_TRUE(wait_balloon_full());
  EXPECT_GT(uptime(), up);
  EXPECT_TRUE(ssh_answers());
}

TEST_F(SuspendModes, CgroupWriteFaultRollsBack) {
  auto mem = domain_->memory();
  ASSERT_TRUE(mem.ok());
  auto limit_before = (*mem)->limit().value();
  FaultyDomain faulty(*domain_, "memory.limit_in_bytes");
  auto parked = suspend(faulty, Options{});
  ASSERT_FALSE(parked.ok());
  EXPECT_NE(parked.error().message.find("injected fault"), std::string::npos) << parked.error().message;
  check_rolled_back(limit_before);
}

TEST_F(SuspendModes, BalloonTimeoutRollsBack) {
  auto limit_before = (*domain_->memory())->limit().value();
  Options opts;
  opts.balloon_timeout = Millis(1);
  auto parked = suspend(*domain_, opts);
  ASSERT_FALSE(parked.ok());
  EXPECT_EQ(parked.error().kind, ErrorKind::Timeout) << parked.error().message;
  check_rolled_back(limit_before);
}

// Last: the guest agent stays dead afterwards.
TEST_F(SuspendModes, ZDeadGuestAgentDuringPrefetchRollsBack) {
  auto limit_before = (*domain_->memory())->limit().value();
  Options opts;
  opts.prefetch = {"/bin/sh", "-c", "kill -9 $(cat /run/qemu-ga.pid)"};
  opts.prefetch_timeout = Millis(15000);
  auto parked = suspend(*domain_, opts);
  ASSERT_FALSE(parked.ok());
  EXPECT_NE(parked.error().message.find("prefetch"), std::string::npos) << parked.error().message;
  check_rolled_back(limit_before);
  EXPECT_TRUE(ssh_answers()) << "the guest's services are intact";
}

}  // namespace
}  // namespace seamless::suspend
