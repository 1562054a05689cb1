// SPDX-License-Identifier: Apache-2.0
// The guest's file metadata a sink answers from. A gateway idling in a sink looks at
// files now and then (Tomcat checks every 10 s whether its users file or a web
// application changed: a stat, a directory listing). Only the guest knows the answer; a
// sink that answered from its own files (another version, other times, no web
// application at all) would make the gateway act on a change that never happened. So the
// dump records the metadata of the directory trees a gateway names (`tree` in the
// manifest: type, mode, owner, size, modification time, link target, and whether a
// directory's listing is complete); the sink lays it into the container as a layer of
// empty files of those sizes and times, and its tracer lets a lookup run there only when
// this view says the answer is the guest's. Anything else wakes the VM, as before.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace seamless::packfmt {

struct TreeEntry {
  enum class Kind { Dir, File, Link };
  std::string path;  // plain absolute, as the guest resolves it (no link above it)
  Kind kind = Kind::File;
  uint32_t mode = 0;  // permission bits (no setuid/setgid)
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t mtime_s = 0;
  uint32_t mtime_ns = 0;
  std::string target;     // Link: what it points to
  bool complete = false;  // Dir: every entry it holds is in the tree
  // File: its contents come in the pack (kTreeContents + path), so reading it needs no VM
  // (Tomcat opens its users file every 10 s to see whether it changed).
  bool content = false;
  std::string data;  // the contents, on the dumping side (not in the manifest)
};

inline constexpr size_t kMaxTreeEntries = 10000;
inline constexpr uint64_t kMaxTreeFileSize = uint64_t(1) << 40;
// Small files come with their contents, up to a budget per pack.
inline constexpr uint64_t kMaxTreeContent = 64 << 10;
inline constexpr uint64_t kTreeContentBudget = 2 << 20;
// Where a file's contents lie in a pack: "tree" + its path.
inline constexpr const char* kTreeContents = "tree";

// Whether a file's contents can lie in a pack under its path (the pack's entry names are
// shorter, shallower and plainer than a file system's paths): only such files come with
// their contents.
bool contents_fit_a_pack(std::string_view path);

const char* to_string(TreeEntry::Kind k);  // "d", "f", "l"
std::optional<TreeEntry::Kind> parse_tree_kind(std::string_view s);

// Whether a tree may hold `path` (plain absolute): not a top-level directory itself, and
// nothing of the packaged system (/usr, /bin, /sbin, /lib*, /boot: a sink checks and ships
// those files by content; but the time zone files below /usr/share/zoneinfo, which the C
// library stats on every localtime()) or the kernel's (/proc, /sys, /dev; but a gateway's
// cgroup directories below /sys/fs/cgroup, whose files a JVM re-reads), nor what the
// dynamic loader and CRIU read as root (/etc/ld.so.*, /etc/criu, /root).
bool tree_may_hold(std::string_view path);

// The checks a tree from a pack passes, naming the first bad entry: at most
// kMaxTreeEntries, plain absolute paths that tree_may_hold(), each once, none below a
// link, modes without setuid/setgid, sizes below kMaxTreeFileSize, link targets
// non-empty, without NUL and at most 4095 bytes, contents only for files up to
// kMaxTreeContent and kTreeContentBudget in all.
Result<void> check_tree(const std::vector<TreeEntry>& tree);

// Lookups in the tree, lexically: links in the tree are followed (up to 40), a name below
// a complete directory that the tree lacks does not exist, and a directory the tree lacks
// is a real directory when a tree entry lies below it.
class TreeView {
 public:
  TreeView() = default;
  explicit TreeView(const std::vector<TreeEntry>& tree);
  bool empty() const { return entries_.empty(); }
  // Whether a lookup of absolute `path` (the last name followed if it is a link and
  // `follow`) has the guest's answer here: the entry is in the tree, or it does not
  // exist and its directory is complete. With `type_only` (readlink: only whether it is
  // a link matters), a directory the tree passes through answers too.
  bool answers(std::string_view path, bool follow, bool type_only = false) const;
  // Whether `path` is a directory whose listing is the guest's (complete).
  bool lists(std::string_view path) const;
  // Whether `path` is a file whose contents came along (reading it needs no VM).
  bool reads(std::string_view path) const;
  // Whether `path` did not exist in the guest: its directory is complete and lacks it (an
  // open of it fails in the sink as it did there).
  bool absent(std::string_view path) const;

 private:
  struct Node {
    TreeEntry::Kind kind;
    std::string target;
    bool complete, content;
  };
  enum class Found { Entry, Absent, PassedThrough, Unknown };
  // Resolves `path`; `at` gets the resolved path of an Entry.
  Found resolve(std::string_view path, bool follow, std::string* at) const;
  bool has_below(const std::string& dir) const;
  std::map<std::string, Node> entries_;
};

}  // namespace seamless::packfmt
