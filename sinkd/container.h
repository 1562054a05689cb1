// SPDX-License-Identifier: Apache-2.0
// A sink container: the place a parked VM's gateways live in the sink. New PID, mount,
// network, UTS and IPC namespaces around a small init (this daemon, re-executed with
// --container-init); a macvlan on the sink's working NIC per VM interface, carrying the
// VM's MAC, addresses and routes; the VM's hostname; and an overlay root: the files
// shipped with the pack over the guest's file tree over a base layer over the sink's own
// root, of which the base layer leaves only /usr (the template's code) and the sink's
// copies of the files the pack needs (nothing of the sink's /etc, /root, /var or /tmp);
// its upper layer holds a dummy of the right size for every file a gateway holds open
// that the sink lacks or has in another version.
//
// Containers outlive the daemon: a restarted sinkd adopts them from their state file.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/process.h"
#include "common/result.h"
#include "pack/identity.h"
#include "pack/manifest.h"
#include "sinkd/file_cache.h"

namespace seamless::sink {

struct ContainerSpec {
  std::string id;   // names the directory; [A-Za-z0-9._-], at most 64 bytes
  std::string dir;  // created here; must not exist
  std::string hostname;
  std::vector<packfmt::Interface> interfaces;
  std::vector<packfmt::Route> routes;
  std::string nic;  // the sink's working NIC, parent of the macvlans
  std::vector<packfmt::FileIdentity> dummies;
  // Files the template check found the same here (PackCheck::from_sink): those outside
  // what every container sees of the sink are copied into its base layer.
  std::vector<std::string> from_sink;
  // The loggers its gateways are connected to (PackedGateway::loggers): the container's
  // init binds a datagram socket at each path and drops what arrives.
  std::vector<std::string> loggers;
  // Directories made in the upper layer (where the gateways' unix sockets are bound).
  std::vector<packfmt::Directory> dirs;
  // Files the sink lacks, shipped with the pack: a read-only layer of links to `cache`.
  std::vector<LayerFile> shipped;
  const FileCache* cache = nullptr;
  // The guest's file tree (pack/tree.h): a read-only layer below the shipped files; the
  // contents of its small files in `tree_contents` (the unpacked pack).
  std::vector<packfmt::TreeEntry> tree;
  std::string tree_contents;
  // Its cgroup (confine.h), made by the caller: the init and every run() join it, in a
  // cgroup namespace rooted there. Empty: the sink's own.
  std::string cgroup;
  // Comes up silent (see silence()) and stays so until speak(): the controller lets the
  // container answer for the VM only once the VM is paused and its traffic switched.
  bool quiet = false;
};

class Container {
 public:
  // Builds it all; on any error nothing is left behind. `before_network` runs once the
  // namespaces exist, before the interfaces come up (the sink holds packets from then on).
  using Hook = std::function<Result<void>(pid_t init)>;
  static Result<Container> create(const ContainerSpec& spec, const std::string& self_exe,
                                  const Hook& before_network = {});
  // The container a previous daemon made in `dir`, if its init still runs.
  static Result<Container> adopt(const std::string& dir);

  const std::string& id() const { return id_; }
  const std::string& dir() const { return dir_; }
  pid_t init() const { return init_; }
  // Its network namespace, as a path others can setns() to.
  std::string netns() const;
  // The container's "/" as files written into it from outside go: dir/upper.
  std::string upper() const { return dir_ + "/upper"; }
  // The container's "/" as its processes see it, through the overlay: /proc/INIT/root.
  // Remove files here, not from upper(): one unlinked behind the overlay's back stays
  // allocated for as long as the overlay caches it (a restored gateway's CRIU images, on
  // a tmpfs: tens of MB per container).
  std::string root() const;
  bool alive() const;
  // Its cgroup ("" when it has none of its own).
  const std::string& cgroup() const { return cgroup_; }

  // Runs argv inside every namespace of the container, as a process of its PID namespace.
  Result<RunResult> run(const std::vector<std::string>& argv, Millis timeout) const;
  // A fresh stream to the init's drain (it reads and drops everything), made in the
  // container's network namespace: stands in for a gateway's journal or logger
  // connection. Not close-on-exec, so that a CRIU run can inherit it.
  Result<UniqueFd> drain_stream() const;
  // Processes in the container but its init: (pid here, pid inside).
  std::vector<std::pair<pid_t, pid_t>> processes() const;
  // Takes the VM's identity off the wire once its gateways are handed back: the interfaces
  // answer no ARP and nothing leaves but through loopback (packets still come in, for the
  // hold). A router solicitation, reply or reset from here after the VM is home would teach
  // the switch the VM's MAC at the sink's port, or reset its clients.
  Result<void> silence() const;
  // Undoes silence(): ARP again, and its packets leave.
  Result<void> speak() const;
  // Takes its interfaces down, kills everything in it (the namespaces, links and mounts go
  // with the init) and removes its directory.
  void destroy();

 private:
  Container(std::string id, std::string dir, pid_t init, uint64_t start, std::string cgroup)
      : id_(std::move(id)), dir_(std::move(dir)), cgroup_(std::move(cgroup)), init_(init), start_(start) {}
  Result<void> setup_network(const ContainerSpec& spec) const;
  std::string id_, dir_, cgroup_;
  pid_t init_ = 0;
  uint64_t start_ = 0;  // the init's start time, so a reused pid is never taken for it
};

// The init of a container, `seamless-sinkd --container-init DIR HOSTNAME [CGROUP]`: joins
// the cgroup, unshares the namespaces (cgroup included), forks the container's pid 1
// (which sets up the root, then reaps orphans until killed), prints that process's pid
// and exits.
int container_init_main(const std::string& dir, const std::string& hostname, const std::string& cgroup);

// `seamless-sinkd --join-cgroup DIR PROGRAM ARGS...`: joins the cgroup and executes the
// program (how Container::run puts its processes in the container's cgroup).
int join_cgroup_main(int argc, char** argv);

// A container id names directories: 1-64 bytes of [A-Za-z0-9._-], no leading dot.
Result<void> check_container_id(const std::string& id);

// Opens the directory that holds `path` (absolute, plain components) below `top`,
// making the directories above it as needed with the mode and owner of `lower`'s (never
// following a link); *leaf is the last component.
Result<UniqueFd> make_parents(const std::string& top, const std::string& path, const std::string& lower,
                              std::string* leaf);

// Makes directory `dir.path` below `upper` with its mode and owner, unless `lower` has it
// just so and shows it (a merged directory takes the upper layer's mode and owner).
Result<void> make_directory(const std::string& upper, const packfmt::Directory& dir, const std::string& lower = "/",
                            bool lower_shows = true);
// Lays `tree` (checked again here) out in the new directory `layer`: directories, files
// of the recorded sizes (empty, or with their contents from `contents`/tree/PATH, an
// unpacked pack), links, with the recorded owners, modes and times; a complete directory
// opaque (trusted.overlay.opaque), so the layers below add nothing to its listing.
// Directories above the tree's entries take their attributes from `lower`. Nothing is
// followed: a link in the tree has nothing below it.
Result<void> build_tree_layer(const std::string& layer, const std::vector<packfmt::TreeEntry>& tree,
                              const std::string& contents = "", const std::string& lower = "/");

// The top-level names of the sink's root `root` that a container sees as they are: usr
// and the links into it (merged /usr: bin, lib, lib64, sbin).
std::vector<std::string> shown_top_level(const std::string& root);
// Whether a container sees the sink's `path` as it is (`shown` from shown_top_level).
bool shown_as_is(const std::string& path, const std::vector<std::string>& shown);
// Makes the new directory `layer`, a container's layer right above the sink's root `root`
// that hides all of it but /usr: every other top-level directory an empty opaque one with
// the sink's mode and owner (a mount point still), every other top-level entry whited out.
// Into it go copies of the few sink files CRIU's helpers read (/etc/alternatives,
// /etc/ld.so.cache) and of `from_sink` that lie outside /usr: regular files of root's own
// file system (opened without following a link or blocking), links as links, with their
// owners, modes and times; at most 64 MiB in all, else an error naming the file.
Result<void> build_base_layer(const std::string& layer, const std::string& root,
                              const std::vector<std::string>& from_sink);

// Makes `file.path` (absolute, plain components) below `upper` as a sparse file of
// `file.size` bytes with the file's mode and owner, the directories above it taking mode
// and owner from `lower`'s.
Result<void> make_dummy(const std::string& upper, const packfmt::FileIdentity& file, const std::string& lower = "/");

}  // namespace seamless::sink
