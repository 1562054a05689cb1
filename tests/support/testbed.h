// SPDX-License-Identifier: Apache-2.0
// Test bed access for integration tests: the environment written by tests/testbed/up,
// and guest VMs from the template, either under plain QEMU (direct sockets) or as
// libvirt domains. Every VM is torn down by its owner on every path.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/process.h"
#include "common/tempdir.h"
#include "qmp/libvirt.h"
#include "qmp/socket.h"
#include "sinkd/protocol.h"
#include "tests/support/require.h"

namespace seamless::test {

struct Testbed {
  std::string image_dir;          // the init template: vmlinuz, initrd.img, root.ext4
  std::string systemd_image_dir;  // the systemd template (VmSpec::guest_template)
  std::string bridge;             // OVS bridge for guest NICs
  std::string netns;              // client network namespace on the bridge
  std::string subnet_prefix;      // "10.77.0." : guests get prefix + (10 + index)
  std::string client_ip;
  std::string run_dir;  // where VM files go
  // Reads the state file of tests/testbed/up; an error says what is missing.
  static Result<Testbed> load();
  // The image directory of a template ("init" or "systemd"); an error names an unknown one.
  Result<std::string> image_of(const std::string& guest_template) const;
  std::string guest_ip(int index) const { return subnet_prefix + std::to_string(10 + index); }
  static std::string guest_mac(int index);
  // A TCP connection made from the client namespace (the socket lives there; the fd is ours).
  Result<UniqueFd> connect_from_client(const std::string& ip, uint16_t port, Millis timeout = Millis(10000)) const;
  // An unbound UDP socket in the client namespace (for UDP gateways: TFTP, SNMP).
  Result<UniqueFd> udp_from_client() const;
  // Whether `ip` answers an ICMP echo from the client namespace (3 tries, 1 s apart).
  bool answers_ping(const std::string& ip) const;
  // Open vSwitch: frames for `mac` go to the port of the guest NIC carrying `to_mac`
  // (through the controller's switch seam), and back to learning.
  Result<void> redirect(const std::string& mac, const std::string& to_mac) const;
  Result<void> end_redirect(const std::string& mac) const;
};

struct VmSpec {
  std::string name = "sl-test";
  int index = 0;  // picks MAC/IP
  int memory_mib = 512;
  std::string services = "dropbear";
  // "init": busybox init starts the services (tests/testbed/guest/rc); "systemd": systemd
  // is PID 1 and each service is its Debian unit (tests/testbed/guest-systemd/).
  std::string guest_template = "init";
  // How long booting may take until the services are ready (a JVM under TCG is slow).
  Millis ready_timeout = Millis(120000);
  // Host files (built binaries) the guest finds in /opt/seamless/bin and on its PATH:
  // they ride on a small read-only second disk, so the cached image stays unchanged.
  std::vector<std::string> tools;
  // A virtio-serial port org.seamless.sinkd.0 whose host end is a unix socket (sink VMs).
  bool sink_channel = false;
};

// TCP keep-alives from the client namespace every `seconds` (the kernel's default waits
// two hours) while it lives; the old values come back after.
class ClientKeepalives {
 public:
  ClientKeepalives(const Testbed& bed, int seconds);
  ~ClientKeepalives();
  ClientKeepalives(const ClientKeepalives&) = delete;
  ClientKeepalives& operator=(const ClientKeepalives&) = delete;

 private:
  static constexpr const char* kKeys[] = {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_keepalive_intvl"};
  std::string netns_;
  std::vector<std::string> old_;
};

// A packet capture in the client namespace (tcpdump) while it lives; summary() counts
// what the client saw and sent.
class ClientCapture {
 public:
  static Result<std::unique_ptr<ClientCapture>> start(const Testbed& bed, const std::string& dir,
                                                      const std::string& filter);
  ~ClientCapture();
  struct Summary {
    int packets = 0;
    int resets = 0;                  // TCP segments with RST, either way
    int retransmitted = 0;           // client segments (SYN or data) sent again with the same sequence numbers
    std::vector<std::string> lines;  // tcpdump's text, for messages
  };
  // Stops the capture and reads it back.
  Result<Summary> stop();

 private:
  ClientCapture() = default;
  std::string file_, client_ip_;
  ChildProcess tcpdump_;
};
// Counts resets and client retransmissions in `tcpdump -nn -S -r` text (exposed for unit tests).
ClientCapture::Summary summarize_capture(const std::string& text, const std::string& client_ip);

// A copy-on-write disk over the template's root file system (the template stays untouched).
Result<void> make_overlay(const Testbed& bed, const VmSpec& spec, const std::string& disk);

// "a,b,c" -> {"a", "b", "c"} (benchmark and tool arguments).
std::vector<std::string> split_list(const std::string& s);

// A sink VM as the tests and benchmarks boot it: seamless-sinkd on its virtio-serial
// channel, the project's sinkd and guest helper on its tools disk.
VmSpec sink_vm_spec(const std::string& name, int index, const std::string& sinkd_bin, const std::string& guest_bin);
// A guest of `guest_template` as the benchmarks boot it: 1024 MiB (room for a JVM),
// `services`, the guest helper on its tools disk, up to ten minutes to be ready.
VmSpec bench_guest_spec(const std::string& name, int index, const std::string& guest_template,
                        const std::string& services, const std::string& guest_bin);

// Reads from fd until `expect` shows up; returns everything read.
Result<std::string> read_until(int fd, const std::string& expect, Millis timeout = Millis(60000));

// QEMU started directly with its own QMP and QGA sockets (TCG), in a memory cgroup of
// its own (as the suspend engine needs for plain QEMU).
class DirectVm {
 public:
  static Result<std::unique_ptr<DirectVm>> boot(const Testbed& bed, const VmSpec& spec);
  ~DirectVm();
  const std::string& qmp_path() const { return qmp_; }
  const std::string& qga_path() const { return qga_; }
  const std::string& dir() const { return dir_.path(); }
  std::string console_log() const;
  // Waits until the guest agent answers a sync (the guest has booted).
  Result<std::unique_ptr<qmp::QgaSocket>> wait_for_agent(Millis timeout = Millis(120000));

 private:
  DirectVm(TempDir dir) : dir_(std::move(dir)) {}
  TempDir dir_;
  std::string qmp_, qga_, console_, pidfile_, cgroup_;
  ChildProcess qemu_;
};

// A libvirt domain defined from tests/testbed/domain.xml.in; destroyed and undefined on exit.
class LibvirtVm {
 public:
  static Result<std::unique_ptr<LibvirtVm>> boot(const Testbed& bed, const VmSpec& spec);
  ~LibvirtVm();
  virt::Domain& domain() { return *domain_; }
  std::string console_log() const;
  // The host end of the sinkd channel (VmSpec::sink_channel).
  std::string sink_socket() const { return dir_ / "sinkd.sock"; }
  Result<void> wait_for_agent(Millis timeout = Millis(120000));

 private:
  LibvirtVm(TempDir dir, virt::Connection conn) : dir_(std::move(dir)), conn_(std::move(conn)) {}
  TempDir dir_;
  virt::Connection conn_;
  std::optional<virt::Domain> domain_;
  std::string console_;
};

// A booted guest with its services ready, as integration fixtures use them. Errors
// carry the guest's console log.
struct DirectGuest {
  std::unique_ptr<DirectVm> vm;
  std::unique_ptr<qmp::QmpSocket> monitor;
  std::unique_ptr<qmp::QgaSocket> agent;
  static Result<std::unique_ptr<DirectGuest>> boot(const VmSpec& spec);
};
struct LibvirtGuest {
  Testbed bed;
  std::unique_ptr<LibvirtVm> vm;
  std::unique_ptr<qmp::LibvirtMonitor> monitor;
  std::unique_ptr<qmp::LibvirtAgent> agent;
  static Result<std::unique_ptr<LibvirtGuest>> boot(const VmSpec& spec);
};

// sinkd's control channel in a sink VM (sink_vm_spec): it answers once sinkd has started,
// and the socket takes one client at a time (retried until `timeout`).
Result<std::unique_ptr<qmp::QmpSocket>> sink_control(const LibvirtGuest& sink, Millis timeout = Millis(60000));
// sinkd's commands, typed, over a control connection.
sink::proto::Client sink_client(qmp::QmpSocket& c);

// Waits until the guest's boot script has started its services (/run/seamless-ready);
// the guest agent answers a few seconds before they listen.
Result<void> wait_guest_ready(qmp::Channel& agent, Deadline deadline);

// systemd's journal in a test guest, which runs no systemd: a stand-in listens at
// /run/systemd/journal/stdout and appends every stream to /run/journal.out, and
// kJournalExec IDENTIFIER COMMAND... starts a command as systemd starts a unit whose
// output goes to the journal (tests/testbed/journal/).
inline constexpr const char* kJournalExec = "/run/seamless-test/journal-exec.pl";
Result<void> start_journal(qmp::Channel& agent);
Result<std::string> journal_text(qmp::Channel& agent);

// Builds DIR/tools.img from spec.tools; "" when there are none.
Result<std::string> make_tools_disk(const VmSpec& spec, const std::string& dir);

// Renders the domain XML template with the given values (exposed for unit tests).
Result<std::string> render_domain_xml(const std::string& template_path, const Testbed& bed, const VmSpec& spec,
                                      const std::string& disk, const std::string& console,
                                      const std::string& tools_disk = "");

}  // namespace seamless::test
