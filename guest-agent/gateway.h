// SPDX-License-Identifier: Apache-2.0
// The guest helper's operations: dump gateways into a pack, restore a pack, and the
// throw-away "prewarm" restore that brings a restore's pages back into memory.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "guest-agent/criu.h"
#include "guest-agent/discover.h"
#include "guest-agent/netfilter.h"
#include "guest-agent/systemd.h"
#include "guest-agent/unix_diag.h"
#include "pack/manifest.h"
#include "pack/pack.h"

namespace seamless::guest {

// The pack format (pack/) is the helper's own vocabulary.
using namespace packfmt;

struct Env {
  Criu* criu = nullptr;
  Netfilter* netfilter = nullptr;
  // systemd, when it manages this machine: units of dumped gateways stay whole (nullptr: none).
  ServiceManager* services = nullptr;
  std::string work_dir = "/run/seamless-guest";  // scratch space for images
  // The unix sockets of the guest (sock_diag); a fake in unit tests.
  std::function<Result<std::vector<UnixSocket>>()> unix_sockets = list_unix_sockets;
};

struct DumpResult {
  Manifest manifest;
  std::string pack;
  uint64_t pack_bytes = 0;
  Compression compression = Compression::Xz;
  PackStats pages;
  double dump_seconds = 0;  // CRIU, until the gateways are checkpointed
  double pack_seconds = 0;  // writing the pack
  bool aborted = false;     // user activity arrived: everything was restored in place
  std::string abort_reason;
};

// Checkpoints `gateways` (from discover on `snap`) into `pack_path`. Any failure, or user
// activity reaching a gateway meanwhile, restores the already dumped ones in place.
Result<DumpResult> dump(Env& env, const Snapshot& snap, const std::vector<Gateway>& gateways,
                        const std::string& pack_path, const PackOptions& pack_options = {});

struct RestoreResult {
  Manifest manifest;
  std::vector<std::pair<std::string, pid_t>> restored;  // name, root pid
  int locks_cleared = 0;
  std::vector<std::string> warnings;  // e.g. a stream whose peer is gone (output to /dev/null)
};

// Unpacks `pack_path`, checks every recorded file against this machine, clears CRIU's
// connection locks and restores each gateway.
Result<RestoreResult> restore(Env& env, const std::string& pack_path, const PackLimits& limits = {});

// A dummy restore of the pack in new network/PID/mount/UTS/IPC namespaces (with the
// pack's addresses on a dummy interface), killed right after.
Result<Manifest> prewarm(Env& env, const std::string& pack_path, const PackLimits& limits = {});

// Raises the open-files limit of processes that sandbox themselves below what CRIU's
// parasite needs; returns what they had. lower_fd_limits() sets them back.
std::vector<FdLimit> raise_fd_limits(const std::vector<pid_t>& pids);
void lower_fd_limits(const std::vector<FdLimit>& limits);

// Compares the manifest's file identities with the files at the same paths here.
Result<void> check_files(const Manifest& m, const std::string& root = "");

std::string to_json(const DumpResult& r);
std::string to_json(const RestoreResult& r);

}  // namespace seamless::guest
