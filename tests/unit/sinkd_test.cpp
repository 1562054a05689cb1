// SPDX-License-Identifier: Apache-2.0
// sinkd's control channel against the project's own QMP client and a raw socket, on a
// real unix socket: greeting, negotiation, replies with ids, error classes, bad input
// answered with errors while the session goes on, events; and the template check of packs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"
#include "pack/pack.h"
#include "qmp/commands.h"
#include "qmp/server.h"
#include "qmp/socket.h"
#include "qmp/stream.h"
#include "sinkd/container.h"
#include "sinkd/hold.h"
#include "sinkd/moves.h"
#include "sinkd/pack_check.h"
#include "sinkd/protocol.h"
#include "sinkd/sink.h"
#include "tests/support/fake_criu.h"

namespace seamless::sink {
namespace {

class Control : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.on("echo", [](const qmp::Value& args) -> Result<std::string> {
      return cat("{\"text\":", qmp::quote(SL_TRY(qmp::get_string(args, "text"))), "}");
    });
    server_.on("fail", [](const qmp::Value&) -> Result<std::string> {
      return make_error(ErrorKind::Invalid, "it failed as asked");
    });
    server_.on("throw",
               [](const qmp::Value&) -> Result<std::string> { throw std::runtime_error("a bug in the handler"); });
    // A slow command: answers once the test opens the gate (or after 20 s, so that a
    // server answering in order fails the test instead of hanging it).
    server_.on("wait", [this](const qmp::Value&) -> Result<std::string> {
      for (int i = 0; i < 2000 && !gate_; ++i) std::this_thread::sleep_for(Millis(10));
      return std::string(gate_ ? "{\"text\":\"waited\"}" : "{\"text\":\"gave up\"}");
    });
    auto l = sys::listen_unix(path_);
    ASSERT_TRUE(l.ok()) << l.error().message;
    listener_ = std::move(l).value();
    thread_ = std::thread([this] {
      for (int i = 0; i < 4 && !done_; ++i) {
        auto peer = sys::accept(listener_.get(), Deadline(Millis(10000)));
        if (!peer.ok()) return;
        (void)server_.serve(std::move(peer).value(), "test");
      }
    });
  }
  void TearDown() override {
    done_ = true;
    server_.stop();
    thread_.join();
  }
  // A raw client: reads the greeting, then sends whatever the test wants.
  std::unique_ptr<qmp::JsonStream> raw() {
    auto fd = sys::connect_unix(path_);
    EXPECT_TRUE(fd.ok());
    auto s = std::make_unique<qmp::JsonStream>(std::move(fd).value(), 1 << 20, "sinkd");
    auto greeting = s->next(Deadline(Millis(5000)));
    EXPECT_TRUE(greeting.ok());
    return s;
  }
  static std::string reply(qmp::JsonStream& s, const std::string& request) {
    EXPECT_TRUE(s.write(request, Deadline(Millis(5000))).ok());
    auto item = s.next(Deadline(Millis(5000)));
    return item.ok() ? item->message.dump() : item.error().message;
  }

  TempDir dir_ = TempDir::create().value();
  std::string path_ = dir_ / "sinkd.sock";
  std::atomic<bool> gate_{false};
  qmp::ControlServer server_{"9.9.9"};
  UniqueFd listener_;
  std::thread thread_;
  std::atomic<bool> done_{false};
};

TEST_F(Control, TheProjectsQmpClientTalksToIt) {
  auto client = qmp::QmpSocket::connect(path_);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto r = (*client)->call("echo", "{\"text\":\"hi\"}", Millis(5000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->dump(), "{\"text\":\"hi\"}");
  auto failed = (*client)->call("fail", "", Millis(5000));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().kind, ErrorKind::Remote);
  EXPECT_EQ(failed.error().remote_class, "GenericError");
  EXPECT_NE(failed.error().message.find("it failed as asked"), std::string::npos);
  auto unknown = (*client)->call("nope", "", Millis(5000));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().remote_class, "CommandNotFound");
  auto missing = (*client)->call("echo", "{}", Millis(5000));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("missing field `text`"), std::string::npos) << missing.error().message;
}

TEST_F(Control, AHandlerThatThrowsFailsItsCommandNotTheDaemon) {
  auto client = qmp::QmpSocket::connect(path_);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto thrown = (*client)->call("throw", "", Millis(5000));
  ASSERT_FALSE(thrown.ok());
  EXPECT_EQ(thrown.error().remote_class, "GenericError");
  EXPECT_NE(thrown.error().message.find("internal error in `throw`: a bug in the handler"), std::string::npos)
      << thrown.error().message;
  auto r = (*client)->call("echo", "{\"text\":\"still here\"}", Millis(5000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->dump(), "{\"text\":\"still here\"}");
}

TEST_F(Control, EventsReachTheClient) {
  auto client = qmp::QmpSocket::connect(path_);
  ASSERT_TRUE(client.ok()) << client.error().message;
  server_.emit("activity", "{\"gateway\":\"sl-a\",\"reason\":\"accept\"}");
  auto ev = (*client)->wait_event("activity", Millis(5000));
  ASSERT_TRUE(ev.ok()) << ev.error().message;
  EXPECT_EQ(qmp::get_string(ev->data.root(), "reason").value(), "accept");
  EXPECT_GT(ev->timestamp, 1e9);
}

// As sinkd runs it: a request with an id is answered when it is done, so a quick one
// overtakes a slow one; requests without an id keep their order.
TEST_F(Control, RequestsWithAnIdAreAnsweredAsTheyFinish) {
  server_.answer_out_of_order(4);
  auto s = raw();
  EXPECT_EQ(reply(*s, "{\"execute\":\"qmp_capabilities\",\"id\":0}"), "{\"return\":{},\"id\":0}");
  ASSERT_TRUE(s->write("{\"execute\":\"wait\",\"id\":1}", Deadline(Millis(5000))).ok());
  auto r = reply(*s, "{\"execute\":\"echo\",\"arguments\":{\"text\":\"quick\"},\"id\":2}");
  EXPECT_EQ(r, "{\"return\":{\"text\":\"quick\"},\"id\":2}") << "the quick command waited for the slow one";
  gate_ = true;
  auto slow = s->next(Deadline(Millis(25000)));
  ASSERT_TRUE(slow.ok()) << slow.error().message;
  EXPECT_EQ(slow->message.dump(), "{\"return\":{\"text\":\"waited\"},\"id\":1}");

  gate_ = false;
  ASSERT_TRUE(s->write("{\"execute\":\"wait\"}", Deadline(Millis(5000))).ok());
  ASSERT_TRUE(s->write("{\"execute\":\"echo\",\"arguments\":{\"text\":\"second\"}}", Deadline(Millis(5000))).ok());
  std::thread opener([this] {
    std::this_thread::sleep_for(Millis(300));
    gate_ = true;
  });
  auto first = s->next(Deadline(Millis(25000)));
  auto second = s->next(Deadline(Millis(25000)));
  opener.join();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(first->message.dump(), "{\"return\":{\"text\":\"waited\"}}") << "without an id, in order";
  EXPECT_EQ(second->message.dump(), "{\"return\":{\"text\":\"second\"}}");
}

TEST_F(Control, NegotiationComesFirst) {
  auto s = raw();
  auto r = reply(*s, "{\"execute\":\"echo\",\"arguments\":{\"text\":\"x\"},\"id\":1}");
  EXPECT_NE(r.find("CommandNotFound"), std::string::npos) << r;
  EXPECT_NE(r.find("qmp_capabilities"), std::string::npos) << r;
  EXPECT_NE(r.find("\"id\":1"), std::string::npos) << r;
  r = reply(*s, "{\"execute\":\"qmp_capabilities\",\"id\":\"n\"}");
  EXPECT_EQ(r, "{\"return\":{},\"id\":\"n\"}");
}

TEST_F(Control, BadInputGetsErrorsAndTheSessionGoesOn) {
  auto s = raw();
  reply(*s, "{\"execute\":\"qmp_capabilities\"}");
  for (const char* bad : {"{\"execute\": tru}", "{\"execute\":\"\xff\xfe\"}", "[1,2]", "{\"arguments\":{}}",
                          "{\"execute\":42}", "{\"execute\":\"echo\",\"arguments\":[1]}"}) {
    auto r = reply(*s, bad);
    EXPECT_NE(r.find("\"error\""), std::string::npos) << bad << " -> " << r;
  }
  const std::string deep =
      "{\"execute\":\"echo\",\"arguments\":{\"text\":" + std::string(200000, '[') + std::string(200000, ']') + "}}";
  auto refused = reply(*s, deep);
  EXPECT_NE(refused.find("nested deeper than 64"), std::string::npos) << "JSON nested 200,000 levels: " << refused;
  auto big = reply(*s, "{\"execute\":\"echo\",\"arguments\":{\"text\":\"" + std::string(2 << 20, 'a') + "\"}}");
  EXPECT_NE(big.find("error"), std::string::npos) << big.substr(0, 200);
  EXPECT_EQ(reply(*s, "{\"execute\":\"echo\",\"arguments\":{\"text\":\"still here\"},\"id\":7}"),
            "{\"return\":{\"text\":\"still here\"},\"id\":7}");
}

packfmt::Manifest manifest_of(std::vector<packfmt::FileIdentity> files) {
  packfmt::Manifest m;
  m.hostname = "vm";
  m.files = std::move(files);
  return m;
}

// An operator's policy file (entries over the built-in ones): a bad one stops the daemon
// at start with the file and line, before it serves anything.
TEST(SinkdCommandLine, ABadPolicyFileIsRefusedAtStart) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  ASSERT_TRUE(sys::write_file(*dir / "policy", "[snmpd]\nserve openat\nwake frobnicate\n").ok());
  auto r = run({SEAMLESS_BINARY_DIR "/sinkd/seamless-sinkd", "--socket", *dir / "s.sock", "--state-dir", *dir / "st",
                "--policy", *dir / "policy"},
               Millis(20000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status.code, 2);
  EXPECT_NE(r->err.find("policy `" + *dir / "policy" + "`: policy line 3"), std::string::npos) << r->err;
  EXPECT_FALSE(std::filesystem::exists(*dir / "s.sock")) << "it served nothing";
}

TEST(PackCheck, SameTemplateIsAcceptedWithDummiesForHeldOpenFiles) {
  auto self = packfmt::identify("/proc/self/exe");
  ASSERT_TRUE(self.ok());
  self->role = "exe";
  packfmt::FileIdentity log{"/var/log/nonexistent-seamless.log", 10, "", std::string(64, '0'), "open"};
  auto c = check_manifest(manifest_of({*self, log}));
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_EQ(c->dummies.size(), 1u);
  EXPECT_EQ(c->dummies[0].path, log.path);
  EXPECT_NE(to_json(*c).find("nonexistent-seamless.log"), std::string::npos);
}

TEST(PackCheck, OtherCodeIsATemplateMismatch) {
  auto self = packfmt::identify("/proc/self/exe");
  ASSERT_TRUE(self.ok());
  self->role = "map";
  self->build_id = std::string(40, 'f');
  packfmt::FileIdentity gone{"/usr/lib/libnot-here.so", 10, "abcd", "", "map"};
  auto c = check_manifest(manifest_of({*self, gone}));
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("template mismatch"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("2 code file(s) differ"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("libnot-here.so"), std::string::npos) << c.error().message;
}

// A manifest naming the kernel's files, devices and fifos (one of pagemap cost 1 GiB and
// 2.6 s a time): each refused at once, nothing read; a large file named many times costs
// the check's budget once.
TEST(PackCheck, SpecialFilesAreRefusedAtOnce) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  ASSERT_EQ(::mkfifo((*dir / "fifo").c_str(), 0600), 0);
  std::vector<packfmt::FileIdentity> files;
  for (const std::string& p :
       {std::string("/proc/self/pagemap"), std::string("/proc/kcore"), std::string("/sys/kernel/notes"),
        std::string("/dev/zero"), std::string("/dev/urandom"), *dir / "fifo"})
    for (int i = 0; i < 50; ++i) files.push_back({p, 0, "", std::string(64, '0'), "map"});
  const auto t0 = Clock::now();
  auto c = check_manifest(manifest_of(files));
  const double took = seconds_since(t0);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("300 code file(s) differ"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("`/proc/self/pagemap` is a file of the kernel's"), std::string::npos)
      << c.error().message;
  auto fifo = packfmt::identify(*dir / "fifo");
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.error().message.find("is not a regular file"), std::string::npos) << fifo.error().message;
  auto zero = packfmt::identify("/dev/zero");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.error().message.find("is not a regular file"), std::string::npos);
  // Not a timing assertion: a hang (a fifo opened blocking) would never get here.
  std::printf("300 special files checked in %.3f s\n", took);

  // A budget: a file read to be hashed counts against it, the next one beyond it is refused.
  ASSERT_TRUE(sys::write_file(*dir / "big", std::string(4096, 'x')).ok());
  uint64_t budget = 6000;
  EXPECT_TRUE(packfmt::identify(*dir / "big", &budget).ok());
  EXPECT_EQ(budget, 6000u - 4096u);
  auto beyond = packfmt::identify(*dir / "big", &budget);
  ASSERT_FALSE(beyond.ok());
  EXPECT_NE(beyond.error().message.find("beyond what is left to read"), std::string::npos) << beyond.error().message;
}

TEST(PackCheck, WholePacksThroughTheReader) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  packfmt::FileIdentity other{"/proc/self/exe", 1, std::string(40, 'e'), "", "exe"};
  ASSERT_TRUE(packfmt::write_pack(*dir / "p.pack", manifest_of({other}).to_json(), dir->path(), {}).ok());
  auto c = check_pack(*dir / "p.pack", *dir / "work");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("template mismatch"), std::string::npos) << c.error().message;
  ASSERT_TRUE(sys::write_file(*dir / "junk.pack", "not a pack").ok());
  auto junk = check_pack(*dir / "junk.pack", *dir / "work");
  ASSERT_FALSE(junk.ok());
  EXPECT_NE(junk.error().message.find("junk.pack"), std::string::npos) << junk.error().message;
  EXPECT_TRUE(std::filesystem::is_empty(*dir / "work")) << "nothing left behind";
}

TEST(Container, DummiesAreSparseFilesOfTheRightSizeInsideTheUpperLayer) {
  auto dir = TempDir::create();
  ASSERT_TRUE(dir.ok());
  const std::string upper = *dir / "upper", lower = *dir / "lower";
  std::filesystem::create_directories(upper);
  std::filesystem::create_directories(lower + "/var/log");
  std::filesystem::permissions(lower + "/var/log", std::filesystem::perms(0750));
  auto dummy = [](const std::string& path, uint64_t size, uint32_t mode = 0644) {
    packfmt::FileIdentity f;
    f.path = path;
    f.size = size;
    f.mode = mode;
    f.uid = ::geteuid();
    f.gid = ::getegid();
    return f;
  };
  ASSERT_TRUE(make_dummy(upper, dummy("/var/log/app.log", 123456, 0640), lower).ok());
  EXPECT_EQ(std::filesystem::file_size(upper + "/var/log/app.log"), 123456u);
  EXPECT_EQ(std::filesystem::status(upper + "/var/log/app.log").permissions(), std::filesystem::perms(0640))
      << "the file's own mode (CRIU checks it)";
  EXPECT_EQ(std::filesystem::status(upper + "/var/log").permissions(), std::filesystem::perms(0750))
      << "directories take the lower layer's mode";
  EXPECT_FALSE(make_dummy(upper, dummy("/var/log/app.log", 1), lower).ok()) << "never overwrites";
  for (const char* bad : {"relative/x", "/../escape", "/var/../../escape", "/a//b", "/a/./b", "/"}) {
    auto r = make_dummy(upper, dummy(bad, 1), lower);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("not a plain absolute path"), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(std::filesystem::exists(*dir / "escape"));
  // A symlink planted in the upper layer is not followed.
  std::filesystem::create_directory_symlink(dir->path(), upper + "/link");
  EXPECT_FALSE(make_dummy(upper, dummy("/link/out", 1), lower).ok());
  EXPECT_FALSE(std::filesystem::exists(*dir / "out"));
}

// sinkd works in a container's root through /proc/INIT/root: links and `..` the
// container plants there (an absolute link once made a clean-up delete a directory of the
// sink's) lead nowhere outside it, for reads, writes, removals and the hand-back's pack.
TEST(Container, LinksPlantedInItsRootLeadNowhereOutside) {
  TempDir dir = TempDir::create().value();
  const std::string root = dir / "root", outside = dir / "outside";
  std::filesystem::create_directories(root + "/images/gw/7");
  std::filesystem::create_directories(outside + "/out");
  ASSERT_TRUE(sys::write_file(outside + "/secret", "the sink's own").ok());
  ASSERT_TRUE(sys::write_file(outside + "/out/keep", "x").ok());
  ASSERT_TRUE(sys::write_file(root + "/images/gw/7/core-7.img", "image").ok());
  std::filesystem::create_symlink(outside, root + "/.seamless");             // absolute, out of the root
  std::filesystem::create_symlink("../../../outside", root + "/images/up");  // `..` past the root
  std::filesystem::create_symlink(outside + "/secret", root + "/images/gw/7/pages-1.img");
  std::filesystem::create_symlink("/", root + "/images/gw/7/slash");

  // Removals: the link goes (or nothing happens), never what it points to.
  EXPECT_TRUE(sys::remove_in_root(root, ".seamless/out").ok());
  EXPECT_TRUE(std::filesystem::exists(outside + "/out/keep"));
  EXPECT_TRUE(sys::remove_in_root(root, "images/up/out").ok());
  EXPECT_TRUE(std::filesystem::exists(outside + "/out/keep"));
  EXPECT_TRUE(sys::remove_in_root(root, "../outside/out").ok());
  EXPECT_TRUE(std::filesystem::exists(outside + "/out/keep"));
  EXPECT_FALSE(sys::remove_in_root(root, "").ok()) << "never the root itself";

  // Directories made for CRIU: not through a link.
  EXPECT_FALSE(sys::make_dirs_in_root(root, ".seamless/out/gw").ok());
  EXPECT_FALSE(std::filesystem::exists(outside + "/out/gw"));
  EXPECT_TRUE(sys::make_dirs_in_root(root, "images/out/gw/9").ok());
  EXPECT_TRUE(std::filesystem::is_directory(root + "/images/out/gw/9"));

  // Reads: an absolute link resolves inside the root, where there is no secret.
  auto secret = sys::open_in_root(root, "images/gw/7/pages-1.img", O_RDONLY);
  EXPECT_FALSE(secret.ok());
  auto up = sys::open_in_root(root, "images/up/secret", O_RDONLY);
  EXPECT_FALSE(up.ok());
  auto real = sys::open_in_root(root, "images/gw/7/slash/images/gw/7/core-7.img", O_RDONLY);
  ASSERT_TRUE(real.ok()) << "`/` is the root: " << real.error().message;
  EXPECT_EQ(sys::read_fd(real->get(), 100, "core").value(), "image");

  // The hand-back's pack: the planted link is neither listed nor read.
  const std::string images = root + "/images";
  EXPECT_EQ(packfmt::list_pack_files(images), std::vector<std::string>{"gw/7/core-7.img"});
  const std::string pack = dir / "out.pack";
  ASSERT_TRUE(packfmt::write_pack(pack, manifest_of({}).to_json(), images, packfmt::list_pack_files(images)).ok());
  auto linked = packfmt::write_pack(pack, manifest_of({}).to_json(), images, {"gw/7/pages-1.img"});
  ASSERT_FALSE(linked.ok()) << "a link named as an image is not followed";

  // Removing the whole tree takes the links, not their targets.
  EXPECT_TRUE(sys::remove_in_root(root, "images").ok());
  EXPECT_FALSE(std::filesystem::exists(root + "/images"));
  EXPECT_EQ(sys::read_file(outside + "/secret").value(), "the sink's own");
  EXPECT_TRUE(std::filesystem::exists(outside + "/out/keep"));
}

// A daemon killed during an add, a check or a hand-back: the next one removes what they
// left half done, and nothing else.
TEST(SinkRecovery, LeftoversOfUnfinishedWorkAreRemoved) {
  TempDir dir = TempDir::create().value();
  const std::string state = dir / "state";
  for (const char* d : {"/incoming-vm1/gw/7", "/work/check-1-2", "/out", "/containers", "/files"})
    std::filesystem::create_directories(state + d);
  ASSERT_TRUE(sys::write_file(state + "/incoming-vm1/gw/7/core-7.img", "x").ok());
  ASSERT_TRUE(sys::write_file(state + "/out/vm2.pack.part", "half").ok());
  ASSERT_TRUE(sys::write_file(state + "/out/vm3.pack", "whole").ok());
  SinkOptions opt;
  opt.state_dir = state;
  Sink sink(opt, [](const std::string&, const std::string&) {});
  EXPECT_EQ(sink.recover(), 0u);
  EXPECT_FALSE(std::filesystem::exists(state + "/incoming-vm1"));
  EXPECT_FALSE(std::filesystem::exists(state + "/work"));
  EXPECT_FALSE(std::filesystem::exists(state + "/out/vm2.pack.part"));
  EXPECT_TRUE(std::filesystem::exists(state + "/out/vm3.pack")) << "a finished hand-back pack stays";
  EXPECT_TRUE(std::filesystem::exists(state + "/containers"));
}

TEST(Container, IdsNamePlainDirectories) {
  EXPECT_TRUE(check_container_id("vm-01.example_a").ok());
  for (const char* bad : {"", "../x", "a/b", ".hidden", "sp ace"}) EXPECT_FALSE(check_container_id(bad).ok()) << bad;
  EXPECT_FALSE(check_container_id(std::string(65, 'a')).ok());
}

// The protocol is one definition: what the daemon writes, its clients read back whole;
// every state survives the trip; the typed client sends what the server's readers take.
TEST(Protocol, RepliesAndEventsReadBackAsWritten) {
  proto::Added a;
  a.id = "vm1";
  a.hostname = "h";
  a.interfaces = {{"eth0", "52:54:00:00:00:01", {"10.0.0.2/24", "fe80::1/64"}}};
  a.quiet = true;
  a.init = 77;
  a.gateways = {{"sshd", 12}, {"lighttpd", 30}};
  a.processes = 3;
  a.held = 2;
  a.seconds = 1.25;
  auto j = qmp::parse(a.to_json());
  ASSERT_TRUE(j.ok());
  auto back = proto::Added::parse(j->root());
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->interfaces.at(0).addresses.at(1), "fe80::1/64");
  EXPECT_EQ(back->gateways.at(1).name, "lighttpd");
  EXPECT_EQ(back->gateways.at(1).root, 30);
  EXPECT_TRUE(back->quiet);
  EXPECT_DOUBLE_EQ(back->seconds, 1.25);

  std::vector<proto::ListedGateway> list;
  for (auto st : {proto::GatewayState::Adding, proto::GatewayState::Traced, proto::GatewayState::Woken,
                  proto::GatewayState::Stopped, proto::GatewayState::HandedBack, proto::GatewayState::Crashed,
                  proto::GatewayState::Lost}) {
    proto::ListedGateway l;
    l.id = cat("g", int(st));
    l.state = st;
    l.held = int(st) == 3 ? 5 : -1;
    list.push_back(l);
  }
  auto lj = qmp::parse(proto::to_json(list));
  ASSERT_TRUE(lj.ok());
  auto listed = proto::parse_listed(lj->root());
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), list.size());
  for (size_t i = 0; i < list.size(); ++i) EXPECT_EQ((*listed)[i].state, list[i].state) << i;
  EXPECT_EQ((*listed)[3].held, 5);
  EXPECT_EQ((*listed)[0].held, -1) << "absent stays absent";

  proto::Status st{"0.1.0", "eth0", 42, 3, 1.7e9};
  auto sj = qmp::parse(st.to_json());
  ASSERT_TRUE(sj.ok());
  auto status = proto::Status::parse(sj->root());
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_DOUBLE_EQ(status->time, 1.7e9) << "the sink's clock, for the controller's offset";
  auto bad_time = qmp::parse(R"({"version":"x","time":-1})");
  ASSERT_TRUE(bad_time.ok());
  EXPECT_FALSE(proto::Status::parse(bad_time->root()).ok());

  auto ev = qmp::parse(proto::ActivityEvent{"vm1", "SYN to port 22", 12}.to_json());
  ASSERT_TRUE(ev.ok());
  auto act = proto::ActivityEvent::parse(ev->root());
  ASSERT_TRUE(act.ok());
  EXPECT_EQ(act->reason, "SYN to port 22");
  EXPECT_EQ(act->pid, 12);
}

TEST(Protocol, TheClientSendsWhatTheServerReadsAndChecksTheAnswer) {
  std::vector<std::pair<std::string, std::string>> sent;
  std::string answer;
  proto::Client client([&](std::string_view command, const std::string& args, Millis) -> Result<qmp::Json> {
    sent.emplace_back(std::string(command), args);
    return qmp::parse(answer);
  });
  answer = proto::Added{"vm1"}.to_json();
  ASSERT_TRUE(client.add_gateway({"/run/in.pack", "vm1", true}).ok());
  ASSERT_EQ(sent.back().first, "add-gateway");
  auto args = qmp::parse(sent.back().second);
  ASSERT_TRUE(args.ok());
  auto parsed = proto::AddGateway::parse(args->root());
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->pack, "/run/in.pack");
  EXPECT_TRUE(parsed->quiet);
  auto other = client.add_gateway({"/run/in.pack", "vm2", false});
  ASSERT_FALSE(other.ok()) << "an answer for another container is refused";
  EXPECT_NE(other.error().message.find("not `vm2`"), std::string::npos) << other.error().message;

  // A pack path with quotes and a newline stays one JSON string.
  answer = R"({"pack":"/x","bytes":1})";
  ASSERT_TRUE(client.hand_back({"vm1", "/tmp/a\"b\nc"}).ok());
  auto hb = qmp::parse(sent.back().second);
  ASSERT_TRUE(hb.ok());
  auto h = proto::HandBack::parse(hb->root());
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->out, "/tmp/a\"b\nc");

  answer = R"({"released":-4})";
  EXPECT_FALSE(client.release_packets({"vm1"}).ok()) << "a negative count is refused";
  auto missing = qmp::parse("{}");
  ASSERT_TRUE(missing.ok());
  auto no_id = proto::IdArg::parse(missing->root());
  ASSERT_FALSE(no_id.ok());
  EXPECT_NE(no_id.error().message.find("id"), std::string::npos) << no_id.error().message;
}

// The gateway moves of add and hand-back, against the fake CRIU: paths as CRIU sees
// them, streams handed in, and a hand-back that fails half-way puts back what it dumped.
class Moves : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 1; i <= 3; ++i) {
      packfmt::PackedGateway gw;
      gw.root = 100 * i;
      gw.name = cat("gw", i);
      gw.dir = cat("gw/", gw.root);
      gateways_.push_back(gw);
    }
    gateways_[1].streams.push_back({9001, "/run/systemd/journal/stdout", "gw2", "", {{200, 1}}});
    gateways_[2].shell_job = true;
  }
  // Stream ends: real descriptors (not close-on-exec), one per stream.
  StreamEnds ends() {
    return [this](const packfmt::PackedGateway& gw) -> Result<std::vector<UniqueFd>> {
      std::vector<UniqueFd> out;
      for (size_t i = 0; i < gw.streams.size(); ++i) out.emplace_back(::open("/dev/null", O_RDWR));
      ++ends_asked_;
      return out;
    };
  }
  std::function<Result<void>(const std::string&)> mkdir() {
    return [](const std::string& d) -> Result<void> {
      std::filesystem::create_directories(d);
      return ok();
    };
  }
  TempDir dir_ = TempDir::create().value();
  guest::FakeCriu criu_;
  std::vector<packfmt::PackedGateway> gateways_;
  int ends_asked_ = 0;
};

TEST_F(Moves, AHandBackDumpsEveryGatewayIntoItsDirectoryWithItsStreamsExternal) {
  const std::string out = dir_ / "out";
  ASSERT_TRUE(dump_gateways(criu_, out, gateways_, ends(), mkdir()).ok());
  EXPECT_EQ(criu_.dumped, (std::vector<pid_t>{100, 200, 300}));
  EXPECT_TRUE(criu_.restored.empty());
  for (const auto& gw : gateways_) EXPECT_TRUE(std::filesystem::exists(out + "/" + gw.dir)) << gw.dir;
  EXPECT_EQ(criu_.external_unix, std::vector<uint64_t>{}) << "the last gateway has no stream";
}

TEST_F(Moves, AHandBackThatFailsHalfWayPutsBackTheGatewaysItDumped) {
  const std::string out = dir_ / "out";
  criu_.fail_dump_of = 300;
  auto r = dump_gateways(criu_, out, gateways_, ends(), mkdir());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("dumping gateway `gw3`"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("the 2 gateway(s) dumped before it are back"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(criu_.restored, (std::vector<std::string>{out + "/gw/100", out + "/gw/200"}))
      << "put back from the images just written, in order";
  EXPECT_EQ(criu_.restored_stopped, (std::vector<bool>{true, true})) << "stopped, as the hand-back left them";
  EXPECT_EQ(criu_.inherited, std::vector<std::string>{"socket:[9001]"}) << "gw2's stream handed in again";
}

TEST_F(Moves, APutBackThatFailsTooSaysSo) {
  const std::string out = dir_ / "out";
  criu_.fail_dump_of = 300;
  criu_.fail_restore_of = out + "/gw/200";
  auto r = dump_gateways(criu_, out, gateways_, ends(), mkdir());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("putting back the 2 gateway(s) dumped before it failed"), std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("restoring gateway `gw2`"), std::string::npos) << r.error().message;
}

TEST_F(Moves, AFirstGatewayThatFailsToDumpLeavesNothingToPutBack) {
  criu_.fail_dump_of = 100;
  auto r = dump_gateways(criu_, dir_ / "out", gateways_, ends(), mkdir());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("dumping gateway `gw1`"), std::string::npos) << r.error().message;
  EXPECT_TRUE(criu_.dumped.empty());
  EXPECT_TRUE(criu_.restored.empty());
}

TEST_F(Moves, AnAddRestoresEachGatewayWithItsStreamsAndStopsAtTheFirstFailure) {
  const std::string images = dir_ / "images";
  for (const auto& gw : gateways_) {
    std::filesystem::create_directories(images + "/" + gw.dir);
    ASSERT_TRUE(sys::write_file(images + "/" + gw.dir + "/core.img", "x").ok());
  }
  ASSERT_TRUE(restore_gateways(criu_, images, gateways_, ends(), true).ok());
  EXPECT_EQ(criu_.restored.size(), 3u);
  EXPECT_EQ(criu_.restored_stopped, (std::vector<bool>{true, true, true})) << "stopped until seized";
  EXPECT_EQ(criu_.restored_in_place, (std::vector<bool>{true, true, true})) << "in the container's cgroup";
  EXPECT_EQ(ends_asked_, 3);
  EXPECT_EQ(criu_.wrappers, (std::vector<std::vector<std::string>>{{}, {}, {"setsid", "--wait"}}))
      << "a shell job is restored in a session of the container's own";
  criu_.restored.clear();
  criu_.fail_restore_of = images + "/gw/200";
  auto r = restore_gateways(criu_, images, gateways_, ends(), true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("restoring gateway `gw2`"), std::string::npos) << r.error().message;
  EXPECT_EQ(criu_.restored, std::vector<std::string>{images + "/gw/100"}) << "nothing after the failure";
}

// nfnetlink_queue messages as the kernel frames them, built by hand: the parser takes
// packets apart and refuses what overruns its buffer.
std::string queue_message(uint32_t id, const std::string& payload, uint32_t indev) {
  auto attr = [](uint16_t type, const void* data, size_t len) {
    std::string a(NLA_ALIGN(NLA_HDRLEN + len), '\0');
    nlattr h{uint16_t(NLA_HDRLEN + len), type};
    std::memcpy(a.data(), &h, sizeof h);
    std::memcpy(a.data() + NLA_HDRLEN, data, len);
    return a;
  };
  nfqnl_msg_packet_hdr ph{htonl(id), htons(0x0800), 0};
  uint32_t dev = htonl(indev);
  std::string body(NLMSG_ALIGN(sizeof(nfgenmsg)), '\0');
  body += attr(NFQA_PACKET_HDR, &ph, sizeof ph) + attr(NFQA_IFINDEX_INDEV, &dev, sizeof dev) +
          attr(NFQA_PAYLOAD, payload.data(), payload.size());
  nlmsghdr h{};
  h.nlmsg_len = uint32_t(NLMSG_HDRLEN + body.size());
  h.nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
  std::string out(NLMSG_HDRLEN, '\0');
  std::memcpy(out.data(), &h, sizeof h);
  return out + body;
}

TEST(QueueMessages, PacketsComeApartWithIdDeviceAndPayload) {
  auto parsed = parse_queue_messages(queue_message(7, "abcde", 3) + queue_message(8, "xyz", 4));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].id, 7u);
  EXPECT_EQ((*parsed)[0].protocol, 0x0800);
  EXPECT_EQ((*parsed)[0].indev, 3u);
  EXPECT_EQ((*parsed)[0].payload, "abcde");
  EXPECT_EQ((*parsed)[1].id, 8u);
  EXPECT_EQ((*parsed)[1].payload, "xyz");
}

TEST(QueueMessages, TruncatedAndErrorMessagesAreRefused) {
  std::string m = queue_message(7, "abcde", 3);
  auto cut = parse_queue_messages(m.substr(0, m.size() - 6));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().message.find("overruns"), std::string::npos) << cut.error().message;
  // An attribute claiming more than its message holds.
  std::string bad = m;
  nlattr huge{0x4000, NFQA_PAYLOAD};
  std::memcpy(bad.data() + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)), &huge, sizeof huge);
  EXPECT_FALSE(parse_queue_messages(bad).ok());
  // The kernel's error answer, e.g. binding a queue another socket holds.
  std::string err(NLMSG_HDRLEN + sizeof(nlmsgerr), '\0');
  nlmsghdr h{};
  h.nlmsg_len = uint32_t(err.size());
  h.nlmsg_type = NLMSG_ERROR;
  std::memcpy(err.data(), &h, sizeof h);
  int code = -EBUSY;
  std::memcpy(err.data() + NLMSG_HDRLEN, &code, sizeof code);
  auto e = parse_queue_messages(err);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, EBUSY);
  // An ack (error 0) is no error and no packet.
  code = 0;
  std::memcpy(err.data() + NLMSG_HDRLEN, &code, sizeof code);
  auto ack = parse_queue_messages(err);
  ASSERT_TRUE(ack.ok());
  EXPECT_TRUE(ack->empty());
  // A code the kernel never sends (fuzzing found INT_MIN negated): malformed, named.
  for (int bogus : {INT_MIN, -4096, 1}) {
    std::memcpy(err.data() + NLMSG_HDRLEN, &bogus, sizeof bogus);
    auto odd = parse_queue_messages(err);
    ASSERT_FALSE(odd.ok()) << bogus;
    EXPECT_NE(odd.error().message.find(cat("NLMSG_ERROR with code ", bogus)), std::string::npos) << odd.error().message;
  }
}

}  // namespace
}  // namespace seamless::sink
