// SPDX-License-Identifier: Apache-2.0
// Logging: one macro family, a per-module prefix, rate limiting for hot loops.
#pragma once

#include <atomic>
#include <chrono>
#include <string_view>

#include "common/result.h"

namespace seamless::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

// Minimum level written to stderr; SEAMLESS_LOG=debug|info|warn|error sets it at start.
Level threshold();
void set_threshold(Level level);
void write(Level level, std::string_view module, const std::string& text);

// Lets one message through per interval; counts the ones it suppressed.
class RateLimit {
 public:
  explicit RateLimit(std::chrono::milliseconds interval) : interval_(interval) {}
  // True when the caller may log now; *suppressed receives the count since the last one.
  bool allow(unsigned* suppressed);

 private:
  std::chrono::milliseconds interval_;
  std::atomic<long long> next_ns_{0};
  std::atomic<unsigned> suppressed_{0};
};

}  // namespace seamless::log

#define SL_LOG(level, module, ...)                                                                 \
  do {                                                                                             \
    if (::seamless::log::Level::level >= ::seamless::log::threshold())                             \
      ::seamless::log::write(::seamless::log::Level::level, module, ::seamless::cat(__VA_ARGS__)); \
  } while (0)
