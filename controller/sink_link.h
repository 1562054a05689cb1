// SPDX-License-Identifier: Apache-2.0
// The controller's side of a sink: one persistent connection to seamless-sinkd's control
// channel (a virtio-serial port takes one client), reconnected with retry, read by a
// thread of its own between commands so that events (ACTIVITY, ERROR, READY) arrive while
// nothing is asked. sinkd's commands are typed calls here; every argument is built by the
// JSON writer and every reply is checked before use (the sink is untrusted).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "qmp/socket.h"

namespace seamless::ctl {

// sinkd's gateway states (list-gateways).
enum class GatewayState { Traced, Woken, Stopped, HandedBack, Crashed, Lost, Unknown };
GatewayState parse_gateway_state(std::string_view s);
std::string_view to_string(GatewayState s);

struct SinkInterface {
  std::string name, mac;
  std::vector<std::string> addresses;  // "10.77.0.12/24"
};

struct Added {
  std::string id, hostname;
  std::vector<SinkInterface> interfaces;
  double seconds = 0;
};

struct HandedBack {
  std::string pack;  // path in the sink VM
  int64_t bytes = 0;
  double seconds = 0;
};

struct ListedGateway {
  std::string id;
  GatewayState state = GatewayState::Unknown;
  std::string activity;
};

// Parsers of sinkd's replies (exposed for unit tests).
Result<Added> parse_added(const qmp::Value& v);
Result<HandedBack> parse_handed_back(const qmp::Value& v);
Result<std::vector<ListedGateway>> parse_listed(const qmp::Value& v);

class SinkLink {
 public:
  using EventFn = std::function<void(const std::string& sink, const qmp::Event&)>;
  // Finds the host end of the sink VM's org.seamless.sinkd.0 channel ("" while the sink
  // VM is not running); asked again whenever a connection fails (a restarted sink VM may
  // have another).
  using SocketFn = std::function<std::string()>;
  SinkLink(std::string name, SocketFn socket_of, EventFn on_event);
  ~SinkLink();
  SinkLink(const SinkLink&) = delete;
  SinkLink& operator=(const SinkLink&) = delete;
  const std::string& name() const { return name_; }
  std::string socket();

  // Starts the reader thread (connects in the background).
  void start();
  // One command; connects first if needed (retrying until `connect_timeout`).
  Result<qmp::Json> call(std::string_view command, const std::string& args, Millis timeout);
  bool connected();

  Result<void> check_pack(const std::string& pack);
  Result<Added> add_gateway(const std::string& pack, const std::string& id, bool quiet);
  Result<void> speak(const std::string& id);
  Result<HandedBack> hand_back(const std::string& id, const std::string& out);
  Result<int64_t> release_packets(const std::string& id);
  Result<void> remove_gateway(const std::string& id);
  Result<std::vector<ListedGateway>> list_gateways();

  Millis connect_timeout = Millis(60000);

 private:
  Result<void> ensure_connected(Deadline deadline);  // with mu_ held
  void dispatch_events();                            // with mu_ held; calls on_event_ unlocked
  void reader();
  std::string name_, socket_;  // socket_: with mu_ held
  SocketFn socket_of_;
  EventFn on_event_;
  std::mutex mu_;
  std::unique_ptr<qmp::QmpSocket> conn_;
  std::atomic<int> waiting_{0};
  Clock::time_point last_heard_ = Clock::now();  // with mu_ held
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace seamless::ctl
