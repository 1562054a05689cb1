// SPDX-License-Identifier: Apache-2.0
// Integration: activity detection with real ptrace on a real process (the ZDTM-style
// zdtm_listener). Its housekeeping (poll, clock) is served without a wake; a new
// connection is caught after accept4 returned it; a file open is caught before it takes
// effect. Each time the process is left stopped and detached, and when continued (as
// after the restore in the VM) the triggering call completes: the client is greeted,
// the file is created by the re-executed openat. Look-ups that the guest's file tree
// answers (stat of its files, of names absent from its complete directories, listings of
// those) are served; one it does not answer wakes.
#include "sinkd/tracer.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <thread>
#include <tuple>

#include "common/process.h"
#include "common/sys.h"
#include "common/tempdir.h"

namespace seamless::sink {
namespace {

constexpr uint16_t kPort = 47311;

char state_of(pid_t pid) {
  auto stat = sys::read_file(cat("/proc/", pid, "/stat"));
  if (!stat.ok()) return '?';
  auto paren = stat->rfind(')');
  return (*stat)[paren + 2];
}

UniqueFd connect_local() {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(kPort);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
  return s;
}

std::string recv_for(int fd, Millis timeout) {
  timeval tv{0, long(timeout.count()) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[64];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, size_t(n)) : "";
}

// Writes a byte to the tracee's trigger FIFO and runs the tracer until the activity that
// follows: its reason ("" and a test failure when none came).
std::string poke_and_wait(Tracer& t, const std::string& fifo) {
  UniqueFd trigger(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  EXPECT_TRUE(trigger.valid());
  EXPECT_EQ(::write(trigger.get(), "x", 1), 1);
  auto woke = t.run(Deadline(Millis(10000)));
  if (!woke.ok()) {
    ADD_FAILURE() << woke.error().message;
    return "";
  }
  if (!woke->has_value()) ADD_FAILURE() << "no activity after the trigger";
  return woke->has_value() ? (*woke)->reason : "";
}

class TracerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkfifo(fifo_.c_str(), 0600), 0);
    auto p = ChildProcess::spawn({ZDTM_LISTENER, std::to_string(kPort), fifo_, created_});
    ASSERT_TRUE(p.ok()) << p.error().message;
    proc_ = std::move(p).value();
    for (Deadline d(Millis(10000)); !std::filesystem::exists(created_ + ".ready");)
      ASSERT_FALSE(d.expired()) << "zdtm_listener did not start";
    auto pol = Policy::builtin("zdtm_listener");
    ASSERT_TRUE(pol.ok()) << pol.error().message;
    policy_ = *pol;
  }
  void TearDown() override {
    ::kill(proc_.pid(), SIGCONT);
    proc_.stop(Millis(0));
  }
  TempDir dir_ = TempDir::create().value();
  std::string fifo_ = dir_ / "trigger", created_ = dir_ / "created";
  ChildProcess proc_;
  Policy policy_;
};

TEST_F(TracerTest, HousekeepingIsServedAndANewConnectionWakes) {
  auto t = Tracer::attach(proc_.pid(), policy_);
  ASSERT_TRUE(t.ok()) << t.error().message;
  auto idle = (*t)->run(Deadline(Millis(1500)));
  ASSERT_TRUE(idle.ok()) << idle.error().message;
  EXPECT_FALSE(idle->has_value()) << "polls and clock reads are no activity: " << (*idle)->reason;
  EXPECT_GT((*t)->served(), 5u);

  UniqueFd client = connect_local();
  auto woke = (*t)->run(Deadline(Millis(10000)));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  ASSERT_TRUE(woke->has_value());
  sockaddr_in me{};
  socklen_t len = sizeof me;
  ASSERT_EQ(::getsockname(client.get(), reinterpret_cast<sockaddr*>(&me), &len), 0);
  EXPECT_EQ((*woke)->reason, cat("accept4: new connection from 127.0.0.1:", ntohs(me.sin_port)));
  EXPECT_EQ((*woke)->pid, proc_.pid());
  std::this_thread::sleep_for(Millis(100));
  EXPECT_EQ(state_of(proc_.pid()), 'T') << "left stopped for CRIU";
  EXPECT_EQ(recv_for(client.get(), Millis(300)), "") << "not served in the sink";
  ::kill(proc_.pid(), SIGCONT);
  EXPECT_EQ(recv_for(client.get(), Millis(5000)), "hello\n") << "the accepted connection is answered after wake";
}

TEST_F(TracerTest, AFileOpenIsStoppedBeforeItHappensAndReRuns) {
  auto t = Tracer::attach(proc_.pid(), policy_);
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(poke_and_wait(**t, fifo_), "openat `" + created_ + "` by `zdtm_listener`") << "the call, its path, and who";
  std::this_thread::sleep_for(Millis(100));
  EXPECT_EQ(state_of(proc_.pid()), 'T');
  EXPECT_FALSE(std::filesystem::exists(created_)) << "cancelled before it took effect";
  ::kill(proc_.pid(), SIGCONT);
  bool created = false;
  for (Deadline d(Millis(5000)); !created && !d.expired(); std::this_thread::sleep_for(Millis(20)))
    created = std::filesystem::exists(created_);
  EXPECT_TRUE(created) << "the rewound openat ran again";
  // And the process carries on normally afterwards.
  UniqueFd client = connect_local();
  EXPECT_EQ(recv_for(client.get(), Millis(5000)), "hello\n");
}

TEST_F(TracerTest, InterruptFromAnotherThreadEndsAWaitWithoutDeadline) {
  auto t = Tracer::attach(proc_.pid(), policy_);
  ASSERT_TRUE(t.ok()) << t.error().message;
  std::atomic<bool> returned{false};
  std::thread poker([&] {
    std::this_thread::sleep_for(Millis(300));
    while (!returned) {
      (*t)->interrupt();
      std::this_thread::sleep_for(Millis(20));
    }
  });
  auto r = (*t)->run(Deadline::never());
  returned = true;
  poker.join();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->has_value());
  EXPECT_FALSE((*t)->detached());
  (*t)->stop_and_detach();
  std::this_thread::sleep_for(Millis(100));
  EXPECT_EQ(state_of(proc_.pid()), 'T') << "stopped for CRIU without activity (hand-back)";
  ::kill(proc_.pid(), SIGCONT);
}

TEST_F(TracerTest, DetachingWithoutActivityLeavesItRunning) {
  {
    auto t = Tracer::attach(proc_.pid(), policy_);
    ASSERT_TRUE(t.ok()) << t.error().message;
    ASSERT_TRUE((*t)->run(Deadline(Millis(300))).ok());
  }
  UniqueFd client = connect_local();
  EXPECT_EQ(recv_for(client.get(), Millis(5000)), "hello\n");
}

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

UniqueFd udp_at(uint16_t port) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = loopback(port);
  EXPECT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  return s;
}

void send_to(int fd, uint16_t port, const char* text) {
  sockaddr_in a = loopback(port);
  ASSERT_GT(::sendto(fd, text, std::strlen(text), 0, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
}

// zdtm_udp on `server` with its session peer `peer` (and `extra` arguments), started and
// traced: the fixture of the UDP tests.
struct TracedUdp {
  TempDir dir = TempDir::create().value();
  ChildProcess proc;
  std::unique_ptr<Tracer> tracer;
};
void start_traced_udp(uint16_t server, uint16_t peer, std::vector<std::string> extra, TracedUdp* out) {
  const std::string ready = out->dir / "ready";
  std::vector<std::string> argv = {ZDTM_UDP, std::to_string(server), std::to_string(peer), ready};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = ChildProcess::spawn(argv);
  ASSERT_TRUE(p.ok()) << p.error().message;
  out->proc = std::move(p).value();
  for (Deadline d(Millis(10000)); !std::filesystem::exists(ready);)
    ASSERT_FALSE(d.expired()) << "zdtm_udp did not start";
  auto policy = Policy::builtin("zdtm_udp");
  ASSERT_TRUE(policy.ok());
  auto t = Tracer::attach(out->proc.pid(), *policy);
  ASSERT_TRUE(t.ok()) << t.error().message;
  out->tracer = std::move(t).value();
}

// A stranger writes to the server socket: one wake, naming it and the call that took the
// datagram (it is in the program's memory and moves with it); the program is left
// stopped, and answers once continued.
void stranger_wakes(TracedUdp& u, int stranger, uint16_t server, const char* call) {
  send_to(stranger, server, "hello?");
  auto woke = u.tracer->run(Deadline(Millis(10000)));
  ASSERT_TRUE(woke.ok()) << woke.error().message;
  ASSERT_TRUE(woke->has_value());
  sockaddr_in me{};
  socklen_t len = sizeof me;
  ASSERT_EQ(::getsockname(stranger, reinterpret_cast<sockaddr*>(&me), &len), 0);
  EXPECT_EQ((*woke)->reason, cat(call, ": datagram from new peer 127.0.0.1:", ntohs(me.sin_port)));
  std::this_thread::sleep_for(Millis(100));
  EXPECT_EQ(state_of(u.proc.pid()), 'T') << "left stopped for CRIU";
  EXPECT_EQ(recv_for(stranger, Millis(300)), "") << "not answered in the sink";
  ::kill(u.proc.pid(), SIGCONT);
  EXPECT_EQ(recv_for(stranger, Millis(5000)), "hello?") << "answered after the wake";
  u.proc.stop(Millis(0));
}

// UDP: the ZDTM-style echo program has a server socket and a socket connected to a peer
// (an existing session). Datagrams from that peer are served in the sink; one from a new
// peer wakes the gateway after it was received, and once continued the program answers it.
TEST(UdpTracing, ANewPeerWakesTheSessionPeerDoesNot) {
  constexpr uint16_t kServer = 47321, kPeer = 47330;  // the session socket is kServer + 1
  UniqueFd peer = udp_at(kPeer), stranger = udp_at(0);
  TracedUdp u;
  ASSERT_NO_FATAL_FAILURE(start_traced_udp(kServer, kPeer, {}, &u));

  // The session's peer talks to the connected socket (on kServer + 1): served, and
  // answered in the sink.
  send_to(peer.get(), kServer + 1, "ping");
  auto served = u.tracer->run(Deadline(Millis(2000)));
  ASSERT_TRUE(served.ok()) << served.error().message;
  EXPECT_FALSE(served->has_value()) << "the session's peer woke it: " << (*served)->reason;
  EXPECT_EQ(recv_for(peer.get(), Millis(3000)), "ping");

  // A stranger writes to the server socket: one wake.
  stranger_wakes(u, stranger.get(), kServer, "recvfrom");
}

// The same in batches: a gateway that sends with sendmmsg (a heartbeat to its peer) and
// receives with recvmmsg. Datagrams from the peer it sent to are served; one from a new
// peer wakes it, named, after the batch was taken.
TEST(UdpTracing, BatchedCallsAreWatchedToo) {
  constexpr uint16_t kServer = 47341, kPeer = 47350;
  // The first datagram other than the heartbeat's "tick" ("" when none comes in time).
  auto answer = [](int fd, Millis timeout) {
    for (Deadline d(timeout); !d.expired();) {
      std::string got = recv_for(fd, Millis(100));
      if (!got.empty() && got != "tick") return got;
    }
    return std::string();
  };
  UniqueFd peer = udp_at(kPeer), stranger = udp_at(0);
  TracedUdp u;
  ASSERT_NO_FATAL_FAILURE(start_traced_udp(kServer, kPeer, {"--mmsg"}, &u));

  // Traced, the heartbeat goes out by sendmmsg: its destination becomes a known peer.
  auto idle = u.tracer->run(Deadline(Millis(1500)));
  ASSERT_TRUE(idle.ok()) << idle.error().message;
  EXPECT_FALSE(idle->has_value()) << "the heartbeat woke it: " << (*idle)->reason;
  EXPECT_EQ(recv_for(peer.get(), Millis(1000)), "tick");

  // That peer writes to the server socket: received by recvmmsg, served, echoed.
  send_to(peer.get(), kServer, "ping");
  auto served = u.tracer->run(Deadline(Millis(2000)));
  ASSERT_TRUE(served.ok()) << served.error().message;
  EXPECT_FALSE(served->has_value()) << "the known peer woke it: " << (*served)->reason;
  EXPECT_EQ(answer(peer.get(), Millis(3000)), "ping");

  // A stranger: one wake after the batch was taken, naming it.
  stranger_wakes(u, stranger.get(), kServer, "recvmmsg");
}

TEST(PolicyText, SectionsAndErrors) {
  auto apache = Policy::parse("before openat clone\n[apache2]\nserve clone\n[other]\nserve openat\n", "apache2");
  ASSERT_TRUE(apache.ok()) << apache.error().message;
  EXPECT_EQ(apache->verdict(syscall_number("clone")), Verdict::Serve);
  EXPECT_EQ(apache->verdict(syscall_number("openat")), Verdict::WakeBefore);
  EXPECT_EQ(apache->verdict(syscall_number("read")), Verdict::Serve);
  auto bad = Policy::parse("wake openat\n", "x");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("line 1"), std::string::npos);
  auto unknown = Policy::parse("before frobnicate\n", "x");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("frobnicate"), std::string::npos);
  EXPECT_EQ(Policy::parse("peer recvfrom\n", "x")->verdict(syscall_number("recvfrom")), Verdict::NewPeer);
  auto builtin = Policy::builtin("dropbear");
  ASSERT_TRUE(builtin.ok());
  EXPECT_EQ(builtin->verdict(syscall_number("accept4")), Verdict::WakeAfterSuccess);
  EXPECT_EQ(builtin->verdict(syscall_number("execve")), Verdict::WakeBefore);
  EXPECT_EQ(builtin->verdict(syscall_number("epoll_wait")), Verdict::Serve);
  EXPECT_EQ(builtin->verdict(syscall_number("read")), Verdict::Serve) << "an SSH keep-alive is read in the sink";
  // A JVM answers pages from memory: what it reads from a connection is a request.
  auto java = Policy::builtin("java");
  ASSERT_TRUE(java.ok());
  EXPECT_EQ(java->verdict(syscall_number("read")), Verdict::DataFromPeer);
  EXPECT_EQ(java->verdict(syscall_number("recvfrom")), Verdict::DataFromPeer);
  EXPECT_EQ(java->verdict(syscall_number("openat")), Verdict::WakeBefore);
}

// Housekeeping that looks at files (Tomcat every 10 s): served while the guest's tree
// answers it; a stat of a path the tree does not know wakes, naming it.
TEST(TracerTree, LookUpsTheTreeAnswersAreServed) {
  TempDir dir = TempDir::create().value();
  const std::string conf = dir / "conf", fifo = dir / "trigger";
  std::filesystem::create_directories(conf);
  ASSERT_TRUE(sys::write_file(conf + "/users.xml", "<users/>").ok());
  std::filesystem::create_symlink(conf, dir / "link");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  using packfmt::TreeEntry;
  auto entry = [](const std::string& path, TreeEntry::Kind kind, bool complete, const std::string& target = "") {
    TreeEntry e;
    e.path = path;
    e.kind = kind;
    e.complete = complete;
    e.target = target;
    return e;
  };
  std::vector<TreeEntry> entries = {entry(conf, TreeEntry::Kind::Dir, true),
                                    entry(conf + "/users.xml", TreeEntry::Kind::File, false),
                                    entry(dir / "link", TreeEntry::Kind::Link, false, conf)};
  entries[1].content = true;  // its contents came along: reading it needs no VM
  auto tree = std::make_shared<const packfmt::TreeView>(entries);
  auto p =
      ChildProcess::spawn({ZDTM_LOOKER, fifo, dir / "elsewhere", conf + "/users.xml", dir / "link/users.xml",
                           "l:" + (dir / "link"), conf + "/Catalina/localhost/ROOT.xml", "d:" + conf,
                           "r:" + (dir / "link/users.xml"), "f:" + conf + "/users.xml", "r:" + conf + "/absent.xml"});
  ASSERT_TRUE(p.ok()) << p.error().message;
  for (Deadline d(Millis(10000)); !std::filesystem::exists(fifo + ".ready");)
    ASSERT_FALSE(d.expired()) << "zdtm_looker did not start";
  auto pol = Policy::builtin("zdtm_looker");
  ASSERT_TRUE(pol.ok()) << pol.error().message;
  auto t = Tracer::attach({TracedProcess{p->pid(), *pol, tree}});
  ASSERT_TRUE(t.ok()) << t.error().message;
  auto idle = (*t)->run(Deadline(Millis(1500)));
  ASSERT_TRUE(idle.ok()) << idle.error().message;
  EXPECT_FALSE(idle->has_value()) << "look-ups the tree answers woke: " << (*idle)->reason;
  EXPECT_GT((*t)->served(), 20u);

  EXPECT_EQ(poke_and_wait(**t, fifo), "newfstatat `" + (dir / "elsewhere") + "` by `zdtm_looker`");
  ::kill(p->pid(), SIGCONT);
  p->stop(Millis(0));
}

}  // namespace
// A hostile gateway's ways out of its container never run in the sink: a call through
// the 32-bit ABI (whose numbers the policy does not speak of), new namespaces, an io_uring
// (I/O no system call would show). Each is stopped before it happens and wakes the VM,
// named; idle housekeeping around it is served. No policy file can serve them.
// Whether this kernel runs system calls through the 32-bit ABI at all: without IA32
// emulation `int 0x80` kills the caller with SIGSEGV, and that way out does not exist.
bool kernel_runs_int80() {
  pid_t child = ::fork();
  if (child == 0) {
    long r = 20;  // getpid
    asm volatile("int $0x80" : "+a"(r) : : "memory");
    ::_exit(0);
  }
  int st = 0;
  ::waitpid(child, &st, 0);
  return WIFEXITED(st);
}

// Under the sink's seccomp filter too (as a restored gateway is): ptrace reports the call
// before seccomp judges it, so the VM still wakes for it.
TEST(TracerConfinement, WaysOutOfTheContainerAreStoppedBeforeTheyHappen) {
  const bool int80 = kernel_runs_int80();
  if (!int80) std::printf("this kernel has no 32-bit system call ABI: int 0x80 kills the caller\n");
  TempDir filter_dir = TempDir::create().value();
  const std::string filter = filter_dir / "filter";
  ASSERT_TRUE(sys::write_file(filter, seccomp_program()).ok());
  for (const auto& [mode, reason, filtered] :
       {std::tuple<std::string, std::string, bool>{"int80", "32-bit system call 20", false},
        {"unshare", "unshare by `zdtm_escaper`", false},
        {"uring", "io_uring_setup by `zdtm_escaper`", false},
        {"int80", "32-bit system call 20", true},
        {"unshare", "unshare by `zdtm_escaper`", true},
        {"uring", "io_uring_setup by `zdtm_escaper`", true}}) {
    SCOPED_TRACE(mode + (filtered ? " under the seccomp filter" : ""));
    if (mode == "int80" && !int80) continue;  // below: the kernel itself stops it
    TempDir dir = TempDir::create().value();
    const std::string fifo = dir / "trigger";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::vector<std::string> argv = {ZDTM_ESCAPER, fifo, mode};
    if (filtered) argv.insert(argv.end(), {"--filter", filter});
    auto p = ChildProcess::spawn(argv);
    ASSERT_TRUE(p.ok()) << p.error().message;
    for (Deadline d(Millis(10000)); !std::filesystem::exists(fifo + ".ready");)
      ASSERT_FALSE(d.expired()) << "zdtm_escaper did not start";
    auto pol = Policy::builtin("zdtm_escaper");
    ASSERT_TRUE(pol.ok()) << pol.error().message;
    auto t = Tracer::attach(p->pid(), *pol);
    ASSERT_TRUE(t.ok()) << t.error().message;
    auto idle = (*t)->run(Deadline(Millis(1000)));
    ASSERT_TRUE(idle.ok()) << idle.error().message;
    EXPECT_FALSE(idle->has_value()) << "idling woke: " << (*idle)->reason;
    EXPECT_EQ(poke_and_wait(**t, fifo), reason);
    // Detached stopped: the state shows it a moment later.
    for (Deadline d(Millis(2000)); state_of(p->pid()) != 'T' && !d.expired();) std::this_thread::sleep_for(Millis(20));
    EXPECT_EQ(state_of(p->pid()), 'T') << "left stopped before the call, for the VM";
    ::kill(p->pid(), SIGKILL);
    p->stop(Millis(0));
  }
  // With no tracer (a sinkd that died), the filter holds: each way out fails with EPERM
  // and the process goes on.
  for (const std::string mode : {"int80", "unshare", "uring"}) {
    SCOPED_TRACE(mode + " untraced");
    TempDir dir = TempDir::create().value();
    const std::string fifo = dir / "trigger";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    SpawnOptions opts;
    opts.capture = true;
    auto p = ChildProcess::spawn({ZDTM_ESCAPER, fifo, mode, "--filter", filter}, opts);
    ASSERT_TRUE(p.ok()) << p.error().message;
    for (Deadline d(Millis(10000)); !std::filesystem::exists(fifo + ".ready");)
      ASSERT_FALSE(d.expired()) << "zdtm_escaper did not start";
    UniqueFd trigger(::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    ASSERT_EQ(::write(trigger.get(), "x", 1), 1);
    std::string out;
    for (Deadline d(Millis(10000)); out.find('\n') == std::string::npos && !d.expired();) {
      pollfd pfd{p->out_fd(), POLLIN, 0};
      if (::poll(&pfd, 1, 100) == 1) {
        char buf[64];
        ssize_t n = ::read(p->out_fd(), buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, size_t(n));
      }
    }
    if (mode == "int80" && !int80) {
      auto st = p->wait(Deadline(Millis(10000)));
      ASSERT_TRUE(st.ok()) << st.error().message;
      EXPECT_EQ(st->signal, SIGSEGV) << "without IA32 emulation the kernel kills it";
      continue;
    }
    EXPECT_EQ(out, cat(-EPERM, "\n"));
    EXPECT_TRUE(p->running()) << "the filter refuses the call; the process goes on";
  }
  for (const char* line : {"serve mount", "serve init_module", "[sshd]\nafter ptrace", "serve io_uring_enter"}) {
    auto refused = Policy::parse(line, "sshd");
    ASSERT_FALSE(refused.ok()) << line;
    EXPECT_NE(refused.error().message.find("never runs in a sink"), std::string::npos) << refused.error().message;
  }
  auto pol = Policy::parse("serve openat", "");
  ASSERT_TRUE(pol.ok());
  EXPECT_EQ(pol->verdict(SYS_mount), Verdict::WakeBefore) << "not listed, still never served";
  EXPECT_EQ(pol->verdict(SYS_bpf), Verdict::WakeBefore);
}

}  // namespace seamless::sink
