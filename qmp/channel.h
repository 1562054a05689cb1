// SPDX-License-Identifier: Apache-2.0
// The seam between typed commands and transports: a Channel executes one named command
// and returns its "return" value; an EventSource yields asynchronous events.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/time.h"
#include "qmp/json.h"

namespace seamless::qmp {

// Limits that protect a client from its peer.
struct Limits {
  size_t max_message = 16 << 20;  // bytes of one JSON message
  size_t max_events = 1024;       // events kept unconsumed before the oldest are dropped
};

class Channel {
 public:
  virtual ~Channel() = default;
  // Executes `command` with `args` (a serialized JSON object, or empty for none).
  // A QMP/QGA error reply is an Error of kind Remote with remote_class set.
  virtual Result<Json> call(std::string_view command, std::string_view args, Millis timeout) = 0;
  // "QMP socket `/run/x.sock`", "libvirt agent of domain `vm1`": used in error messages.
  virtual std::string describe() const = 0;
  // Largest raw payload per guest-file-write this transport carries reliably.
  virtual size_t transfer_chunk() const { return 1 << 20; }
};

struct Event {
  std::string name;
  Json data;             // the event's "data" member (null if absent)
  double timestamp = 0;  // seconds since the epoch, from the event's "timestamp"
};

// Thread-safe event fan-out: subscribers are called as events arrive, and every event
// is also kept in a bounded backlog for wait_event().
class EventBus {
 public:
  explicit EventBus(size_t max_backlog) : max_(max_backlog) {}
  using Callback = std::function<void(const Event&)>;
  int subscribe(Callback cb);
  void unsubscribe(int id);
  void publish(Event ev);
  // Removes and returns the oldest backlog event named `name` (any name when empty).
  std::optional<Event> take(std::string_view name);
  // Blocks until an event named `name` is in the backlog or the deadline passes.
  std::optional<Event> wait(std::string_view name, Deadline deadline);
  size_t dropped() const;

 private:
  size_t max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> backlog_;
  std::vector<std::pair<int, Callback>> subscribers_;
  int next_id_ = 1;
  size_t dropped_ = 0;
};

class EventSource {
 public:
  virtual ~EventSource() = default;
  EventBus& events() { return bus_; }
  // Waits for an event named `name` (any when empty), reading from the peer as needed.
  virtual Result<Event> wait_event(std::string_view name, Millis timeout) = 0;

 protected:
  explicit EventSource(size_t max_backlog) : bus_(max_backlog) {}
  EventBus bus_;
};

// Turns one reply message ({"return": ...} or {"error": {...}}) into a Result.
Result<Json> decode_reply(Json message, std::string_view command, const std::string& peer);
// Builds {"execute": command, "arguments": args[, "id": id]}.
std::string encode_request(std::string_view command, std::string_view args, std::optional<int64_t> id);
// Builds an Event from {"event": ..., "data": ..., "timestamp": {...}}.
Result<Event> decode_event(Json message);

}  // namespace seamless::qmp
