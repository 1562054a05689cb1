// SPDX-License-Identifier: Apache-2.0
// Integration: the template guest under plain QEMU (TCG), driven through its own QMP
// and QGA unix sockets.
#include "tests/integration/transport_checks.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::test {
namespace {

constexpr int kRamMib = 512;

class DirectTransport : public VmSuite<DirectTransport> {
 protected:
  static void SetUpTestSuite() {
    VmSpec spec;
    spec.name = "sl-direct";
    spec.index = 1;
    spec.memory_mib = kRamMib;
    auto g = DirectGuest::boot(spec);
    if (!g.ok()) return fail(g.error().message);
    guest_ = std::move(g).value();
  }
  static void TearDownTestSuite() { guest_.reset(); }
  void SetUp() override { require(guest_ != nullptr); }

  static inline std::unique_ptr<DirectGuest> guest_;
};

TEST_F(DirectTransport, StatusStopCont) { check_status_stop_cont(*guest_->monitor, *guest_->monitor); }
TEST_F(DirectTransport, BalloonDownByHalf) {
  check_balloon_half(*guest_->monitor, *guest_->agent, int64_t(kRamMib) << 20);
}
TEST_F(DirectTransport, GuestExec) { check_exec(*guest_->agent); }
TEST_F(DirectTransport, FileRoundTrip5MiB) { check_file_round_trip(*guest_->agent); }
TEST_F(DirectTransport, NameAndAnnounce) { check_name_and_announce(*guest_->monitor, "sl-direct"); }

TEST_F(DirectTransport, AgentResyncsAfterATimeout) {
  // A command that outlives its timeout leaves a late reply in the channel; the
  // client must resynchronise and the next answer must be the right one.
  auto slow =
      guest_->agent->call("guest-exec", R"({"path":"/bin/sleep","arg":["0"],"capture-output":true})", Millis(1));
  ASSERT_FALSE(slow.ok()) << "the reply came within 1 ms: nothing to resynchronise after";
  EXPECT_EQ(slow.error().kind, ErrorKind::Timeout) << slow.error().message;
  auto info = qmp::execute(*guest_->agent, qmp::GuestInfo{});
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_FALSE(info->version.empty());
}

}  // namespace
}  // namespace seamless::test
