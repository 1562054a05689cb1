// SPDX-License-Identifier: Apache-2.0
// The QMP-style control server.
#include "qmp/server.h"

#include <chrono>
#include <optional>
#include <system_error>

#include "common/log.h"

namespace seamless::qmp {
namespace {

constexpr size_t kMaxMessage = 1 << 20;

std::string error_reply(const std::string& cls, const std::string& desc, const std::string& id_json) {
  ArgWriter err;
  err.str("class", cls).str("desc", desc);
  ArgWriter w;
  w.raw("error", err.finish());
  if (!id_json.empty()) w.raw("id", id_json);
  return w.finish();
}

std::string timestamp_json() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  return cat("{\"seconds\":", us / 1000000, ",\"microseconds\":", us % 1000000, "}");
}

// A request's `arguments` (checked to be an object, or absent: {}).
const Value& arguments_of(const Value& request) {
  static const Value kEmpty(rapidjson::kObjectType);
  auto a = request.FindMember("arguments");
  return a == request.MemberEnd() ? kEmpty : a->value;
}

}  // namespace

void ControlServer::reap(size_t below) {
  std::unique_lock<std::mutex> lock(workers_mu_);
  for (;;) {
    for (auto it = workers_.begin(); it != workers_.end();) {
      if (it->done) {
        it->thread.join();
        it = workers_.erase(it);
      } else {
        ++it;
      }
    }
    if (workers_.size() < below) return;
    worker_done_.wait_for(lock, Millis(200));
  }
}

std::string ControlServer::run(const std::string& command, const Value& args, const std::string& id) {
  auto h = handlers_.find(command);
  if (h == handlers_.end()) return error_reply("CommandNotFound", cat("the command `", command, "` is unknown"), id);
  // A handler that throws is a bug in this daemon; it fails that command, not the daemon
  // with every parked gateway it watches.
  std::optional<Result<std::string>> r;
  try {
    r.emplace(h->second(args));
  } catch (const std::exception& e) {
    return error_reply("GenericError", cat("internal error in `", command, "`: ", e.what()), id);
  }
  if (!r->ok())
    return error_reply(r->error().remote_class.empty() ? "GenericError" : r->error().remote_class, r->error().message,
                       id);
  return cat("{\"return\":", (*r)->empty() ? "{}" : **r, id.empty() ? "" : ",\"id\":" + id, "}");
}

std::string ControlServer::handle(Json message, bool* negotiated, uint64_t session) {
  const Value& root = message.root();
  if (!root.IsObject()) return error_reply("GenericError", "a request must be a JSON object", "");
  std::string id;
  if (auto it = root.FindMember("id"); it != root.MemberEnd()) id = dump(it->value);
  auto exec = root.FindMember("execute");
  if (exec == root.MemberEnd() || !exec->value.IsString())
    return error_reply("GenericError", "a request needs `execute` naming a command", id);
  std::string command(exec->value.GetString(), exec->value.GetStringLength());
  if (!arguments_of(root).IsObject()) return error_reply("GenericError", "`arguments` must be an object", id);
  if (command == "qmp_capabilities") {
    *negotiated = true;
    return cat("{\"return\":{}", id.empty() ? "" : ",\"id\":" + id, "}");
  }
  if (!*negotiated)
    return error_reply("CommandNotFound", "expecting capabilities negotiation with `qmp_capabilities`", id);
  if (max_workers_ == 0 || id.empty() || !handlers_.count(command)) return run(command, arguments_of(root), id);
  // Its own thread, with the message.
  reap(max_workers_);
  auto msg = std::make_shared<Json>(std::move(message));
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    Worker& w = workers_.emplace_back();
    try {
      w.thread = std::thread([this, &w, session, id, command, msg] {
        if (auto sent = send(run(command, arguments_of(msg->root()), id), session); !sent.ok())
          SL_LOG(Debug, "control", "reply to ", id, " not delivered: ", sent.error().message);
        std::lock_guard<std::mutex> lock(workers_mu_);
        w.done = true;
        worker_done_.notify_all();
      });
      return "";
    } catch (const std::system_error& e) {
      workers_.pop_back();
      SL_LOG(Warn, "control", "no worker thread for `", command, "`: ", e.what());
    }
  }
  // No thread to be had (the pids limit): this one is answered in order.
  return run(command, arguments_of(msg->root()), id);
}

Result<void> ControlServer::send(const std::string& text, uint64_t session) {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (!stream_ || (session != 0 && session != session_)) return make_error(ErrorKind::Closed, "no control peer");
  return stream_->write(text + "\r\n", Deadline(Millis(10000)));
}

Result<void> ControlServer::serve(UniqueFd fd, const std::string& peer) {
  JsonStream stream(std::move(fd), kMaxMessage, peer);
  uint64_t session = 0;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    stream_ = &stream;
    session = ++session_;
  }
  struct Detach {
    ControlServer* s;
    ~Detach() {
      std::lock_guard<std::mutex> lock(s->write_mu_);
      s->stream_ = nullptr;
    }
  } detach{this};
  SL_TRY(send(cat("{\"QMP\":{\"version\":{\"seamless\":", quote(version_), "},\"capabilities\":[]}}")));
  bool negotiated = false;
  while (!stopping_) {
    auto item = stream.next(Deadline(Millis(500)));
    if (!item.ok()) {
      const Error& e = item.error();
      if (e.kind == ErrorKind::Timeout) continue;
      if (e.kind == ErrorKind::Protocol) {
        // Malformed, oversized or non-UTF-8: say so and keep serving.
        SL_TRY(send(error_reply("GenericError", "malformed request: " + e.message, "")));
        continue;
      }
      if (e.kind == ErrorKind::Closed) return ok();
      return std::move(item).error();
    }
    if (item->delimiter) continue;
    if (auto reply = handle(std::move(item->message), &negotiated, session); !reply.empty()) SL_TRY(send(reply));
  }
  return ok();
}

void ControlServer::emit(const std::string& event, const std::string& data_json) {
  auto sent = send(cat("{\"event\":", quote(event), ",\"data\":", data_json.empty() ? "{}" : data_json,
                       ",\"timestamp\":", timestamp_json(), "}"));
  if (!sent.ok()) SL_LOG(Debug, "control", "event ", event, " not delivered: ", sent.error().message);
}

void ControlServer::stop() { stopping_ = true; }

}  // namespace seamless::qmp
