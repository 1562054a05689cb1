// SPDX-License-Identifier: Apache-2.0
// Integration: seamless-sinkd in a sink VM booted from the template, reached over its
// virtio-serial control channel with the project's QMP client; a pack dumped in another
// guest VM crosses machines (guest agent out, guest agent in) and passes the sink's
// template check, a pack claiming other code is refused, and bad input on the real
// channel gets error replies. The guest's gateway goes home afterwards.
#include <gtest/gtest.h>

#include <thread>

#include "common/sys.h"
#include "common/tempdir.h"
#include "guest-agent/manifest.h"
#include "guest-agent/pack.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "qmp/socket.h"
#include "qmp/stream.h"
#include "tests/support/testbed.h"

namespace seamless::sink {
namespace {

class SinkVm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::VmSpec sink;
    sink.name = "sl-sink";
    sink.index = 15;
    sink.services = "sinkd";
    sink.tools = {SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN};
    sink.sink_channel = true;
    auto s = test::LibvirtGuest::boot(sink);
    if (!s.ok()) return fail(s.error().message);
    sink_ = std::move(s).value();
    test::VmSpec guest;
    guest.name = "sl-sink-client";
    guest.index = 16;
    guest.services = "dropbear";
    guest.tools = {SEAMLESS_GUEST_BIN};
    auto g = test::LibvirtGuest::boot(guest);
    if (!g.ok()) return fail(g.error().message);
    guest_ = std::move(g).value();
  }
  static void TearDownTestSuite() {
    guest_.reset();
    sink_.reset();
  }
  static void fail(const std::string& why) { setup_error_ = why; }
  void SetUp() override { SL_REQUIRE(sink_ != nullptr && guest_ != nullptr, setup_error_); }

  // sinkd answers once it has started in the sink VM; the socket takes one client.
  static Result<std::unique_ptr<qmp::QmpSocket>> control() {
    Result<std::unique_ptr<qmp::QmpSocket>> c = make_error(ErrorKind::Timeout, "not tried");
    for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(1000))) {
      c = qmp::QmpSocket::connect(sink_->vm->sink_socket(), Millis(3000));
      if (c.ok()) return c;
    }
    return c.error().wrap("sinkd control channel");
  }

  // Dumps the guest's dropbear and returns the pack's bytes; the gateway goes home at once.
  static Result<std::string> guest_pack() {
    qmp::RunOptions ro;
    ro.timeout = Millis(180000);
    SL_TRY(qmp::guest_run_ok(*guest_->agent, "/usr/sbin/seamless-guest",
                             {"dump", "--port", "2222", "--out", "/run/x.pack"}, ro));
    auto bytes = SL_TRY(qmp::read_guest_file(*guest_->agent, "/run/x.pack"));
    SL_TRY(qmp::guest_run_ok(*guest_->agent, "/usr/sbin/seamless-guest", {"restore", "/run/x.pack"}, ro));
    return bytes;
  }

  static inline std::string setup_error_;
  static inline std::unique_ptr<test::LibvirtGuest> sink_, guest_;
};

TEST_F(SinkVm, AnswersOnItsVirtioSerialChannel) {
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message << "\n" << sink_->vm->console_log();
  auto st = (*c)->call("query-status", "", Millis(10000));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(qmp::get_string(st->root(), "version").ok()) << st->dump();
  auto unknown = (*c)->call("no-such-command", "", Millis(10000));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().remote_class, "CommandNotFound");
}

TEST_F(SinkVm, MalformedMessagesGetErrorReplies) {
  {
    // A raw client on the real channel: garbage, then a proper command still works.
    // A virtio-serial port shows the guest no hang-up when the host reconnects at once
    // (see sinkd/main.cpp): wait a moment before each attempt, and retry.
    std::unique_ptr<qmp::JsonStream> stream;
    for (int attempt = 0; attempt < 20 && !stream; ++attempt) {
      // The port must stay closed long enough for the guest to see the hang-up.
      std::this_thread::sleep_for(Millis(1000));
      auto fd = sys::connect_unix(sink_->vm->sink_socket());
      ASSERT_TRUE(fd.ok()) << fd.error().message;
      auto candidate = std::make_unique<qmp::JsonStream>(std::move(fd).value(), 1 << 20, "sinkd");
      if (candidate->next(Deadline(Millis(3000))).ok()) stream = std::move(candidate);
    }
    ASSERT_TRUE(stream) << "no greeting";
    qmp::JsonStream& s = *stream;
    auto say = [&](const std::string& text) {
      EXPECT_TRUE(s.write(text, Deadline(Millis(5000))).ok());
      auto item = s.next(Deadline(Millis(30000)));
      return item.ok() ? item->message.dump() : item.error().message;
    };
    EXPECT_NE(say("{\"execute\":\"qmp_capabilities\"}").find("return"), std::string::npos);
    EXPECT_NE(say("{\"execute\": nonsense}").find("malformed request"), std::string::npos);
    EXPECT_NE(say("{\"execute\":\"check-pack\",\"arguments\":{}}").find("missing field `pack`"), std::string::npos);
    EXPECT_NE(say("{\"execute\":\"query-status\",\"id\":3}").find("\"id\":3"), std::string::npos);
  }
  // The daemon greets the next client after this one hung up.
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
}

TEST_F(SinkVm, APackFromAnotherVmPassesTheTemplateCheck) {
  auto bytes = guest_pack();
  ASSERT_TRUE(bytes.ok()) << bytes.error().message;
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/in.pack", *bytes).ok());
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto checked = (*c)->call("check-pack", "{\"pack\":\"/run/in.pack\"}", Millis(120000));
  ASSERT_TRUE(checked.ok()) << checked.error().message;
  EXPECT_EQ(qmp::opt_string(checked->root(), "hostname").value_or(""), "sl-sink-client") << checked->dump();
  EXPECT_NE(checked->dump().find("dropbear"), std::string::npos) << checked->dump();

  // The same pack claiming another build of dropbear: refused as a template mismatch.
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(sys::write_file(*dir / "in.pack", *bytes).ok());
  auto text = guest::unpack(*dir / "in.pack", *dir / "x");
  ASSERT_TRUE(text.ok()) << text.error().message;
  auto m = guest::Manifest::parse(*text);
  ASSERT_TRUE(m.ok());
  for (auto& f : m->files)
    if (f.role == "exe") f.build_id = std::string(40, '0');
  ASSERT_TRUE(guest::write_pack(*dir / "other.pack", m->to_json(), *dir / "x", {}).ok());
  auto other = sys::read_file(*dir / "other.pack");
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(qmp::write_guest_file(*sink_->agent, "/run/other.pack", *other).ok());
  auto refused = (*c)->call("check-pack", "{\"pack\":\"/run/other.pack\"}", Millis(120000));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("template mismatch"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("dropbear"), std::string::npos) << refused.error().message;
}

}  // namespace
}  // namespace seamless::sink
