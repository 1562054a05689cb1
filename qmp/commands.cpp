// SPDX-License-Identifier: Apache-2.0
// Argument encoding and reply parsing of the typed commands.
#include "qmp/commands.h"

#include "common/encoding.h"

namespace seamless::qmp {
namespace {

Result<std::string> decoded(const Value& v, const char* name) {
  auto text = opt_string(v, name);
  if (!text) return std::string();
  return SL_TRY_CTX(base64_decode(*text), "field `", name, "`");
}

}  // namespace

Result<StatusInfo> StatusInfo::parse(const Value& v) {
  return StatusInfo{SL_TRY(get_bool(v, "running")), SL_TRY(get_string(v, "status"))};
}

std::string Balloon::args() const { return ArgWriter().num("value", bytes).finish(); }

Result<BalloonInfo> BalloonInfo::parse(const Value& v) { return BalloonInfo{SL_TRY(get_int(v, "actual"))}; }

std::string QomSet::args() const {
  return ArgWriter().str("path", path).str("property", property).raw("value", value_json).finish();
}
std::string QomGet::args() const { return ArgWriter().str("path", path).str("property", property).finish(); }

Result<QomValue> QomValue::parse(const Value& v) {
  QomValue q;
  q.value.doc().CopyFrom(v, q.value.allocator());
  return q;
}

Result<BalloonStats> BalloonStats::parse(const Value& v) {
  BalloonStats s;
  s.last_update = SL_TRY(get_int(v, "last-update"));
  const Value* stats = SL_TRY(field(v, "stats"));
  auto get = [&](const char* key) -> std::optional<int64_t> {
    auto x = opt_int(*stats, key);
    if (!x || *x < 0) return std::nullopt;
    return x;
  };
  s.total = get("stat-total-memory");
  s.free = get("stat-free-memory");
  s.available = get("stat-available-memory");
  s.caches = get("stat-disk-caches");
  s.swap_in = get("stat-swap-in");
  s.swap_out = get("stat-swap-out");
  s.major_faults = get("stat-major-faults");
  s.minor_faults = get("stat-minor-faults");
  return s;
}

std::string AnnounceSelf::args() const {
  return ArgWriter().num("initial", initial_ms).num("max", max_ms).num("rounds", rounds).num("step", step_ms).finish();
}

std::string Migrate::args() const { return ArgWriter().str("uri", uri).finish(); }

Result<MigrationInfo> MigrationInfo::parse(const Value& v) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, "expected an object");
  return MigrationInfo{opt_string(v, "status").value_or("none"), opt_string(v, "error-desc")};
}

Result<NameInfo> NameInfo::parse(const Value& v) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, "expected an object");
  return NameInfo{opt_string(v, "name")};
}

Result<void> set_balloon_stats_period(Channel& monitor, int seconds, const std::string& path) {
  SL_TRY(execute(monitor, QomSet{path, "guest-stats-polling-interval", std::to_string(seconds)}));
  return ok();
}

Result<BalloonStats> balloon_stats(Channel& monitor, const std::string& path) {
  auto v = SL_TRY(execute(monitor, QomGet{path, "guest-stats"}));
  return SL_TRY_CTX(BalloonStats::parse(v.value.root()), "balloon guest-stats");
}

Result<GuestInfoReply> GuestInfoReply::parse(const Value& v) {
  GuestInfoReply r;
  r.version = SL_TRY(get_string(v, "version"));
  const Value* cmds = SL_TRY(field(v, "supported_commands"));
  if (!cmds->IsArray()) return make_error(ErrorKind::Protocol, "field `supported_commands` is not an array");
  for (const auto& c : cmds->GetArray()) {
    if (opt_bool(c, "enabled").value_or(false)) {
      if (auto name = opt_string(c, "name")) r.enabled_commands.push_back(*name);
    }
  }
  return r;
}

Result<ExecPid> ExecPid::parse(const Value& v) { return ExecPid{SL_TRY(get_int(v, "pid"))}; }

std::string GuestExec::args() const {
  ArgWriter w;
  w.str("path", path).strings("arg", arg).boolean("capture-output", capture_output);
  if (!env.empty()) w.strings("env", env);
  if (input) w.str("input-data", base64_encode(*input));
  return w.finish();
}

Result<ExecStatus> ExecStatus::parse(const Value& v) {
  ExecStatus s;
  s.exited = SL_TRY(get_bool(v, "exited"));
  s.exitcode = opt_int(v, "exitcode");
  s.signal = opt_int(v, "signal");
  s.out = SL_TRY(decoded(v, "out-data"));
  s.err = SL_TRY(decoded(v, "err-data"));
  s.out_truncated = opt_bool(v, "out-truncated").value_or(false);
  s.err_truncated = opt_bool(v, "err-truncated").value_or(false);
  return s;
}

std::string GuestExecStatus::args() const { return ArgWriter().num("pid", pid).finish(); }

Result<FileHandle> FileHandle::parse(const Value& v) {
  if (!v.IsInt64()) return make_error(ErrorKind::Protocol, "file handle is not an integer");
  return FileHandle{v.GetInt64()};
}

std::string GuestFileOpen::args() const { return ArgWriter().str("path", path).str("mode", mode).finish(); }

Result<ReadChunk> ReadChunk::parse(const Value& v) {
  ReadChunk c;
  auto count = SL_TRY(get_int(v, "count"));
  c.data = SL_TRY(base64_decode(SL_TRY(get_string(v, "buf-b64"))));
  c.eof = SL_TRY(get_bool(v, "eof"));
  if (static_cast<int64_t>(c.data.size()) != count)
    return make_error(ErrorKind::Protocol, "guest-file-read says ", count, " bytes but carries ", c.data.size());
  return c;
}

std::string GuestFileRead::args() const { return ArgWriter().num("handle", handle).num("count", count).finish(); }

Result<WriteCount> WriteCount::parse(const Value& v) { return WriteCount{SL_TRY(get_int(v, "count"))}; }

std::string GuestFileWrite::args() const {
  return ArgWriter().num("handle", handle).str("buf-b64", base64_encode(data)).finish();
}

std::string GuestFileClose::args() const { return ArgWriter().num("handle", handle).finish(); }

}  // namespace seamless::qmp
