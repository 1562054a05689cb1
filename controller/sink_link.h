// SPDX-License-Identifier: Apache-2.0
// The controller's side of a sink: one persistent connection to seamless-sinkd's control
// channel (a virtio-serial port takes one client), reconnected with retry, read by a
// thread of its own between commands so that events (ACTIVITY, ERROR, READY) arrive while
// nothing is asked. Commands from several threads (parks and wakes of different VMs) are
// in flight together: sinkd answers each when it is done, and the replies are matched by
// id. sinkd's commands are typed calls here; every argument is built by the JSON writer
// and every reply is checked before use (the sink is untrusted).
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
#include "sinkd/protocol.h"

namespace seamless::ctl {

// sinkd's protocol, defined once in sinkd/protocol.h.
using sink::proto::Added;
using sink::proto::GatewayState;
using sink::proto::HandedBack;
using sink::proto::ListedGateway;
using sink::proto::Missing;

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
  Result<Missing> missing_files(const std::string& pack);
  // `files`: a shipment in the sink ("" = none).
  Result<Added> add_gateway(const std::string& pack, const std::string& id, bool quiet, const std::string& files = "");
  Result<void> speak(const std::string& id);
  Result<HandedBack> hand_back(const std::string& id, const std::string& out);
  Result<int64_t> release_packets(const std::string& id);
  Result<void> remove_gateway(const std::string& id);
  Result<std::vector<ListedGateway>> list_gateways();

  Millis connect_timeout = Millis(60000);

  // The sink's wall clock minus the host's, in seconds (from its query-status answers;
  // 0 until one came). Its events are stamped with its own clock.
  double clock_offset() const { return clock_offset_; }

 private:
  Result<void> ensure_connected(Deadline deadline);  // with mu_ held
  // Sends one command and waits for its reply (with `lock` on mu_, let go while waiting).
  Result<qmp::Json> exchange(std::unique_lock<std::mutex>& lock, std::string_view command, const std::string& args,
                             Deadline deadline);
  std::vector<qmp::Event> take_events();                 // with mu_ held
  void dispatch(const std::vector<qmp::Event>& events);  // without mu_: handlers may call this link
  void reader();
  std::string name_, socket_;  // socket_: with mu_ held
  SocketFn socket_of_;
  EventFn on_event_;
  std::mutex mu_;
  std::unique_ptr<qmp::QmpSocket> conn_;
  std::atomic<int> waiting_{0};
  Clock::time_point last_heard_ = Clock::now();  // with mu_ held
  std::atomic<bool> stop_{false};
  std::atomic<double> clock_offset_{0};
  // Asks the sink's status (with mu_ held) and learns its clock offset from the answer.
  Result<void> ask_status();
  std::thread thread_;
  sink::proto::Client client_;
};

}  // namespace seamless::ctl
