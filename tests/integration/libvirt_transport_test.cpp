// SPDX-License-Identifier: Apache-2.0
// Integration: the template guest as a libvirt domain on the OVS bridge, driven through
// libvirt's pass-through (virDomainQemuMonitorCommand / virDomainQemuAgentCommand).
#include "tests/integration/transport_checks.h"
#include "tests/support/testbed.h"

namespace seamless::test {
namespace {

constexpr int kRamMib = 512;

class LibvirtTransport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto bed = Testbed::load();
    if (!bed.ok()) {
      setup_error_ = bed.error().message;
      return;
    }
    bed_ = new Testbed(*bed);
    VmSpec spec;
    spec.name = "sl-libvirt";
    spec.index = 2;
    spec.memory_mib = kRamMib;
    auto vm = LibvirtVm::boot(*bed, spec);
    if (!vm.ok()) {
      setup_error_ = vm.error().message;
      return;
    }
    vm_ = std::move(vm).value().release();
    if (auto up = vm_->wait_for_agent(); !up.ok()) {
      setup_error_ = up.error().message + "\nconsole:\n" + vm_->console_log();
      return;
    }
    auto monitor = qmp::LibvirtMonitor::attach(vm_->domain());
    if (!monitor.ok()) {
      setup_error_ = monitor.error().message;
      return;
    }
    monitor_ = std::move(monitor).value().release();
    agent_ = new qmp::LibvirtAgent(vm_->domain());
  }
  static void TearDownTestSuite() {
    delete agent_;
    delete monitor_;
    delete vm_;
    delete bed_;
  }
  void SetUp() override { SL_REQUIRE(setup_error_.empty(), setup_error_); }

  static inline std::string setup_error_;
  static inline Testbed* bed_ = nullptr;
  static inline LibvirtVm* vm_ = nullptr;
  static inline qmp::LibvirtMonitor* monitor_ = nullptr;
  static inline qmp::LibvirtAgent* agent_ = nullptr;
};

TEST_F(LibvirtTransport, StatusStopCont) { check_status_stop_cont(*monitor_, *monitor_); }
TEST_F(LibvirtTransport, BalloonDownByHalf) { check_balloon_half(*monitor_, *agent_, int64_t(kRamMib) << 20); }
TEST_F(LibvirtTransport, GuestExec) { check_exec(*agent_); }
TEST_F(LibvirtTransport, FileRoundTrip5MiB) { check_file_round_trip(*agent_); }
TEST_F(LibvirtTransport, NameAndAnnounce) { check_name_and_announce(*monitor_, "sl-libvirt"); }

TEST_F(LibvirtTransport, GuestIsReachableOnTheBridge) {
  // The client namespace reaches the guest's dropbear over the isolated OVS bridge.
  auto r = run({"ip", "netns", "exec", bed_->netns, "sh", "-c",
                "for i in $(seq 60); do timeout 3 bash -c 'exec 3<>/dev/tcp/" + bed_->guest_ip(2) +
                    "/2222; head -c 4 <&3' | grep -q SSH && exit 0; sleep 1; done; exit 1"},
               Millis(90000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status.code, 0) << "no SSH banner from " << bed_->guest_ip(2) << ": " << r->err;
}

TEST_F(LibvirtTransport, UnknownDomainIsNamed) {
  auto conn = virt::Connection::open();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  auto d = conn->lookup("sl-no-such-domain");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().kind, ErrorKind::NotFound);
  EXPECT_NE(d.error().message.find("`sl-no-such-domain`"), std::string::npos) << d.error().message;
}

}  // namespace
}  // namespace seamless::test
