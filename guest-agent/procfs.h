// SPDX-License-Identifier: Apache-2.0
// What the guest's /proc says about processes and their sockets: parsers for the text
// formats, and a snapshot of a whole /proc tree (a fake tree in unit tests).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "pack/manifest.h"

namespace seamless::guest {

enum class Proto { Tcp, Udp };
enum class Family { V4, V6 };

// TCP states as the kernel numbers them in /proc/net/tcp.
constexpr int kTcpEstablished = 0x01;
constexpr int kTcpListen = 0x0A;
// An unconnected bound UDP socket shows state 07 (TCP_CLOSE).
constexpr int kUdpUnconnected = 0x07;

struct NetSocket {
  Proto proto = Proto::Tcp;
  Family family = Family::V4;
  std::string local_addr, remote_addr;  // printable (inet_ntop)
  uint16_t local_port = 0, remote_port = 0;
  int state = 0;
  uint64_t inode = 0;
  bool listening() const;    // TCP LISTEN, or UDP bound with no peer
  bool established() const;  // TCP ESTABLISHED
};

// One table (/proc/net/tcp, tcp6, udp or udp6). Malformed lines are errors naming the line.
Result<std::vector<NetSocket>> parse_net_table(std::string_view text, Proto proto, Family family);

struct ProcStat {
  pid_t pid = 0, ppid = 0, pgrp = 0, session = 0;
  std::string comm;
  char state = '?';
  uint64_t start_time = 0;  // clock ticks after boot (field 22): tells a reused pid apart
};
// /proc/PID/stat; comm may hold spaces and parentheses.
Result<ProcStat> parse_stat(std::string_view text);

// The value of a "Key:   1234 kB" line (/proc/meminfo, /proc/PID/smaps_rollup), in kB.
Result<uint64_t> parse_kb_field(std::string_view text, std::string_view key);

// File-backed mappings in /proc/PID/maps: absolute paths, deduplicated, in first-seen
// order. Deleted files keep their " (deleted)" suffix so callers can refuse them.
std::vector<std::string> parse_maps(std::string_view text);
// The files of /proc/PID/maps text mapped shared and writable ("rw-s"): data the process
// writes into the file itself (a JVM's hsperfdata), not code.
std::vector<std::string> parse_shared_writable_maps(std::string_view text);

struct Process {
  ProcStat stat;
  std::string exe;                   // readlink of /proc/PID/exe ("" for kernel threads)
  std::vector<std::string> cmdline;  //
  std::vector<uint64_t> socket_inodes;
  std::vector<int> socket_fds;          // parallel to socket_inodes
  std::vector<std::string> open_files;  // fds that name absolute paths
  std::vector<pid_t> threads;
  uint64_t mnt_ns = 0;  // inode of its mount namespace (0: unknown)
  std::string unit;     // the systemd unit of its cgroup ("ssh.service", "session-1.scope"; "" = none)
};

struct Snapshot {
  std::map<pid_t, Process> processes;
  std::vector<NetSocket> sockets;         // TCP/UDP, v4 and v6
  std::map<uint64_t, pid_t> inode_owner;  // first process holding each socket inode
  uint64_t self_mnt_ns = 0;               // the reader's mount namespace
  std::vector<pid_t> children_of(pid_t pid) const;
  // pid and all its descendants, parents first.
  std::vector<pid_t> tree(pid_t root) const;
};

// The inode of the socket a process holds as descriptor `fd`; nullopt when it holds none.
std::optional<uint64_t> fd_socket_inode(pid_t pid, int fd, const std::string& proc_root = "/proc");

// The descriptors of `pids` on files from mounts outside each process's mount namespace
// (see packfmt::DeviceFd), one entry per file. Such a descriptor on anything but a carried
// device is an error naming it: CRIU could not restore it.
Result<std::vector<packfmt::DeviceFd>> foreign_devices(const std::vector<pid_t>& pids,
                                                       const std::string& proc_root = "/proc");

// The inode of a namespace link (/proc/PID/ns/mnt -> "mnt:[4026531841]"); 0 when unreadable.
uint64_t namespace_inode(const std::string& link);

// The systemd unit a process runs in, from the text of /proc/PID/cgroup: the last
// component of the unified (or name=systemd) path when it names a .service or .scope.
std::string unit_of_cgroup(std::string_view text);

// Reads every process and the four socket tables under proc_root. Processes that vanish
// while being read are skipped.
Result<Snapshot> snapshot(const std::string& proc_root = "/proc");

}  // namespace seamless::guest
