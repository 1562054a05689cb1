// SPDX-License-Identifier: Apache-2.0
// Integration: the template guest as a libvirt domain on the OVS bridge, driven through
// libvirt's pass-through (virDomainQemuMonitorCommand / virDomainQemuAgentCommand).
#include "tests/integration/transport_checks.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::test {
namespace {

constexpr int kRamMib = 512;

class LibvirtTransport : public VmSuite<LibvirtTransport> {
 protected:
  static void SetUpTestSuite() {
    VmSpec spec;
    spec.name = "sl-libvirt";
    spec.index = 2;
    spec.memory_mib = kRamMib;
    auto g = LibvirtGuest::boot(spec);
    if (!g.ok()) return fail(g.error().message);
    guest_ = std::move(g).value();
  }
  static void TearDownTestSuite() { guest_.reset(); }
  void SetUp() override { require(guest_ != nullptr); }

  static inline std::unique_ptr<LibvirtGuest> guest_;
};

TEST_F(LibvirtTransport, StatusStopCont) { check_status_stop_cont(*guest_->monitor, *guest_->monitor); }
TEST_F(LibvirtTransport, BalloonDownByHalf) {
  check_balloon_half(*guest_->monitor, *guest_->agent, int64_t(kRamMib) << 20);
}
TEST_F(LibvirtTransport, GuestExec) { check_exec(*guest_->agent); }
TEST_F(LibvirtTransport, FileRoundTrip5MiB) { check_file_round_trip(*guest_->agent); }
TEST_F(LibvirtTransport, NameAndAnnounce) { check_name_and_announce(*guest_->monitor, "sl-libvirt"); }

TEST_F(LibvirtTransport, GuestIsReachableOnTheBridge) {
  // The client namespace reaches the guest's dropbear over the isolated OVS bridge.
  auto r = run({"ip", "netns", "exec", guest_->bed.netns, "sh", "-c",
                "for i in $(seq 60); do timeout 3 bash -c 'exec 3<>/dev/tcp/" + guest_->bed.guest_ip(2) +
                    "/2222; head -c 4 <&3' | grep -q SSH && exit 0; sleep 1; done; exit 1"},
               Millis(90000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status.code, 0) << "no SSH banner from " << guest_->bed.guest_ip(2) << ": " << r->err;
}

TEST_F(LibvirtTransport, TwoMonitorsOnOneDomainBothGetEvents) {
  // libvirt takes one event registration per domain; monitors share it.
  auto second = qmp::LibvirtMonitor::attach(guest_->vm->domain());
  ASSERT_TRUE(second.ok()) << second.error().message;
  ASSERT_TRUE(qmp::execute(*guest_->monitor, qmp::Stop{}).ok());
  ASSERT_TRUE(qmp::execute(*guest_->monitor, qmp::Cont{}).ok());
  for (qmp::EventSource* m :
       {static_cast<qmp::EventSource*>(guest_->monitor.get()), static_cast<qmp::EventSource*>(second->get())}) {
    EXPECT_TRUE(m->wait_event("STOP", Millis(5000)).ok());
    EXPECT_TRUE(m->wait_event("RESUME", Millis(5000)).ok());
  }
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
