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
#include "pack/shipment.h"

namespace seamless::guest {

// The pack format (pack/) is the helper's own vocabulary.
using namespace packfmt;

struct Env {
  Criu* criu = nullptr;
  Netfilter* netfilter = nullptr;
  // systemd, when it manages this machine: units of dumped gateways stay whole (nullptr: none).
  ServiceManager* services = nullptr;
  std::string work_dir = "/run/seamless-guest";  // scratch space for images (a tmpfs: fast)
  // Where images go when work_dir's file system has no room for them (a JVM's images are
  // larger than a small VM's /run): on disk. Empty: nowhere else.
  std::string spill_dir = "/var/tmp/seamless-guest";
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

// Whether gateway `g` can move: an error with the reason when it holds state outside what
// CRIU can carry (a stream to an unnamed process outside, a datagram connection to an
// unnamed or abstract logger, a descriptor on a device from outside its mount namespace
// but the harmless ones, a mount namespace of its own that no unit keeps).
Result<void> movable(Env& env, const Snapshot& snap, const Gateway& g, const std::vector<UnixSocket>& sockets);
// Moves the gateways that cannot move from d->gateways to d->excluded (`cannot_move`),
// each with the reason.
Result<void> exclude_unmovable(Env& env, const Snapshot& snap, Discovery* d);

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
// connection locks and restores each gateway. `dumped`: the pack this one hands back (a
// sink's): its tasks, threads, credentials and executables must be what that dump held,
// or what its tasks could have become by themselves (criu_images::check_handed_back).
Result<RestoreResult> restore(Env& env, const std::string& pack_path, const PackLimits& limits = {},
                              const std::string& dumped = "");

// Where a dump keeps the identities of the tasks it dumped: beside its pack.
std::string identities_path(const std::string& pack_path);

// A dummy restore of the pack in new network/PID/mount/UTS/IPC namespaces (with the
// pack's addresses on a dummy interface), killed right after.
Result<Manifest> prewarm(Env& env, const std::string& pack_path, const PackLimits& limits = {});

// Raises the open-files limit of processes that sandbox themselves below what CRIU's
// parasite needs; returns what they had. lower_fd_limits() sets them back.
std::vector<FdLimit> raise_fd_limits(const std::vector<pid_t>& pids);
void lower_fd_limits(const std::vector<FdLimit>& limits);

// Where the files a manifest names are looked for here: our root, then the mount
// namespaces its systemd gateways left behind (their units' stand-ins keep them), as
// /proc/PID/root prefixes.
std::vector<std::string> file_roots(Env& env, const Manifest& m);
// The first of root + f.path that is the file `f` names (same size and build-id or
// SHA-256); else an error saying how the one here differs.
Result<std::string> find_file(const FileIdentity& f, const std::vector<std::string>& roots);
// Compares the manifest's code and mapped files with the files at the same paths under
// one of `roots`.
Result<void> check_files(const Manifest& m, const std::vector<std::string>& roots = {""});

// Ships the files of a pack's manifest that another side lacks (see pack/shipment.h).
struct ShipRequest {
  std::string pack, out;
  // Paths of the manifest's code and mapped files to ship; empty: all of them.
  std::vector<std::string> paths;
  // Cache objects the other side holds (ShippedFile::object()): a file whose contents,
  // mode and owner make one of these names is listed without its contents.
  std::vector<std::string> have;
  Compression compression = Compression::Gzip;
};
struct ShipResult {
  std::string out;
  size_t files = 0, included = 0;
  uint64_t content_bytes = 0;   // the included files' sizes
  uint64_t shipment_bytes = 0;  // the shipment on disk (compressed)
};
Result<ShipResult> ship(Env& env, const ShipRequest& req);
std::string to_json(const ShipResult& r);

std::string to_json(const DumpResult& r);
std::string to_json(const RestoreResult& r);

}  // namespace seamless::guest
