// SPDX-License-Identifier: Apache-2.0
// stderr logger with a threshold from SEAMLESS_LOG.
#include "common/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace seamless::log {
namespace {

Level initial_threshold() {
  const char* env = std::getenv("SEAMLESS_LOG");
  if (env == nullptr) return Level::Warn;
  if (std::strcmp(env, "debug") == 0) return Level::Debug;
  if (std::strcmp(env, "info") == 0) return Level::Info;
  if (std::strcmp(env, "error") == 0) return Level::Error;
  return Level::Warn;
}

std::atomic<Level>& threshold_ref() {
  static std::atomic<Level> level{initial_threshold()};
  return level;
}

const char* name(Level level) {
  switch (level) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
  }
  return "?";
}

}  // namespace

Level threshold() { return threshold_ref().load(std::memory_order_relaxed); }
void set_threshold(Level level) { threshold_ref().store(level); }

void write(Level level, std::string_view module, const std::string& text) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fprintf(stderr, "%s: %.*s: %s\n", name(level), static_cast<int>(module.size()), module.data(), text.c_str());
}

bool RateLimit::allow(unsigned* suppressed) {
  auto now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  long long next = next_ns_.load();
  if (now < next || !next_ns_.compare_exchange_strong(next, now + std::chrono::nanoseconds(interval_).count())) {
    suppressed_.fetch_add(1);
    return false;
  }
  if (suppressed != nullptr) *suppressed = suppressed_.exchange(0);
  return true;
}

}  // namespace seamless::log
