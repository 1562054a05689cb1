// SPDX-License-Identifier: Apache-2.0
#include "guest-agent/file_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>

#include "common/fd.h"
#include "common/sys.h"

namespace seamless::guest {
namespace {

using packfmt::TreeEntry;

constexpr int kMaxLinkHops = 40;

std::vector<std::string> names(const std::string& path) {
  std::vector<std::string> out;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string n = path.substr(start, slash - start);
    if (n == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!n.empty() && n != ".") {
      out.push_back(std::move(n));
    }
    start = slash + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& names, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += "/" + names[i];
  return out.empty() ? "/" : out;
}

std::string parent_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

class Walker {
 public:
  Walker(const std::string& root, const std::set<std::string>& skip, const TreeLimits& limits,
         std::vector<TreeEntry>* out)
      : root_(root), skip_(skip), limits_(limits), out_(out) {
    for (size_t i = 0; i < out->size(); ++i) {
      index_[(*out)[i].path] = i;
      if ((*out)[i].content) contents_ += (*out)[i].size;
    }
  }

  // `path` names a directory, or with `file_names_dir` a file in it.
  void add_root(const std::string& path, bool file_names_dir = true) {
    if (roots_ >= limits_.max_roots) return;
    ++roots_;
    auto at = resolve(path);
    struct stat st {};
    if (!at || ::lstat((root_ + *at).c_str(), &st) != 0) return;
    std::string dir = *at;
    if (S_ISREG(st.st_mode) && file_names_dir)
      dir = parent_of(*at);  // a file: its directory is the tree
    else if (!S_ISDIR(st.st_mode))
      return;
    if (dir.empty() || outside_tree(dir)) return;
    walk(dir, 0);
  }

  // A file the C library looks at by itself, whatever the gateway names (`/etc/localtime`:
  // each localtime() stats it and re-reads it when it seems to have changed): the links on
  // the way and the file with its contents.
  void add_file(const std::string& path) {
    if (roots_ >= limits_.max_roots) return;
    ++roots_;
    auto at = resolve(path);
    struct stat st {};
    if (!at || outside_tree(*at) || ::lstat((root_ + *at).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    if (TreeEntry* f = record(*at, st, TreeEntry::Kind::File)) read_contents(f);
  }

 private:
  // `path` resolved name by name in the gateway's view, the links on the way recorded (they
  // resolve there too); none when a name is missing, a file stands where a directory
  // should, or links go round.
  std::optional<std::string> resolve(const std::string& path) {
    std::vector<std::string> todo = names(path);
    std::string cur;
    int hops = 0;
    for (size_t i = 0; i < todo.size(); ++i) {
      const std::string next = cur + "/" + todo[i];
      struct stat st {};
      if (::lstat((root_ + next).c_str(), &st) != 0) return std::nullopt;
      if (S_ISLNK(st.st_mode)) {
        if (++hops > kMaxLinkHops) return std::nullopt;
        auto target = sys::read_link(root_ + next);
        if (!target.ok() || target->empty()) return std::nullopt;
        if (!outside_tree(next)) record(next, st, TreeEntry::Kind::Link, *target);
        std::vector<std::string> rest = names((*target)[0] == '/' ? *target : cur + "/" + *target);
        rest.insert(rest.end(), todo.begin() + long(i) + 1, todo.end());
        todo = std::move(rest);
        cur.clear();
        i = size_t(-1);
        continue;
      }
      if (!S_ISDIR(st.st_mode) && i + 1 < todo.size()) return std::nullopt;
      cur = next;
    }
    return cur;
  }

 public:
  // A cgroup directory: its files with what they read now (write-only ones without), not
  // its subdirectories; complete when it has none and every file is recorded.
  void add_pseudo_dir(const std::string& dir) {
    if (roots_ >= limits_.max_roots || outside_tree(dir) || index_.count(dir) || full()) return;
    ++roots_;
    struct stat st {};
    if (::lstat((root_ + dir).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
    const size_t at = out_->size();
    if (!record(dir, st, TreeEntry::Kind::Dir)) return;
    std::vector<std::string> files;
    bool complete = false;
    if (DIR* d = ::opendir((root_ + dir).c_str())) {
      complete = true;
      while (dirent* e = ::readdir(d))
        if (e->d_type == DT_REG)
          files.push_back(e->d_name);
        else if (std::string n = e->d_name; n != "." && n != "..")
          complete = false;  // child cgroups are not recorded
      ::closedir(d);
    }
    std::sort(files.begin(), files.end());
    for (const auto& n : files) {
      const std::string p = dir + "/" + n;
      struct stat s {};
      if (full() || !packfmt::contents_fit_a_pack(p) || ::lstat((root_ + p).c_str(), &s) != 0 || !S_ISREG(s.st_mode)) {
        complete = false;
        continue;
      }
      UniqueFd fd(::open((root_ + p).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      auto read = fd.valid() ? sys::read_fd(fd.get(), packfmt::kMaxTreeContent, p)
                             : Result<std::string>(errno_error(cat("open `", p, "`")));
      if (!read.ok() || contents_ + read->size() > packfmt::kTreeContentBudget) {
        // Write-only (cgroup.kill, memory.reclaim) or too much: there, without contents.
        s.st_size = 0;
        complete = record(p, s, TreeEntry::Kind::File) && complete;
        continue;
      }
      std::string data = std::move(read).value();
      const size_t got = data.size();
      s.st_size = off_t(got);
      TreeEntry* f = record(p, s, TreeEntry::Kind::File);
      if (!f) {
        complete = false;
        continue;
      }
      f->data = std::move(data);
      f->content = true;
      contents_ += got;
    }
    // Every file there: a limit file the JVM looks for and the guest lacks (cpu.max without
    // the cpu controller) is absent in the sink too.
    (*out_)[at].complete = complete;
  }

 private:
  bool full() const { return out_->size() >= limits_.max_entries; }

  TreeEntry* record(const std::string& path, const struct stat& st, TreeEntry::Kind kind,
                    const std::string& target = "") {
    if (auto it = index_.find(path); it != index_.end()) return &(*out_)[it->second];
    if (full()) return nullptr;
    TreeEntry e;
    e.path = path;
    e.kind = kind;
    e.mode = st.st_mode & 0777 & ~uint32_t(S_ISUID | S_ISGID);
    e.mode |= st.st_mode & S_ISVTX;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.size =
        kind == TreeEntry::Kind::File ? std::min<uint64_t>(uint64_t(st.st_size), packfmt::kMaxTreeFileSize - 1) : 0;
    e.mtime_s = st.st_mtim.tv_sec;
    e.mtime_ns = uint32_t(st.st_mtim.tv_nsec);
    e.target = target;
    index_[path] = out_->size();
    out_->push_back(std::move(e));
    return &out_->back();
  }

  void walk(const std::string& dir, int depth) {
    if (index_.count(dir) || full()) return;
    struct stat st {};
    if (::lstat((root_ + dir).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
    const size_t at = out_->size();
    if (!record(dir, st, TreeEntry::Kind::Dir)) return;
    if (depth >= limits_.max_depth) return;
    std::vector<std::string> entries;
    if (DIR* d = ::opendir((root_ + dir).c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::string n = e->d_name; n != "." && n != "..") entries.push_back(n);
      ::closedir(d);
    } else {
      return;
    }
    std::sort(entries.begin(), entries.end());
    bool complete = true;
    std::vector<std::string> linked;
    for (const auto& n : entries) {
      const std::string p = dir == "/" ? "/" + n : dir + "/" + n;
      struct stat s {};
      if (full() || skip_.count(p) || ::lstat((root_ + p).c_str(), &s) != 0) {
        complete = false;
        continue;
      }
      if (S_ISDIR(s.st_mode)) {
        walk(p, depth + 1);
        complete = complete && index_.count(p);
      } else if (S_ISREG(s.st_mode)) {
        TreeEntry* f = record(p, s, TreeEntry::Kind::File);
        complete = f && complete;
        if (f) read_contents(f);
      } else if (S_ISLNK(s.st_mode)) {
        auto target = sys::read_link(root_ + p);
        complete = target.ok() && !target->empty() && record(p, s, TreeEntry::Kind::Link, *target) && complete;
        // A link to a directory (Tomcat's conf, logs, work): that tree too.
        if (target.ok() && !target->empty()) linked.push_back((*target)[0] == '/' ? *target : dir + "/" + *target);
      } else {
        complete = false;  // sockets, fifos, devices: not laid out in a sink
      }
    }
    (*out_)[at].complete = complete;
    for (const auto& l : linked) add_root(l, false);
  }

  // Small files come with their contents (when a pack can name them and the budget has
  // room), read without following a link.
  void read_contents(TreeEntry* f) {
    if (f->content || f->size > packfmt::kMaxTreeContent || !packfmt::contents_fit_a_pack(f->path) ||
        contents_ + f->size > packfmt::kTreeContentBudget)
      return;
    UniqueFd fd(::open((root_ + f->path).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st {};
    if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || uint64_t(st.st_size) != f->size) return;
    auto data = sys::read_fd(fd.get(), f->size, f->path);
    if (!data.ok() || data->size() != f->size) return;  // it changed meanwhile: a stand-in of the recorded size
    f->data = std::move(data).value();
    f->content = true;
    contents_ += f->size;
  }

  const std::string root_;
  const std::set<std::string>& skip_;
  const TreeLimits limits_;
  std::vector<TreeEntry>* out_;
  std::map<std::string, size_t> index_;
  size_t roots_ = 0;
  uint64_t contents_ = 0;
};

}  // namespace

bool outside_tree(const std::string& path) { return !packfmt::tree_may_hold(path); }

std::vector<std::string> named_dirs(pid_t pid, const std::string& proc_root) {
  const std::string dir = cat(proc_root, "/", pid);
  std::vector<std::string> texts;
  if (auto cmd = sys::read_file(dir + "/cmdline", 1 << 20); cmd.ok())
    for (auto& a : sys::split_nul(*cmd)) texts.push_back(std::move(a));
  if (auto env = sys::read_file(dir + "/environ", 1 << 20); env.ok())
    for (auto& v : sys::split_nul(*env))
      if (v.rfind("PATH=", 0) != 0) texts.push_back(std::move(v));  // the system's programs
  if (auto cwd = sys::read_link(dir + "/cwd"); cwd.ok()) texts.push_back(*cwd);
  std::vector<std::string> out;
  for (const auto& t : texts) {
    // Paths stand after `=`, `:` (class paths), `,` or a space, and run to the next of those.
    for (size_t at = t.find('/'); at != std::string::npos; at = t.find('/', at)) {
      if (at > 0 && std::string_view("=:, \"'").find(t[at - 1]) == std::string_view::npos) {
        at = t.find_first_of("=:, \"'", at);
        continue;
      }
      const size_t end = std::min(t.find_first_of(":, \"';", at), t.size());
      const auto parts = names(t.substr(at, end - at));
      const std::string p = join(parts, parts.size());
      if (!outside_tree(p) && std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
      at = end;
    }
  }
  return out;
}

std::vector<std::string> cgroup_dirs(pid_t pid, const std::string& proc_root) {
  const std::string dir = cat(proc_root, "/", pid);
  auto membership = sys::read_file(dir + "/cgroup", 64 << 10);
  auto mountinfo = sys::read_file(dir + "/mountinfo", 1 << 20);
  if (!membership.ok() || !mountinfo.ok()) return {};
  struct Mount {
    std::string root, point;
    bool v2;
    std::set<std::string> options;
  };
  std::vector<Mount> mounts;
  std::istringstream mi(*mountinfo);
  for (std::string line; std::getline(mi, line);) {
    std::istringstream in(line);
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4 || line.find('\\') != std::string::npos) continue;
    const std::string& type = *(dash + 1);
    if (type != "cgroup" && type != "cgroup2") continue;
    Mount m{f[3], f[4], type == "cgroup2", {}};
    std::istringstream opts(*(dash + 3));
    for (std::string o; std::getline(opts, o, ',');) m.options.insert(o);
    mounts.push_back(std::move(m));
  }
  std::vector<std::string> out;
  std::istringstream cg(*membership);
  for (std::string line; std::getline(cg, line);) {
    // hierarchy:controllers:path
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    for (const auto& m : mounts) {
      bool match = m.v2 == controllers.empty();
      std::istringstream names_in(controllers);
      for (std::string c; match && std::getline(names_in, c, ',');) match = m.options.count(c) > 0;
      // The path below the mount's root ("/" when the mount is the hierarchy's root).
      if (!match || (m.root != "/" && path.rfind(m.root, 0) != 0)) continue;
      const std::string below = m.root == "/" ? path : path.substr(m.root.size());
      if (names(below).empty()) break;  // the hierarchy's root: the whole machine's
      const std::string d = join(names(m.point + "/" + below), names(m.point + "/" + below).size());
      if (d.rfind("/sys/fs/cgroup/", 0) == 0 && !outside_tree(d) && std::find(out.begin(), out.end(), d) == out.end())
        out.push_back(d);
      break;
    }
  }
  return out;
}

void collect_cgroups(const std::string& root, const std::vector<std::string>& dirs, const TreeLimits& limits,
                     std::vector<packfmt::TreeEntry>* out) {
  Walker w(root, {}, limits, out);
  for (const auto& d : dirs) w.add_pseudo_dir(d);
}

void collect_tree(const std::string& root, const std::vector<std::string>& dirs, const std::set<std::string>& skip,
                  const TreeLimits& limits, std::vector<packfmt::TreeEntry>* out) {
  Walker w(root, skip, limits, out);
  for (const auto& d : dirs) w.add_root(d);
  w.add_file("/etc/localtime");
}

}  // namespace seamless::guest
