// SPDX-License-Identifier: Apache-2.0
// The controller's sink connection and sinkd's typed commands.
#include "controller/sink_link.h"

#include "common/log.h"

namespace seamless::ctl {
namespace {

constexpr const char* kModule = "sink";

}  // namespace

SinkLink::SinkLink(std::string name, SocketFn socket_of, EventFn on_event)
    : name_(std::move(name)),
      socket_of_(std::move(socket_of)),
      on_event_(std::move(on_event)),
      client_([this](std::string_view command, const std::string& args, Millis timeout) {
        return call(command, args, timeout);
      }) {}

std::string SinkLink::socket() {
  std::lock_guard<std::mutex> lock(mu_);
  return socket_;
}

SinkLink::~SinkLink() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void SinkLink::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { reader(); });
}

bool SinkLink::connected() {
  std::lock_guard<std::mutex> lock(mu_);
  return conn_ != nullptr;
}

Result<void> SinkLink::ensure_connected(Deadline deadline) {
  if (conn_) return ok();
  // A virtio-serial port shows the guest no hang-up when the host reconnects at once: the
  // first attempt after a reconnect may get no greeting. Wait a moment and retry.
  Result<std::unique_ptr<qmp::QmpSocket>> c = make_error(ErrorKind::Timeout, "not tried");
  for (;;) {
    if (socket_.empty()) socket_ = socket_of_();
    c = socket_.empty()
            ? Result<std::unique_ptr<qmp::QmpSocket>>(
                  make_error(ErrorKind::NotFound, "no running domain with a `org.seamless.sinkd.0` unix channel"))
            : qmp::QmpSocket::connect(socket_, std::min(Millis(3000), std::max(Millis(500), deadline.left())));
    if (c.ok()) break;
    socket_.clear();  // looked up again: the sink VM may have restarted elsewhere
    if (deadline.expired() || stop_) return c.error().wrap(cat("sink `", name_, "` (`", socket_, "`)"));
    std::this_thread::sleep_for(Millis(1000));
  }
  conn_ = std::move(c).value();
  last_heard_ = Clock::now();
  SL_LOG(Info, kModule, "connected to sink `", name_, "`");
  return ok();
}

std::vector<qmp::Event> SinkLink::take_events() {
  std::vector<qmp::Event> evs;
  if (conn_)
    while (auto e = conn_->events().take("")) evs.push_back(std::move(*e));
  return evs;
}

void SinkLink::dispatch(const std::vector<qmp::Event>& events) {
  if (!on_event_) return;
  for (const auto& e : events) on_event_(name_, e);
}

Result<qmp::Json> SinkLink::call(std::string_view command, const std::string& args, Millis timeout) {
  Deadline deadline(timeout);
  ++waiting_;
  std::unique_lock<std::mutex> lock(mu_);
  --waiting_;
  Result<void> up = ensure_connected(Deadline(connect_timeout));
  if (!up.ok()) return std::move(up).error();
  auto r = exchange(lock, command, args, deadline);
  if (!r.ok() && r.error().kind == ErrorKind::Remote &&
      r.error().message.find("capabilities negotiation") != std::string::npos) {
    // sinkd restarted behind a connection the host kept open (a virtio-serial port shows
    // the guest no hang-up): a new session, and the command once more.
    SL_LOG(Warn, kModule, "sink `", name_, "` restarted; reconnecting");
    conn_.reset();
    Result<void> again = ensure_connected(Deadline(connect_timeout));
    if (!again.ok()) return std::move(again).error();
    r = exchange(lock, command, args, deadline);
  }
  last_heard_ = Clock::now();
  // Handlers may call back into this link: they run without the lock.
  auto events = take_events();
  lock.unlock();
  dispatch(events);
  if (!r.ok()) return std::move(r).error().wrap(cat("sink `", name_, "`: ", command));
  return r;
}

Result<qmp::Json> SinkLink::exchange(std::unique_lock<std::mutex>& lock, std::string_view command,
                                     const std::string& args, Deadline deadline) {
  auto gone = [&](const Error& e) {
    if (e.kind != ErrorKind::Closed && e.kind != ErrorKind::System) return;
    SL_LOG(Warn, kModule, "sink `", name_, "` went away: ", e.message);
    conn_.reset();
  };
  auto id = conn_->send(command, args, deadline);
  if (!id.ok()) {
    gone(id.error());
    return std::move(id).error();
  }
  // sinkd answers commands as they finish: whichever caller holds the lock reads for all,
  // and lets the others have it between reads.
  const qmp::QmpSocket* mine = conn_.get();
  for (;;) {
    if (conn_.get() != mine)
      return make_error(ErrorKind::Closed, "the connection went away before `", command, "` was answered");
    if (auto r = conn_->reply(*id)) return std::move(*r);
    if (deadline.expired()) {
      conn_->abandon(*id);
      return make_error(ErrorKind::Timeout, conn_->describe(), " did not answer `", command, "` within the time given");
    }
    auto pumped = conn_->pump(std::min(Millis(20), deadline.left()));
    if (!pumped.ok()) {
      gone(pumped.error());
      if (!conn_) return std::move(pumped).error();
    }
    lock.unlock();
    std::this_thread::sleep_for(Millis(1));
    lock.lock();
  }
}

Result<void> SinkLink::ask_status() {
  const double sent = wall_seconds();
  auto r = SL_TRY(conn_->call(sink::proto::kQueryStatus, "", Millis(5000)));
  const double answered = wall_seconds();
  auto st = sink::proto::Status::parse(r.root());
  // Midway between question and answer, give or take half the round trip.
  if (st.ok() && st->time > 0 && answered - sent < 1) clock_offset_ = st->time - (sent + answered) / 2;
  return ok();
}

void SinkLink::reader() {
  while (!stop_) {
    if (waiting_ > 0) {
      std::this_thread::sleep_for(Millis(5));
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (!conn_) {
      if (auto up = ensure_connected(Deadline(Millis(3000))); !up.ok()) {
        lock.unlock();
        std::this_thread::sleep_for(Millis(1000));
        continue;
      }
      if (auto st = ask_status(); !st.ok()) SL_LOG(Debug, kModule, "sink `", name_, "`: ", st.error().message);
      // Whatever happened while nobody listened is asked for by the controller (state).
      qmp::Event hello{"CONNECTED", {}, 0};
      conn_->events().publish(std::move(hello));
    }
    auto pumped = conn_->pump(Millis(50));
    if (!pumped.ok() && pumped.error().kind != ErrorKind::Timeout) {
      SL_LOG(Warn, kModule, "sink `", name_, "` went away: ", pumped.error().message);
      conn_.reset();
    } else if (seconds_since(last_heard_) > 10) {
      // A sinkd that died leaves the host's end of the port open and silent: ask.
      auto st = ask_status();
      last_heard_ = Clock::now();
      if (!st.ok() && st.error().kind == ErrorKind::Remote &&
          st.error().message.find("capabilities negotiation") != std::string::npos) {
        SL_LOG(Warn, kModule, "sink `", name_, "` restarted; reconnecting");
        conn_.reset();
      } else if (!st.ok()) {
        SL_LOG(Warn, kModule, "sink `", name_, "` does not answer: ", st.error().message);
        conn_.reset();
      }
    }
    auto events = take_events();
    lock.unlock();
    dispatch(events);
    std::this_thread::sleep_for(Millis(2));
  }
}

Result<void> SinkLink::check_pack(const std::string& pack) { return client_.check_pack({pack}); }

Result<Missing> SinkLink::missing_files(const std::string& pack) { return client_.query_missing_files({pack}); }

Result<Added> SinkLink::add_gateway(const std::string& pack, const std::string& id, bool quiet,
                                    const std::string& files) {
  return client_.add_gateway({pack, id, quiet, files});
}

Result<void> SinkLink::speak(const std::string& id) { return client_.speak({id}); }

Result<HandedBack> SinkLink::hand_back(const std::string& id, const std::string& out) {
  return client_.hand_back({id, out});
}

Result<int64_t> SinkLink::release_packets(const std::string& id) {
  return SL_TRY(client_.release_packets({id})).released;
}

Result<void> SinkLink::remove_gateway(const std::string& id) { return client_.remove_gateway({id}); }

Result<std::vector<ListedGateway>> SinkLink::list_gateways() { return client_.list_gateways(); }

}  // namespace seamless::ctl
