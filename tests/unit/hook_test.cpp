// SPDX-License-Identifier: Apache-2.0
// The libvirt hook on a fake /proc, libvirt run dir and cgroup tree; and the binary's
// promise to exit 0 whatever happens.
#include "hooks/hook.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "qmp/json.h"
#include "qmp/server.h"

namespace seamless::hook {
namespace {

struct FakeHost {
  TempDir root = TempDir::create("/tmp/seamless-hook-").value();
  Env env;
  std::string group;
  explicit FakeHost(bool v2) {
    env.proc = root / "proc";
    env.libvirt_run_dir = root / "run";
    env.state_dir = root / "state";
    env.file_knobs = true;
    env.controller_socket = root / "seamlessd.sock";
    env.spool_dir = root / "spool";
    env.notify_timeout = Millis(500);
    std::string mount = root / "cg";
    for (const auto& d : {env.proc + "/self", env.proc + "/4242", env.libvirt_run_dir, env.state_dir})
      std::filesystem::create_directories(d);
    put(env.libvirt_run_dir + "/vm1.pid", "4242\n");
    if (v2) {
      put(env.proc + "/self/mountinfo", "25 30 0:22 / " + mount + " rw - cgroup2 cgroup2 rw\n");
      put(env.proc + "/4242/cgroup", "0::/machine/qemu-1-vm1.libvirt-qemu/emulator\n");
      group = mount + "/machine/qemu-1-vm1.libvirt-qemu";
      std::filesystem::create_directories(group);
      put(group + "/memory.max", "max\n");
      put(group + "/memory.swap.max", "0\n");
    } else {
      put(env.proc + "/self/mountinfo", "32 25 0:29 / " + mount + " rw - cgroup cgroup rw,memory\n");
      put(env.proc + "/4242/cgroup", "9:memory:/machine/qemu-1-vm1.libvirt-qemu\n");
      group = mount + "/machine/qemu-1-vm1.libvirt-qemu";
      std::filesystem::create_directories(group);
      put(group + "/memory.limit_in_bytes", "9223372036854771712\n");
      put(group + "/memory.memsw.limit_in_bytes", "1073741824\n");
      put(group + "/memory.swappiness", "0\n");
    }
  }
  static void put(const std::string& path, const std::string& text) { ASSERT_TRUE(sys::write_file(path, text).ok()); }
  std::string knob(const std::string& k) {
    auto v = sys::read_file(group + "/" + k).value();
    while (!v.empty() && v.back() == '\n') v.pop_back();
    return v;
  }
};

TEST(Hook, StartedAllowsSwapOnV1) {
  FakeHost host(false);
  auto r = handle({"vm1", "started", "begin", "-"}, host.env);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(host.knob("memory.swappiness"), "100");
  EXPECT_EQ(host.knob("memory.memsw.limit_in_bytes"), "-1");
  EXPECT_EQ(host.knob("memory.limit_in_bytes"), "9223372036854771712") << "the limit itself is untouched";
}

TEST(Hook, StartedAllowsSwapOnV2) {
  FakeHost host(true);
  ASSERT_TRUE(handle({"vm1", "started", "begin", "-"}, host.env).ok());
  EXPECT_EQ(host.knob("memory.swap.max"), "max");
  EXPECT_EQ(host.knob("memory.max"), "max");
}

TEST(Hook, ReleaseForgetsParkedState) {
  FakeHost host(false);
  FakeHost::put(host.env.state_dir + "/vm1.json", "{}");
  ASSERT_TRUE(handle({"vm1", "release", "end", "-"}, host.env).ok());
  EXPECT_FALSE(std::filesystem::exists(host.env.state_dir + "/vm1.json"));
  EXPECT_TRUE(handle({"vm1", "release", "end", "-"}, host.env).ok()) << "nothing to forget is fine";
}

TEST(Hook, UnknownOperationsChangeNothing) {
  FakeHost host(false);
  for (const char* op : {"prepare", "start", "stopped", "reconnect", "attach", "something-new"})
    EXPECT_TRUE(handle({"vm1", op, "begin", "-"}, host.env).ok()) << op;
  EXPECT_EQ(host.knob("memory.swappiness"), "0");
}

TEST(Hook, NoticesWaitInTheSpoolWhileSeamlessdIsDown) {
  FakeHost host(false);
  ASSERT_TRUE(handle({"vm1", "stopped", "end", "-"}, host.env).ok());
  auto spooled = sys::read_file(host.env.spool_dir + "/vm1.stopped");
  ASSERT_TRUE(spooled.ok()) << spooled.error().message;
  EXPECT_EQ(*spooled, R"({"domain":"vm1","operation":"stopped"})");
  EXPECT_FALSE(std::filesystem::exists(host.env.spool_dir + "/vm1.prepare"));
}

TEST(Hook, NoticesGoToSeamlessdWhenItListens) {
  FakeHost host(false);
  auto listener = sys::listen_unix(host.env.controller_socket);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  qmp::ControlServer server("test");
  std::string got;
  server.on("hook", [&](const qmp::Value& args) -> Result<std::string> {
    got = qmp::dump(args);
    return std::string("{}");
  });
  std::thread t([&] {
    auto peer = sys::accept(listener->get(), Deadline(Millis(10000)));
    if (peer.ok()) (void)server.serve(std::move(peer).value(), "test");
  });
  ASSERT_TRUE(handle({"vm1", "release", "end", "-"}, host.env).ok());
  t.join();
  EXPECT_EQ(got, R"({"domain":"vm1","operation":"release"})");
  EXPECT_FALSE(std::filesystem::exists(host.env.spool_dir + "/vm1.release")) << "delivered, not spooled";
}

TEST(Hook, AParkedDomainMayNotMigrate) {
  const std::string parked = R"(<domain><name>vm1</name><metadata><seamless:park
      xmlns:seamless="https://seamless.dev/xmlns/park/1" mode="swap"/></metadata></domain>)";
  auto refused = check_migration("vm1", parked);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("virsh-wake vm1"), std::string::npos) << refused.error().message;
  EXPECT_TRUE(check_migration("vm1", "<domain><name>vm1</name></domain>").ok());
  // The binary: libvirt's stdin, exit 1 and the reason on stderr.
  const std::string xml_file = "/tmp/seamless-hook-migrate.xml";
  ASSERT_TRUE(sys::write_file(xml_file, parked).ok());
  auto r =
      run({"/bin/sh", "-c", std::string(SEAMLESS_BINARY_DIR "/hooks/seamless-hook vm1 migrate begin - < ") + xml_file});
  std::filesystem::remove(xml_file);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status.code, 1);
  EXPECT_NE(r->err.find("is parked by seamless"), std::string::npos) << r->err;
}

TEST(Hook, BadInputIsNamed) {
  FakeHost host(false);
  auto bad = handle({"../etc", "release"}, host.env);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("invalid domain name"), std::string::npos);
  auto missing = handle({"vm2", "started"}, host.env);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("`vm2`"), std::string::npos) << missing.error().message;
  EXPECT_FALSE(handle({"vm1"}, host.env).ok());
}

TEST(Hook, BinaryExitsZeroOtherwise) {
  auto r = run({SEAMLESS_BINARY_DIR "/hooks/seamless-hook", "no-such-domain-xyz", "started", "begin", "-"});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status.code, 0);
  EXPECT_NE(r->err.find("`no-such-domain-xyz`"), std::string::npos) << r->err;
}

}  // namespace
}  // namespace seamless::hook
