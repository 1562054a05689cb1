// SPDX-License-Identifier: Apache-2.0
// Scripted QMP/QGA peer for unit tests.
#include "tests/support/fake_monitor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <utility>

#include "common/sys.h"
#include "qmp/framing.h"

namespace seamless::test {

FakeMonitor::FakeMonitor(Kind kind, std::string greeting)
    : kind_(kind),
      greeting_(std::move(greeting)),
      dir_(TempDir::create("/tmp/seamless-fake-").value()),
      auto_sync_(kind == Kind::Qga) {
  path_ = dir_ / "monitor.sock";
  listen_ = sys::listen_unix(path_).value();
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) std::abort();
  wake_r_.reset(p[0]);
  wake_w_.reset(p[1]);
  if (kind_ == Kind::Qmp && greeting_.empty())
    greeting_ =
        R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})";
  thread_ = std::thread([this] { serve(); });
}

// What a test did not collect with finish() fails it here: an expected command that never
// came, an unexpected or malformed one.
FakeMonitor::~FakeMonitor() {
  for (const auto& p : finish()) ADD_FAILURE() << "fake monitor: " << p;
}

void FakeMonitor::expect(const std::string& command, std::vector<std::string> replies) {
  std::lock_guard lock(mu_);
  expected_.emplace_back(command, std::move(replies));
}

void FakeMonitor::on(const std::string& command, Handler handler) {
  std::lock_guard lock(mu_);
  handlers_[command] = std::move(handler);
}

void FakeMonitor::send(std::string raw) {
  {
    std::lock_guard lock(mu_);
    outbox_.push_back(std::move(raw));
  }
  (void)!::write(wake_w_.get(), "x", 1);
}

std::vector<std::string> FakeMonitor::finish() {
  stop_ = true;
  (void)!::write(wake_w_.get(), "x", 1);
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  for (const auto& e : expected_) problems_.push_back("expected command never arrived: " + e.first);
  expected_.clear();
  return std::exchange(problems_, {});
}

bool FakeMonitor::emit(const std::string& raw, const std::string& id) {
  if (raw == "%CLOSE%") {
    client_.reset();
    return false;
  }
  if (raw.rfind("%SLEEP:", 0) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::stoi(raw.substr(7))));
    return true;
  }
  std::string text = raw;
  for (size_t at; (at = text.find("%ID%")) != std::string::npos;) text.replace(at, 4, id.empty() ? "null" : id);
  if (!sys::write_all(client_.get(), text, Deadline(Millis(5000))).ok()) {
    client_.reset();
    return false;
  }
  return true;
}

void FakeMonitor::handle(const std::string& text) {
  ++commands_seen_;
  auto req = qmp::parse(text);
  if (!req.ok() || !req->root().IsObject() || !req->root().HasMember("execute")) {
    std::lock_guard lock(mu_);
    problems_.push_back("client sent a malformed request: " + text);
    return;
  }
  const auto& root = req->root();
  std::string command = root["execute"].IsString() ? root["execute"].GetString() : "";
  std::string id = root.HasMember("id") ? qmp::dump(root["id"]) : "";
  static const qmp::Value kEmpty(rapidjson::kObjectType);
  const qmp::Value& args = root.HasMember("arguments") ? root["arguments"] : kEmpty;

  std::vector<std::string> replies;
  {
    std::lock_guard lock(mu_);
    if (!expected_.empty() && expected_.front().first == command) {
      replies = std::move(expected_.front().second);
      expected_.pop_front();
    } else if (auto h = handlers_.find(command); h != handlers_.end()) {
      auto handler = h->second;
      mu_.unlock();
      replies = handler(args);
      mu_.lock();
    } else if (command == "guest-sync-delimited" && auto_sync_) {
      replies = {"\xff{\"return\": " + qmp::dump(args["id"]) + "}\n"};
    } else {
      problems_.push_back("unexpected command: " + command +
                          (expected_.empty() ? "" : " (expected " + expected_.front().first + ")"));
      replies = {R"({"error": {"class": "CommandNotFound", "desc": "unexpected in test"}, "id": %ID%})"};
    }
  }
  for (const auto& r : replies)
    if (!emit(r, id)) return;
}

void FakeMonitor::serve() {
  // Accept, polling so that finish() can stop us.
  while (!stop_ && !client_.valid()) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {wake_r_.get(), POLLIN, 0}};
    ::poll(p, 2, 100);
    if (p[0].revents & POLLIN) {
      auto c = sys::accept(listen_.get(), Deadline(Millis(0)));
      if (c.ok()) client_ = std::move(c).value();
    }
    if (p[1].revents & POLLIN) {
      char buf[64];
      while (::read(wake_r_.get(), buf, sizeof buf) > 0) {
      }
    }
  }
  if (!client_.valid()) return;
  if (!greeting_.empty() && !emit(greeting_ + "\r\n", "")) return;
  qmp::Splitter splitter(64 << 20);
  while (client_.valid()) {
    std::deque<std::string> out;
    {
      std::lock_guard lock(mu_);
      out.swap(outbox_);
    }
    for (const auto& raw : out)
      if (!emit(raw, "")) return;
    if (stop_) return;
    pollfd p[2] = {{client_.get(), POLLIN, 0}, {wake_r_.get(), POLLIN, 0}};
    ::poll(p, 2, 100);
    if (p[1].revents & POLLIN) {
      char buf[64];
      while (::read(wake_r_.get(), buf, sizeof buf) > 0) {
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP)) {
      char buf[65536];
      ssize_t n = ::read(client_.get(), buf, sizeof buf);
      if (n <= 0) {
        client_.reset();
        return;
      }
      std::vector<qmp::Frame> frames;
      splitter.feed({buf, static_cast<size_t>(n)}, &frames);
      for (auto& f : frames) {
        if (f.type == qmp::Frame::Type::Message) handle(f.text);
        if (!client_.valid()) return;
      }
    }
  }
}

}  // namespace seamless::test
