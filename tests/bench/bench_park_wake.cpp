// SPDX-License-Identifier: Apache-2.0
// Benchmark: reaction of each gateway of a VM, running (baseline) and parked in ram, swap
// and disk modes, in one run. Reaction = from the client's connect() (its first packet)
// to the first byte of the answer (a banner, or the answer to a page request); the wake
// triggers by itself on that request. Per parked run also the wake's breakdown (its wall
// time against its critical path: hand-back and resume overlap) and the host memory the
// parked VM holds. Park and wake run through the controller library, as seamlessd does.
// A mode wakes as seamlessd does by default; MODE+VARIANT wakes with one setting changed,
// side by side in the same rounds: +sink-first (wake-sink-first: the VM at the lowest CPU
// weight while the sink hands back), +deflate-early (wake-deflate-early: the balloon
// gives the guest all its memory back during the hand-back, not after the wake) or +roomN
// (wake-room-mib N: the memory the guest gets back before its restore). The ratios
// compare each variant of swap mode with the default.
//   bench_park_wake [--json] [--json-out FILE] [--memory MIB] [--gateways dropbear,...]
//                   [--modes ram,swap,disk,swap+sink-first,swap+deflate-early,swap+room128] [--rounds N]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "common/sys.h"
#include "controller/controller.h"
#include "hooks/cgroup.h"
#include "qmp/guest.h"
#include "qmp/json.h"
#include "tests/support/testbed.h"

using namespace seamless;

namespace {

struct Gw {
  std::string name;
  uint16_t port;
  bool http;
  std::string service;  // the template's boot script starts it
};
const Gw kGateways[] = {{"dropbear", 2222, false, "dropbear"},
                        {"openssh", 22, false, "sshd"},
                        {"lighttpd+php", 80, true, "lighttpd"},
                        {"apache2+php", 8080, true, "apache2"},
                        {"vsftpd", 21, false, "vsftpd"}};

struct Row {
  std::string gateway, mode;
  int round = 1;
  double reaction_s = 0;
  double wake_s = 0, critical_s = 0, serial_s = 0;
  double hand_back_s = 0, resume_s = 0, transfer_s = 0, restore_s = 0, switch_s = 0, release_s = 0;
  // held: QEMU's memory cgroup; tcg: its translation cache (in held, absent under KVM)
  double held_mib = 0, held_rss_mib = 0, tcg_mib = 0, held_pct = 0, park_s = 0;
};

// Connect, ask (HTTP) or wait for the banner, and time the first byte of the answer.
Result<double> reaction(const test::Testbed& bed, const std::string& ip, const Gw& gw, Millis timeout) {
  const auto t0 = Clock::now();
  auto fd = SL_TRY(bed.connect_from_client(ip, gw.port, timeout));
  if (gw.http)
    SL_TRY(sys::write_all(fd.get(), "GET /info.php HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
                          Deadline(Millis(5000))));
  char c;
  auto n = SL_TRY(sys::read_some(fd.get(), &c, 1, Deadline(timeout)));
  if (n != 1) return make_error(ErrorKind::Closed, gw.name, ": closed before answering");
  return seconds_since(t0);
}

double num(const qmp::Value& v, const char* k) {
  auto it = v.FindMember(k);
  return it != v.MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : 0;
}

int64_t rss_bytes(pid_t pid) {
  auto status = sys::read_file(cat("/proc/", pid, "/status"));
  if (!status.ok()) return 0;
  auto at = status->find("VmRSS:");
  return at == std::string::npos ? 0 : std::atoll(status->c_str() + at + 6) * 1024;
}

// Resident bytes of QEMU's anonymous executable mappings: TCG's translation cache, which
// grows with the guest code emulated (a prewarm runs a lot) and does not exist under KVM.
int64_t tcg_cache_bytes(pid_t pid) {
  auto smaps = sys::read_file(cat("/proc/", pid, "/smaps"));
  if (!smaps.ok()) return 0;
  std::istringstream in(*smaps);
  int64_t total = 0;
  bool anon_exec = false;
  for (std::string line; std::getline(in, line);) {
    std::istringstream w(line);
    std::string first, perms, offset, dev, inode, path;
    w >> first;
    if (first.find('-') != std::string::npos && first.back() != ':') {
      w >> perms >> offset >> dev >> inode >> path;
      anon_exec = perms.size() == 4 && perms[2] == 'x' && path.empty();
    } else if (first == "Rss:" && anon_exec) {
      int64_t kib = 0;
      w >> kib;
      total += kib * 1024;
    }
  }
  return total;
}

std::string fixed(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The wake settings of MODE+VARIANT: seamlessd's defaults with the one seamless.conf line
// the variant stands for, read by the configuration's own parser (which checks it).
Result<ctl::Config> wake_settings(const std::string& mode) {
  const size_t plus = mode.find('+');
  const std::string variant = plus == std::string::npos ? "" : mode.substr(plus + 1);
  std::string line;
  if (variant == "sink-first")
    line = "wake-sink-first yes";
  else if (variant == "deflate-early")
    line = "wake-deflate-early yes";
  else if (variant.starts_with("room"))
    line = "wake-room-mib " + variant.substr(4);
  else if (!variant.empty())
    return make_error(ErrorKind::Invalid, "unknown variant `", variant, "` (sink-first, deflate-early or roomN)");
  return ctl::parse_config(line + "\n", cat("mode `", mode, "`"));
}

int die(const Error& e) {
  std::fprintf(stderr, "bench_park_wake: %s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string json_out;
  int memory = 2048;
  int rounds = 1;
  std::vector<std::string> gateways = {"dropbear", "openssh", "lighttpd+php", "apache2+php", "vsftpd"};
  std::vector<std::string> modes = {"ram", "swap", "disk"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json")
      json = true;
    else if (a == "--json-out" && i + 1 < argc)
      json_out = argv[++i];
    else if (a == "--memory" && i + 1 < argc)
      memory = std::atoi(argv[++i]);
    else if (a == "--gateways" && i + 1 < argc)
      gateways = test::split_list(argv[++i]);
    else if (a == "--modes" && i + 1 < argc)
      modes = test::split_list(argv[++i]);
    else if (a == "--rounds" && i + 1 < argc)
      rounds = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr,
                   "usage: bench_park_wake [--json] [--json-out FILE] [--memory MIB] [--gateways a,b] [--modes m,n] "
                   "[--rounds N]\n");
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }
  std::map<std::string, ctl::Config> wake_of;
  for (const auto& m : modes) {
    const std::string base = m.substr(0, m.find('+'));
    if (base != "ram" && base != "swap" && base != "disk")
      return die(make_error(ErrorKind::Invalid, "unknown mode `", m, "` (ram, swap or disk, optionally +VARIANT)"));
    auto settings = wake_settings(m);
    if (!settings.ok()) return die(settings.error());
    wake_of[m] = *settings;
  }
  auto bed = test::Testbed::load();
  if (!bed.ok()) return die(bed.error());
  test::VmSpec sink = test::sink_vm_spec("sl-bench-sink", 31, SEAMLESS_SINKD_BIN, SEAMLESS_GUEST_BIN);
  sink.memory_mib = 1024;
  auto s = test::LibvirtGuest::boot(sink);
  if (!s.ok()) return die(s.error());
  auto conn = virt::Connection::open();
  if (!conn.ok()) return die(conn.error());
  ctl::Config cfg;
  cfg.sinks = {sink.name};
  ctl::OvsSwitch ovs;
  ctl::Controller controller(cfg, *conn, ovs);
  controller.start();
  for (Deadline d(Millis(120000));
       !d.expired() && controller.sinks_json().find("\"connected\":true") == std::string::npos;)
    std::this_thread::sleep_for(Millis(500));

  std::vector<Row> rows;
  for (const auto& name : gateways) {
    const Gw* gw = nullptr;
    for (const auto& k : kGateways)
      if (k.name == name) gw = &k;
    if (!gw) return die(make_error(ErrorKind::Invalid, "unknown gateway `", name, "`"));
    // A VM of its own per gateway: a wake moves every gateway of a VM.
    test::VmSpec guest;
    guest.name = "sl-bench-guest";
    guest.index = 32;
    guest.memory_mib = memory;
    guest.services = gw->service;
    guest.tools = {SEAMLESS_GUEST_BIN};
    auto g = test::LibvirtGuest::boot(guest);
    if (!g.ok()) return die(g.error());
    const std::string ip = bed->guest_ip(guest.index);
    // The boot script starts the gateway last: it may not listen yet.
    for (Deadline d(Millis(60000)); !d.expired() && !bed->connect_from_client(ip, gw->port, Millis(3000)).ok();)
      std::this_thread::sleep_for(Millis(1000));
    // Baseline: the VM running, its gateway at home.
    Row base{gw->name, "running"};
    auto r0 = reaction(*bed, ip, *gw, Millis(60000));
    if (!r0.ok()) return die(r0.error().wrap("baseline"));
    base.reaction_s = *r0;
    rows.push_back(base);
    // Rounds go through every mode in turn, so that the machine's drift reaches them alike.
    for (int round = 1; round <= rounds; ++round)
      for (const auto& mode : modes) {
        Row row{gw->name, mode, round};
        // Idle first: apache2 tops up its spare children for a second after a request.
        std::this_thread::sleep_for(Millis(3000));
        // MODE+VARIANT: the wake with that one setting changed from seamlessd's default.
        ctl::ParkOptions po;
        po.mode = mode.substr(0, mode.find('+'));
        const ctl::Config& settings = wake_of.at(mode);
        controller.set_wake_sink_first(settings.wake_sink_first);
        controller.set_wake_deflate_early(settings.wake_deflate_early);
        controller.set_wake_room_mib(settings.wake_room_mib);
        auto parked = controller.park(guest.name, po);
        if (!parked.ok()) return die(parked.error().wrap(cat(gw->name, " ", mode, ": park")));
        row.park_s = parked->report.seconds;
        std::this_thread::sleep_for(Millis(2000));
        if (po.mode != "disk") {
          if (auto pid = cgroup::qemu_pid(guest.name); pid.ok()) {
            auto group = cgroup::for_pid(*pid);
            int64_t usage = 0;
            if (group.ok())
              if (auto knobs = cgroup::libcgroup_knobs(*group); knobs.ok()) {
                cgroup::Memory mem(*group, std::move(*knobs));
                usage = mem.usage().ok() ? *mem.usage() : 0;
              }
            row.held_mib = usage / 1048576.0;
            row.held_rss_mib = rss_bytes(*pid) / 1048576.0;
            row.tcg_mib = tcg_cache_bytes(*pid) / 1048576.0;
          }
        }
        row.held_pct = 100.0 * (row.held_mib - row.tcg_mib) / memory;
        const auto before = controller.last_wake(guest.name);
        auto r = reaction(*bed, ip, *gw, Millis(600000));
        if (!r.ok()) return die(r.error().wrap(cat(gw->name, " ", mode, ": reaction")));
        row.reaction_s = *r;
        std::optional<std::string> wake;
        for (Deadline d(Millis(300000)); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
          wake = controller.last_wake(guest.name);
          if (wake && wake != before) break;
        }
        if (!wake || wake == before)
          return die(make_error(ErrorKind::Timeout, gw->name, " ", mode, ": no wake recorded"));
        auto wj = qmp::parse(*wake);
        if (!wj.ok()) return die(wj.error());
        const auto& w = wj->root();
        row.wake_s = num(w, "seconds");
        row.hand_back_s = num(w, "hand_back");
        row.resume_s = num(w, "resume");
        row.transfer_s = num(w, "transfer");
        row.restore_s = num(w, "restore");
        row.switch_s = num(w, "switch");
        row.release_s = num(w, "release");
        double rest = 0;
        if (auto steps = w.FindMember("steps"); steps != w.MemberEnd() && steps->value.IsArray())
          for (const auto& st : steps->value.GetArray())
            if (qmp::opt_string(st, "step").value_or("") != "hand-back+resume") rest += num(st, "seconds");
        row.critical_s = std::max(row.hand_back_s, row.resume_s) + rest;
        row.serial_s = row.hand_back_s + row.resume_s + rest;
        rows.push_back(row);
        std::fprintf(stderr,
                     "bench_park_wake: %s %s (round %d): reaction %.2f s, park %.1f s, held %.0f MiB, wake %s\n",
                     gw->name.c_str(), mode.c_str(), round, row.reaction_s, row.park_s, row.held_mib, wake->c_str());
        // Let the balloon come back before the next park.
        std::this_thread::sleep_for(Millis(5000));
      }
  }
  std::string lines;
  for (const auto& r : rows)
    lines +=
        cat("{\"gateway\": \"", r.gateway, "\", \"mode\": \"", r.mode, "\", \"reaction_s\": ", r.reaction_s,
            ", \"round\": ", r.round, ", \"park_s\": ", r.park_s, ", \"wake_s\": ", r.wake_s,
            ", \"critical_path_s\": ", r.critical_s, ", \"serial_s\": ", r.serial_s,
            ", \"hand_back_s\": ", r.hand_back_s, ", \"resume_s\": ", r.resume_s, ", \"transfer_s\": ", r.transfer_s,
            ", \"restore_s\": ", r.restore_s, ", \"switch_s\": ", r.switch_s, ", \"release_s\": ", r.release_s,
            ", \"held_mib\": ", r.held_mib, ", \"held_rss_mib\": ", r.held_rss_mib, ", \"tcg_cache_mib\": ", r.tcg_mib,
            ", \"held_pct\": ", r.held_pct, ", \"guest_mib\": ", memory, "}\n");
  if (!json_out.empty())
    if (auto wr = sys::write_file(json_out, lines); !wr.ok()) return die(wr.error());
  if (json) {
    std::fputs(lines.c_str(), stdout);
    return 0;
  }
  std::printf(
      "| gateway | mode | round | reaction s | park s | wake s | critical path s | wake / critical | hand-back s | "
      "resume s | transfer s | restore s | switch s | release s | held cgroup MiB | held RSS MiB | TCG cache MiB | "
      "held "
      "without TCG cache %% of RAM |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf(
        "| %s | %s | %d | %.2f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.1f | "
        "%.1f | "
        "%.1f |\n",
        r.gateway.c_str(), r.mode.c_str(), r.round, r.reaction_s, r.park_s, r.wake_s, r.critical_s,
        r.critical_s > 0 ? r.wake_s / r.critical_s : 0, r.hand_back_s, r.resume_s, r.transfer_s, r.restore_s,
        r.switch_s, r.release_s, r.held_mib, r.held_rss_mib, r.tcg_mib, r.held_pct);
  std::vector<std::string> variants;
  for (const auto& m : modes)
    if (m.starts_with("swap+")) variants.push_back(m);
  std::string head = "| gateway | swap / ram | swap / disk | ram / running |", rule = "|---|---|---|---|";
  for (const auto& v : variants) {
    head += cat(" ", v, " / swap | its hand-back / swap's |");
    rule += "---|---|";
  }
  std::printf("\nReaction ratios per gateway (medians over %d round(s)):\n\n%s\n%s\n", rounds, head.c_str(),
              rule.c_str());
  for (const auto& name : gateways) {
    auto median = [&](const std::string& mode, double Row::*field = &Row::reaction_s) {
      std::vector<double> v;
      for (const auto& r : rows)
        if (r.gateway == name && r.mode == mode) v.push_back(r.*field);
      if (v.empty()) return 0.0;
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    };
    const double run = median("running"), ram = median("ram"), swap = median("swap"), disk = median("disk");
    const double hb = median("swap", &Row::hand_back_s);
    // A ratio of a mode that did not run is "–", not 0.
    auto ratio = [](double a, double b, int digits) { return a > 0 && b > 0 ? fixed(a / b, digits) : "–"; };
    std::string line =
        cat("| ", name, " | ", ratio(swap, ram, 2), " | ", ratio(swap, disk, 2), " | ", ratio(ram, run, 1), " |");
    for (const auto& v : variants)
      line += cat(" ", ratio(median(v), swap, 2), " | ", ratio(median(v, &Row::hand_back_s), hb, 2), " |");
    std::printf("%s\n", line.c_str());
  }
  return 0;
}
