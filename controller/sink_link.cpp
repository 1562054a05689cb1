// SPDX-License-Identifier: Apache-2.0
// The controller's sink connection and sinkd's typed commands.
#include "controller/sink_link.h"

#include "common/log.h"

namespace seamless::ctl {
namespace {

constexpr const char* kModule = "sink";

Result<double> seconds_field(const qmp::Value& v) {
  auto s = qmp::opt_string(v, "seconds");
  if (!s) return 0.0;
  char* end = nullptr;
  double d = std::strtod(s->c_str(), &end);
  if (end == s->c_str() || d < 0 || d > 1e6) return make_error(ErrorKind::Protocol, "bad `seconds` `", *s, "`");
  return d;
}

}  // namespace

GatewayState parse_gateway_state(std::string_view s) {
  if (s == "traced") return GatewayState::Traced;
  if (s == "woken") return GatewayState::Woken;
  if (s == "stopped") return GatewayState::Stopped;
  if (s == "handed-back") return GatewayState::HandedBack;
  if (s == "crashed") return GatewayState::Crashed;
  if (s == "lost") return GatewayState::Lost;
  return GatewayState::Unknown;
}

std::string_view to_string(GatewayState s) {
  switch (s) {
    case GatewayState::Traced: return "traced";
    case GatewayState::Woken: return "woken";
    case GatewayState::Stopped: return "stopped";
    case GatewayState::HandedBack: return "handed-back";
    case GatewayState::Crashed: return "crashed";
    case GatewayState::Lost: return "lost";
    case GatewayState::Unknown: return "unknown";
  }
  return "unknown";
}

Result<Added> parse_added(const qmp::Value& v) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, "add-gateway: the reply is not an object");
  Added a;
  a.id = SL_TRY(qmp::get_string(v, "id"));
  a.hostname = qmp::opt_string(v, "hostname").value_or("");
  a.seconds = SL_TRY(seconds_field(v));
  auto ifaces = v.FindMember("interfaces");
  if (ifaces != v.MemberEnd()) {
    if (!ifaces->value.IsArray() || ifaces->value.Size() > 64)
      return make_error(ErrorKind::Protocol, "add-gateway: `interfaces` is not a short array");
    for (const auto& i : ifaces->value.GetArray()) {
      if (!i.IsObject()) return make_error(ErrorKind::Protocol, "add-gateway: an interface is not an object");
      SinkInterface si;
      si.name = qmp::opt_string(i, "name").value_or("");
      si.mac = SL_TRY(qmp::get_string(i, "mac"));
      if (auto addrs = i.FindMember("addresses"); addrs != i.MemberEnd() && addrs->value.IsArray())
        for (const auto& a : addrs->value.GetArray())
          if (a.IsString() && si.addresses.size() < 64) si.addresses.emplace_back(a.GetString(), a.GetStringLength());
      a.interfaces.push_back(std::move(si));
    }
  }
  return a;
}

Result<HandedBack> parse_handed_back(const qmp::Value& v) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, "hand-back: the reply is not an object");
  HandedBack h;
  h.pack = SL_TRY(qmp::get_string(v, "pack"));
  h.bytes = qmp::opt_int(v, "bytes").value_or(0);
  h.seconds = SL_TRY(seconds_field(v));
  return h;
}

Result<std::vector<ListedGateway>> parse_listed(const qmp::Value& v) {
  if (!v.IsArray()) return make_error(ErrorKind::Protocol, "list-gateways: the reply is not an array");
  std::vector<ListedGateway> out;
  for (const auto& g : v.GetArray()) {
    if (!g.IsObject()) return make_error(ErrorKind::Protocol, "list-gateways: an entry is not an object");
    ListedGateway l;
    l.id = SL_TRY(qmp::get_string(g, "id"));
    l.state = parse_gateway_state(qmp::opt_string(g, "state").value_or(""));
    l.activity = qmp::opt_string(g, "activity").value_or("");
    out.push_back(std::move(l));
  }
  return out;
}

SinkLink::SinkLink(std::string name, SocketFn socket_of, EventFn on_event)
    : name_(std::move(name)), socket_of_(std::move(socket_of)), on_event_(std::move(on_event)) {}

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

void SinkLink::dispatch_events() {
  std::vector<qmp::Event> evs;
  if (conn_)
    while (auto e = conn_->events().take("")) evs.push_back(std::move(*e));
  if (evs.empty() || !on_event_) return;
  // Handlers may call back into this link: run them without the lock, on a copy.
  mu_.unlock();
  for (const auto& e : evs) on_event_(name_, e);
  mu_.lock();
}

Result<qmp::Json> SinkLink::call(std::string_view command, const std::string& args, Millis timeout) {
  ++waiting_;
  std::unique_lock<std::mutex> lock(mu_);
  --waiting_;
  Result<void> up = ensure_connected(Deadline(connect_timeout));
  if (!up.ok()) return std::move(up).error();
  auto r = conn_->call(command, args, timeout);
  if (!r.ok() && r.error().kind == ErrorKind::Remote &&
      r.error().message.find("capabilities negotiation") != std::string::npos) {
    // sinkd restarted behind a connection the host kept open (a virtio-serial port shows
    // the guest no hang-up): a new session, and the command once more.
    SL_LOG(Warn, kModule, "sink `", name_, "` restarted; reconnecting");
    conn_.reset();
    Result<void> again = ensure_connected(Deadline(connect_timeout));
    if (!again.ok()) return std::move(again).error();
    r = conn_->call(command, args, timeout);
  }
  if (!r.ok() && (r.error().kind == ErrorKind::Closed || r.error().kind == ErrorKind::System)) {
    SL_LOG(Warn, kModule, "sink `", name_, "` went away: ", r.error().message);
    conn_.reset();
  }
  last_heard_ = Clock::now();
  dispatch_events();
  if (!r.ok()) return std::move(r).error().wrap(cat("sink `", name_, "`: ", command));
  return r;
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
      // Whatever happened while nobody listened is asked for by the controller (state).
      qmp::Event hello{"CONNECTED", {}, 0};
      conn_->events().publish(std::move(hello));
    }
    auto pumped = conn_->pump(Millis(100));
    if (!pumped.ok() && pumped.error().kind != ErrorKind::Timeout) {
      SL_LOG(Warn, kModule, "sink `", name_, "` went away: ", pumped.error().message);
      conn_.reset();
    } else if (seconds_since(last_heard_) > 10) {
      // A sinkd that died leaves the host's end of the port open and silent: ask.
      auto st = conn_->call("query-status", "", Millis(5000));
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
    dispatch_events();
    lock.unlock();
    std::this_thread::sleep_for(Millis(2));
  }
}

Result<void> SinkLink::check_pack(const std::string& pack) {
  qmp::ArgWriter w;
  SL_TRY(call("check-pack", w.str("pack", pack).finish(), Millis(300000)));
  return ok();
}

Result<Added> SinkLink::add_gateway(const std::string& pack, const std::string& id, bool quiet) {
  qmp::ArgWriter w;
  auto r =
      SL_TRY(call("add-gateway", w.str("pack", pack).str("id", id).boolean("quiet", quiet).finish(), Millis(600000)));
  auto a = SL_TRY(parse_added(r.root()));
  if (a.id != id) return make_error(ErrorKind::Protocol, "add-gateway answered for `", a.id, "`, not `", id, "`");
  return a;
}

Result<void> SinkLink::speak(const std::string& id) {
  qmp::ArgWriter w;
  SL_TRY(call("speak", w.str("id", id).finish(), Millis(60000)));
  return ok();
}

Result<HandedBack> SinkLink::hand_back(const std::string& id, const std::string& out) {
  qmp::ArgWriter w;
  w.str("id", id);
  if (!out.empty()) w.str("out", out);
  auto r = SL_TRY(call("hand-back", w.finish(), Millis(600000)));
  return parse_handed_back(r.root());
}

Result<int64_t> SinkLink::release_packets(const std::string& id) {
  qmp::ArgWriter w;
  auto r = SL_TRY(call("release-packets", w.str("id", id).finish(), Millis(60000)));
  return qmp::opt_int(r.root(), "released").value_or(0);
}

Result<void> SinkLink::remove_gateway(const std::string& id) {
  qmp::ArgWriter w;
  SL_TRY(call("remove-gateway", w.str("id", id).finish(), Millis(60000)));
  return ok();
}

Result<std::vector<ListedGateway>> SinkLink::list_gateways() {
  auto r = SL_TRY(call("list-gateways", "", Millis(30000)));
  return parse_listed(r.root());
}

}  // namespace seamless::ctl
