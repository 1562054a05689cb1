// SPDX-License-Identifier: Apache-2.0
// FakeMonitor: a scripted QMP or QGA peer on a real unix socket in a temp dir, in the
// spirit of libvirt's qemumonitortestutils: a greeting, a queue of expected commands
// with canned replies, persistent handlers, injected events, raw bytes and hang-ups.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/tempdir.h"
#include "qmp/json.h"

namespace seamless::test {

// Reply texts may contain these directives:
//   %ID%          replaced by the request's "id" (omitted with its key if absent; use in {"id":%ID%})
//   %CLOSE%       (alone) hang up
//   %SLEEP:MS%    (alone) pause the server MS milliseconds
class FakeMonitor {
 public:
  enum class Kind { Qmp, Qga };
  using Handler = std::function<std::vector<std::string>(const qmp::Value& args)>;

  explicit FakeMonitor(Kind kind, std::string greeting = {});
  ~FakeMonitor();
  FakeMonitor(const FakeMonitor&) = delete;
  FakeMonitor& operator=(const FakeMonitor&) = delete;

  const std::string& path() const { return path_; }
  // Next command must be `command`; answer with `replies` in order.
  void expect(const std::string& command, std::vector<std::string> replies);
  // Answers `command` whenever it arrives and no expectation is queued for it.
  void on(const std::string& command, Handler handler);
  // Sends bytes to the client as soon as possible (events, garbage).
  void send(std::string raw);
  // QGA: answer guest-sync-delimited automatically (default on for Qga).
  void set_auto_sync(bool on) { auto_sync_ = on; }
  // Joins the server; returns problems seen (unexpected commands, unmet expectations).
  std::vector<std::string> finish();
  int commands_seen() const { return commands_seen_; }

 private:
  void serve();
  void handle(const std::string& text);
  bool emit(const std::string& raw, const std::string& id);

  Kind kind_;
  std::string greeting_;
  TempDir dir_;
  std::string path_;
  UniqueFd listen_, client_, wake_r_, wake_w_;
  std::thread thread_;
  std::mutex mu_;
  std::deque<std::pair<std::string, std::vector<std::string>>> expected_;
  std::map<std::string, Handler> handlers_;
  std::deque<std::string> outbox_;
  std::vector<std::string> problems_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> auto_sync_;
  std::atomic<int> commands_seen_{0};
};

}  // namespace seamless::test
