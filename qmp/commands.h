// SPDX-License-Identifier: Apache-2.0
// Typed QMP and QGA commands and their replies. Each command is a value with a wire
// name, its arguments and a reply parser; execute() runs any of them on any Channel.
// Unknown reply fields are ignored; missing required fields are Protocol errors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qmp/channel.h"

namespace seamless::qmp {

struct NoReply {
  static Result<NoReply> parse(const Value&) { return NoReply{}; }
};

template <typename C>
concept Command = requires(const C& c, const Value& v) {
  { C::kName } -> std::convertible_to<std::string_view>;
  { c.args() } -> std::convertible_to<std::string>;
  {C::Reply::parse(v)};
};

template <Command C>
Result<typename C::Reply> execute(Channel& ch, const C& cmd, Millis timeout = Millis(10000)) {
  auto ret = SL_TRY(ch.call(C::kName, cmd.args(), timeout));
  auto reply = C::Reply::parse(ret.root());
  if (!reply.ok()) return std::move(reply).error().wrap(cat("reply of ", ch.describe(), " to `", C::kName, "`"));
  return std::move(reply).value();
}

// ---- QMP ----

struct StatusInfo {
  bool running = false;
  std::string status;  // "running", "paused", "postmigrate", ...
  static Result<StatusInfo> parse(const Value& v);
};
struct QueryStatus {
  static constexpr const char* kName = "query-status";
  using Reply = StatusInfo;
  std::string args() const { return {}; }
};
struct Stop {
  static constexpr const char* kName = "stop";
  using Reply = NoReply;
  std::string args() const { return {}; }
};
struct Cont {
  static constexpr const char* kName = "cont";
  using Reply = NoReply;
  std::string args() const { return {}; }
};
// Sets the guest's target memory size (bytes the guest keeps).
struct Balloon {
  static constexpr const char* kName = "balloon";
  using Reply = NoReply;
  int64_t bytes;
  std::string args() const;
};
struct BalloonInfo {
  int64_t actual = 0;  // bytes the guest has now
  static Result<BalloonInfo> parse(const Value& v);
};
struct QueryBalloon {
  static constexpr const char* kName = "query-balloon";
  using Reply = BalloonInfo;
  std::string args() const { return {}; }
};
struct QomSet {
  static constexpr const char* kName = "qom-set";
  using Reply = NoReply;
  std::string path, property, value_json;  // value as serialized JSON
  std::string args() const;
};
struct QomValue {
  Json value;
  static Result<QomValue> parse(const Value& v);
};
struct QomGet {
  static constexpr const char* kName = "qom-get";
  using Reply = QomValue;
  std::string path, property;
  std::string args() const;
};
// The balloon driver's guest statistics (qom-get guest-stats), in bytes; absent
// statistics (-1 from QEMU, or missing) are nullopt.
struct BalloonStats {
  int64_t last_update = 0;  // seconds since the epoch; 0 = the guest never reported
  std::optional<int64_t> total, free, available, caches, swap_in, swap_out, major_faults, minor_faults;
  static Result<BalloonStats> parse(const Value& v);
};
struct AnnounceSelf {
  static constexpr const char* kName = "announce-self";
  using Reply = NoReply;
  int64_t initial_ms = 50, max_ms = 550, rounds = 5, step_ms = 100;
  std::string args() const;
};
struct NameInfo {
  std::optional<std::string> name;
  static Result<NameInfo> parse(const Value& v);
};
struct QueryName {
  static constexpr const char* kName = "query-name";
  using Reply = NameInfo;
  std::string args() const { return {}; }
};

// Outgoing migration (used to save a plain QEMU's state to a file: "exec:cat > FILE").
struct Migrate {
  static constexpr const char* kName = "migrate";
  using Reply = NoReply;
  std::string uri;
  std::string args() const;
};
struct MigrationInfo {
  std::string status;  // "active", "completed", "failed", ... ("none" when absent)
  std::optional<std::string> error;
  static Result<MigrationInfo> parse(const Value& v);
};
struct QueryMigrate {
  static constexpr const char* kName = "query-migrate";
  using Reply = MigrationInfo;
  std::string args() const { return {}; }
};
struct MigrateCancel {
  static constexpr const char* kName = "migrate_cancel";
  using Reply = NoReply;
  std::string args() const { return {}; }
};
struct Quit {
  static constexpr const char* kName = "quit";
  using Reply = NoReply;
  std::string args() const { return {}; }
};

// Balloon guest statistics: enable polling, then read them.
Result<void> set_balloon_stats_period(Channel& monitor, int seconds,
                                      const std::string& path = "/machine/peripheral/balloon0");
Result<BalloonStats> balloon_stats(Channel& monitor, const std::string& path = "/machine/peripheral/balloon0");

// ---- QGA ----

struct GuestPing {
  static constexpr const char* kName = "guest-ping";
  using Reply = NoReply;
  std::string args() const { return {}; }
};
struct GuestInfoReply {
  std::string version;
  std::vector<std::string> enabled_commands;
  static Result<GuestInfoReply> parse(const Value& v);
};
struct GuestInfo {
  static constexpr const char* kName = "guest-info";
  using Reply = GuestInfoReply;
  std::string args() const { return {}; }
};
struct ExecPid {
  int64_t pid = 0;
  static Result<ExecPid> parse(const Value& v);
};
struct GuestExec {
  static constexpr const char* kName = "guest-exec";
  using Reply = ExecPid;
  std::string path;
  std::vector<std::string> arg;
  std::vector<std::string> env;
  std::optional<std::string> input;  // sent base64-encoded as input-data
  bool capture_output = true;
  std::string args() const;
};
struct ExecStatus {
  bool exited = false;
  std::optional<int64_t> exitcode, signal;
  std::string out, err;  // decoded
  bool out_truncated = false, err_truncated = false;
  static Result<ExecStatus> parse(const Value& v);
};
struct GuestExecStatus {
  static constexpr const char* kName = "guest-exec-status";
  using Reply = ExecStatus;
  int64_t pid;
  std::string args() const;
};
struct FileHandle {
  int64_t handle = -1;
  static Result<FileHandle> parse(const Value& v);
};
struct GuestFileOpen {
  static constexpr const char* kName = "guest-file-open";
  using Reply = FileHandle;
  std::string path, mode;
  std::string args() const;
};
struct ReadChunk {
  std::string data;  // decoded
  bool eof = false;
  static Result<ReadChunk> parse(const Value& v);
};
struct GuestFileRead {
  static constexpr const char* kName = "guest-file-read";
  using Reply = ReadChunk;
  int64_t handle, count;
  std::string args() const;
};
struct WriteCount {
  int64_t count = 0;
  static Result<WriteCount> parse(const Value& v);
};
struct GuestFileWrite {
  static constexpr const char* kName = "guest-file-write";
  using Reply = WriteCount;
  int64_t handle;
  std::string data;  // raw bytes; encoded on the wire
  std::string args() const;
};
struct GuestFileClose {
  static constexpr const char* kName = "guest-file-close";
  using Reply = NoReply;
  int64_t handle;
  std::string args() const;
};

}  // namespace seamless::qmp
