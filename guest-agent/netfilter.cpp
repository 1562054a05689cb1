// SPDX-License-Identifier: Apache-2.0
// iptables/ip6tables behind the Netfilter seam.
#include "guest-agent/netfilter.h"

#include <stdlib.h>
#include <unistd.h>

#include <sstream>

#include "common/fd.h"
#include "common/log.h"
#include "common/process.h"
#include "common/sys.h"

namespace seamless::guest {
namespace {

constexpr const char* kChain = "SEAMLESS-WATCH";
constexpr const char* kHold = "SEAMLESS-HOLD";
// CRIU marks its own repair traffic with SOCCR_MARK and locks everything else.
constexpr const char* kSoccrMark = "0xc114";

std::string port_list(const std::vector<uint16_t>& ports) {
  std::string out;
  for (size_t i = 0; i < ports.size(); ++i) out += cat(i ? "," : "", ports[i]);
  return out;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

int count_jumps(const std::string& save_output, const char* chain = kChain) {
  int n = 0;
  for (size_t at = 0; (at = save_output.find(cat("-A PREROUTING -j ", chain), at)) != std::string::npos; ++at) ++n;
  return n;
}

}  // namespace

std::string Activity::describe() const {
  std::vector<std::string> parts;
  if (new_connections) parts.push_back(cat(new_connections, " new connection(s)"));
  if (data_packets) parts.push_back(cat(data_packets, " data packet(s) on open connections"));
  if (datagrams) parts.push_back(cat(datagrams, " UDP datagram(s)"));
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? ", " : "") + parts[i];
  return out.empty() ? "none" : out;
}

Result<Activity> parse_watch_counters(std::string_view listing) {
  std::vector<uint64_t> counts;
  std::istringstream in{std::string(listing)};
  for (std::string line; std::getline(in, line);) {
    auto w = words(line);
    // Rule lines start with the packet count; headers start with "Chain" or "pkts".
    if (w.size() < 3 || w[0] == "Chain" || w[0] == "pkts") continue;
    char* end = nullptr;
    uint64_t n = std::strtoull(w[0].c_str(), &end, 10);
    if (*end != '\0') return make_error(ErrorKind::Protocol, "unexpected iptables line `", line, "`");
    counts.push_back(n);
  }
  if (counts.size() != 3) return make_error(ErrorKind::Protocol, "expected 3 watch rules, found ", counts.size());
  return Activity{counts[0], counts[1], counts[2]};
}

std::vector<std::vector<std::string>> criu_lock_deletions(std::string_view save_output) {
  std::vector<std::vector<std::string>> out;
  std::istringstream in{std::string(save_output)};
  std::string table;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] == '*') table = line.substr(1);
    if (table != "filter" || line.rfind("-A ", 0) != 0) continue;
    if (line.find(std::string("--mark ") + kSoccrMark) == std::string::npos ||
        line.find("-j DROP") == std::string::npos)
      continue;
    auto w = words(line);
    w[0] = "-D";
    out.push_back(std::move(w));
  }
  return out;
}

namespace {

// iptables-restore --noflush with a batch of rules: one exec instead of one per rule
// (each exec costs a lot under TCG).
Result<void> apply(const std::string& tool, const std::string& batch) {
  char path[] = "/tmp/seamless-iptables-XXXXXX";
  UniqueFd fd(::mkstemp(path));
  if (!fd.valid()) return errno_error("mkstemp for an iptables batch");
  auto written = sys::write_all(fd.get(), batch, Deadline(Millis(5000)));
  auto r = written.ok() ? run_ok({tool + "-restore", "-w", "--noflush", path}) : Result<std::string>(written.error());
  ::unlink(path);
  if (!r.ok()) return r.error().wrap(cat("applying `", batch, "`"));
  return ok();
}

}  // namespace

Result<void> Iptables::watch(const std::vector<uint16_t>& tcp, const std::vector<uint16_t>& udp) {
  unwatch();
  // multiport takes up to 15 ports; an empty list still needs a rule (it never matches).
  const std::string tp = tcp.empty() ? "0" : port_list(tcp), up = udp.empty() ? "0" : port_list(udp);
  const std::string batch = cat("*raw\n:", kChain, " - [0:0]\n",                                            //
                                "-A ", kChain, " -p tcp --syn -m multiport --dports ", tp, " -j RETURN\n",  //
                                "-A ", kChain, " -p tcp --tcp-flags SYN,PSH PSH -m multiport --dports ", tp,
                                " -j RETURN\n",                                                       //
                                "-A ", kChain, " -p udp -m multiport --dports ", up, " -j RETURN\n",  //
                                "-I PREROUTING 1 -j ", kChain, "\nCOMMIT\n");
  for (const char* tool : {"iptables", "ip6tables"}) SL_TRY(apply(tool, batch));
  return ok();
}

Result<Activity> Iptables::read_watch() {
  Activity total;
  for (const char* tool : {"iptables", "ip6tables"}) {
    auto listing = SL_TRY(run_ok({tool, "-w", "-t", "raw", "-L", kChain, "-v", "-x", "-n"}));
    auto a = SL_TRY_CTX(parse_watch_counters(listing), tool);
    total.new_connections += a.new_connections;
    total.data_packets += a.data_packets;
    total.datagrams += a.datagrams;
  }
  return total;
}

void Iptables::unwatch() {
  for (const std::string tool : {"iptables", "ip6tables"}) {
    auto saved = run_ok({tool + "-save", "-t", "raw"});
    if (!saved.ok() || saved->find(kChain) == std::string::npos) continue;
    std::string batch = "*raw\n";
    for (int i = 0, n = count_jumps(*saved); i < n; ++i) batch += cat("-D PREROUTING -j ", kChain, "\n");
    batch += cat("-F ", kChain, "\n-X ", kChain, "\nCOMMIT\n");
    if (auto r = apply(tool, batch); !r.ok()) SL_LOG(Warn, "guest", "removing the activity watch: ", r.error().message);
  }
}

Result<void> Iptables::hold_new(const std::vector<uint16_t>& tcp) {
  release_new();
  if (tcp.empty()) return ok();
  // Appended: the watch chain (inserted first) still counts what is dropped here.
  const std::string batch = cat("*raw\n:", kHold, " - [0:0]\n",  //
                                "-A ", kHold, " -p tcp --syn -m multiport --dports ", port_list(tcp), " -j DROP\n",
                                "-A PREROUTING -j ", kHold, "\nCOMMIT\n");
  for (const char* tool : {"iptables", "ip6tables"}) SL_TRY(apply(tool, batch));
  return ok();
}

void Iptables::release_new() {
  for (const std::string tool : {"iptables", "ip6tables"}) {
    auto saved = run_ok({tool + "-save", "-t", "raw"});
    if (!saved.ok() || saved->find(kHold) == std::string::npos) continue;
    std::string batch = "*raw\n";
    for (int i = 0, n = count_jumps(*saved, kHold); i < n; ++i) batch += cat("-D PREROUTING -j ", kHold, "\n");
    batch += cat("-F ", kHold, "\n-X ", kHold, "\nCOMMIT\n");
    if (auto r = apply(tool, batch); !r.ok()) SL_LOG(Warn, "guest", "releasing new connections: ", r.error().message);
  }
}

Result<int> Iptables::clear_criu_locks() {
  int removed = 0;
  for (const std::string tool : {"iptables", "ip6tables"}) {
    auto saved = SL_TRY(run_ok({tool + "-save", "-t", "filter"}));
    auto dels = criu_lock_deletions(saved);
    if (dels.empty()) continue;
    std::string batch = "*filter\n";
    for (const auto& del : dels) {
      for (size_t i = 0; i < del.size(); ++i) batch += (i ? " " : "") + del[i];
      batch += "\n";
    }
    SL_TRY(apply(tool, batch + "COMMIT\n"));
    removed += int(dels.size());
  }
  return removed;
}

}  // namespace seamless::guest
