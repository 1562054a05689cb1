// SPDX-License-Identifier: Apache-2.0
// Integration: the template guest under plain QEMU (TCG), driven through its own QMP
// and QGA unix sockets.
#include "tests/integration/transport_checks.h"
#include "tests/support/testbed.h"

namespace seamless::test {
namespace {

constexpr int kRamMib = 512;

class DirectTransport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto bed = Testbed::load();
    if (!bed.ok()) {
      setup_error_ = bed.error().message;
      return;
    }
    VmSpec spec;
    spec.name = "sl-direct";
    spec.index = 1;
    spec.memory_mib = kRamMib;
    auto vm = DirectVm::boot(*bed, spec);
    if (!vm.ok()) {
      setup_error_ = vm.error().message;
      return;
    }
    vm_ = std::move(vm).value().release();
    auto agent = vm_->wait_for_agent();
    if (!agent.ok()) {
      setup_error_ = agent.error().message + "\nconsole:\n" + vm_->console_log();
      return;
    }
    agent_ = std::move(agent).value().release();
    auto qmp = qmp::QmpSocket::connect(vm_->qmp_path());
    if (!qmp.ok()) {
      setup_error_ = qmp.error().message;
      return;
    }
    qmp_ = std::move(qmp).value().release();
  }
  static void TearDownTestSuite() {
    delete qmp_;
    delete agent_;
    delete vm_;
  }
  void SetUp() override { SL_REQUIRE(setup_error_.empty(), setup_error_); }

  static inline std::string setup_error_;
  static inline DirectVm* vm_ = nullptr;
  static inline qmp::QgaSocket* agent_ = nullptr;
  static inline qmp::QmpSocket* qmp_ = nullptr;
};

TEST_F(DirectTransport, StatusStopCont) { check_status_stop_cont(*qmp_, *qmp_); }
TEST_F(DirectTransport, BalloonDownByHalf) { check_balloon_half(*qmp_, *agent_, int64_t(kRamMib) << 20); }
TEST_F(DirectTransport, GuestExec) { check_exec(*agent_); }
TEST_F(DirectTransport, FileRoundTrip5MiB) { check_file_round_trip(*agent_); }
TEST_F(DirectTransport, NameAndAnnounce) { check_name_and_announce(*qmp_, "sl-direct"); }

TEST_F(DirectTransport, AgentResyncsAfterATimeout) {
  // A command that outlives its timeout leaves a late reply in the channel; the
  // client must resynchronise and the next answer must be the right one.
  auto slow = agent_->call("guest-exec", R"({"path":"/bin/sleep","arg":["0"],"capture-output":true})", Millis(1));
  (void)slow;
  auto info = qmp::execute(*agent_, qmp::GuestInfo{});
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_FALSE(info->version.empty());
}

}  // namespace
}  // namespace seamless::test
