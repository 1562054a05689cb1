// SPDX-License-Identifier: Apache-2.0
// sinkd's control protocol, defined once for the daemon and its clients (the controller,
// the tests, the benchmarks): command and event names, the arguments and replies as
// typed values with their JSON writer and their strict reader, the gateway state as an
// enum, and a typed client over any QMP-style channel. Replies come from a sink, which is
// untrusted: every reader checks types and bounds and names the field it refuses.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/time.h"
#include "qmp/json.h"

namespace seamless::sink::proto {

// Commands.
inline constexpr const char* kQueryStatus = "query-status";
inline constexpr const char* kCheckPack = "check-pack";
inline constexpr const char* kAddGateway = "add-gateway";
inline constexpr const char* kSpeak = "speak";
inline constexpr const char* kListGateways = "list-gateways";
inline constexpr const char* kHandBack = "hand-back";
inline constexpr const char* kQueryMetrics = "query-metrics";
inline constexpr const char* kReleasePackets = "release-packets";
inline constexpr const char* kRemoveGateway = "remove-gateway";
inline constexpr const char* kQueryMissingFiles = "query-missing-files";
inline constexpr const char* kQueryFileCache = "query-file-cache";
// Events.
inline constexpr const char* kReady = "READY";        // {id}: restored and traced
inline constexpr const char* kActivity = "ACTIVITY";  // {id, pid, reason}: the gateway is stopped for its VM
inline constexpr const char* kError = "ERROR";        // {id, error}: a gateway died or tracing failed

// A sink container's gateways, as list-gateways reports them.
enum class GatewayState {
  Adding,      // its pack is being unpacked and restored (add-gateway has not answered yet)
  Traced,      // restored, answering, watched for activity
  Woken,       // activity stopped them: the VM is needed
  Stopped,     // stopped on request (or adopted stopped)
  HandedBack,  // checkpointed into a pack; packets held for the VM
  Crashed,     // a gateway process died or tracing failed
  Lost,        // a previous daemon's container whose init is gone
  Unknown,     // a state this build does not know (a newer or hostile sink)
};
GatewayState parse_gateway_state(std::string_view s);
std::string_view to_string(GatewayState s);

// --- Arguments --------------------------------------------------------------------
struct PackArg {  // check-pack, query-missing-files
  std::string pack;
  std::string to_json() const;
  static Result<PackArg> parse(const qmp::Value& args);
};

struct AddGateway {
  std::string pack, id;
  bool quiet = false;  // the container sends nothing until speak
  std::string files;   // a shipment of the files the sink lacks (path in the sink), or ""
  std::string to_json() const;
  static Result<AddGateway> parse(const qmp::Value& args);
};

struct IdArg {  // speak, release-packets, remove-gateway
  std::string id;
  std::string to_json() const;
  static Result<IdArg> parse(const qmp::Value& args);
};

struct HandBack {
  std::string id;
  std::string out;  // the pack's path in the sink; empty: STATE-DIR/out/ID.pack
  std::string to_json() const;
  static Result<HandBack> parse(const qmp::Value& args);
};

// --- Replies ----------------------------------------------------------------------
struct Status {  // query-status
  std::string version, nic;
  int64_t uptime_seconds = 0, gateways = 0;
  // The sink's wall clock when it answered (seconds since the epoch): its events are
  // stamped with that clock, which a sink VM keeps on its own.
  double time = 0;
  std::string to_json() const;
  static Result<Status> parse(const qmp::Value& v);
};

struct Interface {
  std::string name, mac;
  std::vector<std::string> addresses;  // "10.77.0.12/24"
};

struct RestoredGateway {
  std::string name;
  int64_t root = 0;  // pid inside the container
};

struct Added {
  std::string id, hostname;
  std::vector<Interface> interfaces;
  bool quiet = false;
  int64_t init = 0;  // the container's init, a pid in the sink
  std::vector<RestoredGateway> gateways;
  int64_t processes = 0, dummies = 0, held = 0;
  int64_t shipped = 0;  // files from the shipment in the container's layer
  double seconds = 0;
  std::string to_json() const;
  static Result<Added> parse(const qmp::Value& v);
};

// query-missing-files: what a guest must ship with a pack.
struct MissingFile {
  std::string path;
  int64_t size = 0;
  std::string role;                     // exe | map
  std::vector<std::string> candidates;  // cache objects that may be it
};
struct Missing {
  std::vector<MissingFile> files;
  std::string to_json() const;
  static Result<Missing> parse(const qmp::Value& v);
  std::vector<std::string> paths() const;
  std::vector<std::string> candidates() const;  // all of them, each once
};

struct FileCacheStats {  // query-file-cache
  int64_t objects = 0, bytes = 0, in_use = 0;
  std::string to_json() const;
  static Result<FileCacheStats> parse(const qmp::Value& v);
};

struct HandedBack {
  std::string id, pack;  // path in the sink
  int64_t bytes = 0, held = 0;
  double seconds = 0;
  std::string to_json() const;
  static Result<HandedBack> parse(const qmp::Value& v);
};

struct Released {
  std::string id;
  int64_t released = 0, dropped = 0;
  std::string to_json() const;
  static Result<Released> parse(const qmp::Value& v);
};

struct ListedGateway {
  std::string id;
  GatewayState state = GatewayState::Unknown;
  std::string hostname, activity, error, pack;
  int64_t init = -1, processes = -1, held = -1;  // -1: not reported
  std::string to_json() const;
  static Result<ListedGateway> parse(const qmp::Value& v);
};
std::string to_json(const std::vector<ListedGateway>& list);
Result<std::vector<ListedGateway>> parse_listed(const qmp::Value& v);

// --- Events -----------------------------------------------------------------------
struct ActivityEvent {
  std::string id, reason;
  int64_t pid = 0;  // inside the container
  std::string to_json() const;
  static Result<ActivityEvent> parse(const qmp::Value& v);
};

struct ErrorEvent {
  std::string id, error;
  std::string to_json() const;
  static Result<ErrorEvent> parse(const qmp::Value& v);
};

// --- Client -----------------------------------------------------------------------
// sinkd's commands as typed calls over a channel (a QmpSocket, the controller's SinkLink).
class Client {
 public:
  using Call = std::function<Result<qmp::Json>(std::string_view command, const std::string& args, Millis timeout)>;
  explicit Client(Call call) : call_(std::move(call)) {}
  Result<Status> query_status();
  Result<void> check_pack(const PackArg& a);
  // The reply must be for the id asked.
  Result<Added> add_gateway(const AddGateway& a);
  Result<void> speak(const IdArg& a);
  Result<HandedBack> hand_back(const HandBack& a);
  Result<Released> release_packets(const IdArg& a);
  Result<void> remove_gateway(const IdArg& a);
  Result<std::vector<ListedGateway>> list_gateways();
  Result<Missing> query_missing_files(const PackArg& a);
  Result<FileCacheStats> query_file_cache();

 private:
  Call call_;
};

}  // namespace seamless::sink::proto
