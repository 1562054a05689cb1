// SPDX-License-Identifier: Apache-2.0
// The QMP protocol spoken by a server (sinkd's control channel, seamlessd's control socket). A greeting, capabilities
// negotiation, `{"execute":..,"arguments":..,"id":..}` requests answered with `return` or
// `error` (class + desc) carrying the same id, and asynchronous events. Bad input gets an
// error reply and the session goes on. The host side uses qmp::QmpSocket unchanged.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>

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
  void on(const std::string& command, Handler handler) { handlers_[command] = std::move(handler); }
  // Serves one peer on fd until it goes away (EOF) or stop() is called. Returns why it ended.
  Result<void> serve(UniqueFd fd, const std::string& peer);
  // Sends an event to the current peer, if any; events while nobody listens are dropped
  // (the controller asks for the state when it reconnects).
  void emit(const std::string& event, const std::string& data_json);
  void stop();

 private:
  Result<void> send(const std::string& text);
  std::string handle(const Json& message, bool* negotiated);
  std::string version_;
  std::map<std::string, Handler> handlers_;
  std::mutex write_mu_;
  JsonStream* stream_ = nullptr;  // guarded by write_mu_
  std::atomic<bool> stopping_{false};
};

}  // namespace seamless::qmp
