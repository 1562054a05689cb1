// SPDX-License-Identifier: Apache-2.0
// testbed-vm: start or stop a libvirt guest from the test bed's template.
//   testbed-vm start NAME [--index N] [--memory MIB] [--services a,b] [--template init|systemd]
//                         [--wait SECONDS]
//   testbed-vm stop NAME
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "common/process.h"
#include "qmp/commands.h"
#include "qmp/libvirt.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

constexpr const char* kUsage =
    "usage: testbed-vm start NAME [--index N] [--memory MIB] [--services a,b,...] [--tools FILE,...]\n"
    "                            [--template init|systemd] [--sink] [--wait SECONDS]\n"
    "       testbed-vm stop NAME\n"
    "Starts a libvirt guest from the test bed template (tests/testbed/up must have run)\n"
    "and waits for its guest agent; stop destroys and undefines it. --tools puts built binaries\n"
    "(e.g. build/guest-agent/seamless-guest) in the guest's /usr/sbin via a read-only disk.\n"
    "--template systemd boots the guest with systemd as PID 1, each service a Debian unit.\n"
    "--sink adds the sink daemon's virtio-serial channel (host end: RUN_DIR/NAME/sinkd.sock).\n";

int fail(const Error& e) {
  std::fprintf(stderr, "testbed-vm: error: %s\n", e.message.c_str());
  return 1;
}

int start(const test::VmSpec& spec, int wait_s) {
  auto bed = test::Testbed::load();
  if (!bed.ok()) return fail(bed.error());
  if (spec.name.rfind("sl-", 0) != 0) return fail(make_error(ErrorKind::Invalid, "test bed domains are named sl-*"));
  auto conn = virt::Connection::open();
  if (!conn.ok()) return fail(conn.error());
  if (conn->lookup(spec.name).ok())
    return fail(
        make_error(ErrorKind::Invalid, "domain `", spec.name, "` already exists (testbed-vm stop ", spec.name, ")"));
  std::string dir = bed->run_dir + "/" + spec.name;
  std::filesystem::create_directories(dir);
  std::string disk = dir + "/disk.qcow2", console = dir + "/console.log";
  if (auto made = test::make_overlay(*bed, spec, disk); !made.ok()) return fail(made.error());
  const char* tb = std::getenv("SEAMLESS_TESTBED");
  auto tools = test::make_tools_disk(spec, dir);
  if (!tools.ok()) return fail(tools.error());
  auto xml = test::render_domain_xml(std::string(tb ? tb : "tests/testbed") + "/domain.xml.in", *bed, spec, disk,
                                     console, *tools);
  if (!xml.ok()) return fail(xml.error());
  auto dom = conn->define_and_start(*xml);
  if (!dom.ok()) return fail(dom.error());
  qmp::LibvirtAgent agent(*dom);
  auto t0 = Clock::now();
  Deadline deadline(Millis(wait_s * 1000));
  while (!qmp::execute(agent, qmp::GuestPing{}, Millis(2000)).ok()) {
    if (deadline.expired())
      return fail(make_error(ErrorKind::Timeout, "guest agent of `", spec.name, "` not up after ", wait_s,
                             " s (console: ", console, ")"));
    std::this_thread::sleep_for(Millis(500));
  }
  if (auto ready = test::wait_guest_ready(agent, deadline); !ready.ok()) return fail(ready.error());
  std::printf("%s up at %s (services ready after %.1f s; console %s)\n", spec.name.c_str(),
              bed->guest_ip(spec.index).c_str(), seconds_since(t0), console.c_str());
  return 0;
}

int stop(const std::string& name) {
  auto conn = virt::Connection::open();
  if (!conn.ok()) return fail(conn.error());
  auto dom = conn->lookup(name);
  if (!dom.ok()) return fail(dom.error());
  (void)dom->destroy();
  if (auto r = dom->undefine(); !r.ok()) return fail(r.error());
  if (auto bed = test::Testbed::load(); bed.ok()) std::filesystem::remove_all(bed->run_dir + "/" + name);
  std::printf("%s stopped\n", name.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc < 3) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string verb = argv[1];
  test::VmSpec spec;
  spec.name = argv[2];
  int wait_s = 180;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--sink") {
      spec.sink_channel = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "testbed-vm: %s needs a value\n%s", a.c_str(), kUsage);
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--index")
      spec.index = std::atoi(v.c_str());
    else if (a == "--memory")
      spec.memory_mib = std::atoi(v.c_str());
    else if (a == "--services")
      spec.services = v;
    else if (a == "--template")
      spec.guest_template = v;
    else if (a == "--tools") {
      for (size_t start = 0; start <= v.size();) {
        size_t comma = v.find(',', start);
        std::string path = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (!path.empty()) spec.tools.push_back(std::filesystem::absolute(path).string());
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (a == "--wait")
      wait_s = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "testbed-vm: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (verb == "start") return start(spec, wait_s);
  if (verb == "stop") return stop(spec.name);
  std::fprintf(stderr, "testbed-vm: unknown verb %s\n%s", verb.c_str(), kUsage);
  return 2;
}
