// SPDX-License-Identifier: Apache-2.0
// A pack's manifest: format version, the gateways and their CRIU image directories,
// the VM's network identity (interfaces, addresses, routes, hostname) and the identity
// of every file the gateways map or hold open. Parsing is strict: a pack comes from
// another machine.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pack/identity.h"
#include "pack/tree.h"

namespace seamless::packfmt {

inline constexpr int kPackFormat = 1;
// Where systemd's journal takes a unit's stdout and stderr.
inline constexpr std::string_view kJournalStdout = "/run/systemd/journal/stdout";

struct Interface {
  std::string name, mac;
  std::vector<std::string> addresses;  // "10.77.0.12/24", "fe80::1/64"
};

struct Route {
  std::string dst;  // "default" or a prefix
  std::string via;  // gateway address, may be empty
  std::string dev;  // interface name
  bool ipv6 = false;
};

struct Endpoint {
  std::string proto;  // tcp | udp
  std::string addr;
  uint16_t port = 0;
};

struct Connection {
  pid_t pid = 0;
  std::string local, remote;  // "addr:port" / "[addr]:port"
};

// A process's own open-files limit, lowered below what CRIU needs to inject its parasite
// (vsftpd sandboxes sessions that way): raised for the dump, set back after a restore.
struct FdLimit {
  pid_t pid = 0;
  uint64_t soft = 0, hard = 0;
};

// A unix stream connection from the gateway to a process outside it: systemd's journal
// behind a unit's stdout/stderr, a logger. CRIU dumps the gateway's end as external
// (`--external unix[inode]`); every restore connects a fresh socket to `peer` (the
// journal: with its stream header) and hands it in (`--inherit-fd`).
struct StreamHolder {
  pid_t pid = 0;
  int fd = -1;
};

struct OutsideStream {
  uint64_t inode = 0;                 // the gateway's end as dumped: CRIU's key "socket:[inode]"
  std::string peer;                   // the path (or "@abstract" name) the other end listens on
  std::string identifier, unit;       // the journal's stream header: process name, systemd unit
  std::vector<StreamHolder> holders;  // who holds it, by fd (inside pids)
  bool journal() const;
};

// A descriptor a gateway holds on a harmless device (/dev/null, ...) from outside its mount
// namespace: systemd opens a service's stdin before it sets up the service's namespace.
// CRIU cannot dump it by path; it is dumped as external (`--external file[MNT:INODE]`, as
// the dumping side saw it) and each restore hands in a fresh one opened at `path`.
struct DeviceFd {
  std::string path;  // one of kCarriedDevices
  uint64_t mnt_id = 0, inode = 0;
  std::string key() const;  // "file[MNT:INODE]", hexadecimal
};
// The devices a pack may ask a restoring side to open.
inline constexpr const char* kCarriedDevices[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"};
bool carried_device(const std::string& path);

// Whether `path` may name a logger: a plain absolute path that fits a unix address, below
// /run or /var/run, or /dev/log.
bool valid_logger(const std::string& path);

// Whether `name` is a service unit name systemd accepts ("ssh.service", "getty@tty1.service").
bool valid_service_name(const std::string& name);

// The schema of the manifest's identity and network fields (a manifest is written by a
// guest: each is refused by name unless it is plainly what it claims to be; a sink runs
// `ip` with them as separate arguments, never as text of a batch or a shell).
bool valid_hostname(std::string_view name);        // labels of [A-Za-z0-9_-], at most 64 bytes
bool valid_interface_name(std::string_view name);  // what Linux takes: 1-15 of [A-Za-z0-9._-]
bool valid_mac(std::string_view mac);              // "xx:xx:xx:xx:xx:xx", unicast, not zero
// A plain IPv4 or IPv6 address as inet_pton reads it (`ipv6` picks the family if given).
bool valid_address(std::string_view addr, std::optional<bool> ipv6 = std::nullopt);
// An address with its prefix length ("10.0.0.5/24", "fe80::1/64").
bool valid_prefix(std::string_view cidr, std::optional<bool> ipv6 = std::nullopt);
// A socket address as the guest writes it: "a.b.c.d:port" or "[v6]:port".
bool valid_endpoint(std::string_view endpoint);
// Printable one-line text of at most `max` bytes (names, versions).
bool valid_text(std::string_view text, size_t max);

// Bounds on a manifest's counts.
inline constexpr size_t kMaxInterfaces = 16, kMaxAddresses = 64, kMaxRoutes = 256, kMaxGateways = 64,
                        kMaxGatewayPids = 4096, kMaxSockets = 4096, kMaxFileIdentities = 20000;

// A directory a gateway needs on the restoring side, as the dumping side had it.
struct Directory {
  std::string path;
  uint32_t mode = 0755, uid = 0, gid = 0;
};

struct PackedGateway {
  pid_t root = 0;
  std::string name, exe;
  // The systemd service whose main process the gateway was ("" = none), and that pid.
  std::string unit;
  pid_t unit_main = 0;
  // It ran in a mount namespace of its own (the unit's), which the unit's stand-in keeps
  // while it is away: it is restored there.
  bool own_mount_ns = false;
  std::string dir;  // the CRIU images inside the pack, e.g. "gw/123"
  bool shell_job = false;
  std::vector<pid_t> pids;
  std::vector<Endpoint> listening;
  std::vector<Connection> established;
  std::vector<FdLimit> fd_limits;
  std::vector<OutsideStream> streams;
  std::vector<DeviceFd> devices;
  // Named datagram sockets outside that its sockets are connected to (a logger: syslog's
  // /dev/log, the journal's dev-log). CRIU dumps them as external and each restore
  // connects them again by name: a sink binds a socket of its own at each path first.
  std::vector<std::string> loggers;
  // Directories a restoring side must have: the processes' working directories (tftpd's
  // /srv/tftp) and those of the unix sockets they bound to a path (CRIU binds them there
  // again). A sink makes the ones its template lacks.
  std::vector<Directory> dirs;
};

struct Manifest {
  int format = kPackFormat;
  std::string hostname, kernel, criu_version;
  std::vector<Interface> interfaces;
  std::vector<Route> routes;
  std::vector<PackedGateway> gateways;
  std::vector<FileIdentity> files;
  // The metadata of the directory trees the gateways name (pack/tree.h), for a sink to
  // answer their look-ups from.
  std::vector<TreeEntry> tree;
  std::string to_json() const;
  static Result<Manifest> parse(std::string_view text);
};

// Reads this machine's interfaces (not lo) and routes with `ip -j`.
Result<void> read_network(Manifest* m);

}  // namespace seamless::packfmt
