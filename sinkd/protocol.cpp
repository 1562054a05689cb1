// SPDX-License-Identifier: Apache-2.0
// sinkd's protocol values: JSON writers and strict readers, and the typed client.
#include "sinkd/protocol.h"

#include <algorithm>

namespace seamless::sink::proto {
namespace {

constexpr size_t kShort = 256;      // ids, names, MACs, addresses, states
constexpr size_t kLong = 4096;      // paths, reasons, error messages
constexpr size_t kMaxItems = 1024;  // interfaces, addresses, gateways, list entries

Result<void> object(const qmp::Value& v, const char* what) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, what, ": not an object");
  return ok();
}

Result<std::string> str(const qmp::Value& v, const char* key, size_t max) {
  auto s = SL_TRY(qmp::get_string(v, key));
  if (s.size() > max) return make_error(ErrorKind::Protocol, "field `", key, "` is longer than ", max, " bytes");
  return s;
}

Result<std::string> opt_str(const qmp::Value& v, const char* key, size_t max) {
  if (!v.HasMember(key)) return std::string();
  return str(v, key, max);
}

Result<int64_t> opt_count(const qmp::Value& v, const char* key, int64_t absent = 0) {
  if (!v.HasMember(key)) return absent;
  auto n = SL_TRY(qmp::get_int(v, key));
  if (n < 0) return make_error(ErrorKind::Protocol, "field `", key, "` is negative");
  return n;
}

Result<double> opt_seconds(const qmp::Value& v) {
  auto it = v.FindMember("seconds");
  if (it == v.MemberEnd()) return 0.0;
  if (!it->value.IsNumber()) return make_error(ErrorKind::Protocol, "field `seconds` is not a number");
  double d = it->value.GetDouble();
  if (!(d >= 0 && d < 1e6)) return make_error(ErrorKind::Protocol, "field `seconds` is out of range");
  return d;
}

Result<bool> opt_flag(const qmp::Value& v, const char* key) {
  if (!v.HasMember(key)) return false;
  return qmp::get_bool(v, key);
}

// An array member, at most kMaxItems long ({} when absent).
Result<const qmp::Value*> array(const qmp::Value& v, const char* key) {
  static const qmp::Value kEmpty(rapidjson::kArrayType);
  auto it = v.FindMember(key);
  if (it == v.MemberEnd()) return &kEmpty;
  if (!it->value.IsArray()) return make_error(ErrorKind::Protocol, "field `", key, "` is not an array");
  if (it->value.Size() > kMaxItems)
    return make_error(ErrorKind::Protocol, "field `", key, "` has more than ", kMaxItems, " entries");
  return &it->value;
}

std::string join(const std::vector<std::string>& objects) {
  std::string out = "[";
  for (size_t i = 0; i < objects.size(); ++i) out += (i ? "," : "") + objects[i];
  return out + "]";
}

}  // namespace

GatewayState parse_gateway_state(std::string_view s) {
  if (s == "adding") return GatewayState::Adding;
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
    case GatewayState::Adding: return "adding";
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

std::string PackArg::to_json() const { return qmp::ArgWriter().str("pack", pack).finish(); }
Result<PackArg> PackArg::parse(const qmp::Value& args) {
  SL_TRY(object(args, "arguments"));
  return PackArg{SL_TRY(str(args, "pack", kLong))};
}

std::string Missing::to_json() const {
  std::vector<std::string> out;
  for (const auto& f : files)
    out.push_back(qmp::ArgWriter()
                      .str("path", f.path)
                      .num("size", f.size)
                      .str("role", f.role)
                      .strings("candidates", f.candidates)
                      .finish());
  return qmp::ArgWriter().raw("files", join(out)).finish();
}

Result<Missing> Missing::parse(const qmp::Value& v) {
  SL_TRY(object(v, "query-missing-files' reply"));
  Missing m;
  for (const auto& f : SL_TRY(array(v, "files"))->GetArray()) {
    SL_TRY(object(f, "a missing file"));
    MissingFile mf;
    mf.path = SL_TRY(str(f, "path", kLong));
    mf.size = SL_TRY(opt_count(f, "size"));
    mf.role = SL_TRY(opt_str(f, "role", kShort));
    for (const auto& c : SL_TRY(array(f, "candidates"))->GetArray()) {
      if (!c.IsString() || c.GetStringLength() > kShort)
        return make_error(ErrorKind::Protocol, "a candidate for `", mf.path, "` is not a short string");
      mf.candidates.emplace_back(c.GetString(), c.GetStringLength());
    }
    m.files.push_back(std::move(mf));
  }
  return m;
}

std::vector<std::string> Missing::paths() const {
  std::vector<std::string> out;
  for (const auto& f : files) out.push_back(f.path);
  return out;
}

std::vector<std::string> Missing::candidates() const {
  std::vector<std::string> out;
  for (const auto& f : files)
    for (const auto& c : f.candidates)
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
  return out;
}

std::string FileCacheStats::to_json() const {
  return qmp::ArgWriter().num("objects", objects).num("bytes", bytes).num("in_use", in_use).finish();
}

Result<FileCacheStats> FileCacheStats::parse(const qmp::Value& v) {
  SL_TRY(object(v, "query-file-cache's reply"));
  return FileCacheStats{SL_TRY(opt_count(v, "objects")), SL_TRY(opt_count(v, "bytes")), SL_TRY(opt_count(v, "in_use"))};
}

std::string AddGateway::to_json() const {
  qmp::ArgWriter w;
  w.str("pack", pack).str("id", id).boolean("quiet", quiet);
  if (!files.empty()) w.str("files", files);
  return w.finish();
}
Result<AddGateway> AddGateway::parse(const qmp::Value& args) {
  SL_TRY(object(args, kAddGateway));
  AddGateway a;
  a.pack = SL_TRY(str(args, "pack", kLong));
  a.id = SL_TRY(str(args, "id", kShort));
  a.quiet = SL_TRY(opt_flag(args, "quiet"));
  a.files = SL_TRY(opt_str(args, "files", kLong));
  return a;
}

std::string IdArg::to_json() const { return qmp::ArgWriter().str("id", id).finish(); }
Result<IdArg> IdArg::parse(const qmp::Value& args) {
  SL_TRY(object(args, "arguments"));
  return IdArg{SL_TRY(str(args, "id", kShort))};
}

std::string HandBack::to_json() const {
  qmp::ArgWriter w;
  w.str("id", id);
  if (!out.empty()) w.str("out", out);
  return w.finish();
}
Result<HandBack> HandBack::parse(const qmp::Value& args) {
  SL_TRY(object(args, kHandBack));
  HandBack h;
  h.id = SL_TRY(str(args, "id", kShort));
  h.out = SL_TRY(opt_str(args, "out", kLong));
  return h;
}

std::string Status::to_json() const {
  return qmp::ArgWriter()
      .str("version", version)
      .num("uptime_seconds", uptime_seconds)
      .num("gateways", gateways)
      .str("nic", nic)
      .real("time", time)
      .finish();
}

Result<Status> Status::parse(const qmp::Value& v) {
  SL_TRY(object(v, "query-status' reply"));
  Status st;
  st.version = SL_TRY(str(v, "version", kShort));
  st.nic = SL_TRY(opt_str(v, "nic", kShort));
  st.uptime_seconds = SL_TRY(opt_count(v, "uptime_seconds"));
  st.gateways = SL_TRY(opt_count(v, "gateways"));
  if (auto t = v.FindMember("time"); t != v.MemberEnd()) {
    if (!t->value.IsNumber() || !(t->value.GetDouble() > 0 && t->value.GetDouble() < 1e11))
      return make_error(ErrorKind::Protocol, "field `time` is not a time");
    st.time = t->value.GetDouble();
  }
  return st;
}

std::string Added::to_json() const {
  std::vector<std::string> ifaces, gws;
  for (const auto& i : interfaces)
    ifaces.push_back(qmp::ArgWriter().str("name", i.name).str("mac", i.mac).strings("addresses", i.addresses).finish());
  for (const auto& g : gateways) gws.push_back(qmp::ArgWriter().str("name", g.name).num("root", g.root).finish());
  return qmp::ArgWriter()
      .str("id", id)
      .str("hostname", hostname)
      .raw("interfaces", join(ifaces))
      .boolean("quiet", quiet)
      .num("init", init)
      .raw("gateways", join(gws))
      .num("processes", processes)
      .num("dummies", dummies)
      .num("shipped", shipped)
      .num("held", held)
      .real("seconds", seconds)
      .finish();
}

Result<Added> Added::parse(const qmp::Value& v) {
  SL_TRY(object(v, "add-gateway's reply"));
  Added a;
  a.id = SL_TRY(str(v, "id", kShort));
  a.hostname = SL_TRY(opt_str(v, "hostname", kShort));
  for (const auto& i : SL_TRY(array(v, "interfaces"))->GetArray()) {
    SL_TRY(object(i, "an interface"));
    Interface iface;
    iface.name = SL_TRY(opt_str(i, "name", kShort));
    iface.mac = SL_TRY(str(i, "mac", kShort));
    for (const auto& addr : SL_TRY(array(i, "addresses"))->GetArray()) {
      if (!addr.IsString() || addr.GetStringLength() > kShort)
        return make_error(ErrorKind::Protocol, "an address of interface `", iface.name, "` is not a short string");
      iface.addresses.emplace_back(addr.GetString(), addr.GetStringLength());
    }
    a.interfaces.push_back(std::move(iface));
  }
  a.quiet = SL_TRY(opt_flag(v, "quiet"));
  a.init = SL_TRY(opt_count(v, "init"));
  for (const auto& g : SL_TRY(array(v, "gateways"))->GetArray()) {
    SL_TRY(object(g, "a gateway"));
    // Not in a braced list: a return out of one leaks the members built before it.
    auto name = SL_TRY(str(g, "name", kShort));
    auto root = SL_TRY(opt_count(g, "root"));
    a.gateways.push_back({std::move(name), root});
  }
  a.processes = SL_TRY(opt_count(v, "processes"));
  a.dummies = SL_TRY(opt_count(v, "dummies"));
  a.shipped = SL_TRY(opt_count(v, "shipped"));
  a.held = SL_TRY(opt_count(v, "held"));
  a.seconds = SL_TRY(opt_seconds(v));
  return a;
}

std::string HandedBack::to_json() const {
  return qmp::ArgWriter()
      .str("id", id)
      .str("pack", pack)
      .num("bytes", bytes)
      .num("held", held)
      .real("seconds", seconds)
      .finish();
}

Result<HandedBack> HandedBack::parse(const qmp::Value& v) {
  SL_TRY(object(v, "hand-back's reply"));
  HandedBack h;
  h.id = SL_TRY(opt_str(v, "id", kShort));
  h.pack = SL_TRY(str(v, "pack", kLong));
  h.bytes = SL_TRY(opt_count(v, "bytes"));
  h.held = SL_TRY(opt_count(v, "held"));
  h.seconds = SL_TRY(opt_seconds(v));
  return h;
}

std::string Released::to_json() const {
  return qmp::ArgWriter().str("id", id).num("released", released).num("dropped", dropped).finish();
}

Result<Released> Released::parse(const qmp::Value& v) {
  SL_TRY(object(v, "release-packets' reply"));
  Released r;
  r.id = SL_TRY(opt_str(v, "id", kShort));
  r.released = SL_TRY(opt_count(v, "released"));
  r.dropped = SL_TRY(opt_count(v, "dropped"));
  return r;
}

std::string ListedGateway::to_json() const {
  qmp::ArgWriter w;
  w.str("id", id).str("state", to_string(state)).str("hostname", hostname);
  if (init >= 0) w.num("init", init);
  if (processes >= 0) w.num("processes", processes);
  if (!activity.empty()) w.str("activity", activity);
  if (!error.empty()) w.str("error", error);
  if (!pack.empty()) w.str("pack", pack);
  if (held >= 0) w.num("held", held);
  return w.finish();
}

Result<ListedGateway> ListedGateway::parse(const qmp::Value& v) {
  SL_TRY(object(v, "a listed gateway"));
  ListedGateway g;
  g.id = SL_TRY(str(v, "id", kShort));
  g.state = parse_gateway_state(SL_TRY(str(v, "state", kShort)));
  g.hostname = SL_TRY(opt_str(v, "hostname", kShort));
  g.activity = SL_TRY(opt_str(v, "activity", kLong));
  g.error = SL_TRY(opt_str(v, "error", kLong));
  g.pack = SL_TRY(opt_str(v, "pack", kLong));
  g.init = SL_TRY(opt_count(v, "init", -1));
  g.processes = SL_TRY(opt_count(v, "processes", -1));
  g.held = SL_TRY(opt_count(v, "held", -1));
  return g;
}

std::string to_json(const std::vector<ListedGateway>& list) {
  std::vector<std::string> entries;
  for (const auto& g : list) entries.push_back(g.to_json());
  return join(entries);
}

Result<std::vector<ListedGateway>> parse_listed(const qmp::Value& v) {
  if (!v.IsArray()) return make_error(ErrorKind::Protocol, "list-gateways' reply: not an array");
  if (v.Size() > kMaxItems) return make_error(ErrorKind::Protocol, "list-gateways' reply: too many entries");
  std::vector<ListedGateway> out;
  for (const auto& g : v.GetArray()) out.push_back(SL_TRY(ListedGateway::parse(g)));
  return out;
}

std::string ActivityEvent::to_json() const {
  return qmp::ArgWriter().str("id", id).str("reason", reason).num("pid", pid).finish();
}

Result<ActivityEvent> ActivityEvent::parse(const qmp::Value& v) {
  SL_TRY(object(v, kActivity));
  ActivityEvent e;
  e.id = SL_TRY(str(v, "id", kShort));
  e.reason = SL_TRY(opt_str(v, "reason", kLong));
  e.pid = SL_TRY(opt_count(v, "pid"));
  return e;
}

std::string ErrorEvent::to_json() const { return qmp::ArgWriter().str("id", id).str("error", error).finish(); }

Result<ErrorEvent> ErrorEvent::parse(const qmp::Value& v) {
  SL_TRY(object(v, kError));
  ErrorEvent e;
  e.id = SL_TRY(str(v, "id", kShort));
  e.error = SL_TRY(opt_str(v, "error", kLong));
  return e;
}

// Long operations: a CRIU run of a large gateway under TCG takes minutes.
constexpr Millis kLongCall(600000), kShortCall(60000);

Result<Status> Client::query_status() {
  auto r = SL_TRY(call_(kQueryStatus, "", Millis(10000)));
  return SL_TRY_CTX(Status::parse(r.root()), kQueryStatus);
}

Result<void> Client::check_pack(const PackArg& a) {
  SL_TRY(call_(kCheckPack, a.to_json(), Millis(300000)));
  return ok();
}

Result<Added> Client::add_gateway(const AddGateway& a) {
  auto r = SL_TRY(call_(kAddGateway, a.to_json(), kLongCall));
  auto added = SL_TRY_CTX(Added::parse(r.root()), kAddGateway);
  if (added.id != a.id)
    return make_error(ErrorKind::Protocol, kAddGateway, " answered for `", added.id, "`, not `", a.id, "`");
  return added;
}

Result<void> Client::speak(const IdArg& a) {
  SL_TRY(call_(kSpeak, a.to_json(), kShortCall));
  return ok();
}

Result<HandedBack> Client::hand_back(const HandBack& a) {
  auto r = SL_TRY(call_(kHandBack, a.to_json(), kLongCall));
  return SL_TRY_CTX(HandedBack::parse(r.root()), kHandBack);
}

Result<Released> Client::release_packets(const IdArg& a) {
  auto r = SL_TRY(call_(kReleasePackets, a.to_json(), kShortCall));
  return SL_TRY_CTX(Released::parse(r.root()), kReleasePackets);
}

Result<void> Client::remove_gateway(const IdArg& a) {
  SL_TRY(call_(kRemoveGateway, a.to_json(), kShortCall));
  return ok();
}

Result<Missing> Client::query_missing_files(const PackArg& a) {
  auto r = SL_TRY(call_(kQueryMissingFiles, a.to_json(), Millis(300000)));
  return SL_TRY_CTX(Missing::parse(r.root()), kQueryMissingFiles);
}

Result<FileCacheStats> Client::query_file_cache() {
  auto r = SL_TRY(call_(kQueryFileCache, "", Millis(30000)));
  return SL_TRY_CTX(FileCacheStats::parse(r.root()), kQueryFileCache);
}

Result<std::vector<ListedGateway>> Client::list_gateways() {
  auto r = SL_TRY(call_(kListGateways, "", Millis(30000)));
  return parse_listed(r.root());
}

}  // namespace seamless::sink::proto
