// SPDX-License-Identifier: Apache-2.0
// The integration checks every transport must pass against a real guest: status and
// stop/cont, balloon down by half, guest-exec, a 5 MiB verified round trip. Shared by
// the direct-socket and the libvirt pass-through tests.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <thread>

#include "common/encoding.h"
#include "qmp/guest.h"

namespace seamless::test {

#define SL_ASSERT_OK(expr)                                             \
  ({                                                                   \
    auto sl_r_ = (expr);                                               \
    ASSERT_TRUE(sl_r_.ok()) << #expr << ": " << sl_r_.error().message; \
    std::move(sl_r_).value();                                          \
  })

inline int64_t guest_memtotal_kib(qmp::Channel& agent) {
  auto meminfo = qmp::guest_run_ok(agent, "cat", {"/proc/meminfo"});
  if (!meminfo.ok()) return -1;
  std::istringstream in(*meminfo);
  std::string key;
  int64_t value = -1;
  while (in >> key >> value) {
    if (key == "MemTotal:") return value;
    in.ignore(1 << 10, '\n');
  }
  return -1;
}

inline void check_status_stop_cont(qmp::Channel& monitor, qmp::EventSource& events) {
  auto st = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryStatus{}));
  EXPECT_TRUE(st.running);
  EXPECT_EQ(st.status, "running");
  SL_ASSERT_OK(qmp::execute(monitor, qmp::Stop{}));
  SL_ASSERT_OK(events.wait_event("STOP", Millis(5000)));
  st = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryStatus{}));
  EXPECT_FALSE(st.running);
  EXPECT_EQ(st.status, "paused");
  SL_ASSERT_OK(qmp::execute(monitor, qmp::Cont{}));
  SL_ASSERT_OK(events.wait_event("RESUME", Millis(5000)));
  st = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryStatus{}));
  EXPECT_TRUE(st.running);
}

// Deflates the balloon back to the full size however the check ends.
class BalloonRestore {
 public:
  BalloonRestore(qmp::Channel& monitor, int64_t bytes) : monitor_(monitor), bytes_(bytes) {}
  BalloonRestore(const BalloonRestore&) = delete;
  BalloonRestore& operator=(const BalloonRestore&) = delete;
  ~BalloonRestore() {
    (void)qmp::execute(monitor_, qmp::Balloon{bytes_});
    for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
      auto b = qmp::execute(monitor_, qmp::QueryBalloon{});
      if (!b.ok() || b->actual == bytes_) return;
    }
  }

 private:
  qmp::Channel& monitor_;
  int64_t bytes_;
};

inline void check_balloon_half(qmp::Channel& monitor, qmp::Channel& agent, int64_t ram_bytes) {
  const int64_t before_kib = guest_memtotal_kib(agent);
  ASSERT_GT(before_kib, 0);
  auto initial = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryBalloon{}));
  EXPECT_EQ(initial.actual, ram_bytes);
  BalloonRestore restore(monitor, ram_bytes);
  const int64_t target = ram_bytes / 2;
  SL_ASSERT_OK(qmp::execute(monitor, qmp::Balloon{target}));
  int64_t actual = initial.actual;
  for (Deadline d(Millis(60000)); !d.expired() && actual != target; std::this_thread::sleep_for(Millis(200)))
    actual = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryBalloon{})).actual;
  EXPECT_EQ(actual, target) << "balloon did not converge within 60 s";
  const int64_t after_kib = guest_memtotal_kib(agent);
  // The guest loses exactly what the balloon took (MemTotal shrinks with the balloon).
  EXPECT_NEAR(static_cast<double>(before_kib - after_kib), static_cast<double>((ram_bytes - target) / 1024), 1024.0);

  // Guest statistics arrive through the balloon's QOM properties. Only an update
  // stamped after the balloon settled describes the shrunken guest.
  const auto settled =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  SL_ASSERT_OK(qmp::set_balloon_stats_period(monitor, 1));
  qmp::BalloonStats stats;
  for (Deadline d(Millis(20000)); !d.expired(); std::this_thread::sleep_for(Millis(300))) {
    stats = SL_ASSERT_OK(qmp::balloon_stats(monitor));
    if (stats.last_update > settled && stats.total) break;
  }
  ASSERT_GT(stats.last_update, settled) << "no fresh balloon statistics from the guest";
  ASSERT_TRUE(stats.total.has_value());
  EXPECT_NEAR(static_cast<double>(*stats.total), static_cast<double>(after_kib) * 1024, 4 << 20);
}

inline void check_exec(qmp::Channel& agent) {
  auto out = SL_ASSERT_OK(qmp::guest_run_ok(agent, "/bin/sh", {"-c", "echo hello from $(hostname); echo err >&2"}));
  EXPECT_EQ(out.rfind("hello from sl-", 0), 0u) << out;
  auto st = SL_ASSERT_OK(qmp::guest_run(agent, "/bin/sh", {"-c", "exit 7"}));
  EXPECT_EQ(st.exitcode, 7);
  qmp::RunOptions opts;
  opts.input = "fed through stdin\n";
  EXPECT_EQ(SL_ASSERT_OK(qmp::guest_run_ok(agent, "/bin/cat", {}, opts)), "fed through stdin\n");
  // The agent itself says the program is missing (a transport failure is no such answer).
  auto missing = qmp::guest_run(agent, "/nonexistent/program", {});
  if (missing.ok()) {
    EXPECT_NE(missing->exitcode.value_or(0), 0) << "a missing program ran";
  } else {
    EXPECT_EQ(missing.error().kind, ErrorKind::Remote) << missing.error().message;
    EXPECT_NE(missing.error().message.find("/nonexistent/program"), std::string::npos) << missing.error().message;
  }
}

inline void check_file_round_trip(qmp::Channel& agent, size_t bytes = 5 << 20) {
  std::string data(bytes, '\0');
  std::mt19937_64 rng(42);
  for (size_t i = 0; i + 8 <= data.size(); i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  const std::string path = "/tmp/seamless-roundtrip.bin";
  SL_ASSERT_OK(qmp::write_guest_file(agent, path, data));
  auto back = SL_ASSERT_OK(qmp::read_guest_file(agent, path));
  ASSERT_EQ(back.size(), data.size());
  EXPECT_TRUE(back == data) << "read back differs";
  EXPECT_EQ(sha256_hex(back), sha256_hex(data));
  SL_ASSERT_OK(qmp::guest_run_ok(agent, "rm", {"-f", path}));
}

inline void check_name_and_announce(qmp::Channel& monitor, const std::string& name) {
  auto n = SL_ASSERT_OK(qmp::execute(monitor, qmp::QueryName{}));
  EXPECT_EQ(n.name, name);
  SL_ASSERT_OK(qmp::execute(monitor, qmp::AnnounceSelf{}));
}

}  // namespace seamless::test
