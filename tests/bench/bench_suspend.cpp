// SPDX-License-Identifier: Apache-2.0
// Benchmark: suspend-to-RAM, -disk and -swap (with and without prefetch) side by side on
// libvirt guests of several sizes. Per run: time to park, host memory still held by the
// parked VM (cgroup usage and QEMU's RSS), and time from resume to the first byte of an
// answer to a new HTTP request (lighttpd + PHP) from the client namespace.
//   bench_suspend [--json] [--json-out FILE] [--sizes 512,1024,2048]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "common/sys.h"
#include "hooks/libvirt_domain.h"
#include "qmp/guest.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

struct Row {
  int guest_mib;
  std::string mode;
  double park_s;
  double held_cgroup_mib, held_rss_mib, held_pct;
  double resume_to_answer_s;
};

// A TCP socket created inside the client network namespace (setns affects one thread).
Result<UniqueFd> client_socket(const std::string& netns) {
  Result<UniqueFd> out = make_error(ErrorKind::System, "not run");
  std::thread([&] {
    auto ns = sys::open("/var/run/netns/" + netns, O_RDONLY);
    if (!ns.ok()) {
      out = std::move(ns).error();
      return;
    }
    if (::setns(ns->get(), CLONE_NEWNET) != 0) {
      out = errno_error("setns into `" + netns + "`");
      return;
    }
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    out = fd < 0 ? Result<UniqueFd>(errno_error("socket")) : Result<UniqueFd>(UniqueFd(fd));
  }).join();
  return out;
}

// Connects (retrying while the guest is not back yet), sends one request, waits for the
// first byte of the answer. Returns when that byte arrived.
Result<Clock::time_point> first_answer(const std::string& netns, const std::string& ip, int port, Millis timeout) {
  Deadline deadline(timeout);
  for (;;) {
    auto fd = SL_TRY(client_socket(netns));
    timeval tv{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const char req[] = "GET /info.php HTTP/1.0\r\n\r\n";
      if (::send(fd.get(), req, sizeof req - 1, MSG_NOSIGNAL) > 0) {
        char c;
        if (::recv(fd.get(), &c, 1, 0) == 1) return Clock::now();
      }
    }
    if (deadline.expired()) return make_error(ErrorKind::Timeout, "no answer from ", ip, ":", port);
    std::this_thread::sleep_for(Millis(10));
  }
}

int64_t rss_bytes(pid_t pid) {
  auto status = sys::read_file("/proc/" + std::to_string(pid) + "/status");
  if (!status.ok()) return 0;
  std::istringstream in(*status);
  std::string key;
  int64_t kib = 0;
  while (in >> key) {
    if (key == "VmRSS:" && in >> kib) return kib * 1024;
    in.ignore(1 << 10, '\n');
  }
  return 0;
}

Result<void> fill_guest(qmp::Channel& agent, int mib) {
  qmp::RunOptions o;
  o.timeout = Millis(600000);
  SL_TRY(
      qmp::guest_run_ok(agent, "/bin/sh",
                        {"-c", "mount -o remount,size=95% /dev/shm && head -c " + std::to_string((mib * 3 / 4) << 20) +
                                   " /dev/urandom > /dev/shm/fill; rm -f /dev/shm/fill; sync"},
                        o));
  return ok();
}

Result<Row> measure(const test::Testbed& bed, int index, virt::Domain& vdom, suspend::LibvirtDomain& dom, int mib,
                    const std::string& label, suspend::Mode mode, bool prefetch) {
  Row row{mib, label, 0, 0, 0, 0, 0};
  SL_TRY_CTX(fill_guest(*dom.agent(), mib), "filling the guest");
  // One request before parking: every mode starts from a recently used service.
  SL_TRY_CTX(first_answer(bed.netns, bed.guest_ip(index), 80, Millis(60000)), "warm-up request");
  suspend::Options opts;
  opts.mode = mode;
  if (prefetch)
    opts.prefetch = {
        "/bin/bash", "-c",
        "exec 3<>/dev/tcp/127.0.0.1/80; printf 'GET /info.php HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3 >/dev/null"};
  auto host = SL_TRY(suspend::host_memory());
  SL_TRY(suspend::precheck(dom, opts, host));
  auto t0 = Clock::now();
  auto parked = SL_TRY(suspend::suspend(dom, opts));
  row.park_s = seconds_since(t0);
  std::this_thread::sleep_for(Millis(2000));
  if (mode != suspend::Mode::Disk) {
    auto mem = SL_TRY(dom.memory());
    row.held_cgroup_mib = SL_TRY(mem->usage()) / 1048576.0;
    row.held_rss_mib = rss_bytes(SL_TRY(cgroup::qemu_pid(vdom.name()))) / 1048576.0;
  }
  row.held_pct = 100.0 * row.held_cgroup_mib / mib;
  auto t1 = Clock::now();
  SL_TRY(suspend::resume(dom, parked));
  auto answered = SL_TRY(first_answer(bed.netns, bed.guest_ip(index), 80, Millis(120000)));
  row.resume_to_answer_s = std::chrono::duration<double>(answered - t1).count();
  // Let the balloon deflate and the guest settle before the next run.
  for (Deadline d(Millis(60000)); !d.expired(); std::this_thread::sleep_for(Millis(300))) {
    auto b = qmp::execute(dom.monitor(), qmp::QueryBalloon{});
    if (b.ok() && b->actual == (int64_t(mib) << 20)) break;
  }
  return row;
}

int die(const Error& e) {
  std::fprintf(stderr, "bench_suspend: %s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string json_out;
  std::vector<int> sizes = {512, 1024, 2048};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json")
      json = true;
    else if (a == "--json-out" && i + 1 < argc)
      json_out = argv[++i];
    else if (a == "--sizes" && i + 1 < argc) {
      sizes.clear();
      std::stringstream ss(argv[++i]);
      for (std::string s; std::getline(ss, s, ',');) sizes.push_back(std::atoi(s.c_str()));
    } else {
      std::fprintf(stderr, "usage: bench_suspend [--json] [--json-out FILE] [--sizes 512,1024,2048]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  auto bed = test::Testbed::load();
  if (!bed.ok()) return die(bed.error());
  std::vector<Row> rows;
  for (int mib : sizes) {
    test::VmSpec spec;
    spec.name = "sl-bench-" + std::to_string(mib);
    spec.index = 30;
    spec.memory_mib = mib;
    spec.services = "lighttpd";
    auto vm = test::LibvirtVm::boot(*bed, spec);
    if (!vm.ok()) return die(vm.error());
    if (auto up = (*vm)->wait_for_agent(); !up.ok()) return die(up.error());
    auto dom = suspend::LibvirtDomain::open((*vm)->domain());
    if (!dom.ok()) return die(dom.error());
    const std::pair<const char*, std::pair<suspend::Mode, bool>> runs[] = {
        {"ram", {suspend::Mode::Ram, false}},
        {"disk", {suspend::Mode::Disk, false}},
        {"swap", {suspend::Mode::Swap, false}},
        {"swap+prefetch", {suspend::Mode::Swap, true}}};
    for (const auto& [label, how] : runs) {
      auto row = measure(*bed, spec.index, (*vm)->domain(), **dom, mib, label, how.first, how.second);
      if (!row.ok()) return die(row.error().wrap(cat(mib, " MiB ", label)));
      std::fprintf(stderr, "bench_suspend: %d MiB %s done\n", mib, label);
      rows.push_back(*row);
    }
  }
  std::string lines;
  for (const auto& r : rows)
    lines += cat("{\"guest_mib\": ", r.guest_mib, ", \"mode\": \"", r.mode, "\", \"park_s\": ", r.park_s,
                 ", \"held_cgroup_mib\": ", r.held_cgroup_mib, ", \"held_rss_mib\": ", r.held_rss_mib,
                 ", \"held_pct\": ", r.held_pct, ", \"resume_to_answer_s\": ", r.resume_to_answer_s, "}\n");
  if (!json_out.empty()) {
    if (auto w = sys::write_file(json_out, lines); !w.ok()) return die(w.error());
  }
  if (json) {
    std::fputs(lines.c_str(), stdout);
    return 0;
  }
  std::printf("| guest MiB | mode | park s | held cgroup MiB | held RSS MiB | held %% of RAM | resume→answer s |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %d | %s | %.2f | %.1f | %.1f | %.1f | %.3f |\n", r.guest_mib, r.mode.c_str(), r.park_s,
                r.held_cgroup_mib, r.held_rss_mib, r.held_pct, r.resume_to_answer_s);
  std::printf(
      "\nRatios per guest size (resume→answer):\n\n| guest MiB | swap+prefetch / ram | swap+prefetch / disk | swap / "
      "ram |\n|---|---|---|---|\n");
  for (size_t i = 0; i + 3 < rows.size(); i += 4) {
    const Row &ram = rows[i], &disk = rows[i + 1], &swap = rows[i + 2], &pre = rows[i + 3];
    std::printf("| %d | %.2f | %.3f | %.2f |\n", ram.guest_mib, pre.resume_to_answer_s / ram.resume_to_answer_s,
                pre.resume_to_answer_s / disk.resume_to_answer_s, swap.resume_to_answer_s / ram.resume_to_answer_s);
  }
  return 0;
}
