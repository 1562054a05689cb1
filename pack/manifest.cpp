// SPDX-License-Identifier: Apache-2.0
// Manifest JSON in and out.
#include "pack/manifest.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "common/process.h"
#include "pack/pack.h"
#include "qmp/json.h"

namespace seamless::packfmt {
namespace {

using qmp::Value;

std::string strings_json(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += cat(i ? "," : "", qmp::quote(v[i]));
  return out + "]";
}

template <typename T, typename F>
std::string array_json(const std::vector<T>& v, F&& one) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + one(v[i]);
  return out + "]";
}

Result<const Value*> array_field(const Value& obj, const char* name) {
  const Value* v = SL_TRY(qmp::field(obj, name));
  if (!v->IsArray()) return make_error(ErrorKind::Protocol, "field `", name, "` is not an array");
  return v;
}

Result<const Value*> bounded_array(const Value& obj, const char* name, size_t max) {
  const Value* v = SL_TRY(array_field(obj, name));
  if (v->Size() > max)
    return make_error(ErrorKind::Protocol, "field `", name, "` has ", v->Size(), " entries (at most ", max, ")");
  return v;
}

Result<std::vector<std::string>> string_array(const Value& obj, const char* name) {
  const Value* v = SL_TRY(array_field(obj, name));
  std::vector<std::string> out;
  for (const auto& e : v->GetArray()) {
    if (!e.IsString()) return make_error(ErrorKind::Protocol, "field `", name, "` holds a non-string");
    out.emplace_back(e.GetString(), e.GetStringLength());
  }
  return out;
}

Result<int64_t> bounded_int(const Value& obj, const char* name, int64_t lo, int64_t hi) {
  int64_t v = SL_TRY(qmp::get_int(obj, name));
  if (v < lo || v > hi) return make_error(ErrorKind::Protocol, "field `", name, "` is out of range (", v, ")");
  return v;
}

Result<void> check_object(const Value& v, const char* what) {
  if (!v.IsObject()) return make_error(ErrorKind::Protocol, what, " is not an object");
  return ok();
}

// Text for a journal stream header line: printable, one line, bounded.
Result<std::string> header_field(const Value& obj, const char* name) {
  std::string v = SL_TRY(qmp::get_string(obj, name));
  if (v.size() > 256) return make_error(ErrorKind::Protocol, "stream field `", name, "` is too long");
  for (unsigned char c : v)
    if (c < 0x20 || c == 0x7f) return make_error(ErrorKind::Protocol, "stream field `", name, "` holds a control byte");
  return v;
}

Result<OutsideStream> parse_stream(const Value& s) {
  SL_TRY(check_object(s, "stream"));
  OutsideStream out;
  out.inode = uint64_t(SL_TRY(bounded_int(s, "inode", 1, 0xffffffffLL)));
  out.peer = SL_TRY(qmp::get_string(s, "peer"));
  // A unix address: an absolute path or an abstract name, no NUL, fits sun_path.
  if (out.peer.size() < 2 || out.peer.size() > 107 || (out.peer[0] != '/' && out.peer[0] != '@') ||
      out.peer.find('\0') != std::string::npos)
    return make_error(ErrorKind::Protocol, "stream peer `", out.peer, "` is not a unix socket address");
  out.identifier = SL_TRY(header_field(s, "identifier"));
  out.unit = SL_TRY(header_field(s, "unit"));
  for (const auto& h : SL_TRY(array_field(s, "holders"))->GetArray()) {
    SL_TRY(check_object(h, "stream holder"));
    out.holders.push_back(
        StreamHolder{pid_t(SL_TRY(bounded_int(h, "pid", 1, 4194304))), int(SL_TRY(bounded_int(h, "fd", 0, 1 << 20)))});
  }
  if (out.holders.empty()) return make_error(ErrorKind::Protocol, "stream `", out.peer, "` has no holder");
  return out;
}

Result<PackedGateway> parse_gateway(const Value& g) {
  SL_TRY(check_object(g, "gateway"));
  PackedGateway out;
  out.root = pid_t(SL_TRY(bounded_int(g, "root", 2, 4194304)));
  out.name = SL_TRY(qmp::get_string(g, "name"));
  if (out.name.empty() || !valid_text(out.name, 64))
    return make_error(ErrorKind::Protocol, "gateway name ", qmp::quote(out.name), " is not a process name");
  out.exe = SL_TRY(qmp::get_string(g, "exe"));
  if (!is_plain_absolute(out.exe) || out.exe.size() > 4095)
    return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: executable ", qmp::quote(out.exe),
                      " is not a plain absolute path");
  out.dir = SL_TRY(qmp::get_string(g, "dir"));
  SL_TRY_CTX(check_entry_name(out.dir), "gateway `", out.name, "` image directory");
  out.shell_job = SL_TRY(qmp::get_bool(g, "shell_job"));
  if (g.HasMember("unit")) {  // packs from guests without systemd have none
    out.unit = SL_TRY(qmp::get_string(g, "unit"));
    if (!valid_service_name(out.unit))
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: `", out.unit, "` is not a service unit name");
    out.unit_main = pid_t(SL_TRY(bounded_int(g, "unit_main", 2, 4194304)));
    if (g.HasMember("own_mount_ns")) out.own_mount_ns = SL_TRY(qmp::get_bool(g, "own_mount_ns"));
  }
  for (const auto& p : SL_TRY(bounded_array(g, "pids", kMaxGatewayPids))->GetArray()) {
    if (!p.IsInt() || p.GetInt() < 2 || p.GetInt() > 4194304)
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: bad pid");
    if (std::find(out.pids.begin(), out.pids.end(), p.GetInt()) != out.pids.end())
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: pid ", p.GetInt(), " twice");
    out.pids.push_back(p.GetInt());
  }
  if (out.pids.empty() || out.pids.front() != out.root)
    return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: its pids do not start with its root");
  const auto own = [&](pid_t pid) { return std::find(out.pids.begin(), out.pids.end(), pid) != out.pids.end(); };
  for (const auto& l : SL_TRY(bounded_array(g, "listening", kMaxSockets))->GetArray()) {
    SL_TRY(check_object(l, "listening socket"));
    Endpoint e;
    e.proto = SL_TRY(qmp::get_string(l, "proto"));
    if (e.proto != "tcp" && e.proto != "udp")
      return make_error(ErrorKind::Protocol, "unknown protocol `", e.proto, "`");
    e.addr = SL_TRY(qmp::get_string(l, "addr"));
    if (!valid_address(e.addr))
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: listening address ", qmp::quote(e.addr),
                        " is not an IP address");
    e.port = uint16_t(SL_TRY(bounded_int(l, "port", 0, 65535)));
    out.listening.push_back(std::move(e));
  }
  for (const auto& c : SL_TRY(bounded_array(g, "established", kMaxSockets))->GetArray()) {
    SL_TRY(check_object(c, "connection"));
    Connection conn;
    conn.pid = pid_t(SL_TRY(bounded_int(c, "pid", 1, 4194304)));
    conn.local = SL_TRY(qmp::get_string(c, "local"));
    conn.remote = SL_TRY(qmp::get_string(c, "remote"));
    if (!own(conn.pid))
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: a connection's pid ", conn.pid,
                        " is not one of its");
    if (!valid_endpoint(conn.local) || !valid_endpoint(conn.remote))
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: connection ", qmp::quote(conn.local), " to ",
                        qmp::quote(conn.remote), " is not a pair of socket addresses");
    out.established.push_back(std::move(conn));
  }
  for (const auto& l : SL_TRY(bounded_array(g, "fd_limits", kMaxGatewayPids))->GetArray()) {
    SL_TRY(check_object(l, "fd limit"));
    FdLimit limit{pid_t(SL_TRY(bounded_int(l, "pid", 1, 4194304))),
                  uint64_t(SL_TRY(bounded_int(l, "soft", 0, int64_t(1) << 30))),
                  uint64_t(SL_TRY(bounded_int(l, "hard", 0, int64_t(1) << 30)))};
    // Applied to the process of that pid where the gateway is restored: only its own.
    if (!own(limit.pid))
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: fd_limits names pid ", limit.pid,
                        ", which is not one of its");
    if (limit.soft > limit.hard)
      return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: fd_limits of pid ", limit.pid,
                        " has a soft limit above its hard one");
    out.fd_limits.push_back(limit);
  }
  if (!out.unit.empty() && std::find(out.pids.begin(), out.pids.end(), out.unit_main) == out.pids.end())
    return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: the main pid of ", out.unit,
                      " is not one of its");
  if (g.HasMember("devices"))
    for (const auto& d : SL_TRY(bounded_array(g, "devices", kMaxSockets))->GetArray()) {
      SL_TRY(check_object(d, "device"));
      // Each field on its own: a return out of a braced initialiser would leak the members
      // built before it.
      DeviceFd dev;
      dev.path = SL_TRY(qmp::get_string(d, "path"));
      dev.mnt_id = uint64_t(SL_TRY(bounded_int(d, "mnt_id", 1, 0x7fffffff)));
      dev.inode = uint64_t(SL_TRY(bounded_int(d, "inode", 1, int64_t(1) << 62)));
      // A restoring side opens it: only the harmless devices.
      if (!carried_device(dev.path))
        return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: `", dev.path,
                          "` is not a device a pack may ask for");
      out.devices.push_back(std::move(dev));
    }
  if (g.HasMember("loggers"))
    for (const auto& l : SL_TRY(string_array(g, "loggers"))) {
      // The restoring side connects a datagram socket there (and a sink binds one).
      if (!valid_logger(l))
        return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: logger `", l,
                          "` is not a socket path below /run, /var/run or /dev/log");
      out.loggers.push_back(l);
    }
  if (g.HasMember("dirs"))
    for (const auto& d : SL_TRY(bounded_array(g, "dirs", kMaxSockets))->GetArray()) {
      SL_TRY(check_object(d, "directory"));
      Directory dir;
      dir.path = SL_TRY(qmp::get_string(d, "path"));
      if (!is_plain_absolute(dir.path))
        return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: directory `", dir.path,
                          "` is not a plain absolute path");
      dir.mode = uint32_t(SL_TRY(bounded_int(d, "mode", 0, 01777)));
      dir.uid = uint32_t(SL_TRY(bounded_int(d, "uid", 0, 0xfffffffeLL)));
      dir.gid = uint32_t(SL_TRY(bounded_int(d, "gid", 0, 0xfffffffeLL)));
      out.dirs.push_back(std::move(dir));
    }
  if (g.HasMember("streams"))  // packs written before streams were moved have none
    for (const auto& s : SL_TRY(bounded_array(g, "streams", kMaxSockets))->GetArray())
      out.streams.push_back(SL_TRY_CTX(parse_stream(s), "gateway `", out.name, "`"));
  for (const auto& st : out.streams)
    for (const auto& h : st.holders)
      if (!own(h.pid))
        return make_error(ErrorKind::Protocol, "gateway `", out.name, "`: stream `", st.peer, "` is held by pid ",
                          h.pid, ", which is not one of its");
  return out;
}

}  // namespace

std::string DeviceFd::key() const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "file[%llx:%llx]", static_cast<unsigned long long>(mnt_id),
                static_cast<unsigned long long>(inode));
  return buf;
}

bool carried_device(const std::string& path) {
  for (const char* d : kCarriedDevices)
    if (path == d) return true;
  return false;
}

bool valid_service_name(const std::string& name) {
  constexpr std::string_view suffix = ".service";
  if (name.size() <= suffix.size() || name.size() > 255) return false;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && !std::strchr(":-_.\\@", c)) return false;
  return name[0] != '.' && name[0] != '-';
}

bool valid_text(std::string_view text, size_t max) {
  if (text.size() > max) return false;
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7f) return false;
  return true;
}

bool valid_hostname(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  size_t label = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '.') {
      if (label == 0 || name[i - 1] == '-') return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (c == '-' && label > 0)) {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return label > 0 && name.back() != '-';
}

bool valid_interface_name(std::string_view name) {
  if (name.empty() || name.size() > 15 || name == "." || name == ".." || name[0] == '-') return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  return true;
}

bool valid_mac(std::string_view mac) {
  if (mac.size() != 17) return false;
  unsigned octets[6] = {};
  for (size_t i = 0; i < 6; ++i) {
    const size_t at = i * 3;
    if (i < 5 && mac[at + 2] != ':') return false;
    for (size_t k = 0; k < 2; ++k) {
      const char c = mac[at + k];
      if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
      octets[i] =
          octets[i] * 16 + unsigned(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10);
    }
  }
  const bool zero = std::all_of(std::begin(octets), std::end(octets), [](unsigned o) { return o == 0; });
  return !zero && !(octets[0] & 1);  // a station, not a group
}

bool valid_address(std::string_view addr, std::optional<bool> ipv6) {
  if (addr.empty() || addr.size() > 45) return false;
  const std::string text(addr);
  unsigned char buf[16];
  const bool v4 = ::inet_pton(AF_INET, text.c_str(), buf) == 1;
  const bool v6 = !v4 && ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
  return ipv6 ? (*ipv6 ? v6 : v4) : (v4 || v6);
}

bool valid_prefix(std::string_view cidr, std::optional<bool> ipv6) {
  const size_t slash = cidr.find('/');
  if (slash == std::string_view::npos || slash + 1 >= cidr.size() || cidr.size() - slash > 4) return false;
  const std::string_view len_text = cidr.substr(slash + 1);
  if (!std::all_of(len_text.begin(), len_text.end(),
                   [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return false;
  const int len = std::stoi(std::string(len_text));
  const std::string_view addr = cidr.substr(0, slash);
  if (valid_address(addr, false)) return (!ipv6 || !*ipv6) && len <= 32;
  return valid_address(addr, true) && (!ipv6 || *ipv6) && len <= 128;
}

bool valid_endpoint(std::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string_view::npos || colon + 1 >= endpoint.size() || endpoint.size() - colon > 6) return false;
  const std::string_view port = endpoint.substr(colon + 1);
  if (!std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }) ||
      std::stoi(std::string(port)) > 65535)
    return false;
  const std::string_view host = endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    return valid_address(host.substr(1, host.size() - 2), true);
  return valid_address(host, false);
}

bool valid_logger(const std::string& path) {
  if (path.size() >= 108 || !is_plain_absolute(path)) return false;
  return path == "/dev/log" || path.rfind("/run/", 0) == 0 || path.rfind("/var/run/", 0) == 0;
}

bool OutsideStream::journal() const { return peer == kJournalStdout; }

std::string Manifest::to_json() const {
  auto iface = [](const Interface& i) {
    qmp::ArgWriter w;
    w.str("name", i.name).str("mac", i.mac).raw("addresses", strings_json(i.addresses));
    return w.finish();
  };
  auto route = [](const Route& r) {
    qmp::ArgWriter w;
    w.str("dst", r.dst).str("via", r.via).str("dev", r.dev).boolean("ipv6", r.ipv6);
    return w.finish();
  };
  auto gateway = [](const PackedGateway& g) {
    qmp::ArgWriter w;
    w.num("root", g.root).str("name", g.name).str("exe", g.exe).str("dir", g.dir).boolean("shell_job", g.shell_job);
    if (!g.unit.empty()) w.str("unit", g.unit).num("unit_main", g.unit_main);
    if (g.own_mount_ns) w.boolean("own_mount_ns", true);
    if (!g.loggers.empty()) w.raw("loggers", strings_json(g.loggers));
    if (!g.dirs.empty())
      w.raw("dirs", array_json(g.dirs, [](const Directory& d) {
              qmp::ArgWriter x;
              x.str("path", d.path).num("mode", d.mode).num("uid", d.uid).num("gid", d.gid);
              return x.finish();
            }));
    if (!g.devices.empty())
      w.raw("devices", array_json(g.devices, [](const DeviceFd& d) {
              qmp::ArgWriter x;
              x.str("path", d.path).num("mnt_id", int64_t(d.mnt_id)).num("inode", int64_t(d.inode));
              return x.finish();
            }));
    std::string pids = "[";
    for (size_t i = 0; i < g.pids.size(); ++i) pids += cat(i ? "," : "", g.pids[i]);
    w.raw("pids", pids + "]");
    w.raw("listening", array_json(g.listening, [](const Endpoint& e) {
            qmp::ArgWriter x;
            x.str("proto", e.proto).str("addr", e.addr).num("port", e.port);
            return x.finish();
          }));
    w.raw("established", array_json(g.established, [](const Connection& c) {
            qmp::ArgWriter x;
            x.num("pid", c.pid).str("local", c.local).str("remote", c.remote);
            return x.finish();
          }));
    w.raw("fd_limits", array_json(g.fd_limits, [](const FdLimit& l) {
            qmp::ArgWriter x;
            x.num("pid", l.pid).num("soft", int64_t(l.soft)).num("hard", int64_t(l.hard));
            return x.finish();
          }));
    w.raw("streams", array_json(g.streams, [](const OutsideStream& s) {
            qmp::ArgWriter x;
            x.num("inode", int64_t(s.inode)).str("peer", s.peer).str("identifier", s.identifier).str("unit", s.unit);
            x.raw("holders", array_json(s.holders, [](const StreamHolder& h) {
                    qmp::ArgWriter y;
                    y.num("pid", h.pid).num("fd", h.fd);
                    return y.finish();
                  }));
            return x.finish();
          }));
    return w.finish();
  };
  auto file = [](const FileIdentity& f) {
    qmp::ArgWriter w;
    w.str("path", f.path).str("role", f.role).num("size", int64_t(f.size));
    w.num("mode", f.mode).num("uid", f.uid).num("gid", f.gid);
    if (!f.build_id.empty()) w.str("build_id", f.build_id);
    if (!f.sha256.empty()) w.str("sha256", f.sha256);
    return w.finish();
  };
  qmp::ArgWriter w;
  w.num("format", format).str("hostname", hostname).str("kernel", kernel).str("criu", criu_version);
  w.raw("interfaces", array_json(interfaces, iface)).raw("routes", array_json(routes, route));
  w.raw("gateways", array_json(gateways, gateway)).raw("files", array_json(files, file));
  if (!tree.empty())
    w.raw("tree", array_json(tree, [](const TreeEntry& e) {
            qmp::ArgWriter x;
            x.str("path", e.path).str("type", to_string(e.kind)).num("mode", e.mode).num("uid", e.uid);
            x.num("gid", e.gid).num("size", int64_t(e.size)).num("mtime", e.mtime_s).num("mtime_ns", e.mtime_ns);
            if (e.kind == TreeEntry::Kind::Link) x.str("target", e.target);
            if (e.complete) x.boolean("complete", true);
            if (e.content) x.boolean("content", true);
            return x.finish();
          }));
  return w.finish();
}

Result<Manifest> Manifest::parse(std::string_view text) {
  auto doc = SL_TRY_CTX(qmp::parse(text), "manifest");
  const Value& root = doc.root();
  SL_TRY(check_object(root, "manifest"));
  Manifest m;
  m.format = int(SL_TRY_CTX(qmp::get_int(root, "format"), "manifest"));
  if (m.format != kPackFormat)
    return make_error(ErrorKind::Invalid, "pack format ", m.format, " is not supported (this build reads format ",
                      kPackFormat, ")");
  auto body = [&]() -> Result<void> {
    m.hostname = SL_TRY(qmp::get_string(root, "hostname"));
    if (!valid_hostname(m.hostname))
      return make_error(ErrorKind::Protocol, "field `hostname`: ", qmp::quote(m.hostname), " is not a host name");
    m.kernel = SL_TRY(qmp::get_string(root, "kernel"));
    if (!valid_text(m.kernel, 256)) return make_error(ErrorKind::Protocol, "field `kernel` is not one line of text");
    m.criu_version = SL_TRY(qmp::get_string(root, "criu"));
    if (!valid_text(m.criu_version, 64)) return make_error(ErrorKind::Protocol, "field `criu` is not one line of text");
    const Value* interfaces = SL_TRY(bounded_array(root, "interfaces", kMaxInterfaces));
    for (const auto& i : interfaces->GetArray()) {
      SL_TRY(check_object(i, "interface"));
      Interface iface;
      iface.name = SL_TRY(qmp::get_string(i, "name"));
      iface.mac = SL_TRY(qmp::get_string(i, "mac"));
      iface.addresses = SL_TRY(string_array(i, "addresses"));
      if (!valid_interface_name(iface.name))
        return make_error(ErrorKind::Protocol, "interface name ", qmp::quote(iface.name), " is not an interface name");
      if (std::any_of(m.interfaces.begin(), m.interfaces.end(), [&](auto& o) { return o.name == iface.name; }))
        return make_error(ErrorKind::Protocol, "interface `", iface.name, "` twice");
      if (!valid_mac(iface.mac))
        return make_error(ErrorKind::Protocol, "interface `", iface.name, "`: ", qmp::quote(iface.mac),
                          " is not a unicast MAC address");
      if (iface.addresses.size() > kMaxAddresses)
        return make_error(ErrorKind::Protocol, "interface `", iface.name, "` has more than ", kMaxAddresses,
                          " addresses");
      for (const auto& a : iface.addresses)
        if (!valid_prefix(a))
          return make_error(ErrorKind::Protocol, "interface `", iface.name, "`: ", qmp::quote(a),
                            " is not an address with its prefix length");
      m.interfaces.push_back(std::move(iface));
    }
    for (const auto& r : SL_TRY(bounded_array(root, "routes", kMaxRoutes))->GetArray()) {
      SL_TRY(check_object(r, "route"));
      Route route;
      route.dst = SL_TRY(qmp::get_string(r, "dst"));
      route.via = SL_TRY(qmp::get_string(r, "via"));
      route.dev = SL_TRY(qmp::get_string(r, "dev"));
      route.ipv6 = SL_TRY(qmp::get_bool(r, "ipv6"));
      if (route.dst != "default" && !valid_prefix(route.dst, route.ipv6) && !valid_address(route.dst, route.ipv6))
        return make_error(ErrorKind::Protocol, "route: destination ", qmp::quote(route.dst), " is not an IPv",
                          route.ipv6 ? 6 : 4, " prefix");
      if (!route.via.empty() && !valid_address(route.via, route.ipv6))
        return make_error(ErrorKind::Protocol, "route to `", route.dst, "`: ", qmp::quote(route.via), " is not an IPv",
                          route.ipv6 ? 6 : 4, " address");
      if (route.dev != "lo" &&
          std::none_of(m.interfaces.begin(), m.interfaces.end(), [&](auto& i) { return i.name == route.dev; }))
        return make_error(ErrorKind::Protocol, "route to `", route.dst, "`: device ", qmp::quote(route.dev),
                          " is none of the manifest's interfaces");
      m.routes.push_back(std::move(route));
    }
    for (const auto& g : SL_TRY(bounded_array(root, "gateways", kMaxGateways))->GetArray())
      m.gateways.push_back(SL_TRY(parse_gateway(g)));
    for (const auto& f : SL_TRY(bounded_array(root, "files", kMaxFileIdentities))->GetArray()) {
      SL_TRY(check_object(f, "file"));
      FileIdentity id;
      id.path = SL_TRY(qmp::get_string(f, "path"));
      if (id.path.empty() || id.path[0] != '/' || id.path.find("/../") != std::string::npos ||
          id.path.find('\0') != std::string::npos)
        return make_error(ErrorKind::Protocol, "file identity with a bad path `", id.path, "`");
      id.role = SL_TRY(qmp::get_string(f, "role"));
      if (id.role != "exe" && id.role != "map" && id.role != "shared" && id.role != "open")
        return make_error(ErrorKind::Protocol, "file `", id.path, "` has unknown role `", id.role, "`");
      id.size = uint64_t(SL_TRY(bounded_int(f, "size", 0, int64_t(1) << 40)));
      id.build_id = qmp::opt_string(f, "build_id").value_or("");
      id.sha256 = qmp::opt_string(f, "sha256").value_or("");
      if (f.HasMember("mode")) id.mode = uint32_t(SL_TRY(bounded_int(f, "mode", 0, 07777)));
      if (f.HasMember("uid")) id.uid = uint32_t(SL_TRY(bounded_int(f, "uid", 0, 0xfffffffeLL)));
      if (f.HasMember("gid")) id.gid = uint32_t(SL_TRY(bounded_int(f, "gid", 0, 0xfffffffeLL)));
      m.files.push_back(std::move(id));
    }
    if (root.HasMember("tree")) {
      const Value* tree = SL_TRY(array_field(root, "tree"));
      if (tree->Size() > kMaxTreeEntries)
        return make_error(ErrorKind::Protocol, "the file tree has ", tree->Size(), " entries (at most ",
                          kMaxTreeEntries, ")");
      for (const auto& t : tree->GetArray()) {
        SL_TRY(check_object(t, "file tree entry"));
        TreeEntry e;
        e.path = SL_TRY(qmp::get_string(t, "path"));
        auto kind = parse_tree_kind(SL_TRY(qmp::get_string(t, "type")));
        if (!kind) return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` has an unknown type");
        e.kind = *kind;
        e.mode = uint32_t(SL_TRY(bounded_int(t, "mode", 0, 07777)));
        e.uid = uint32_t(SL_TRY(bounded_int(t, "uid", 0, 0xfffffffeLL)));
        e.gid = uint32_t(SL_TRY(bounded_int(t, "gid", 0, 0xfffffffeLL)));
        e.size = uint64_t(SL_TRY(bounded_int(t, "size", 0, int64_t(kMaxTreeFileSize) - 1)));
        e.mtime_s = SL_TRY(bounded_int(t, "mtime", 0, int64_t(1) << 40));
        e.mtime_ns = uint32_t(SL_TRY(bounded_int(t, "mtime_ns", 0, 999999999)));
        if (e.kind == TreeEntry::Kind::Link) e.target = SL_TRY(qmp::get_string(t, "target"));
        if (t.HasMember("complete")) e.complete = SL_TRY(qmp::get_bool(t, "complete"));
        if (t.HasMember("content")) e.content = SL_TRY(qmp::get_bool(t, "content"));
        m.tree.push_back(std::move(e));
      }
      SL_TRY(check_tree(m.tree));
    }
    return ok();
  };
  SL_TRY_CTX(body(), "manifest");
  return m;
}

Result<void> read_network(Manifest* m) {
  auto addr_text = SL_TRY(run_ok({"ip", "-j", "addr", "show"}));
  auto addrs = SL_TRY_CTX(qmp::parse(addr_text), "`ip -j addr show`");
  if (!addrs.root().IsArray()) return make_error(ErrorKind::Protocol, "`ip -j addr show` did not print an array");
  for (const auto& link : addrs.root().GetArray()) {
    if (!link.IsObject()) continue;
    auto name = qmp::opt_string(link, "ifname").value_or("");
    if (name.empty() || name == "lo") continue;
    Interface i;
    i.name = name;
    i.mac = qmp::opt_string(link, "address").value_or("");
    if (auto info = qmp::field(link, "addr_info"); info.ok() && (*info)->IsArray()) {
      for (const auto& a : (*info)->GetArray()) {
        if (!a.IsObject()) continue;
        auto local = qmp::opt_string(a, "local");
        auto len = qmp::opt_int(a, "prefixlen");
        if (local && len) i.addresses.push_back(cat(*local, "/", *len));
      }
    }
    // Only what a sink can stand in for: an Ethernet-like link with a station address.
    std::erase_if(i.addresses, [](const std::string& a) { return !valid_prefix(a); });
    if (valid_interface_name(i.name) && valid_mac(i.mac)) m->interfaces.push_back(std::move(i));
  }
  for (bool v6 : {false, true}) {
    std::vector<std::string> argv = {"ip", "-j"};
    if (v6) argv.push_back("-6");
    argv.insert(argv.end(), {"route", "show"});
    auto text = SL_TRY(run_ok(argv));
    auto routes = SL_TRY_CTX(qmp::parse(text), "`ip -j route show`");
    if (!routes.root().IsArray()) continue;
    for (const auto& r : routes.root().GetArray()) {
      if (!r.IsObject()) continue;
      Route route{qmp::opt_string(r, "dst").value_or(""), qmp::opt_string(r, "gateway").value_or(""),
                  qmp::opt_string(r, "dev").value_or(""), v6};
      const bool known = std::any_of(m->interfaces.begin(), m->interfaces.end(),
                                     [&](const Interface& i) { return i.name == route.dev; });
      const bool plain = route.dst == "default" || valid_prefix(route.dst, v6) || valid_address(route.dst, v6);
      if (known && plain && (route.via.empty() || valid_address(route.via, v6)) && m->routes.size() < kMaxRoutes)
        m->routes.push_back(std::move(route));
    }
  }
  return ok();
}

}  // namespace seamless::packfmt
