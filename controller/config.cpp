// SPDX-License-Identifier: Apache-2.0
// seamless.conf parsing.
#include "controller/config.h"

#include <sstream>

#include "common/sys.h"

namespace seamless::ctl {
namespace {

Result<int64_t> number(const std::string& v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x < lo || x > hi)
    return make_error(ErrorKind::Invalid, "`", v, "` is not a number from ", lo, " to ", hi);
  return int64_t(x);
}

bool plain_name(const std::string& s) {
  if (s.empty() || s.size() > 200) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

}  // namespace

Result<Config> parse_config(const std::string& text, const std::string& origin) {
  Config c;
  std::istringstream in(text);
  int lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string key, value, extra;
    if (!(words >> key)) continue;
    auto where = [&] { return cat(origin, ":", lineno, ": "); };
    if (!(words >> value) || (words >> extra))
      return make_error(ErrorKind::Invalid, where(), "`", key, "` takes exactly one value");
    auto check = [&](Result<int64_t> r) -> Result<int64_t> {
      if (!r.ok()) return std::move(r).error().wrap(cat(where(), key));
      return r;
    };
    if (key == "sink") {
      if (!plain_name(value)) return make_error(ErrorKind::Invalid, where(), "`", value, "` is not a domain name");
      c.sinks.push_back(value);
    } else if (key == "mode") {
      if (value != "swap" && value != "ram" && value != "disk")
        return make_error(ErrorKind::Invalid, where(), "mode `", value, "` (swap, ram or disk)");
      c.mode = value;
    } else if (key == "margin-mib") {
      c.margin_mib = SL_TRY(check(number(value, 0, 1 << 20)));
    } else if (key == "throttle-mib") {
      c.throttle_mib = SL_TRY(check(number(value, 1, 1 << 20)));
    } else if (key == "prefetch-timeout") {
      c.prefetch_timeout = Millis(1000 * SL_TRY(check(number(value, 1, 3600))));
    } else if (key == "wake-room-mib") {
      c.wake_room_mib = SL_TRY(check(number(value, 0, 1 << 20)));
    } else if (key == "prefetch-room-mib") {
      c.prefetch_room_mib = SL_TRY(check(number(value, 0, 1 << 20)));
    } else if (key == "dump-attempts") {
      c.dump_attempts = int(SL_TRY(check(number(value, 1, 100))));
    } else if (key == "auto-wake" || key == "wake-sink-first" || key == "wake-deflate-early") {
      if (value != "yes" && value != "no") return make_error(ErrorKind::Invalid, where(), key, " takes yes or no");
      (key == "auto-wake"         ? c.auto_wake
       : key == "wake-sink-first" ? c.wake_sink_first
                                  : c.wake_deflate_early) = value == "yes";
    } else if (key == "socket") {
      if (value[0] != '/') return make_error(ErrorKind::Invalid, where(), "socket must be an absolute path");
      c.socket = value;
    } else if (key == "connect") {
      c.uri = value;
    } else {
      return make_error(ErrorKind::Invalid, where(), "unknown setting `", key, "`");
    }
  }
  return c;
}

Result<Config> load_config(const std::string& path) {
  auto text = sys::read_file(path);
  if (!text.ok()) return std::move(text).error().wrap("reading the seamless configuration");
  return parse_config(*text, path);
}

}  // namespace seamless::ctl
