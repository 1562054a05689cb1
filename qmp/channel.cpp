// SPDX-License-Identifier: Apache-2.0
// Request/reply encoding shared by every transport, and the event bus.
#include "qmp/channel.h"

#include <algorithm>

#include "common/log.h"

namespace seamless::qmp {

int EventBus::subscribe(Callback cb) {
  std::lock_guard lock(mu_);
  subscribers_.emplace_back(next_id_, std::move(cb));
  return next_id_++;
}

void EventBus::unsubscribe(int id) {
  std::lock_guard lock(mu_);
  std::erase_if(subscribers_, [id](const auto& s) { return s.first == id; });
}

void EventBus::publish(Event ev) {
  std::vector<Callback> callbacks;
  {
    std::lock_guard lock(mu_);
    for (const auto& s : subscribers_) callbacks.push_back(s.second);
  }
  for (const auto& cb : callbacks) cb(ev);
  {
    std::lock_guard lock(mu_);
    if (backlog_.size() >= max_) {
      backlog_.pop_front();
      if (dropped_++ % 1000 == 0) SL_LOG(Warn, "qmp", "event backlog full (", max_, "): dropping the oldest events");
    }
    backlog_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

std::optional<Event> EventBus::take(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it =
      std::find_if(backlog_.begin(), backlog_.end(), [&](const Event& e) { return name.empty() || e.name == name; });
  if (it == backlog_.end()) return std::nullopt;
  Event ev = std::move(*it);
  backlog_.erase(it);
  return ev;
}

std::optional<Event> EventBus::wait(std::string_view name, Deadline deadline) {
  for (;;) {
    if (auto ev = take(name)) return ev;
    std::unique_lock lock(mu_);
    if (deadline.expired()) return std::nullopt;
    cv_.wait_for(lock, std::min(deadline.left(), Millis(100)));
  }
}

size_t EventBus::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

Result<Json> decode_reply(Json message, std::string_view command, const std::string& peer) {
  auto& doc = message.doc();
  if (!doc.IsObject()) return make_error(ErrorKind::Protocol, peer, " replied to `", command, "` with a non-object");
  if (auto it = doc.FindMember("return"); it != doc.MemberEnd()) {
    Value ret(std::move(it->value));
    static_cast<Value&>(doc) = ret;  // the root becomes the return value (same allocator)
    return message;
  }
  if (auto it = doc.FindMember("error"); it != doc.MemberEnd()) {
    const Value& e = it->value;
    Error err;
    err.kind = ErrorKind::Remote;
    err.remote_class = opt_string(e, "class").value_or("unknown");
    err.message = cat(peer, " rejected `", command, "`: ", opt_string(e, "desc").value_or("(no description)"), " [",
                      err.remote_class, "]");
    return err;
  }
  return make_error(ErrorKind::Protocol, peer, " replied to `", command,
                    "` with neither `return` nor `error`: ", dump(doc).substr(0, 200));
}

std::string encode_request(std::string_view command, std::string_view args, std::optional<int64_t> id) {
  std::string out = cat("{\"execute\":", quote(command));
  if (!args.empty()) out += cat(",\"arguments\":", args);
  if (id) out += cat(",\"id\":", *id);
  out += "}";
  return out;
}

Result<Event> decode_event(Json message) {
  Event ev;
  ev.name = SL_TRY_CTX(get_string(message.root(), "event"), "event");
  auto& doc = message.doc();
  if (auto ts = doc.FindMember("timestamp"); ts != doc.MemberEnd() && ts->value.IsObject()) {
    ev.timestamp = static_cast<double>(opt_int(ts->value, "seconds").value_or(0)) +
                   static_cast<double>(opt_int(ts->value, "microseconds").value_or(0)) / 1e6;
  }
  if (auto d = doc.FindMember("data"); d != doc.MemberEnd()) {
    Value data(std::move(d->value));
    static_cast<Value&>(doc) = data;
  } else {
    doc.SetNull();
  }
  ev.data = std::move(message);
  return ev;
}

}  // namespace seamless::qmp
