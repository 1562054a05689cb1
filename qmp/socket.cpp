// SPDX-License-Identifier: Apache-2.0
// QMP and QGA over unix sockets.
#include "qmp/socket.h"

#include <sys/socket.h>

#include <random>

#include "common/log.h"
#include "common/sys.h"

namespace seamless::qmp {

QmpSocket::QmpSocket(UniqueFd fd, const std::string& path, Limits limits)
    : EventSource(limits.max_events), stream_(std::move(fd), limits.max_message, cat("QMP monitor `", path, "`")) {}

Result<std::unique_ptr<QmpSocket>> QmpSocket::connect(const std::string& path, Millis timeout, Limits limits) {
  Deadline deadline(timeout);
  auto fd = SL_TRY_CTX(sys::connect_unix(path), "QMP monitor");
  std::unique_ptr<QmpSocket> q(new QmpSocket(std::move(fd), path, limits));
  // The greeting: {"QMP": {"version": {...}, "capabilities": [...]}}.
  for (;;) {
    auto item = q->stream_.next(deadline);
    if (!item.ok()) return std::move(item).error().wrap("waiting for the QMP greeting");
    if (item->delimiter) continue;
    const Value& root = item->message.root();
    auto greeting = root.FindMember("QMP");
    if (greeting == root.MemberEnd() || !greeting->value.IsObject())
      return make_error(ErrorKind::Protocol, q->describe(),
                        " did not greet with a `QMP` object: ", item->message.dump().substr(0, 120));
    if (auto v = greeting->value.FindMember("version"); v != greeting->value.MemberEnd() && v->value.IsObject()) {
      if (auto qemu = v->value.FindMember("qemu"); qemu != v->value.MemberEnd() && qemu->value.IsObject())
        q->version_ = cat(opt_int(qemu->value, "major").value_or(0), ".", opt_int(qemu->value, "minor").value_or(0),
                          ".", opt_int(qemu->value, "micro").value_or(0));
    }
    break;
  }
  SL_TRY_CTX(q->call("qmp_capabilities", "", deadline.left()), "negotiating capabilities");
  return q;
}

Result<pid_t> QmpSocket::peer_pid() const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(stream_.fd(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return errno_error(cat("SO_PEERCRED on ", describe()));
  return cred.pid;
}

void QmpSocket::dispatch(Json message) {
  const Value& root = message.root();
  if (root.HasMember("event")) {
    auto ev = decode_event(std::move(message));
    if (ev.ok())
      bus_.publish(std::move(ev).value());
    else
      SL_LOG(Warn, "qmp", describe(), ": dropping malformed event: ", ev.error().message);
    return;
  }
  auto id = opt_int(root, "id");
  if (auto it = id ? sent_.find(*id) : sent_.end(); it != sent_.end()) {
    replies_.emplace(*id, decode_reply(std::move(message), it->second, describe()));
    sent_.erase(it);
    return;
  }
  if (id && abandoned_.erase(*id) > 0) {
    SL_LOG(Info, "qmp", describe(), ": late reply to abandoned command ", *id, " dropped");
    return;
  }
  ++unknown_replies_;
  SL_LOG(Warn, "qmp", describe(),
         ": dropping a message that answers nothing we asked: ", message.dump().substr(0, 160));
}

Result<Json> QmpSocket::call(std::string_view command, std::string_view args, Millis timeout) {
  Deadline deadline(timeout);
  const int64_t id = SL_TRY(send(command, args, deadline));
  for (;;) {
    if (auto r = reply(id)) return std::move(*r);
    auto item = stream_.next(deadline);
    if (!item.ok()) {
      Error err = std::move(item).error();
      if (err.kind == ErrorKind::Protocol || err.kind == ErrorKind::Timeout)
        abandon(id);
      else
        sent_.erase(id);
      if (err.kind == ErrorKind::Timeout)
        err.message = cat(describe(), " did not answer `", command, "` within ", timeout.count(), " ms");
      return err.wrap(cat("`", command, "`"));
    }
    if (!item->delimiter) dispatch(std::move(item->message));
  }
}

Result<int64_t> QmpSocket::send(std::string_view command, std::string_view args, Deadline deadline) {
  const int64_t id = next_id_++;
  SL_TRY_CTX(stream_.write(encode_request(command, args, id) + "\n", deadline), "sending `", command, "`");
  sent_.emplace(id, std::string(command));
  return id;
}

Result<void> QmpSocket::pump(Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    auto item = stream_.next(deadline);
    if (!item.ok()) {
      if (item.error().kind == ErrorKind::Timeout) return ok();
      if (item.error().kind == ErrorKind::Protocol) {
        SL_LOG(Warn, "qmp", item.error().message);
        continue;
      }
      return std::move(item).error();
    }
    if (!item->delimiter) dispatch(std::move(item->message));
    deadline = Deadline(Millis(0));  // the rest only if it is there already
  }
}

std::optional<Result<Json>> QmpSocket::reply(int64_t id) {
  auto it = replies_.find(id);
  if (it == replies_.end()) return std::nullopt;
  Result<Json> r = std::move(it->second);
  replies_.erase(it);
  return r;
}

void QmpSocket::abandon(int64_t id) {
  if (sent_.erase(id) > 0) abandoned_.insert(id);
  replies_.erase(id);
}

Result<Event> QmpSocket::wait_event(std::string_view name, Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    if (auto ev = bus_.take(name)) return std::move(*ev);
    if (deadline.expired())
      return make_error(ErrorKind::Timeout, "no `", name.empty() ? "any" : name, "` event from ", describe(),
                        " within ", timeout.count(), " ms");
    auto item = stream_.next(deadline);
    if (!item.ok()) {
      if (item.error().kind == ErrorKind::Timeout || item.error().kind == ErrorKind::Protocol) continue;
      return std::move(item).error();
    }
    if (!item->delimiter) dispatch(std::move(item->message));
  }
}

QgaSocket::QgaSocket(UniqueFd fd, const std::string& path, Limits limits)
    : stream_(std::move(fd), limits.max_message, cat("guest agent `", path, "`")),
      sync_counter_(std::random_device{}() & 0x3fffffff) {}

Result<std::unique_ptr<QgaSocket>> QgaSocket::connect(const std::string& path, Millis timeout, Limits limits) {
  auto fd = SL_TRY_CTX(sys::connect_unix(path), "guest agent");
  std::unique_ptr<QgaSocket> q(new QgaSocket(std::move(fd), path, limits));
  SL_TRY(q->sync(timeout));
  return q;
}

Result<void> QgaSocket::sync(Millis timeout) {
  Deadline deadline(timeout);
  const int64_t token = ++sync_counter_;
  // A lone 0xFF makes the agent drop any half-parsed input; its reply to
  // guest-sync-delimited is preceded by 0xFF, so everything before that is stale.
  SL_TRY_CTX(stream_.write(cat("\xff", encode_request("guest-sync-delimited", cat("{\"id\":", token, "}"), {}), "\n"),
                           deadline),
             "guest-sync-delimited");
  bool after_delimiter = false;
  for (;;) {
    auto item = stream_.next(deadline);
    if (!item.ok()) {
      if (item.error().kind == ErrorKind::Protocol) continue;  // stale garbage before the delimiter
      if (item.error().kind == ErrorKind::Timeout)
        return make_error(ErrorKind::Timeout, describe(), " did not answer guest-sync-delimited within ",
                          timeout.count(), " ms (is qemu-ga running in the guest?)");
      return std::move(item).error().wrap("guest-sync-delimited");
    }
    if (item->delimiter) {
      after_delimiter = true;
      continue;
    }
    if (!after_delimiter) continue;
    auto ret = item->message.root().FindMember("return");
    if (ret != item->message.root().MemberEnd() && ret->value.IsInt64() && ret->value.GetInt64() == token) {
      need_sync_ = false;
      return ok();
    }
    after_delimiter = false;  // the answer to an older sync: wait for ours
  }
}

Result<Json> QgaSocket::call(std::string_view command, std::string_view args, Millis timeout) {
  Deadline deadline(timeout);
  if (need_sync_) SL_TRY(sync(std::min(timeout, Millis(10000))));
  SL_TRY_CTX(stream_.write(encode_request(command, args, {}) + "\n", deadline), "sending `", command, "`");
  for (;;) {
    auto item = stream_.next(deadline);
    if (!item.ok()) {
      need_sync_ = true;
      Error err = std::move(item).error();
      if (err.kind == ErrorKind::Timeout)
        err.message = cat(describe(), " did not answer `", command, "` within ", timeout.count(), " ms");
      return err.wrap(cat("`", command, "`"));
    }
    if (item->delimiter) continue;
    const Value& root = item->message.root();
    if (!root.HasMember("return") && !root.HasMember("error")) {
      need_sync_ = true;
      return make_error(ErrorKind::Protocol, describe(), " sent something other than a reply to `", command,
                        "`: ", item->message.dump().substr(0, 160));
    }
    return decode_reply(std::move(item->message), command, describe());
  }
}

}  // namespace seamless::qmp
