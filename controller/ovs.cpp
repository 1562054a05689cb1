// SPDX-License-Identifier: Apache-2.0
// Open vSwitch redirect flows through ovs-vsctl / ovs-ofctl.
#include "controller/ovs.h"

#include <arpa/inet.h>

#include <cctype>
#include <sstream>

#include "common/process.h"
#include "common/sys.h"

namespace seamless::ctl {
namespace {

constexpr uint64_t kCookieMark = 0x5e1eULL << 48;
constexpr uint64_t kCookieMask = 0xffffULL << 48;

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace

uint64_t cookie_for(const std::string& domain) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (unsigned char c : domain) h = (h ^ c) * 1099511628211ULL;
  return kCookieMark | (h & ~kCookieMask);
}

bool is_seamless_cookie(uint64_t cookie) { return (cookie & kCookieMask) == kCookieMark; }

Result<void> check_mac(const std::string& mac) {
  bool good = mac.size() == 17;
  for (size_t i = 0; good && i < mac.size(); ++i)
    good = i % 3 == 2 ? mac[i] == ':' : std::isxdigit(static_cast<unsigned char>(mac[i])) != 0;
  if (!good) return make_error(ErrorKind::Invalid, "`", mac, "` is not a MAC address (xx:xx:xx:xx:xx:xx)");
  return ok();
}

Result<void> check_ipv4(const std::string& ip) {
  in_addr a{};
  if (ip.size() > 15 || ::inet_pton(AF_INET, ip.c_str(), &a) != 1)
    return make_error(ErrorKind::Invalid, "`", ip, "` is not an IPv4 address");
  return ok();
}

Result<void> check_ipv6(const std::string& ip) {
  in6_addr a{};
  if (ip.size() > 45 || ::inet_pton(AF_INET6, ip.c_str(), &a) != 1)
    return make_error(ErrorKind::Invalid, "`", ip, "` is not an IPv6 address");
  return ok();
}

Result<std::string> redirect_flows(const Redirect& r, const std::string& port) {
  if (!is_seamless_cookie(r.cookie)) return make_error(ErrorKind::Invalid, "cookie ", hex(r.cookie), " is not ours");
  SL_TRY(check_mac(r.mac));
  if (!is_number(port)) return make_error(ErrorKind::Invalid, "`", port, "` is not an OpenFlow port number");
  const std::string head = cat("cookie=", hex(r.cookie), ",");
  const std::string out = cat(",actions=output:", port, "\n");
  std::string flows = cat(head, "priority=100,dl_dst=", r.mac, out);
  // Broadcast ARP requests and neighbour solicitations for the VM's addresses go to the
  // sink alone: the paused VM cannot answer them, the sink container does.
  for (const auto& ip : r.ipv4) {
    SL_TRY(check_ipv4(ip));
    flows += cat(head, "priority=110,arp,arp_tpa=", ip, out);
  }
  for (const auto& ip : r.ipv6) {
    SL_TRY(check_ipv6(ip));
    flows += cat(head, "priority=110,icmp6,icmp_type=135,nd_target=", ip, out);
  }
  return flows;
}

Result<std::string> run_command(const std::vector<std::string>& argv, const std::string& input) {
  if (input.empty()) return run_ok(argv, Millis(30000));
  // ovs-ofctl reads a bundle from a file: "-" would need a pipe to its stdin.
  char tmpl[] = "/run/seamless-flows-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return errno_error("mkstemp `/run/seamless-flows-XXXXXX`");
  ::close(fd);
  const std::string path = tmpl;
  auto wrote = sys::write_file(path, input, 0600);
  if (!wrote.ok()) {
    ::unlink(path.c_str());
    return std::move(wrote).error();
  }
  std::vector<std::string> full = argv;
  for (auto& a : full)
    if (a == "-") a = path;
  auto r = run_ok(full, Millis(30000));
  ::unlink(path.c_str());
  return r;
}

Result<std::vector<std::string>> OvsSwitch::bridges() {
  auto out = SL_TRY(run_({"ovs-vsctl", "list-br"}, ""));
  std::vector<std::string> brs;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (auto b = trim(line); !b.empty()) brs.push_back(b);
  return brs;
}

Result<OvsSwitch::Port> OvsSwitch::port_of(const std::string& mac) {
  SL_TRY(check_mac(mac));
  auto out = SL_TRY(run_({"ovs-vsctl", "--bare", "--columns=name,ofport", "find", "interface",
                          cat("external_ids:attached-mac=\"", mac, "\"")},
                         ""));
  std::istringstream in(out);
  std::string name, ofport;
  in >> name >> ofport;
  if (name.empty()) return make_error(ErrorKind::NotFound, "no Open vSwitch interface carries MAC ", mac);
  if (!is_number(ofport) || ofport == "0")
    return make_error(ErrorKind::NotFound, "Open vSwitch interface `", name, "` (MAC ", mac, ") has no OpenFlow port");
  auto bridge = trim(SL_TRY(run_({"ovs-vsctl", "iface-to-br", name}, "")));
  if (bridge.empty()) return make_error(ErrorKind::NotFound, "interface `", name, "` is on no bridge");
  return Port{bridge, ofport};
}

Result<void> OvsSwitch::redirect(const Redirect& r) {
  auto vm = SL_TRY_CTX(port_of(r.mac), "the parked VM's port");
  auto sink = SL_TRY_CTX(port_of(r.to_mac), "the sink's port");
  if (vm.bridge != sink.bridge)
    return make_error(ErrorKind::Invalid, "the VM (MAC ", r.mac, ") is on bridge `", vm.bridge, "` but the sink (MAC ",
                      r.to_mac, ") on `", sink.bridge, "`");
  auto flows = SL_TRY(redirect_flows(r, sink.ofport));
  // One transaction: the old flows of this cookie go and the new ones come together.
  std::string bundle = cat("delete cookie=", hex(r.cookie), "/-1\n");
  std::istringstream in(flows);
  for (std::string line; std::getline(in, line);) bundle += "add " + line + "\n";
  SL_TRY_CTX(run_({"ovs-ofctl", "--bundle", "add-flows", vm.bridge, "-"}, bundle), "installing the redirect of ", r.mac,
             " on `", vm.bridge, "`");
  return ok();
}

Result<void> OvsSwitch::clear(uint64_t cookie) {
  for (const auto& br : SL_TRY(bridges()))
    SL_TRY_CTX(run_({"ovs-ofctl", "--bundle", "del-flows", br, cat("cookie=", hex(cookie), "/-1")}, ""),
               "removing flows ", hex(cookie), " from `", br, "`");
  return ok();
}

Result<std::vector<uint64_t>> OvsSwitch::cookies() {
  std::vector<uint64_t> out;
  for (const auto& br : SL_TRY(bridges())) {
    auto flows = SL_TRY(run_({"ovs-ofctl", "dump-flows", br}, ""));
    for (size_t at = 0; (at = flows.find("cookie=0x", at)) != std::string::npos;) {
      at += 7;
      uint64_t c = std::strtoull(flows.c_str() + at, nullptr, 16);
      if (is_seamless_cookie(c) && std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    }
  }
  return out;
}

}  // namespace seamless::ctl
