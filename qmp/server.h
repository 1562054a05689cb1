// SPDX-License-Identifier: Apache-2.0
// The QMP protocol spoken by a server (sinkd's control channel, seamlessd's control socket). A greeting, capabilities
// negotiation, `{"execute":..,"arguments":..,"id":..}` requests answered with `return` or
// `error` (class + desc) carrying the same id, and asynchronous events. Bad input gets an
// error reply and the session goes on. The host side uses qmp::QmpSocket unchanged.
//
// With answer_out_of_order(N), a request that carries an `id` runs on a worker thread of
// its own (at most N at once) and its reply goes out when it is done, tagged with that id:
// a slow command (a CRIU restore) no longer holds up a quick one behind it. Requests
// without an id, and the capabilities negotiation, are still answered in order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/fd.h"
#include "common/result.h"
#include "qmp/json.h"
#include "qmp/stream.h"

namespace seamless::qmp {

// A command handler: arguments (an object, possibly empty) -> the `return` value as JSON
// text. An Error becomes an error reply; its remote_class (or GenericError) is the class.
using Handler = std::function<Result<std::string>(const Value& args)>;

class ControlServer {
 public:
  explicit ControlServer(std::string version) : version_(std::move(version)) {}
  ~ControlServer() { wait_idle(); }
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  void on(const std::string& command, Handler handler) { handlers_[command] = std::move(handler); }
  // Runs requests with an id concurrently, up to `workers` at once (0: one at a time, in
  // order, the default). Handlers must then be safe to run concurrently.
  void answer_out_of_order(size_t workers) { max_workers_ = workers; }
  // Serves one peer on fd until it goes away (EOF) or stop() is called. Returns why it ended.
  Result<void> serve(UniqueFd fd, const std::string& peer);
  // Sends an event to the current peer, if any; events while nobody listens are dropped
  // (the controller asks for the state when it reconnects).
  void emit(const std::string& event, const std::string& data_json);
  void stop();
  // Waits until no command runs (those on workers finish; their replies go to their peer
  // if it is still the one served).
  void wait_idle() { reap(1); }

 private:
  struct Worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  Result<void> send(const std::string& text, uint64_t session = 0);
  // A request checked and dispatched: its reply now (in order), or "" when a worker
  // answers it later.
  std::string handle(Json message, bool* negotiated, uint64_t session);
  std::string run(const std::string& command, const Value& args, const std::string& id);
  void reap(size_t below);  // joins finished workers until fewer than `below` run
  std::string version_;
  std::map<std::string, Handler> handlers_;
  std::atomic<size_t> max_workers_{0};
  std::mutex write_mu_;
  JsonStream* stream_ = nullptr;  // guarded by write_mu_
  uint64_t session_ = 0;          // guarded by write_mu_: replies of an earlier peer are not sent to this one
  std::mutex workers_mu_;
  std::condition_variable worker_done_;
  std::list<Worker> workers_;  // guarded by workers_mu_
  std::atomic<bool> stopping_{false};
};

}  // namespace seamless::qmp
