// SPDX-License-Identifier: Apache-2.0
// Integration: the cgroup v2 code for real. These hosts keep the memory controller on
// v1, so a test guest mounts cgroup2 (its kernel has the memory controller there), adds
// swap, and runs the statically linked cgroup test inside: a process limited through
// memory.max swaps out and its data comes back intact.
#include <gtest/gtest.h>

#include "common/sys.h"
#include "qmp/guest.h"
#include "tests/support/testbed.h"

namespace seamless::test {
namespace {

TEST(CgroupV2InGuest, ThrottleSwapsOutAndComesBack) {
  auto bed = Testbed::load();
  SL_REQUIRE(bed.ok(), bed.ok() ? "" : bed.error().message);
  VmSpec spec;
  spec.name = "sl-cgroup2";
  spec.index = 9;
  spec.memory_mib = 512;
  spec.services = "none";
  auto vm = DirectVm::boot(*bed, spec);
  ASSERT_TRUE(vm.ok()) << vm.error().message;
  auto agent = (*vm)->wait_for_agent();
  ASSERT_TRUE(agent.ok()) << agent.error().message << "\n" << (*vm)->console_log();

  auto probe = sys::read_file(SEAMLESS_PROBE, 64 << 20);
  ASSERT_TRUE(probe.ok()) << probe.error().message;
  ASSERT_TRUE(qmp::write_guest_file(**agent, "/root/cgroup-probe", *probe).ok());

  qmp::RunOptions opts;
  opts.timeout = Millis(300000);
  opts.env = {"CI=true", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  auto st = qmp::guest_run(**agent, "/bin/sh",
                           {"-c",
                            "set -e; mount -t cgroup2 none /sys/fs/cgroup; "
                            "grep -qw memory /sys/fs/cgroup/cgroup.controllers; "
                            "fallocate -l 400M /swapfile; chmod 600 /swapfile; mkswap -q /swapfile; swapon /swapfile; "
                            "chmod +x /root/cgroup-probe; /root/cgroup-probe 2>&1"},
                           opts);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(st->exitcode, 0) << st->out << st->err;
  EXPECT_NE(st->out.find("cgroup version under test: v2"), std::string::npos) << st->out;
  // The three host tests: the throttle, and the page- and swap-cache evictions refused on
  // v2 by name.
  EXPECT_NE(st->out.find("[  PASSED  ] 3 tests"), std::string::npos) << st->out;
  EXPECT_EQ(st->out.find("[  FAILED  ]"), std::string::npos) << st->out;
}

}  // namespace
}  // namespace seamless::test
