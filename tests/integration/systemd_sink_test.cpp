// SPDX-License-Identifier: Apache-2.0
// Integration: daemons nobody listed, on guests that differ from the sink. Two guests
// booted with systemd (the systemd template) run memcached (state in memory, TCP),
// beanstalkd (a work queue in memory, TCP) and tftpd-hpa (UDP only), packages the sink's
// template (the init template) never had. Their gateways move to a sink container with no
// daemon-specific code: the sink names the files it lacks, the guest ships them
// (seamless-guest ship, through ctl::ship_missing as the controller does), the sink keeps
// them in its content-addressed file cache and the container sees them in a read-only
// layer. The journal's dev-log, which tftpd keeps a datagram socket connected to, gets a
// socket of the container's own. Idle in the sink they wake nothing; memcached serves its
// session from the memory that came along (no wake); a new connection wakes them; at home
// the sessions go on with their state (memcached's value on the same connection,
// beanstalkd's tube and job on the same connection, a TFTP read), their units kept whole.
// A second VM with the same daemons ships no file and adds nothing to the sink's cache.
#include <gtest/gtest.h>

#include <future>
#include <map>
#include <thread>

#include "common/sys.h"
#include "controller/shipping.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "qmp/socket.h"
#include "sinkd/protocol.h"
#include "tests/support/gateway_client.h"
#include "tests/support/sink_journey.h"
#include "tests/support/testbed.h"
#include "tests/support/vm_suite.h"

namespace seamless::sink {
namespace {

constexpr int kSink = 23, kGuest = 24, kSecond = 25;
constexpr const char* kDaemons = "memcached,beanstalkd,tftpd";
const std::vector<uint16_t> kPorts = {11211, 11300, 69};

class SystemdSink : public test::VmSuite<SystemdSink> {
 protected:
  static test::VmSpec guest_spec(const char* name, int index) {
    test::VmSpec spec;
    spec.name = name;
    spec.index = index;
    spec.guest_template = "systemd";
    spec.memory_mib = 512;
    spec.services = kDaemons;
    spec.tools = {SEAMLESS_GUEST_BIN};
    spec.ready_timeout = Millis(300000);
    return spec;
  }
  static void SetUpTestSuite() {
    // Booted side by side: the sink and two guests.
    auto sink = std::async(std::launch::async, [] {
      return test::LibvirtGuest::boot(test::sink_vm_spec("sl-sdsink", kSink, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN));
    });
    auto second =
        std::async(std::launch::async, [] { return test::LibvirtGuest::boot(guest_spec("sl-sdsecond", kSecond)); });
    auto guest = test::LibvirtGuest::boot(guest_spec("sl-sdguest", kGuest));
    auto s = sink.get();
    auto g2 = second.get();
    if (!s.ok()) return fail(s.error().message);
    if (!guest.ok()) return fail(guest.error().message);
    if (!g2.ok()) return fail(g2.error().message);
    sink_ = std::move(s).value();
    guest_ = std::move(guest).value();
    second_ = std::move(g2).value();
  }
  static void TearDownTestSuite() {
    if (guest_) (void)guest_->bed.end_redirect(test::Testbed::guest_mac(kGuest));
    guest_.reset();
    second_.reset();
    sink_.reset();
  }
  void SetUp() override { require(sink_ != nullptr && guest_ != nullptr && second_ != nullptr); }
  void TearDown() override {
    if (HasFailure() && sink_) {
      qmp::RunOptions ro;
      ro.timeout = Millis(20000);
      auto log = qmp::guest_run_ok(*sink_->agent, "/bin/sh", {"-c", "tail -n 30 /var/log/seamless/sinkd.log"}, ro);
      std::printf("--- sinkd's log\n%s\n", log.ok() ? log->c_str() : log.error().message.c_str());
    }
  }

  static Result<std::unique_ptr<qmp::QmpSocket>> control() { return test::sink_control(*sink_); }
  static proto::Client client(qmp::QmpSocket& c) { return test::sink_client(c); }
  static Result<std::string> sh(test::LibvirtGuest& vm, const std::string& command) {
    qmp::RunOptions ro;
    ro.timeout = Millis(60000);
    return qmp::guest_run_ok(*vm.agent, "/bin/sh", {"-c", command}, ro);
  }
  static std::map<std::string, std::string> unit(test::LibvirtGuest& vm, const std::string& name) {
    std::map<std::string, std::string> out;
    auto text = sh(vm, "systemctl show -p MainPID -p NRestarts -p ActiveState " + name);
    if (!text.ok()) return out;
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);)
      if (auto eq = line.find('='); eq != std::string::npos) out[line.substr(0, eq)] = line.substr(eq + 1);
    return out;
  }

  // The daemons of `vm` moved to container `id` in the sink (quiet until it speaks).
  static Result<test::SinkMove> move_to_sink(qmp::QmpSocket& c, test::LibvirtGuest& vm, int index,
                                             const std::string& id) {
    return test::move_to_sink(c, {vm, index, *sink_, kSink}, kPorts, id);
  }

  static inline std::unique_ptr<test::LibvirtGuest> sink_, guest_, second_;
};

TEST_F(SystemdSink, DaemonsTheSinkNeverSawMoveWithTheirStateAndSessions) {
  const test::Testbed& bed = guest_->bed;
  const std::string ip = bed.guest_ip(kGuest);
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;

  // State in memory, and sessions: a memcached connection that stored a value, a
  // beanstalkd connection that uses a tube of its own and put a job there.
  auto mc = bed.connect_from_client(ip, 11211);
  ASSERT_TRUE(mc.ok()) << mc.error().message;
  ASSERT_TRUE(sys::write_all(mc->get(), "set parked 0 0 11\r\nvalue-41-42\r\n", Deadline(Millis(5000))).ok());
  auto stored = test::read_until(mc->get(), "STORED\r\n");
  ASSERT_TRUE(stored.ok()) << stored.error().message;
  auto bs = bed.connect_from_client(ip, 11300);
  ASSERT_TRUE(bs.ok()) << bs.error().message;
  ASSERT_TRUE(sys::write_all(bs->get(), "use parked\r\nput 0 0 300 7\r\njob-one\r\n", Deadline(Millis(5000))).ok());
  auto put = test::read_until(bs->get(), "INSERTED ");
  ASSERT_TRUE(put.ok()) << put.error().message;
  auto got = test::tftp_get(bed, ip, "hello.txt");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, "tftp ok from the guest\n");
  std::map<std::string, std::map<std::string, std::string>> before;
  for (const char* u : {"memcached.service", "beanstalkd.service"}) before[u] = unit(*guest_, u);

  auto moved = move_to_sink(**c, *guest_, kGuest, "daemons");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  const auto& ship = moved->shipment;
  std::printf("pack %lld bytes; the sink lacked %lld files, shipped %lld (%lld bytes of files, shipment %lld bytes)\n",
              static_cast<long long>(moved->pack_bytes), static_cast<long long>(ship.missing),
              static_cast<long long>(ship.outcome.included), static_cast<long long>(ship.outcome.content_bytes),
              static_cast<long long>(ship.outcome.shipment_bytes));
  EXPECT_GE(ship.missing, 3) << "memcached, beanstalkd and in.tftpd are not in the sink's template";
  EXPECT_EQ(ship.outcome.included, ship.missing) << "the first VM brings every file the sink lacks";
  EXPECT_EQ(moved->added.shipped, ship.missing);
  EXPECT_EQ(moved->added.gateways.size(), 3u);
  auto cache = client(**c).query_file_cache();
  ASSERT_TRUE(cache.ok()) << cache.error().message;
  std::printf("file cache: %lld objects, %lld bytes, %lld in use\n", static_cast<long long>(cache->objects),
              static_cast<long long>(cache->bytes), static_cast<long long>(cache->in_use));
  EXPECT_EQ(cache->in_use, ship.missing);
  RecordProperty("pack_bytes", cat(moved->pack_bytes));
  RecordProperty("shipment_bytes", cat(ship.outcome.shipment_bytes));
  RecordProperty("cache_bytes", cat(cache->bytes));

  // Parked: the VM paused, its traffic at the sink, the container speaks for it.
  const test::SinkPair vms{*guest_, kGuest, *sink_, kSink};
  ASSERT_TRUE(test::speak_for(**c, vms, "daemons").ok());
  auto idle = (*c)->wait_event("ACTIVITY", Millis(15000));
  EXPECT_FALSE(idle.ok()) << "the idle daemons woke: " << idle->data.dump();

  // memcached answers its session from memory in the sink: its state came along, and
  // reading it needs nothing of the VM (no wake).
  ASSERT_TRUE(sys::write_all(mc->get(), "get parked\r\n", Deadline(Millis(5000))).ok());
  auto served = test::read_until(mc->get(), "value-41-42", Millis(30000));
  EXPECT_TRUE(served.ok()) << "the value, read in the sink: " << served.error().message;
  auto quiet = (*c)->wait_event("ACTIVITY", Millis(3000));
  EXPECT_FALSE(quiet.ok()) << "a read served in the sink woke the VM: " << quiet->data.dump();

  // A new connection needs the VM: it wakes them, once.
  auto fresh = bed.connect_from_client(ip, 11300);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  auto woke = (*c)->wait_event("ACTIVITY", Millis(60000));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  std::printf("activity: %s\n", woke->data.dump().c_str());
  EXPECT_EQ(qmp::opt_string(woke->data.root(), "id").value_or(""), "daemons");
  EXPECT_NE(qmp::opt_string(woke->data.root(), "reason").value_or("").find("new connection from"), std::string::npos)
      << woke->data.dump();
  auto back = client(**c).hand_back({"daemons", "/run/daemons-back.pack"});
  ASSERT_TRUE(back.ok()) << back.error().message;
  auto again = (*c)->wait_event("ACTIVITY", Millis(1000));
  EXPECT_FALSE(again.ok()) << "a second activity event: " << again->data.dump();

  // Home: the VM runs, its traffic comes back, the sink's pack is restored there.
  auto home = test::come_home(**c, vms, "daemons", back->pack);
  ASSERT_TRUE(home.ok()) << home.error().message;

  ASSERT_TRUE(sys::write_all(fresh->get(), "stats-tube parked\r\n", Deadline(Millis(5000))).ok());
  auto stats = test::read_until(fresh->get(), "current-jobs-ready: 1");
  EXPECT_TRUE(stats.ok()) << "the connection that woke it, answered at home: " << stats.error().message;
  ASSERT_TRUE(sys::write_all(mc->get(), "get parked\r\n", Deadline(Millis(5000))).ok());
  auto value = test::read_until(mc->get(), "value-41-42");
  EXPECT_TRUE(value.ok()) << "the memcached session, at home: " << value.error().message;
  ASSERT_TRUE(sys::write_all(bs->get(), "peek-ready\r\n", Deadline(Millis(5000))).ok());
  auto job = test::read_until(bs->get(), "job-one");
  EXPECT_TRUE(job.ok()) << "the beanstalkd session still uses its tube, and the job is there: " << job.error().message;
  got = test::tftp_get(bed, ip, "hello.txt");
  EXPECT_TRUE(got.ok()) << got.error().message;
  for (const char* u : {"memcached.service", "beanstalkd.service"}) {
    SCOPED_TRACE(u);
    auto after = unit(*guest_, u);
    EXPECT_EQ(after["ActiveState"], "active");
    EXPECT_EQ(after["MainPID"], before[u]["MainPID"]) << "the same process is the unit's main PID";
    EXPECT_EQ(after["NRestarts"], before[u]["NRestarts"]) << "systemd started no second copy";
  }
}

// The second VM runs the same daemons: the sink names the files it lacks in its template,
// with the cached objects that may be them; the guest finds its files hash the same and
// ships none; the cache stays as it was.
TEST_F(SystemdSink, ASecondVmWithTheSameDaemonsAddsNothingToTheCache) {
  auto c = control();
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto warm = client(**c).query_file_cache();
  ASSERT_TRUE(warm.ok()) << warm.error().message;
  if (warm->objects == 0) {
    // Run alone: the first VM fills the cache (its gateways come home right after).
    auto first = move_to_sink(**c, *guest_, kGuest, "first");
    ASSERT_TRUE(first.ok()) << first.error().message;
    ASSERT_TRUE(client(**c).remove_gateway({"first"}).ok());
    auto home = test::run_guest_helper(*guest_->agent, {"restore", "/run/first.pack"}, Millis(300000));
    ASSERT_EQ(home.code, 0) << home.text;
    warm = client(**c).query_file_cache();
    ASSERT_TRUE(warm.ok()) << warm.error().message;
  }
  auto moved = move_to_sink(**c, *second_, kSecond, "second");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  const auto& ship = moved->shipment;
  std::printf("second VM: the sink lacked %lld files in its template, %lld shipped (shipment %lld bytes)\n",
              static_cast<long long>(ship.missing), static_cast<long long>(ship.outcome.included),
              static_cast<long long>(ship.outcome.shipment_bytes));
  EXPECT_GE(ship.missing, 3);
  EXPECT_EQ(ship.outcome.included, 0) << "every file it needs is cached";
  EXPECT_EQ(moved->added.shipped, ship.missing);
  auto cache = client(**c).query_file_cache();
  ASSERT_TRUE(cache.ok()) << cache.error().message;
  EXPECT_EQ(cache->objects, warm->objects);
  EXPECT_EQ(cache->bytes, warm->bytes);
  EXPECT_EQ(cache->in_use, ship.missing) << "the second container links the same objects";
  ASSERT_TRUE(client(**c).remove_gateway({"second"}).ok());
  auto home = test::run_guest_helper(*second_->agent, {"restore", "/run/second.pack"}, Millis(300000));
  EXPECT_EQ(home.code, 0) << home.text;
  auto state = sh(*second_, "systemctl is-active memcached beanstalkd tftpd-hpa");
  EXPECT_TRUE(state.ok()) << (state.ok() ? "" : state.error().message);
}

}  // namespace
}  // namespace seamless::sink
