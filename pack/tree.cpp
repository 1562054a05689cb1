// SPDX-License-Identifier: Apache-2.0
#include "pack/tree.h"

#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "pack/identity.h"
#include "pack/pack.h"

namespace seamless::packfmt {
namespace {

constexpr int kMaxLinkHops = 40;

std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The names of `path`, "." and empty ones dropped.
std::vector<std::string> names(std::string_view path) {
  std::vector<std::string> out;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view n = path.substr(start, slash - start);
    if (!n.empty() && n != ".") out.emplace_back(n);
    start = slash + 1;
  }
  return out;
}

}  // namespace

const char* to_string(TreeEntry::Kind k) {
  switch (k) {
    case TreeEntry::Kind::Dir: return "d";
    case TreeEntry::Kind::File: return "f";
    case TreeEntry::Kind::Link: return "l";
  }
  return "?";
}

std::optional<TreeEntry::Kind> parse_tree_kind(std::string_view s) {
  if (s == "d") return TreeEntry::Kind::Dir;
  if (s == "f") return TreeEntry::Kind::File;
  if (s == "l") return TreeEntry::Kind::Link;
  return std::nullopt;
}

bool contents_fit_a_pack(std::string_view path) {
  return !path.empty() && path[0] == '/' && check_entry_name(cat(kTreeContents, path)).ok();
}

bool tree_may_hold(std::string_view path) {
  auto n = names(path);
  if (n.size() < 2) return false;
  static const char* const kSystem[] = {"proc", "sys",   "dev",   "usr",    "bin", "sbin",
                                        "lib",  "lib32", "lib64", "libx32", "boot"};
  // The kernel's, except the gateway's cgroups (their files as read at dump: a JVM
  // re-reads its limits there).
  if (n[0] == "sys" && n.size() >= 4 && n[1] == "fs" && n[2] == "cgroup") return true;
  // The time zone /etc/localtime links to: data, which the C library stats on every
  // localtime() and re-reads when it seems to have changed.
  if (n[0] == "usr" && n.size() >= 4 && n[1] == "share" && n[2] == "zoneinfo") return true;
  if (std::find(std::begin(kSystem), std::end(kSystem), n[0]) != std::end(kSystem)) return false;
  // What the dynamic loader and CRIU read as root when CRIU runs in a container's mount
  // namespace: never from a pack.
  if (n[0] == "root") return false;
  if (n[0] == "etc" && (n[1].rfind("ld.so", 0) == 0 || n[1] == "criu")) return false;
  return true;
}

Result<void> check_tree(const std::vector<TreeEntry>& tree) {
  if (tree.size() > kMaxTreeEntries)
    return make_error(ErrorKind::Protocol, "the file tree has ", tree.size(), " entries (at most ", kMaxTreeEntries,
                      ")");
  std::set<std::string> seen, links;
  uint64_t contents = 0;
  for (const auto& e : tree) {
    if (!is_plain_absolute(e.path))
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` is not a plain absolute path");
    if (!tree_may_hold(e.path))
      return make_error(ErrorKind::Protocol, "file tree: `", e.path,
                        "` is a top-level directory or part of the system (/usr, /lib, /proc, ...)");
    if (!seen.insert(e.path).second) return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` twice");
    if (e.kind == TreeEntry::Kind::Link) links.insert(e.path);
    if (e.mode & ~07777u || e.mode & (S_ISUID | S_ISGID))
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` has mode ", e.mode,
                        " (permission bits, no setuid/setgid)");
    if (e.size >= kMaxTreeFileSize)
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` is too large (", e.size, " bytes)");
    if (e.mtime_ns >= 1000000000u)
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` has a bad modification time");
    if (e.kind == TreeEntry::Kind::Link) {
      if (e.target.empty() || e.target.size() > 4095 || e.target.find('\0') != std::string::npos)
        return make_error(ErrorKind::Protocol, "file tree: link `", e.path, "` has a bad target");
    } else if (!e.target.empty()) {
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` is no link but has a target");
    }
    if (e.complete && e.kind != TreeEntry::Kind::Dir)
      return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` is no directory but complete");
    if (e.content) {
      if (e.kind != TreeEntry::Kind::File || e.size > kMaxTreeContent || !contents_fit_a_pack(e.path))
        return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` cannot come with its contents");
      contents += e.size;
      if (contents > kTreeContentBudget)
        return make_error(ErrorKind::Protocol, "file tree: more than ", kTreeContentBudget, " bytes of contents");
    }
  }
  // Nothing below a link: a sink lays the tree out without following links.
  for (const auto& e : tree)
    for (std::string p = parent_of(e.path); p != "/"; p = parent_of(p))
      if (links.count(p)) return make_error(ErrorKind::Protocol, "file tree: `", e.path, "` lies below link `", p, "`");
  return ok();
}

TreeView::TreeView(const std::vector<TreeEntry>& tree) {
  for (const auto& e : tree) entries_[e.path] = Node{e.kind, e.target, e.complete, e.content};
}

bool TreeView::has_below(const std::string& dir) const {
  const std::string prefix = dir + "/";
  auto it = entries_.upper_bound(prefix);
  return it != entries_.end() && it->first.compare(0, prefix.size(), prefix) == 0;
}

TreeView::Found TreeView::resolve(std::string_view path, bool follow, std::string* at) const {
  if (path.empty() || path[0] != '/') return Found::Unknown;
  std::vector<std::string> todo = names(path);
  std::string cur;  // resolved so far ("" = "/")
  int hops = 0;
  for (size_t i = 0; i < todo.size(); ++i) {
    const std::string& n = todo[i];
    if (n == "..") {
      cur = cur.empty() ? "" : parent_of(cur) == "/" ? "" : parent_of(cur);
      continue;
    }
    const std::string next = cur + "/" + n;
    const bool last = i + 1 == todo.size();
    auto it = entries_.find(next);
    if (it == entries_.end()) {
      // Absent in a complete directory: the guest has no such name.
      auto dir = entries_.find(cur.empty() ? "/" : cur);
      if (dir != entries_.end() && dir->second.kind == TreeEntry::Kind::Dir && dir->second.complete)
        return Found::Absent;
      // A directory the tree passes through on the way to its entries.
      if (has_below(next)) {
        if (last) return Found::PassedThrough;
        cur = next;
        continue;
      }
      return Found::Unknown;
    }
    const Node& node = it->second;
    if (node.kind == TreeEntry::Kind::Link && (!last || follow)) {
      if (++hops > kMaxLinkHops) return Found::Unknown;
      std::vector<std::string> rest = names(node.target);
      if (node.target[0] == '/') cur.clear();
      rest.insert(rest.end(), todo.begin() + long(i) + 1, todo.end());
      todo = std::move(rest);
      i = size_t(-1);
      continue;
    }
    if (!last && node.kind != TreeEntry::Kind::Dir) return Found::Absent;  // ENOTDIR, as in the guest
    cur = next;
  }
  if (cur.empty() || !entries_.count(cur)) return Found::Unknown;
  *at = cur;
  return Found::Entry;
}

bool TreeView::answers(std::string_view path, bool follow, bool type_only) const {
  std::string at;
  const Found f = resolve(path, follow, &at);
  return f == Found::Entry || f == Found::Absent || (type_only && f == Found::PassedThrough);
}

bool TreeView::reads(std::string_view path) const {
  std::string at;
  if (resolve(path, true, &at) != Found::Entry) return false;
  const Node& n = entries_.at(at);
  return n.kind == TreeEntry::Kind::File && n.content;
}

bool TreeView::absent(std::string_view path) const {
  std::string at;
  return resolve(path, true, &at) == Found::Absent;
}

bool TreeView::lists(std::string_view path) const {
  std::string at;
  if (resolve(path, true, &at) != Found::Entry) return false;
  const Node& n = entries_.at(at);
  return n.kind == TreeEntry::Kind::Dir && n.complete;
}

}  // namespace seamless::packfmt
