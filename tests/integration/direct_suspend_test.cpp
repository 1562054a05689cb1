// SPDX-License-Identifier: Apache-2.0
// Integration: the suspend engine on plain QEMU (its own QMP/QGA sockets, its own
// memory cgroup). Each mode round-trips with the guest's uptime continuing and its SSH
// service answering; swap reclaims at least 80% of the guest's RAM; disk mode saves to a
// file (paused first), QEMU exits, and resume relaunches it from that file; a save that
// fails leaves the guest running.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "common/process.h"
#include "common/sys.h"
#include "hooks/direct_domain.h"
#include "qmp/guest.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::suspend {
namespace {

constexpr int kRamMib = 512;
constexpr int64_t kRam = int64_t(kRamMib) << 20;

class DirectSuspend : public test::VmSuite<DirectSuspend> {
 protected:
  static void SetUpTestSuite() {
    auto bed = test::Testbed::load();
    if (!bed.ok()) return fail(bed.error().message);
    test::VmSpec spec;
    spec.name = "sl-direct-suspend";
    spec.index = 12;
    spec.memory_mib = kRamMib;
    auto vm = test::DirectVm::boot(*bed, spec);
    if (!vm.ok()) return fail(vm.error().message);
    vm_ = std::move(vm).value();
    {
      auto agent = vm_->wait_for_agent();  // dropped at once: the sockets take one client each
      if (!agent.ok()) return fail(agent.error().message + "\n" + vm_->console_log());
    }
    auto d = DirectDomain::open(vm_->qmp_path(), vm_->qga_path(), vm_->dir() + "/save");
    if (!d.ok()) return fail(d.error().message);
    domain_ = std::move(d).value();
  }
  static void TearDownTestSuite() {
    domain_.reset();
    vm_.reset();
  }
  void SetUp() override { require(domain_ != nullptr); }

  static Result<double> guest_uptime() {
    auto out = SL_TRY(qmp::guest_run_ok(*domain_->agent(), "cat", {"/proc/uptime"}));
    return std::stod(out);
  }
  static double uptime() {
    auto up = guest_uptime();
    return up.ok() ? *up : -1;
  }
  // What a relaunched guest that does not answer was doing: its console and QEMU's log.
  static std::string diagnose(const std::string& qemu_log) {
    auto tail = [](std::string text) { return text.size() > 4000 ? text.substr(text.size() - 4000) : text; };
    auto log = sys::read_file(qemu_log);
    return cat("\nQEMU log ", qemu_log, ":\n", log.ok() ? tail(*log) : log.error().message, "\nconsole:\n",
               tail(vm_->console_log()));
  }
  static bool ssh_answers() {
    auto out =
        qmp::guest_run_ok(*domain_->agent(), "/bin/bash", {"-c", "exec 3<>/dev/tcp/127.0.0.1/2222; head -c 4 <&3"});
    return out.ok() && *out == "SSH-";
  }
  void round_trip(Mode mode) {
    double before = uptime();
    ASSERT_GT(before, 0);
    Options opts;
    opts.mode = mode;
    auto host = host_memory();
    ASSERT_TRUE(host.ok());
    ASSERT_TRUE(precheck(*domain_, opts, *host).ok());
    auto parked = suspend(*domain_, opts);
    ASSERT_TRUE(parked.ok()) << parked.error().message;
    auto resumed = resume(*domain_, *parked);
    ASSERT_TRUE(resumed.ok()) << resumed.error().message;
    EXPECT_GT(uptime(), before) << "the guest kept its state";
    EXPECT_TRUE(ssh_answers());
  }

  static inline std::unique_ptr<test::DirectVm> vm_;
  static inline std::unique_ptr<DirectDomain> domain_;
};

TEST_F(DirectSuspend, Ram) { round_trip(Mode::Ram); }

TEST_F(DirectSuspend, DiskSavesQuitsAndRelaunches) {
  auto old_pid = dynamic_cast<qmp::QmpSocket&>(domain_->monitor()).peer_pid();
  ASSERT_TRUE(old_pid.ok());
  round_trip(Mode::Disk);
  auto new_pid = dynamic_cast<qmp::QmpSocket&>(domain_->monitor()).peer_pid();
  ASSERT_TRUE(new_pid.ok());
  EXPECT_NE(*new_pid, *old_pid) << "a new QEMU process carries the restored guest";
}

// A save that cannot be written (its file's name is taken by a directory) fails with
// QEMU's reason and leaves the guest running where it was, with nothing left behind.
TEST_F(DirectSuspend, AFailedDiskSaveLeavesTheGuestRunning) {
  double before = uptime();
  ASSERT_GT(before, 0);
  auto old_pid = dynamic_cast<qmp::QmpSocket&>(domain_->monitor()).peer_pid();
  ASSERT_TRUE(old_pid.ok());
  const std::string blocker = vm_->dir() + "/save/sl-direct-suspend.state";
  std::filesystem::create_directories(blocker);
  Options opts;
  opts.mode = Mode::Disk;
  auto parked = suspend(*domain_, opts);
  std::filesystem::remove(blocker);
  ASSERT_FALSE(parked.ok()) << "a save into a directory cannot succeed";
  EXPECT_NE(parked.error().message.find("saving `sl-direct-suspend`"), std::string::npos) << parked.error().message;
  auto st = qmp::execute(domain_->monitor(), qmp::QueryStatus{});
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(st->running) << "the pause before the save was undone (" << st->status << ")";
  auto pid = dynamic_cast<qmp::QmpSocket&>(domain_->monitor()).peer_pid();
  ASSERT_TRUE(pid.ok());
  EXPECT_EQ(*pid, *old_pid) << "the same QEMU goes on";
  EXPECT_FALSE(std::filesystem::exists(vm_->dir() + "/save/sl-direct-suspend.launch.json"));
  EXPECT_GT(uptime(), before);
  EXPECT_TRUE(ssh_answers());
}

TEST_F(DirectSuspend, SwapReclaimsMemory) {
  qmp::RunOptions fill;
  fill.timeout = Millis(120000);
  auto filled = qmp::guest_run_ok(
      *domain_->agent(), "/bin/sh",
      {"-c", "mount -o remount,size=95% /dev/shm && head -c " + std::to_string((kRamMib * 3 / 4) << 20) +
                 " /dev/urandom > /dev/shm/fill; rm -f /dev/shm/fill"},
      fill);
  ASSERT_TRUE(filled.ok()) << filled.error().message;
  auto mem = domain_->memory();
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  auto limit_before = (*mem)->limit().value();
  auto usage_before = (*mem)->usage().value();
  Options opts;
  auto host = host_memory();
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(precheck(*domain_, opts, *host).ok());
  auto parked = suspend(*domain_, opts);
  ASSERT_TRUE(parked.ok()) << parked.error().message;
  auto usage_parked = (*mem)->usage().value();
  EXPECT_GE(usage_before - usage_parked, kRam * 8 / 10)
      << "cgroup usage " << (usage_before >> 20) << " -> " << (usage_parked >> 20) << " MiB";
  EXPECT_EQ((*mem)->limit().value(), limit_before);
  ASSERT_TRUE(resume(*domain_, *parked).ok());
  EXPECT_TRUE(ssh_answers());
}

// The operator's path: seamless-suspend parks to disk in one process and a later one,
// finding QEMU gone, relaunches it from the saved state. A wrong name is refused.
TEST_F(DirectSuspend, CliDiskAcrossProcesses) {
  double before = uptime();
  ASSERT_GT(before, 0);
  const std::string state_dir = vm_->dir() + "/cli-state";
  ::setenv("SEAMLESS_STATE_DIR", state_dir.c_str(), 1);
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {SEAMLESS_SUSPEND, "--qmp-socket", vm_->qmp_path(), "--qga-socket",
                                     vm_->qga_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, Millis(300000));
  };
  domain_.reset();  // QEMU's monitor takes one client at a time
  auto wrong = cli({"suspend", "--mode", "ram", "sl-not-this-one"});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status.code, 1);
  EXPECT_NE(wrong->err.find("is named `sl-direct-suspend`"), std::string::npos) << wrong->err;

  auto parked = cli({"suspend", "--mode", "disk", "sl-direct-suspend"});
  ASSERT_TRUE(parked.ok());
  EXPECT_EQ(parked->status.code, 0) << parked->err;
  EXPECT_TRUE(std::filesystem::exists(state_dir + "/sl-direct-suspend.state"));
  auto status = cli({"status", "sl-direct-suspend"});
  ASSERT_TRUE(status.ok());
  EXPECT_NE(status->out.find("parked (disk)"), std::string::npos) << status->out;

  auto resumed = cli({"resume", "sl-direct-suspend"});
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->status.code, 0) << resumed->err;
  EXPECT_FALSE(std::filesystem::exists(state_dir + "/sl-direct-suspend.json")) << "resume forgets the state";

  auto d = DirectDomain::open(vm_->qmp_path(), vm_->qga_path(), vm_->dir() + "/save");
  ASSERT_TRUE(d.ok()) << d.error().message;
  domain_ = std::move(d).value();
  auto after = guest_uptime();
  ASSERT_TRUE(after.ok()) << after.error().message << diagnose(state_dir + "/sl-direct-suspend.qemu.log");
  EXPECT_GT(*after, before) << "the guest kept its state";
  EXPECT_TRUE(ssh_answers());
}

TEST_F(DirectSuspend, SharedCgroupIsRefused) {
  auto mem = domain_->memory();
  ASSERT_TRUE(mem.ok()) << mem.error().message;
  const std::string procs = (*mem)->group().dir() + "/cgroup.procs";
  auto intruder = ChildProcess::spawn({"sleep", "60"});
  ASSERT_TRUE(intruder.ok());
  ASSERT_TRUE(sys::write_file(procs, std::to_string(intruder->pid())).ok());
  auto parked = suspend(*domain_, Options{});
  EXPECT_FALSE(parked.ok());
  if (!parked.ok()) {
    EXPECT_NE(parked.error().message.find("also holds process"), std::string::npos) << parked.error().message;
  }
  auto st = qmp::execute(domain_->monitor(), qmp::QueryStatus{});
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->running) << "refused before anything was touched";
  intruder->stop(Millis(0));
  EXPECT_TRUE(domain_->memory().ok()) << "usable again once QEMU is alone";
}

}  // namespace
}  // namespace seamless::suspend
