// SPDX-License-Identifier: Apache-2.0
// Deadlines on the monotonic clock; the wall clock in seconds.
#pragma once

#include <algorithm>
#include <chrono>

namespace seamless {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

class Deadline {
 public:
  explicit Deadline(Millis timeout) : at_(Clock::now() + timeout) {}
  static Deadline never() { return Deadline(Clock::time_point::max()); }

  bool expired() const { return Clock::now() >= at_; }
  // Milliseconds left, clamped to [0, INT_MAX], for poll(); -1 for never.
  int poll_timeout() const {
    if (at_ == Clock::time_point::max()) return -1;
    auto left = std::chrono::duration_cast<Millis>(at_ - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left + 1, 0, 1 << 30));
  }
  Millis left() const { return std::max(Millis(0), std::chrono::duration_cast<Millis>(at_ - Clock::now())); }

 private:
  explicit Deadline(Clock::time_point at) : at_(at) {}
  Clock::time_point at_;
};

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Seconds since the epoch on the wall clock (what QMP events are stamped with).
inline double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace seamless
