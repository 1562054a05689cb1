// SPDX-License-Identifier: Apache-2.0
// iptables/ip6tables behind the Netfilter seam.
#include "guest-agent/netfilter.h"

#include <sstream>

#include "common/process.h"

namespace seamless::guest {
namespace {

constexpr const char* kChain = "SEAMLESS-WATCH";
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

Result<void> Iptables::watch(const std::vector<uint16_t>& tcp, const std::vector<uint16_t>& udp) {
  unwatch();
  for (const char* tool : {"iptables", "ip6tables"}) {
    auto t = [&](std::vector<std::string> args) {
      args.insert(args.begin(), {tool, "-w", "-t", "raw"});
      return run_ok(args);
    };
    SL_TRY(t({"-N", kChain}));
    // multiport takes up to 15 ports; an empty list still needs a rule (it never matches).
    const std::string tp = tcp.empty() ? "0" : port_list(tcp), up = udp.empty() ? "0" : port_list(udp);
    SL_TRY(t({"-A", kChain, "-p", "tcp", "--syn", "-m", "multiport", "--dports", tp, "-j", "RETURN"}));
    SL_TRY(t({"-A", kChain, "-p", "tcp", "--tcp-flags", "SYN,PSH", "PSH", "-m", "multiport", "--dports", tp, "-j",
              "RETURN"}));
    SL_TRY(t({"-A", kChain, "-p", "udp", "-m", "multiport", "--dports", up, "-j", "RETURN"}));
    SL_TRY(t({"-I", "PREROUTING", "1", "-j", kChain}));
  }
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
  for (const char* tool : {"iptables", "ip6tables"}) {
    (void)run({tool, "-w", "-t", "raw", "-D", "PREROUTING", "-j", kChain});
    (void)run({tool, "-w", "-t", "raw", "-F", kChain});
    (void)run({tool, "-w", "-t", "raw", "-X", kChain});
  }
}

Result<int> Iptables::clear_criu_locks() {
  int removed = 0;
  for (const char* tool : {"iptables", "ip6tables"}) {
    auto saved = SL_TRY(run_ok({std::string(tool) + "-save", "-t", "filter"}));
    for (auto& del : criu_lock_deletions(saved)) {
      del.insert(del.begin(), {tool, "-w", "-t", "filter"});
      SL_TRY(run_ok(del));
      ++removed;
    }
  }
  return removed;
}

}  // namespace seamless::guest
