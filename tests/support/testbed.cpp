// SPDX-License-Identifier: Apache-2.0
// Test bed environment and template VMs for integration tests.
#include "tests/support/testbed.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "common/sys.h"
#include "controller/ovs.h"
#include "hooks/cgroup.h"
#include "qmp/guest.h"

namespace seamless::test {
namespace {

constexpr const char* kStateFile = "/run/seamless-testbed/env";

std::string testbed_dir() {
  const char* d = std::getenv("SEAMLESS_TESTBED");
  return d ? d : "tests/testbed";
}

std::string cmdline(const Testbed& bed, const VmSpec& spec) {
  return cat("console=ttyS0 root=/dev/vda quiet seamless.ip=", bed.guest_ip(spec.index),
             "/24 seamless.hostname=", spec.name, " seamless.services=", spec.services);
}

}  // namespace

Result<void> make_overlay(const Testbed& bed, const VmSpec& spec, const std::string& disk) {
  const std::string image = SL_TRY(bed.image_of(spec.guest_template));
  SL_TRY(run_ok({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image + "/root.ext4", disk}));
  return ok();
}

Result<Testbed> Testbed::load() {
  auto text = sys::read_file(kStateFile);
  if (!text.ok()) return std::move(text).error().wrap("the test bed is not up (run tests/testbed/up as root)");
  std::map<std::string, std::string> kv;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  Testbed bed;
  auto need = [&](const char* key, std::string* out) -> Result<void> {
    auto it = kv.find(key);
    if (it == kv.end() || it->second.empty())
      return make_error(ErrorKind::Invalid, "test bed state `", kStateFile, "` lacks ", key);
    *out = it->second;
    return ok();
  };
  SL_TRY(need("IMAGE_DIR", &bed.image_dir));
  SL_TRY(need("SYSTEMD_IMAGE_DIR", &bed.systemd_image_dir));
  SL_TRY(need("BRIDGE", &bed.bridge));
  SL_TRY(need("NETNS", &bed.netns));
  SL_TRY(need("SUBNET_PREFIX", &bed.subnet_prefix));
  SL_TRY(need("CLIENT_IP", &bed.client_ip));
  SL_TRY(need("RUN_DIR", &bed.run_dir));
  return bed;
}

Result<std::string> Testbed::image_of(const std::string& guest_template) const {
  if (guest_template == "init") return image_dir;
  if (guest_template == "systemd") return systemd_image_dir;
  return make_error(ErrorKind::Invalid, "unknown guest template `", guest_template, "` (init or systemd)");
}

bool Testbed::answers_ping(const std::string& ip) const {
  auto r = run({"ip", "netns", "exec", netns, "ping", "-n", "-q", "-c", "3", "-i", "1", "-W", "1", ip});
  return r.ok() && r->status.success();
}

Result<UniqueFd> Testbed::udp_from_client() const {
  Result<UniqueFd> out = make_error(ErrorKind::System, "not run");
  std::thread([&] {
    UniqueFd ns(::open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid() || ::setns(ns.get(), CLONE_NEWNET) != 0) {
      out = errno_error(cat("entering netns `", netns, "`"));
      return;
    }
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) {
      out = errno_error("socket(AF_INET, SOCK_DGRAM)");
      return;
    }
    out = std::move(s);
  }).join();
  return out;
}

Result<UniqueFd> Testbed::connect_from_client(const std::string& ip, uint16_t port, Millis timeout) const {
  // setns() moves only the calling thread, so a short-lived thread makes the socket.
  Result<UniqueFd> out = make_error(ErrorKind::System, "not run");
  std::thread([&] {
    UniqueFd ns(::open(("/var/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) {
      out = errno_error(cat("open netns `", netns, "`"));
      return;
    }
    if (::setns(ns.get(), CLONE_NEWNET) != 0) {
      out = errno_error(cat("setns to `", netns, "`"));
      return;
    }
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
    timeval tv{timeout.count() / 1000, (timeout.count() % 1000) * 1000};
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      out = errno_error(cat("connect to ", ip, ":", port, " from `", netns, "`"));
      return;
    }
    out = std::move(s);
  }).join();
  return out;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string w; std::getline(in, w, ',');) out.push_back(w);
  return out;
}

VmSpec sink_vm_spec(const std::string& name, int index, const std::string& sinkd_bin, const std::string& guest_bin) {
  VmSpec sink;
  sink.name = name;
  sink.index = index;
  sink.services = "sinkd";
  sink.tools = {sinkd_bin, guest_bin};
  sink.sink_channel = true;
  return sink;
}

VmSpec bench_guest_spec(const std::string& name, int index, const std::string& guest_template,
                        const std::string& services, const std::string& guest_bin) {
  VmSpec spec;
  spec.name = name;
  spec.index = index;
  spec.guest_template = guest_template;
  spec.memory_mib = 1024;
  spec.services = services;
  spec.tools = {guest_bin};
  spec.ready_timeout = Millis(600000);
  return spec;
}

ClientKeepalives::ClientKeepalives(const Testbed& bed, int seconds) : netns_(bed.netns) {
  for (const char* key : kKeys) {
    auto v = run_ok({"ip", "netns", "exec", netns_, "sysctl", "-n", key});
    old_.push_back(v.ok() ? v->substr(0, v->find('\n')) : "");
    (void)run_ok({"ip", "netns", "exec", netns_, "sysctl", "-qw", cat(key, "=", seconds)});
  }
}

ClientKeepalives::~ClientKeepalives() {
  for (size_t i = 0; i < old_.size(); ++i)
    if (!old_[i].empty()) (void)run_ok({"ip", "netns", "exec", netns_, "sysctl", "-qw", cat(kKeys[i], "=", old_[i])});
}

Result<std::unique_ptr<ClientCapture>> ClientCapture::start(const Testbed& bed, const std::string& dir,
                                                            const std::string& filter) {
  std::unique_ptr<ClientCapture> c(new ClientCapture);
  c->file_ = dir + "/client.pcap";
  c->client_ip_ = bed.client_ip;
  std::filesystem::remove(c->file_);
  SpawnOptions so;
  so.stderr_path = dir + "/tcpdump.log";
  c->tcpdump_ = SL_TRY(ChildProcess::spawn(
      {"ip", "netns", "exec", bed.netns, "tcpdump", "-i", "any", "-U", "-n", "-w", c->file_, filter}, so));
  // Capturing once the file has its header.
  for (Deadline d(Millis(10000)); !d.expired(); std::this_thread::sleep_for(Millis(100))) {
    std::error_code ec;
    if (std::filesystem::file_size(c->file_, ec) >= 24 && !ec) {
      std::this_thread::sleep_for(Millis(300));
      return c;
    }
  }
  return make_error(ErrorKind::Timeout, "tcpdump did not start in the client namespace");
}

ClientCapture::~ClientCapture() { tcpdump_.stop(Millis(2000)); }

Result<ClientCapture::Summary> ClientCapture::stop() {
  std::this_thread::sleep_for(Millis(500));
  tcpdump_.stop(Millis(5000));
  auto text = SL_TRY(run_ok({"tcpdump", "-nn", "-S", "-r", file_}));
  return summarize_capture(text, client_ip_);
}

ClientCapture::Summary summarize_capture(const std::string& text, const std::string& client_ip) {
  ClientCapture::Summary s;
  std::set<std::string> seen;  // "src > dst flags seq" of client segments that carry a sequence
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find(" IP") == std::string::npos || line.find("Flags [") == std::string::npos) continue;
    ++s.packets;
    s.lines.push_back(line);
    auto flags_at = line.find("Flags [");
    auto flags = line.substr(flags_at + 7, line.find(']', flags_at) - flags_at - 7);
    if (flags.find('R') != std::string::npos) ++s.resets;
    // Client segments: "IP 10.77.0.1.PORT > ...". A SYN, or one with data (seq A:B), sent
    // twice is a retransmission.
    auto ip_at = line.find(" IP ");
    if (ip_at == std::string::npos || line.compare(ip_at + 4, client_ip.size() + 1, client_ip + ".") != 0) continue;
    auto seq_at = line.find(", seq ");
    if (seq_at == std::string::npos) continue;
    auto seq = line.substr(seq_at + 6, line.find(',', seq_at + 6) - seq_at - 6);
    const bool syn = flags.find('S') != std::string::npos;
    if (!syn && seq.find(':') == std::string::npos) continue;
    auto gt = line.find(" > ", ip_at);
    const std::string key = cat(line.substr(ip_at + 4, gt - ip_at - 4), " ", flags, " ", seq);
    if (!seen.insert(key).second) ++s.retransmitted;
  }
  return s;
}

Result<std::string> read_until(int fd, const std::string& expect, Millis timeout) {
  std::string got;
  char buf[4096];
  for (Deadline d(timeout); got.find(expect) == std::string::npos;) {
    // Waited for first: a blocking socket would otherwise hold the read past the deadline.
    if (auto ready = sys::wait_fd(fd, POLLIN, d); !ready.ok())
      return ready.error().wrap(cat("waiting for `", expect, "` (got `", got, "`)"));
    auto n = sys::read_some(fd, buf, sizeof buf, d);
    if (!n.ok()) return n.error().wrap(cat("waiting for `", expect, "` (got `", got, "`)"));
    if (*n == 0) return make_error(ErrorKind::Closed, "connection closed before `", expect, "` (got `", got, "`)");
    got.append(buf, *n);
  }
  return got;
}

// The product's switch seam does it (controller/ovs.h), with the cookie of the MAC.
Result<void> Testbed::redirect(const std::string& mac, const std::string& to_mac) const {
  ctl::OvsSwitch ovs;
  return ovs.redirect(ctl::Redirect{ctl::cookie_for(mac), mac, {}, {}, to_mac});
}

Result<void> Testbed::end_redirect(const std::string& mac) const {
  ctl::OvsSwitch ovs;
  return ovs.clear(ctl::cookie_for(mac));
}

std::string Testbed::guest_mac(int index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "52:54:00:5e:a0:%02x", (10 + index) & 0xff);
  return buf;
}

Result<std::unique_ptr<DirectVm>> DirectVm::boot(const Testbed& bed, const VmSpec& spec) {
  auto dir = SL_TRY(TempDir::create(bed.run_dir + "/direct-"));
  std::unique_ptr<DirectVm> vm(new DirectVm(std::move(dir)));
  vm->qmp_ = vm->dir_ / "qmp.sock";
  vm->qga_ = vm->dir_ / "qga.sock";
  vm->console_ = vm->dir_ / "console.log";
  std::string disk = vm->dir_ / "disk.qcow2";
  vm->pidfile_ = vm->dir_ / "qemu.pid";
  const std::string image = SL_TRY(bed.image_of(spec.guest_template));
  SL_TRY(make_overlay(bed, spec, disk));
  // A memory cgroup of its own, joined before QEMU runs (sh writes its pid, then execs).
  auto self = SL_TRY(
      cgroup::locate(SL_TRY(sys::read_file("/proc/self/mountinfo")), SL_TRY(sys::read_file("/proc/self/cgroup"))));
  vm->cgroup_ = cat(self.mount, "/seamless-", spec.name, "-", ::getpid());
  std::filesystem::create_directories(vm->cgroup_);
  // Direct VMs use user-mode networking: the OVS bridge belongs to libvirt domains.
  std::vector<std::string> argv = {"/bin/sh",
                                   "-c",
                                   "echo $$ > \"$0\" && exec \"$@\"",
                                   vm->cgroup_ + "/cgroup.procs",
                                   "qemu-system-x86_64",
                                   "-pidfile",
                                   vm->pidfile_,
                                   "-accel",
                                   "tcg",
                                   "-name",
                                   spec.name,
                                   "-m",
                                   std::to_string(spec.memory_mib),
                                   "-smp",
                                   "1",
                                   "-nodefaults",
                                   "-nographic",
                                   "-kernel",
                                   image + "/vmlinuz",
                                   "-initrd",
                                   image + "/initrd.img",
                                   "-append",
                                   cmdline(bed, spec),
                                   "-drive",
                                   "file=" + disk + ",if=virtio,format=qcow2",
                                   "-serial",
                                   "file:" + vm->console_,
                                   "-qmp",
                                   "unix:" + vm->qmp_ + ",server=on,wait=off",
                                   "-chardev",
                                   "socket,path=" + vm->qga_ + ",server=on,wait=off,id=qga0",
                                   "-device",
                                   "virtio-serial",
                                   "-device",
                                   "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                                   "-device",
                                   "virtio-balloon,id=balloon0",
                                   "-netdev",
                                   "user,id=n0,restrict=on",
                                   "-device",
                                   "virtio-net,netdev=n0,mac=" + Testbed::guest_mac(spec.index)};
  auto tools = SL_TRY(make_tools_disk(spec, vm->dir_.path()));
  if (!tools.empty()) argv.insert(argv.end(), {"-drive", "file=" + tools + ",if=virtio,format=raw,readonly=on"});
  SpawnOptions opts;
  opts.stdout_path = vm->dir_ / "qemu.log";
  opts.stderr_path = vm->dir_ / "qemu.log";
  vm->qemu_ = SL_TRY(ChildProcess::spawn(argv, opts));
  // QEMU creates its sockets before the guest runs.
  Deadline deadline(Millis(20000));
  while (!std::filesystem::exists(vm->qmp_) || !std::filesystem::exists(vm->qga_)) {
    if (!vm->qemu_.running()) {
      auto log = sys::read_file(vm->dir_ / "qemu.log");
      return make_error(ErrorKind::System, "qemu exited at start: ", log.ok() ? *log : "");
    }
    if (deadline.expired()) return make_error(ErrorKind::Timeout, "qemu did not create its sockets in 20 s");
    std::this_thread::sleep_for(Millis(20));
  }
  return vm;
}

DirectVm::~DirectVm() {
  // The QEMU running now may be a relaunch (suspend-to-disk) rather than our child.
  if (auto pid = sys::read_file(pidfile_); pid.ok()) {
    pid_t p = std::atoi(pid->c_str());
    if (p > 0 && ::kill(p, SIGKILL) == 0) {
      // A relaunched QEMU is our (released) child too: reap it, or wait for its exit.
      for (Deadline d(Millis(5000)); ::waitpid(p, nullptr, WNOHANG) == 0 && !d.expired();)
        std::this_thread::sleep_for(Millis(10));
    }
  }
  qemu_.stop(Millis(0));
  for (Deadline d(Millis(5000)); !cgroup_.empty() && ::rmdir(cgroup_.c_str()) != 0 && errno == EBUSY && !d.expired();)
    std::this_thread::sleep_for(Millis(20));
}

std::string DirectVm::console_log() const {
  auto log = sys::read_file(console_);
  return log.ok() ? *log : "(no console log)";
}

Result<void> wait_guest_ready(qmp::Channel& agent, Deadline deadline) {
  for (;;) {
    auto st = qmp::guest_run(agent, "/bin/test", {"-e", "/run/seamless-ready"});
    if (st.ok() && st->exitcode == 0) return ok();
    if (deadline.expired())
      return make_error(ErrorKind::Timeout, "guest services not ready (no /run/seamless-ready)",
                        st.ok() ? std::string() : ": " + st.error().message);
    std::this_thread::sleep_for(Millis(250));
  }
}

Result<std::unique_ptr<qmp::QgaSocket>> DirectVm::wait_for_agent(Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    auto agent = qmp::QgaSocket::connect(qga_, std::min(deadline.left(), Millis(3000)));
    if (agent.ok()) {
      SL_TRY(wait_guest_ready(**agent, deadline));
      return agent;
    }
    if (deadline.expired())
      return std::move(agent).error().wrap(cat("guest agent not up after ", timeout.count(), " ms"));
    if (!qemu_.running()) return make_error(ErrorKind::Closed, "qemu exited while booting");
    std::this_thread::sleep_for(Millis(500));
  }
}

Result<void> start_journal(qmp::Channel& agent) {
  // Copied in at run time: the guest image's recipe (and its cache key) stays as it is.
  for (const char* script : {"standin.pl", "exec.pl"}) {
    auto text = SL_TRY(sys::read_file(cat(testbed_dir(), "/journal/", script)));
    SL_TRY(qmp::guest_run_ok(agent, "/bin/mkdir", {"-p", "/run/seamless-test", "/run/systemd/journal"}));
    SL_TRY(qmp::write_guest_file(agent, cat("/run/seamless-test/journal-", script), text));
    SL_TRY(qmp::guest_run_ok(agent, "/bin/chmod", {"755", cat("/run/seamless-test/journal-", script)}));
  }
  SL_TRY(
      qmp::guest_run_ok(agent, "/bin/sh",
                        {"-c",
                         "pkill -f '^/usr/bin/perl /run/seamless-test/journal-s'; rm -f /run/journal.out; "
                         "(setsid /run/seamless-test/journal-standin.pl /run/systemd/journal/stdout /run/journal.out "
                         "</dev/null >/dev/null 2>&1 &); "
                         "for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/systemd/journal/stdout ] && exit 0; sleep 0.5; "
                         "done; exit 1"}));
  return ok();
}

Result<std::string> journal_text(qmp::Channel& agent) { return qmp::read_guest_file(agent, "/run/journal.out"); }

Result<std::string> make_tools_disk(const VmSpec& spec, const std::string& dir) {
  if (spec.tools.empty()) return std::string();
  const std::string staging = dir + "/tools", image = dir + "/tools.img";
  std::filesystem::create_directories(staging + "/bin");
  uintmax_t bytes = 0;
  for (const auto& tool : spec.tools) {
    const auto name = std::filesystem::path(tool).filename();
    std::error_code ec;
    std::filesystem::copy_file(tool, staging + "/bin/" + name.string(),
                               std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) return make_error(ErrorKind::System, "copying `", tool, "` onto the tools disk: ", ec.message());
    bytes += std::filesystem::file_size(tool);
  }
  const auto mib = std::to_string(bytes / (1 << 20) * 2 + 16) + "M";
  SL_TRY(run_ok({"mke2fs", "-q", "-F", "-t", "ext4", "-d", staging, image, mib}));
  return image;
}

Result<std::string> render_domain_xml(const std::string& template_path, const Testbed& bed, const VmSpec& spec,
                                      const std::string& disk, const std::string& console,
                                      const std::string& tools_disk) {
  auto xml = SL_TRY(sys::read_file(template_path));
  const std::string image = SL_TRY(bed.image_of(spec.guest_template));
  const std::string sink_xml =
      spec.sink_channel
          ? cat("<channel type='unix'><source mode='bind' path='", std::filesystem::path(disk).parent_path().string(),
                "/sinkd.sock'/><target type='virtio' name='org.seamless.sinkd.0'/></channel>")
          : "";
  const std::string tools_xml =
      tools_disk.empty() ? ""
                         : cat("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='",
                               tools_disk, "'/><target dev='vdb' bus='virtio'/><readonly/></disk>");
  const std::map<std::string, std::string> values = {
      {"@NAME@", spec.name},
      {"@MEMORY_MIB@", std::to_string(spec.memory_mib)},
      {"@KERNEL@", image + "/vmlinuz"},
      {"@INITRD@", image + "/initrd.img"},
      {"@CMDLINE@", cmdline(bed, spec)},
      {"@DISK@", disk},
      {"@CONSOLE_LOG@", console},
      {"@MAC@", Testbed::guest_mac(spec.index)},
      {"@BRIDGE@", bed.bridge},
      {"@TOOLS_DISK@", tools_xml},
      {"@SINK_CHANNEL@", sink_xml},
  };
  for (const auto& [key, value] : values)
    for (size_t at; (at = xml.find(key)) != std::string::npos;) xml.replace(at, key.size(), value);
  if (auto at = xml.find('@'); at != std::string::npos && xml.find('@', at + 1) != std::string::npos) {
    auto end = xml.find('@', at + 1);
    auto placeholder = xml.substr(at, end - at + 1);
    if (placeholder.find_first_of(" <>\"'") == std::string::npos)
      return make_error(ErrorKind::Invalid, "unfilled placeholder ", placeholder, " in `", template_path, "`");
  }
  return xml;
}

Result<std::unique_ptr<LibvirtVm>> LibvirtVm::boot(const Testbed& bed, const VmSpec& spec) {
  auto dir = SL_TRY(TempDir::create(bed.run_dir + "/libvirt-"));
  auto conn = SL_TRY(virt::Connection::open());
  std::unique_ptr<LibvirtVm> vm(new LibvirtVm(std::move(dir), std::move(conn)));
  // A domain left over from a crashed run would make the define fail confusingly.
  if (auto old = vm->conn_.lookup(spec.name); old.ok()) {
    (void)old->destroy();
    (void)old->undefine();
  }
  std::string disk = vm->dir_ / "disk.qcow2";
  vm->console_ = vm->dir_ / "console.log";
  SL_TRY(make_overlay(bed, spec, disk));
  auto tools = SL_TRY(make_tools_disk(spec, vm->dir_.path()));
  auto xml = SL_TRY(render_domain_xml(testbed_dir() + "/domain.xml.in", bed, spec, disk, vm->console_, tools));
  vm->domain_.emplace(SL_TRY(vm->conn_.define_and_start(xml)));
  return vm;
}

LibvirtVm::~LibvirtVm() {
  if (domain_) {
    (void)domain_->destroy();
    (void)domain_->undefine();
  }
}

std::string LibvirtVm::console_log() const {
  auto log = sys::read_file(console_);
  return log.ok() ? *log : "(no console log)";
}

Result<void> LibvirtVm::wait_for_agent(Millis timeout) {
  Deadline deadline(timeout);
  qmp::LibvirtAgent agent(*domain_);
  for (;;) {
    auto r = qmp::execute(agent, qmp::GuestPing{}, Millis(2000));
    if (r.ok()) return wait_guest_ready(agent, deadline);
    if (deadline.expired()) return std::move(r).error().wrap(cat("guest agent not up after ", timeout.count(), " ms"));
    std::this_thread::sleep_for(Millis(500));
  }
}

Result<std::unique_ptr<DirectGuest>> DirectGuest::boot(const VmSpec& spec) {
  auto bed = SL_TRY(Testbed::load());
  auto g = std::make_unique<DirectGuest>();
  g->vm = SL_TRY(DirectVm::boot(bed, spec));
  auto agent = g->vm->wait_for_agent(spec.ready_timeout);
  if (!agent.ok()) return std::move(agent).error().wrap(cat("console of `", spec.name, "`:\n", g->vm->console_log()));
  g->agent = std::move(agent).value();
  g->monitor = SL_TRY(qmp::QmpSocket::connect(g->vm->qmp_path()));
  return g;
}

Result<std::unique_ptr<LibvirtGuest>> LibvirtGuest::boot(const VmSpec& spec) {
  auto g = std::make_unique<LibvirtGuest>();
  g->bed = SL_TRY(Testbed::load());
  // A redirect an interrupted run left for this index would take the new VM's traffic.
  (void)g->bed.end_redirect(Testbed::guest_mac(spec.index));
  g->vm = SL_TRY(LibvirtVm::boot(g->bed, spec));
  if (auto up = g->vm->wait_for_agent(spec.ready_timeout); !up.ok())
    return std::move(up).error().wrap(cat("console of `", spec.name, "`:\n", g->vm->console_log()));
  g->monitor = SL_TRY(qmp::LibvirtMonitor::attach(g->vm->domain()));
  g->agent = std::make_unique<qmp::LibvirtAgent>(g->vm->domain());
  return g;
}

Result<std::unique_ptr<qmp::QmpSocket>> sink_control(const LibvirtGuest& sink, Millis timeout) {
  Result<std::unique_ptr<qmp::QmpSocket>> c = make_error(ErrorKind::Timeout, "not tried");
  for (Deadline d(timeout); !d.expired(); std::this_thread::sleep_for(Millis(1000))) {
    c = qmp::QmpSocket::connect(sink.vm->sink_socket(), Millis(3000));
    if (c.ok()) return c;
  }
  return c.error().wrap("sinkd control channel");
}

sink::proto::Client sink_client(qmp::QmpSocket& c) {
  return sink::proto::Client([&c](std::string_view command, const std::string& args, Millis timeout) {
    return c.call(command, args, timeout);
  });
}

}  // namespace seamless::test
