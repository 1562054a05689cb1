// SPDX-License-Identifier: Apache-2.0
// QGA client against a scripted agent: guest-sync-delimited, exec with polling,
// chunked file transfer verified by checksum, resync after timeouts, a dead agent.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "common/encoding.h"
#include "qmp/guest.h"
#include "qmp/socket.h"
#include "tests/support/fake_monitor.h"

namespace seamless::qmp {
namespace {

using test::FakeMonitor;

// A guest with an in-memory file system behind guest-file-* and a sha256sum program.
struct FakeGuest {
  std::map<std::string, std::string> files;
  std::map<int, std::pair<std::string, size_t>> handles;  // handle -> (path, read offset)
  std::map<int, std::string> exec_out;
  int next_handle = 1000, next_pid = 1, reads = 0, writes = 0;
  bool corrupt_next_write = false;

  void install(FakeMonitor& agent) {
    agent.on("guest-file-open", [this](const Value& a) {
      int h = next_handle++;
      std::string path = a["path"].GetString();
      if (std::string(a["mode"].GetString()) == "w")
        files[path].clear();
      else if (!files.count(path))
        return std::vector<std::string>{R"({"error": {"class": "GenericError", "desc": "failed to open file"}})"};
      handles[h] = {path, 0};
      return std::vector<std::string>{"{\"return\": " + std::to_string(h) + "}"};
    });
    agent.on("guest-file-write", [this](const Value& a) {
      auto& [path, off] = handles.at(a["handle"].GetInt());
      std::string data = base64_decode(a["buf-b64"].GetString()).value();
      ++writes;
      if (corrupt_next_write) {
        data[0] ^= 1;
        corrupt_next_write = false;
      }
      files[path] += data;
      return std::vector<std::string>{R"({"return": {"count": )" + std::to_string(data.size()) + R"(, "eof": false}})"};
    });
    agent.on("guest-file-read", [this](const Value& a) {
      auto& [path, off] = handles.at(a["handle"].GetInt());
      const std::string& f = files[path];
      size_t n = std::min<size_t>(a["count"].GetInt64(), f.size() - off);
      std::string chunk = f.substr(off, n);
      off += n;
      ++reads;
      return std::vector<std::string>{R"({"return": {"count": )" + std::to_string(n) + R"(, "buf-b64": ")" +
                                      base64_encode(chunk) + R"(", "eof": )" + (off == f.size() ? "true" : "false") +
                                      "}}"};
    });
    agent.on("guest-file-close", [this](const Value& a) {
      handles.erase(a["handle"].GetInt());
      return std::vector<std::string>{R"({"return": {}})"};
    });
    agent.on("guest-exec", [this](const Value& a) {
      int pid = next_pid++;
      std::string prog = a["path"].GetString();
      if (prog == "sha256sum") {
        std::string path = a["arg"][1].GetString();
        exec_out[pid] = sha256_hex(files[path]) + "  " + path + "\n";
      } else {
        exec_out[pid] = "ran " + prog + "\n";
      }
      return std::vector<std::string>{R"({"return": {"pid": )" + std::to_string(pid) + "}}"};
    });
    agent.on("guest-exec-status", [this](const Value& a) {
      int pid = a["pid"].GetInt();
      return std::vector<std::string>{R"({"return": {"exited": true, "exitcode": 0, "out-data": ")" +
                                      base64_encode(exec_out[pid]) + R"("}})"};
    });
  }
};

TEST(QgaClient, SyncSkipsStaleOutputBeforeTheDelimiter) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.set_auto_sync(false);
  // A previous client's unread reply and junk, then an old sync answer, then ours.
  fake.on("guest-sync-delimited", [](const Value& a) {
    std::string id = std::to_string(a["id"].GetInt64());
    return std::vector<std::string>{R"({"return": {"stale": 1}} garbage )", "\xff{\"return\": 12}",
                                    "\xff{\"return\": " + id + "}"};
  });
  fake.expect("guest-ping", {R"({"return": {}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000));
  ASSERT_TRUE(agent.ok()) << agent.error().message;
  EXPECT_TRUE(execute(**agent, GuestPing{}).ok());
  EXPECT_EQ(fake.finish(), std::vector<std::string>{});
}

TEST(QgaClient, GuestInfoListsEnabledCommands) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-info", {R"({"return": {"version": "7.2.19", "supported_commands": [
      {"enabled": true, "name": "guest-exec", "success-response": true},
      {"enabled": false, "name": "guest-fsfreeze-freeze", "success-response": true}]}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto info = execute(*agent, GuestInfo{});
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->version, "7.2.19");
  EXPECT_EQ(info->enabled_commands, std::vector<std::string>{"guest-exec"});
}

TEST(QgaClient, ExecPollsUntilExitAndDecodesOutput) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-exec", {R"({"return": {"pid": 77}})"});
  fake.expect("guest-exec-status", {R"({"return": {"exited": false}})"});
  fake.expect("guest-exec-status", {R"({"return": {"exited": false}})"});
  fake.expect("guest-exec-status",
              {R"({"return": {"exited": true, "exitcode": 3, "out-data": ")" + base64_encode("hello\n") +
               R"(", "err-data": ")" + base64_encode("oops\n") + R"("}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto st = guest_run(*agent, "/bin/echo", {"hello"});
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(st->exited);
  EXPECT_EQ(st->exitcode, 3);
  EXPECT_EQ(st->out, "hello\n");
  EXPECT_EQ(st->err, "oops\n");
  EXPECT_EQ(fake.finish(), std::vector<std::string>{});
}

TEST(QgaClient, RunOkReportsFailureWithStderr) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-exec", {R"({"return": {"pid": 5}})"});
  fake.expect("guest-exec-status", {R"({"return": {"exited": true, "exitcode": 1, "err-data": ")" +
                                    base64_encode("no such file\n") + "\"}}"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto out = guest_run_ok(*agent, "cat", {"/nope"});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.error().message.find("exit code 1): no such file"), std::string::npos) << out.error().message;

  // What a program says on stdout about its failure reaches the caller too (seamless-guest's
  // abort reasons: a caller retries a dump that user activity aborted).
  const std::string said = R"({"ok":false,"aborted":"user activity during the dump: SYN from 10.77.0.1"})";
  fake.expect("guest-exec", {R"({"return": {"pid": 6}})"});
  fake.expect("guest-exec-status",
              {R"({"return": {"exited": true, "exitcode": 3, "out-data": ")" + base64_encode(said + "\n") + "\"}}"});
  auto aborted = guest_run_ok(*agent, "/usr/sbin/seamless-guest", {"dump"});
  ASSERT_FALSE(aborted.ok());
  EXPECT_NE(aborted.error().message.find("exit code 3): stdout: " + said), std::string::npos)
      << aborted.error().message;
}

TEST(QgaClient, FileRoundTripInChunksIsVerified) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  FakeGuest guest;
  guest.install(fake);
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  std::string data(300000, '\0');
  std::mt19937 rng(1);
  for (auto& c : data) c = static_cast<char>(rng());
  TransferOptions opts;
  opts.chunk = 64 << 10;
  ASSERT_TRUE(write_guest_file(*agent, "/tmp/x", data, opts).ok());
  EXPECT_EQ(guest.writes, 5);  // 300000 / 65536 rounded up
  EXPECT_EQ(guest.files["/tmp/x"], data);
  auto back = read_guest_file(*agent, "/tmp/x", opts);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(*back, data);
  EXPECT_TRUE(guest.handles.empty()) << "every handle closed";
}

TEST(QgaClient, CorruptedTransferIsDetected) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  FakeGuest guest;
  guest.install(fake);
  guest.corrupt_next_write = true;
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto r = write_guest_file(*agent, "/tmp/y", "payload");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("checksum mismatch"), std::string::npos) << r.error().message;
}

TEST(QgaClient, MissingGuestFileIsARemoteError) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  FakeGuest guest;
  guest.install(fake);
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  TransferOptions opts;
  opts.verify = false;
  auto r = read_guest_file(*agent, "/no/such", opts);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Remote);
  EXPECT_NE(r.error().message.find("`/no/such`"), std::string::npos) << r.error().message;
}

TEST(QgaClient, LateReplyIsNotMistakenForTheNextAnswer) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-ping", {"%SLEEP:300%", R"({"return": {"late": true}})"});
  fake.expect("guest-info", {R"({"return": {"version": "9", "supported_commands": []}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  ASSERT_FALSE(agent->call("guest-ping", "", Millis(100)).ok());
  auto info = execute(*agent, GuestInfo{}, Millis(3000));
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->version, "9");
}

TEST(QgaClient, DeadAgentGivesAClearTimeout) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.set_auto_sync(false);
  fake.on("guest-sync-delimited", [](const Value&) { return std::vector<std::string>{}; });
  auto agent = QgaSocket::connect(fake.path(), Millis(300));
  ASSERT_FALSE(agent.ok());
  EXPECT_EQ(agent.error().kind, ErrorKind::Timeout);
  EXPECT_NE(agent.error().message.find("is qemu-ga running"), std::string::npos) << agent.error().message;
}

TEST(QgaClient, ADeeplyNestedReplyIsAProtocolError) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-ping", {"{\"return\": " + std::string(100000, '[') + std::string(100000, ']') + "}"});
  fake.expect("guest-ping", {R"({"return": {}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto r = execute(*agent, GuestPing{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  EXPECT_NE(r.error().message.find("nested deeper"), std::string::npos) << r.error().message;
  EXPECT_TRUE(execute(*agent, GuestPing{}).ok()) << "resynced and usable again";
}

TEST(QgaClient, NonReplyMessageIsAProtocolError) {
  FakeMonitor fake(FakeMonitor::Kind::Qga);
  fake.expect("guest-ping", {R"({"surprise": 1})"});
  fake.expect("guest-ping", {R"({"return": {}})"});
  auto agent = QgaSocket::connect(fake.path(), Millis(2000)).value();
  auto r = execute(*agent, GuestPing{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, ErrorKind::Protocol);
  EXPECT_TRUE(execute(*agent, GuestPing{}).ok()) << "resynced and usable again";
}

}  // namespace
}  // namespace seamless::qmp
