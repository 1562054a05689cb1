// SPDX-License-Identifier: Apache-2.0
// QMP client against a scripted monitor on a real unix socket: greeting, replies,
// events interleaved with replies, error replies, timeouts and every kind of bad input.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "qmp/commands.h"
#include "qmp/socket.h"
#include "tests/support/fake_monitor.h"

namespace seamless::qmp {
namespace {

using test::FakeMonitor;

constexpr const char* kRunning =
    R"({"return": {"status": "running", "singlestep": false, "running": true}, "id": %ID%})";
constexpr const char* kEmpty = R"({"return": {}, "id": %ID%})";

std::string event(const std::string& name, int n = 0) {
  return R"({"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": ")" + name + R"(", "data": {"n": )" +
         std::to_string(n) + "}}\r\n";
}

struct Connected {
  FakeMonitor fake{FakeMonitor::Kind::Qmp};
  std::unique_ptr<QmpSocket> qmp;
  explicit Connected(Limits limits = {}) {
    fake.expect("qmp_capabilities", {kEmpty});
    auto q = QmpSocket::connect(fake.path(), Millis(5000), limits);
    if (!q.ok()) throw std::runtime_error(q.error().message);
    qmp = std::move(q).value();
  }
};

// The fake itself: what a test leaves unmet fails it (its destructor once swallowed that).
TEST(FakeMonitorItself, UnmetExpectationsFailTheTest) {
  EXPECT_NONFATAL_FAILURE(
      {
        FakeMonitor fake(FakeMonitor::Kind::Qmp);
        fake.expect("stop", {"{\"return\": {}, \"id\": %ID%}"});
      },
      "expected command never arrived: stop");
}

TEST(QmpClient, GreetingCapabilitiesAndStatus) {
  Connected c;
  EXPECT_EQ(c.qmp->greeting_version(), "7.2.0");
  c.fake.expect("query-status", {kRunning});
  auto st = execute(*c.qmp, QueryStatus{});
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(st->running);
  EXPECT_EQ(st->status, "running");
  EXPECT_EQ(c.fake.finish(), std::vector<std::string>{});
}

TEST(QmpClient, EventsDuringACommandAreDeliveredNotLost) {
  Connected c;
  std::vector<std::string> seen;
  c.qmp->events().subscribe([&](const Event& e) { seen.push_back(e.name); });
  c.fake.expect("stop", {event("STOP", 1), event("BALLOON_CHANGE", 2), kEmpty});
  ASSERT_TRUE(execute(*c.qmp, Stop{}).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"STOP", "BALLOON_CHANGE"}));
  auto ev = c.qmp->wait_event("BALLOON_CHANGE", Millis(100));
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->data.root()["n"].GetInt(), 2);
  EXPECT_DOUBLE_EQ(ev->timestamp, 1700000000.000005);
  ASSERT_TRUE(c.qmp->wait_event("STOP", Millis(100)).ok());
}

TEST(QmpClient, WaitEventReadsEventsArrivingLater) {
  Connected c;
  c.fake.send(event("RESUME"));
  auto ev = c.qmp->wait_event("RESUME", Millis(2000));
  ASSERT_TRUE(ev.ok()) << ev.error().message;
  auto none = c.qmp->wait_event("SHUTDOWN", Millis(50));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind, ErrorKind::Timeout);
}

TEST(QmpClient, ErrorReplyIsTyped) {
  Connected c;
  c.fake.expect("cont", {R"({"id": %ID%, "error": {"class": "GenericError", "desc": "guest is dead"}})"});
  auto r = execute(*c.qmp, Cont{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Remote);
  EXPECT_EQ(r.error().remote_class, "GenericError");
  EXPECT_NE(r.error().message.find("guest is dead"), std::string::npos);
  EXPECT_NE(r.error().message.find("`cont`"), std::string::npos);
}

TEST(QmpClient, MissingRequiredFieldIsAnErrorUnknownFieldsAreNot) {
  Connected c;
  c.fake.expect("query-balloon", {R"({"return": {"actual": 1024, "future-field": [1, 2]}, "id": %ID%})"});
  auto b = execute(*c.qmp, QueryBalloon{});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->actual, 1024);
  c.fake.expect("query-status", {R"({"return": {"status": "paused"}, "id": %ID%})"});
  auto st = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().kind, ErrorKind::Protocol);
  EXPECT_NE(st.error().message.find("missing field `running`"), std::string::npos) << st.error().message;
}

TEST(QmpClient, TimeoutThenLateReplyIsDroppedAndClientStaysUsable) {
  Connected c;
  c.fake.expect("query-status", {"%SLEEP:400%", kRunning});
  auto slow = c.qmp->call("query-status", "", Millis(100));
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.error().kind, ErrorKind::Timeout);
  EXPECT_NE(slow.error().message.find("did not answer `query-status` within 100 ms"), std::string::npos)
      << slow.error().message;
  c.fake.expect("query-balloon", {R"({"return": {"actual": 42}, "id": %ID%})"});
  auto b = execute(*c.qmp, QueryBalloon{}, Millis(2000));
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(b->actual, 42);
  EXPECT_EQ(c.qmp->unknown_replies(), 0u);
}

TEST(QmpClient, ReplyWithUnknownIdIsIgnored) {
  Connected c;
  c.fake.expect("query-balloon",
                {R"({"return": {"actual": 1}, "id": 99999})", R"({"return": {"actual": 2}, "id": %ID%})"});
  auto b = execute(*c.qmp, QueryBalloon{});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->actual, 2);
  EXPECT_EQ(c.qmp->unknown_replies(), 1u);
}

TEST(QmpClient, MalformedJsonGivesErrorAndClientStaysUsable) {
  Connected c;
  c.fake.expect("query-status", {"{\"return\": {\"running\": tru}, \"id\": %ID%}\r\n"});
  auto r = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  EXPECT_NE(r.error().message.find("malformed JSON"), std::string::npos) << r.error().message;
  c.fake.expect("query-status", {kRunning});
  EXPECT_TRUE(execute(*c.qmp, QueryStatus{}).ok());
}

// A reply nested 200,000 levels deep (a hostile or broken peer): refused before the parser
// recurses, and the client goes on.
TEST(QmpClient, DeepNestingIsRefusedAndTheClientGoesOn) {
  Connected c;
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  c.fake.expect("query-status", {"{\"return\": " + deep + ", \"id\": %ID%}\r\n"});
  auto r = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  EXPECT_NE(r.error().message.find("nested deeper than 64"), std::string::npos) << r.error().message;
  c.fake.expect("query-status", {kRunning});
  EXPECT_TRUE(execute(*c.qmp, QueryStatus{}).ok());
}

TEST(QmpClient, NonUtf8IsRejected) {
  Connected c;
  c.fake.expect("query-name", {"{\"return\": {\"name\": \"\xc3\x28\"}, \"id\": %ID%}"});
  auto r = execute(*c.qmp, QueryName{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  EXPECT_NE(r.error().message.find("encoding"), std::string::npos) << r.error().message;
  c.fake.expect("query-name", {R"({"return": {"name": "vm1"}, "id": %ID%})"});
  auto n = execute(*c.qmp, QueryName{});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->name, "vm1");
}

TEST(QmpClient, OversizedMessageIsRefusedAndSkipped) {
  Limits small;
  small.max_message = 4096;
  Connected c(small);
  std::string huge = R"({"return": {"actual": 1, "pad": ")" + std::string(10000, 'x') + R"("}, "id": %ID%})";
  c.fake.expect("query-balloon", {huge});
  auto r = execute(*c.qmp, QueryBalloon{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("exceeds the limit of 4096"), std::string::npos) << r.error().message;
  c.fake.expect("query-balloon", {R"({"return": {"actual": 3}, "id": %ID%})"});
  auto ok = execute(*c.qmp, QueryBalloon{});
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->actual, 3);
}

TEST(QmpClient, PeerStopsMidMessage) {
  Connected c;
  c.fake.expect("query-status", {R"({"return": {"status": "run)", "%CLOSE%"});
  auto r = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Closed);
  EXPECT_NE(r.error().message.find("in the middle of a message"), std::string::npos) << r.error().message;
  auto again = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind, ErrorKind::Closed);
}

TEST(QmpClient, PeerDisappearsBetweenCommands) {
  Connected c;
  c.fake.expect("stop", {kEmpty, "%CLOSE%"});
  ASSERT_TRUE(execute(*c.qmp, Stop{}).ok());
  auto r = execute(*c.qmp, Cont{}, Millis(2000));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Closed);
}

TEST(QmpClient, EventFloodIsBoundedAndCommandStillAnswered) {
  Limits limits;
  limits.max_events = 100;
  Connected c(limits);
  std::string flood;
  for (int i = 0; i < 5000; ++i) flood += event("BALLOON_CHANGE", i);
  c.fake.expect("query-status", {flood, kRunning});
  auto st = execute(*c.qmp, QueryStatus{}, Millis(10000));
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(c.qmp->events().dropped(), 4900u);
  auto first = c.qmp->wait_event("BALLOON_CHANGE", Millis(10));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->data.root()["n"].GetInt(), 4900);  // the newest 100 are kept
}

TEST(QmpClient, GarbageBetweenMessagesIsReportedNotFatal) {
  Connected c;
  c.fake.expect("query-status", {"this is not json\r\n", kRunning});
  auto r = execute(*c.qmp, QueryStatus{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  c.fake.expect("query-status", {kRunning});
  EXPECT_TRUE(execute(*c.qmp, QueryStatus{}).ok());
}

TEST(QmpClient, MissingGreetingIsAnError) {
  FakeMonitor fake(FakeMonitor::Kind::Qmp, R"({"hello": "I am not QEMU"})");
  auto q = QmpSocket::connect(fake.path(), Millis(2000));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().kind, ErrorKind::Protocol);
  EXPECT_NE(q.error().message.find("did not greet"), std::string::npos) << q.error().message;
}

TEST(QmpClient, SilentPeerTimesOutAtConnect) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);  // says nothing on connect
  auto q = QmpSocket::connect(fake.path(), Millis(200));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.error().kind, ErrorKind::Timeout);
}

TEST(QmpClient, MissingSocketNamesThePath) {
  auto q = QmpSocket::connect("/nonexistent/seamless/qmp.sock", Millis(200));
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.error().message.find("`/nonexistent/seamless/qmp.sock`"), std::string::npos) << q.error().message;
}

}  // namespace
}  // namespace seamless::qmp
