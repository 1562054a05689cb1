// SPDX-License-Identifier: Apache-2.0
// Sink containers: namespaces, overlay root with dummies, macvlan network, init.
#include "sinkd/container.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include "common/fd.h"
#include "common/log.h"
#include "common/sys.h"
#include "guest-agent/procfs.h"
#include "qmp/json.h"
#include "sinkd/confine.h"
#include "sinkd/hold.h"

namespace seamless::sink {
namespace {

constexpr std::string_view kModule = "container";
constexpr const char* kStateFile = "/state.json";

// Field 22 of /proc/PID/stat: when the process started (clock ticks since boot).
uint64_t start_time(pid_t pid) {
  auto text = sys::read_file(cat("/proc/", pid, "/stat"));
  auto stat = text.ok() ? guest::parse_stat(*text) : Result<guest::ProcStat>(text.error());
  return stat.ok() ? stat->start_time : 0;
}

std::string ns_of(pid_t pid, const char* ns) {
  std::error_code ec;
  auto link = std::filesystem::read_symlink(cat("/proc/", pid, "/ns/", ns), ec);
  return ec ? "" : link.string();
}

// The last NSpid entry: the pid as its own namespace sees it.
pid_t inner_pid(pid_t pid) {
  auto status = sys::read_file(cat("/proc/", pid, "/status"));
  if (!status.ok()) return 0;
  auto at = status->find("\nNSpid:");
  if (at == std::string::npos) return 0;
  auto end = status->find('\n', at + 1);
  std::istringstream in(status->substr(at + 7, end - at - 7));
  pid_t last = 0;
  for (pid_t p; in >> p;) last = p;
  return last;
}

Result<void> sys_mount(const std::string& src, const std::string& target, const char* type, unsigned long flags,
                       const std::string& data = "") {
  if (::mount(src.c_str(), target.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0)
    return errno_error(cat("mount ", type ? type : "bind", " `", src, "` on `", target, "`"));
  return ok();
}

constexpr const char* kLoggersFile = "/loggers";
// What a container sees of the sink's own root file system beyond its /usr (and the files
// a pack needs, see build_base_layer): what CRIU's helpers read (iptables through its
// alternatives link, the dynamic linker's cache).
constexpr const char* kSinkFilesShown[] = {"/etc/alternatives", "/etc/ld.so.cache"};
// How much of the sink's own files outside /usr one container may take copies of.
constexpr uint64_t kFromSinkBytes = uint64_t(64) << 20;
// What the gateways of one container may keep in /dev/shm.
constexpr uint64_t kShmBytes = uint64_t(64) << 20;

// A datagram socket bound at `path` (inside the container: its root is ours now), making
// the directories above it.
Result<UniqueFd> bind_logger(const std::string& path) {
  if (!packfmt::valid_logger(path)) return make_error(ErrorKind::Invalid, "logger `", path, "` is not allowed");
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1))
    if (::mkdir(path.substr(0, slash).c_str(), 0755) != 0 && errno != EEXIST)
      return errno_error(cat("mkdir `", path.substr(0, slash), "`"));
  ::unlink(path.c_str());
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno_error("logger: socket");
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), socklen_t(offsetof(sockaddr_un, sun_path) + path.size())) != 0)
    return errno_error(cat("logger: bind `", path, "`"));
  ::chmod(path.c_str(), 0666);
  return fd;
}

// The container's /dev: a small tmpfs with the harmless devices bound from the sink's
// (never its disks or consoles), pseudo-terminals of its own (a restored SSH session gets
// back its pty number) and a size-limited /dev/shm.
Result<void> make_dev(const std::string& dev) {
  SL_TRY(sys_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k,nr_inodes=64"));
  for (const char* node : {"null", "zero", "full", "random", "urandom", "tty"}) {
    const std::string at = cat(dev, "/", node);
    UniqueFd f(::open(at.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (!f.valid()) return errno_error(cat("create `", at, "`"));
    SL_TRY(sys_mount(cat("/dev/", node), at, nullptr, MS_BIND));
  }
  for (const char* d : {"pts", "shm"})
    if (::mkdir(cat(dev, "/", d).c_str(), 0755) != 0) return errno_error(cat("mkdir `", dev, "/", d, "`"));
  SL_TRY(
      sys_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"));
  if (UniqueFd f(::open((dev + "/ptmx").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666)); !f.valid())
    return errno_error(cat("create `", dev, "/ptmx`"));
  SL_TRY(sys_mount(dev + "/pts/ptmx", dev + "/ptmx", nullptr, MS_BIND));
  SL_TRY(sys_mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, cat("mode=1777,size=", kShmBytes)));
  for (auto [name, target] : {std::pair{"fd", "/proc/self/fd"},
                              {"stdin", "/proc/self/fd/0"},
                              {"stdout", "/proc/self/fd/1"},
                              {"stderr", "/proc/self/fd/2"}})
    if (::symlink(target, cat(dev, "/", name).c_str()) != 0) return errno_error(cat("symlink `", dev, "/", name, "`"));
  return ok();
}

// Runs as the container's pid 1 before anything else runs there. The loggers the
// gateways were connected to at home get sockets of their own here (see init_loop).
Result<void> init_setup(const std::string& dir, const std::string& hostname, std::vector<UniqueFd>* loggers) {
  const std::string root = dir + "/root";
  std::vector<std::string> logger_paths;
  if (auto text = sys::read_file(dir + kLoggersFile, 64 << 10); text.ok()) {
    std::istringstream in(*text);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) logger_paths.push_back(line);
  }
  SL_TRY(sys_mount("none", "/", nullptr, MS_REC | MS_PRIVATE));
  // Files shipped with the pack (hard links into the sink's file cache) lie over the
  // guest's file tree (empty files with its metadata), which lies over the base layer that
  // hides all of the sink's own root but its /usr (build_base_layer).
  std::string lower;
  for (const char* layer : {"/shipped", "/tree", "/base"}) {
    struct stat st {};
    if (::lstat((dir + layer).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) lower += dir + layer + ":";
  }
  SL_TRY(sys_mount("overlay", root, "overlay", 0,
                   cat("lowerdir=", lower, "/,upperdir=", dir, "/upper,workdir=", dir, "/work")));
  SL_TRY(make_dev(root + "/dev"));
  const std::string old = root + "/.oldroot";
  if (::mkdir(old.c_str(), 0700) != 0 && errno != EEXIST) return errno_error(cat("mkdir `", old, "`"));
  if (::chdir(root.c_str()) != 0) return errno_error(cat("chdir `", root, "`"));
  if (::syscall(SYS_pivot_root, ".", ".oldroot") != 0) return errno_error(cat("pivot_root to `", root, "`"));
  if (::chdir("/") != 0) return errno_error("chdir `/`");
  SL_TRY(sys_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  SL_TRY(sys_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY));
  // The gateways' cgroups as the guest had them (their files read at dump), read-only.
  const std::string cgroups = cat("/.oldroot", dir, "/tree/sys/fs/cgroup");
  if (struct stat st{}; ::lstat(cgroups.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    SL_TRY(sys_mount(cgroups, "/sys/fs/cgroup", nullptr, MS_BIND));
    SL_TRY(sys_mount("none", "/sys/fs/cgroup", nullptr,
                     MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC));
  }
  if (::umount2("/.oldroot", MNT_DETACH) != 0) return errno_error("umount `/.oldroot`");
  ::rmdir("/.oldroot");
  if (::sethostname(hostname.data(), hostname.size()) != 0) return errno_error(cat("sethostname `", hostname, "`"));
  for (const auto& path : logger_paths) loggers->push_back(SL_TRY(bind_logger(path)));
  return ok();
}

// The drain: where the output of gateways that wrote to a journal or logger at home goes
// in the sink (sinkd connects one stream per such socket and hands it to CRIU). Abstract,
// so it lives in the container's network namespace and in no file system.
constexpr char kDrain[] = "\0seamless-sink-drain";

sockaddr_un drain_address(socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, kDrain, sizeof kDrain - 1);
  *len = socklen_t(offsetof(sockaddr_un, sun_path) + sizeof kDrain - 1);
  return a;
}

Result<UniqueFd> listen_drain() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno_error("drain: socket");
  socklen_t len = 0;
  sockaddr_un a = drain_address(&len);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd.get(), 64) != 0)
    return errno_error("drain: bind/listen");
  return fd;
}

// Reaps orphans, reads and drops whatever arrives on the drain's streams and the loggers,
// and takes everything down with it on SIGTERM.
[[noreturn]] void init_loop(UniqueFd drain, std::vector<UniqueFd> loggers) {
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, nullptr);
  UniqueFd signals(::signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK));
  std::vector<UniqueFd> streams;
  char buf[4096];
  for (;;) {
    std::vector<pollfd> fds = {{signals.get(), POLLIN, 0}, {drain.get(), POLLIN, 0}};
    for (const auto& l : loggers) fds.push_back({l.get(), POLLIN, 0});
    for (const auto& s : streams) fds.push_back({s.get(), POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) continue;
    signalfd_siginfo si{};
    while (::read(signals.get(), &si, sizeof si) == ssize_t(sizeof si)) {
      if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
        ::kill(-1, SIGKILL);
        ::_exit(0);
      }
    }
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    for (int c; (c = ::accept4(drain.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;)
      streams.emplace_back(c);
    for (const auto& l : loggers)
      while (::recv(l.get(), buf, sizeof buf, MSG_DONTWAIT) >= 0) {
      }
    for (size_t i = 2 + loggers.size(); i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n;
      while ((n = ::read(fds[i].fd, buf, sizeof buf)) > 0) {
      }
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        for (auto& s : streams)
          if (s.get() == fds[i].fd) s.reset();
    }
    std::erase_if(streams, [](const UniqueFd& s) { return !s.valid(); });
  }
}

Result<void> copy_owner_and_mode(const std::string& from, const std::string& to) {
  struct stat st {};
  if (::lstat(from.c_str(), &st) != 0) return errno_error(cat("stat `", from, "`"));
  if (::chmod(to.c_str(), st.st_mode & 07777) != 0) return errno_error(cat("chmod `", to, "`"));
  if (::lchown(to.c_str(), st.st_uid, st.st_gid) != 0) return errno_error(cat("chown `", to, "`"));
  return ok();
}

// Sets the flags `set` and clears `clear` on every interface of the network namespace at
// `netns` but loopback.
Result<void> change_link_flags(const std::string& netns, short set, short clear) {
  return in_netns(netns, [&]() -> Result<void> {
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return errno_error("socket(AF_INET)");
    std::unique_ptr<struct if_nameindex, void (*)(struct if_nameindex*)> links(::if_nameindex(), ::if_freenameindex);
    if (!links) return errno_error("if_nameindex");
    for (const struct if_nameindex* l = links.get(); l->if_index != 0; ++l) {
      ifreq req{};
      std::snprintf(req.ifr_name, sizeof req.ifr_name, "%s", l->if_name);
      if (::ioctl(fd.get(), SIOCGIFFLAGS, &req) != 0) return errno_error(cat("SIOCGIFFLAGS `", l->if_name, "`"));
      if (req.ifr_flags & IFF_LOOPBACK) continue;
      req.ifr_flags = short((req.ifr_flags | set) & ~clear);
      if (::ioctl(fd.get(), SIOCSIFFLAGS, &req) != 0) return errno_error(cat("SIOCSIFFLAGS `", l->if_name, "`"));
    }
    return ok();
  });
}

// Adds (-I) or deletes (-D) the rule that keeps everything but loopback traffic in.
Result<void> drop_output(const std::string& netns, const char* op) {
  for (const char* tool : {"iptables", "ip6tables"})
    SL_TRY(run_ok({"nsenter", "--net=" + netns, tool, "-w", "-t", "raw", op, "OUTPUT", "!", "-o", "lo", "-j", "DROP"}));
  return ok();
}

}  // namespace

Result<void> check_container_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return make_error(ErrorKind::Invalid, "container id `", id, "` must be 1-64 bytes");
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return make_error(ErrorKind::Invalid, "container id `", id, "` may hold only [A-Za-z0-9._-]");
  if (id[0] == '.') return make_error(ErrorKind::Invalid, "container id `", id, "` must not start with a dot");
  return ok();
}

Result<UniqueFd> make_parents(const std::string& top, const std::string& path, const std::string& lower,
                              std::string* leaf) {
  if (!packfmt::is_plain_absolute(path))
    return make_error(ErrorKind::Invalid, "`", path, "` is not a plain absolute path");
  std::vector<std::string> parts;
  std::istringstream in(path.substr(1));
  for (std::string part; std::getline(in, part, '/');) parts.push_back(part);
  UniqueFd at(::open(top.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!at.valid()) return errno_error(cat("open `", top, "`"));
  std::string below;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    below += "/" + parts[i];
    if (::mkdirat(at.get(), parts[i].c_str(), 0755) == 0) {
      struct stat st {};
      if (::stat((lower + below).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        ::fchmodat(at.get(), parts[i].c_str(), st.st_mode & 07777, 0);
        ::fchownat(at.get(), parts[i].c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
      } else {
        ::fchmodat(at.get(), parts[i].c_str(), 0755, 0);  // whatever the umask
      }
    } else if (errno != EEXIST) {
      return errno_error(cat("mkdir `", top, below, "`"));
    }
    UniqueFd next(::openat(at.get(), parts[i].c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!next.valid()) return errno_error(cat("open `", top, below, "`"));
    at = std::move(next);
  }
  *leaf = parts.back();
  return at;
}

Result<void> make_directory(const std::string& upper, const packfmt::Directory& dir, const std::string& lower,
                            bool lower_shows) {
  struct stat st {};
  // The template has it as it was: nothing to do (CRIU checks a working directory's mode).
  if (lower_shows && ::lstat((lower + dir.path).c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
      (st.st_mode & 01777) == dir.mode && st.st_uid == dir.uid && st.st_gid == dir.gid)
    return ok();
  std::string leaf;
  UniqueFd at = SL_TRY(make_parents(upper, dir.path, lower, &leaf));
  if (::mkdirat(at.get(), leaf.c_str(), 0700) != 0 && errno != EEXIST)
    return errno_error(cat("mkdir `", upper, dir.path, "`"));
  UniqueFd d(::openat(at.get(), leaf.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!d.valid()) return errno_error(cat("open `", upper, dir.path, "`"));
  if (::fchown(d.get(), dir.uid, dir.gid) != 0 && ::geteuid() == 0) return errno_error(cat("chown `", dir.path, "`"));
  if (::fchmod(d.get(), dir.mode & 01777) != 0) return errno_error(cat("chmod `", dir.path, "`"));
  return ok();
}

Result<void> build_tree_layer(const std::string& layer, const std::vector<packfmt::TreeEntry>& tree,
                              const std::string& contents, const std::string& lower) {
  SL_TRY(packfmt::check_tree(tree));
  if (::mkdir(layer.c_str(), 0755) != 0) return errno_error(cat("mkdir `", layer, "`"));
  SL_TRY(copy_owner_and_mode(lower, layer));
  std::vector<const packfmt::TreeEntry*> sorted;
  for (const auto& e : tree) sorted.push_back(&e);
  // A parent before its entries (it is their prefix).
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->path < b->path; });
  using Kind = packfmt::TreeEntry::Kind;
  for (const auto* e : sorted) {
    std::string leaf;
    UniqueFd at = SL_TRY_CTX(make_parents(layer, e->path, lower, &leaf), "file tree");
    const timespec times[2] = {{e->mtime_s, long(e->mtime_ns)}, {e->mtime_s, long(e->mtime_ns)}};
    const std::string where = cat(layer, e->path);
    if (e->kind == Kind::Link) {
      if (::symlinkat(e->target.c_str(), at.get(), leaf.c_str()) != 0) return errno_error(cat("symlink `", where, "`"));
      if (::fchownat(at.get(), leaf.c_str(), e->uid, e->gid, AT_SYMLINK_NOFOLLOW) != 0 && ::geteuid() == 0)
        return errno_error(cat("chown `", where, "`"));
      if (::utimensat(at.get(), leaf.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
        return errno_error(cat("set the times of `", where, "`"));
      continue;
    }
    UniqueFd f;
    if (e->kind == Kind::Dir) {
      if (::mkdirat(at.get(), leaf.c_str(), 0700) != 0 && errno != EEXIST)
        return errno_error(cat("mkdir `", where, "`"));
      f = UniqueFd(::openat(at.get(), leaf.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    } else {
      f = UniqueFd(::openat(at.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (f.valid() && e->content) {
        // Its contents from the unpacked pack (regular files and directories only).
        const std::string from = cat(contents, "/", packfmt::kTreeContents, e->path);
        UniqueFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (contents.empty() || !in.valid()) return errno_error(cat("the contents of `", e->path, "` (`", from, "`)"));
        auto data = sys::read_fd(in.get(), e->size, from);
        if (!data.ok() || data->size() != e->size)
          return make_error(ErrorKind::Invalid, "the contents of `", e->path, "` are not ", e->size, " bytes");
        SL_TRY(sys::write_all(f.get(), *data, Deadline(Millis(10000))));
      } else if (f.valid() && ::ftruncate(f.get(), off_t(e->size)) != 0) {
        return errno_error(cat("size `", where, "`"));
      }
    }
    if (!f.valid()) return errno_error(cat("create `", where, "`"));
    if (::fchown(f.get(), e->uid, e->gid) != 0 && ::geteuid() == 0) return errno_error(cat("chown `", where, "`"));
    if (::fchmod(f.get(), e->mode & 07777) != 0) return errno_error(cat("chmod `", where, "`"));
    // A complete directory hides what the layers below have there.
    if (e->complete && ::fsetxattr(f.get(), "trusted.overlay.opaque", "y", 1, 0) != 0)
      return errno_error(cat("make `", where, "` opaque"));
    if (e->kind == Kind::File && ::futimens(f.get(), times) != 0)
      return errno_error(cat("set the times of `", where, "`"));
  }
  // Directories' times last, deepest first: making their entries changed them.
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it) {
    if ((*it)->kind != Kind::Dir) continue;
    std::string leaf;
    UniqueFd at = SL_TRY_CTX(make_parents(layer, (*it)->path, lower, &leaf), "file tree");
    const timespec times[2] = {{(*it)->mtime_s, long((*it)->mtime_ns)}, {(*it)->mtime_s, long((*it)->mtime_ns)}};
    if (::utimensat(at.get(), leaf.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
      return errno_error(cat("set the times of `", layer, (*it)->path, "`"));
  }
  return ok();
}

std::vector<std::string> shown_top_level(const std::string& root) {
  std::vector<std::string> out = {"usr"};
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    std::error_code link;
    if (!e.is_symlink(link)) continue;
    const std::string target = std::filesystem::read_symlink(e.path(), link).string();
    if (target == "usr" || target == "/usr" || target.starts_with("usr/") || target.starts_with("/usr/"))
      out.push_back(e.path().filename().string());
  }
  return out;
}

bool shown_as_is(const std::string& path, const std::vector<std::string>& shown) {
  if (path == "/") return true;
  const std::string first = path.substr(1, path.find('/', 1) - 1);
  return std::find(shown.begin(), shown.end(), first) != shown.end();
}

namespace {

// Copies `path` of the sink's root file system (`root`, device `dev`) into `layer`: a
// regular file (never a device, FIFO or a file of another file system, never blocking),
// a link as a link, a directory with its files and links; owners, modes and times kept.
Result<void> copy_from_sink(const std::string& root, dev_t dev, const std::string& path, const std::string& layer,
                            uint64_t* budget, bool descend = true) {
  if (!packfmt::is_plain_absolute(path))
    return make_error(ErrorKind::Invalid, "`", path, "` is not a plain absolute path");
  const std::string from = root + path;
  struct stat st {};
  if (::lstat(from.c_str(), &st) != 0) return errno_error(cat("stat the sink's `", path, "`"));
  std::string leaf;
  UniqueFd at = SL_TRY(make_parents(layer, path, root, &leaf));
  const timespec times[2] = {st.st_atim, st.st_mtim};
  if (S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(from, ec);
    if (ec) return make_error(ErrorKind::System, "readlink the sink's `", path, "`: ", ec.message());
    if (::symlinkat(target.c_str(), at.get(), leaf.c_str()) != 0 ||
        ::fchownat(at.get(), leaf.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0)
      return errno_error(cat("link `", layer, path, "`"));
    (void)::utimensat(at.get(), leaf.c_str(), times, AT_SYMLINK_NOFOLLOW);
    return ok();
  }
  if (st.st_dev != dev) return make_error(ErrorKind::Invalid, "the sink's `", path, "` is on another file system");
  UniqueFd to;
  if (S_ISDIR(st.st_mode) && descend) {
    if (::mkdirat(at.get(), leaf.c_str(), 0700) != 0 && errno != EEXIST)
      return errno_error(cat("mkdir `", layer, path, "`"));
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(from, ec)) {
      std::error_code kind;
      if (!std::filesystem::is_directory(e.symlink_status(kind)))
        SL_TRY(copy_from_sink(root, dev, cat(path, "/", e.path().filename().string()), layer, budget, false));
    }
    if (ec) return make_error(ErrorKind::System, "list the sink's `", path, "`: ", ec.message());
    to = UniqueFd(::openat(at.get(), leaf.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  } else if (S_ISREG(st.st_mode)) {
    if (uint64_t(st.st_size) > *budget)
      return make_error(ErrorKind::Invalid, "the sink's own files this pack needs outside /usr exceed ",
                        kFromSinkBytes >> 20, " MiB (at `", path, "`)");
    *budget -= uint64_t(st.st_size);
    UniqueFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat now {};
    if (!in.valid() || ::fstat(in.get(), &now) != 0 || !S_ISREG(now.st_mode) || now.st_dev != dev)
      return make_error(ErrorKind::Invalid, "the sink's `", path, "` is no longer a regular file");
    auto data = SL_TRY(sys::read_fd(in.get(), size_t(st.st_size), from));
    to = UniqueFd(::openat(at.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!to.valid()) return errno_error(cat("create `", layer, path, "`"));
    SL_TRY(sys::write_all(to.get(), data, Deadline(Millis(10000))));
  } else {
    return make_error(ErrorKind::Invalid, "the sink's `", path, "` is neither a file, a link nor a directory");
  }
  if (!to.valid()) return errno_error(cat("open `", layer, path, "`"));
  if (::fchown(to.get(), st.st_uid, st.st_gid) != 0 || ::fchmod(to.get(), st.st_mode & 07777) != 0)
    return errno_error(cat("owner and mode of `", layer, path, "`"));
  (void)::futimens(to.get(), times);
  return ok();
}

}  // namespace

Result<void> build_base_layer(const std::string& layer, const std::string& root,
                              const std::vector<std::string>& from_sink) {
  if (::mkdir(layer.c_str(), 0755) != 0) return errno_error(cat("mkdir `", layer, "`"));
  SL_TRY(copy_owner_and_mode(root, layer));
  UniqueFd top(::open(layer.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!top.valid()) return errno_error(cat("open `", layer, "`"));
  const auto shown = shown_top_level(root);
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (std::find(shown.begin(), shown.end(), name) != shown.end()) continue;
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0) return errno_error(cat("stat `", e.path().string(), "`"));
    if (S_ISDIR(st.st_mode)) {
      // Empty and opaque: a mount point still, its contents hidden.
      if (::mkdirat(top.get(), name.c_str(), 0700) != 0) return errno_error(cat("mkdir `", layer, "/", name, "`"));
      UniqueFd d(::openat(top.get(), name.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!d.valid() || ::fchown(d.get(), st.st_uid, st.st_gid) != 0 || ::fchmod(d.get(), st.st_mode & 07777) != 0 ||
          ::fsetxattr(d.get(), "trusted.overlay.opaque", "y", 1, 0) != 0)
        return errno_error(cat("hide the sink's `/", name, "`"));
    } else if (::mknodat(top.get(), name.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) {
      return errno_error(cat("white out the sink's `/", name, "`"));  // an overlay whiteout
    }
  }
  if (ec) return make_error(ErrorKind::System, "list `", root, "`: ", ec.message());
  struct stat rs {};
  if (::stat(root.c_str(), &rs) != 0) return errno_error(cat("stat `", root, "`"));
  uint64_t budget = kFromSinkBytes;
  std::vector<std::string> copied;  // each once (a pack may name a file these hold)
  auto covered = [&](const std::string& path) {
    return std::any_of(copied.begin(), copied.end(), [&](const std::string& c) {
      return path == c || (path.size() > c.size() && path.starts_with(c) && path[c.size()] == '/');
    });
  };
  for (const char* path : kSinkFilesShown) {
    struct stat st {};
    if (::lstat((root + path).c_str(), &st) != 0) continue;
    SL_TRY(copy_from_sink(root, rs.st_dev, path, layer, &budget));
    copied.emplace_back(path);
  }
  for (const auto& path : from_sink) {
    if (shown_as_is(path, shown) || covered(path)) continue;
    SL_TRY_CTX(copy_from_sink(root, rs.st_dev, path, layer, &budget, false), "base layer");
    copied.push_back(path);
  }
  return ok();
}

Result<void> make_dummy(const std::string& upper, const packfmt::FileIdentity& file, const std::string& lower) {
  const std::string& path = file.path;
  std::string leaf;
  UniqueFd at = SL_TRY_CTX(make_parents(upper, path, lower, &leaf), "dummy");
  UniqueFd f(::openat(at.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!f.valid()) return errno_error(cat("create dummy `", upper, path, "`"));
  if (::ftruncate(f.get(), off_t(file.size)) != 0) return errno_error(cat("size dummy `", upper, path, "`"));
  if (::fchown(f.get(), file.uid, file.gid) != 0 && ::geteuid() == 0)
    return errno_error(cat("chown dummy `", upper, path, "`"));
  if (::fchmod(f.get(), file.mode & 07777) != 0) return errno_error(cat("chmod dummy `", upper, path, "`"));
  return ok();
}

int container_init_main(const std::string& dir, const std::string& hostname, const std::string& cgroup) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    std::perror("seamless-sinkd: pipe");
    return 1;
  }
  // Its cgroup first: the cgroup namespace is rooted where the process is when it unshares.
  if (!cgroup.empty()) {
    if (auto r = join_cgroup(cgroup); !r.ok()) {
      std::fprintf(stderr, "seamless-sinkd: joining the container's cgroup: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  if (::unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP) != 0) {
    std::fprintf(stderr, "seamless-sinkd: unshare of the container's namespaces: %s\n", std::strerror(errno));
    return 1;
  }
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("seamless-sinkd: fork of the container's init");
    return 1;
  }
  if (child == 0) {
    ::close(report[0]);
    // The daemon reads our parent's output to its end: pid 1 keeps none of it.
    int log = ::open((dir + "/init.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log >= 0) ::dup2(log, 1), ::dup2(log, 2);
    if (null >= 0) ::dup2(null, 0);
    ::setsid();
    std::vector<UniqueFd> loggers;
    auto r = init_setup(dir, hostname, &loggers);
    UniqueFd drain;
    if (r.ok()) {
      auto d = listen_drain();
      if (d.ok())
        drain = std::move(d).value();
      else
        r = std::move(d).error();
    }
    std::string msg = r.ok() ? "ok" : r.error().message;
    (void)!::write(report[1], msg.data(), msg.size());
    ::close(report[1]);
    if (!r.ok()) ::_exit(1);
    init_loop(std::move(drain), std::move(loggers));
  }
  ::close(report[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    msg.append(buf, size_t(n));
  }
  if (msg != "ok") {
    std::fprintf(stderr, "seamless-sinkd: setting up the container: %s\n", msg.empty() ? "its init died" : msg.c_str());
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return 1;
  }
  std::printf("%d\n", child);
  return 0;
}

int join_cgroup_main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "seamless-sinkd: --join-cgroup DIR PROGRAM [ARGS...]\n");
    return 2;
  }
  if (auto r = join_cgroup(argv[2]); !r.ok()) {
    std::fprintf(stderr, "seamless-sinkd: %s\n", r.error().message.c_str());
    return 125;
  }
  // No process started here, CRIU's restores and what they restore included, gains a
  // privilege by executing something (set-user-ID, file capabilities); it also lets the
  // restored threads take the sink's seccomp filter after they lost CAP_SYS_ADMIN.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::fprintf(stderr, "seamless-sinkd: PR_SET_NO_NEW_PRIVS: %s\n", std::strerror(errno));
    return 125;
  }
  ::execvp(argv[3], argv + 3);
  std::fprintf(stderr, "seamless-sinkd: executing `%s`: %s\n", argv[3], std::strerror(errno));
  return 127;
}

Result<Container> Container::create(const ContainerSpec& spec, const std::string& self_exe,
                                    const Hook& before_network) {
  SL_TRY(check_container_id(spec.id));
  if (spec.interfaces.empty()) return make_error(ErrorKind::Invalid, "the pack names no network interface");
  if (::mkdir(spec.dir.c_str(), 0700) != 0) return errno_error(cat("mkdir `", spec.dir, "`"));
  Container c(spec.id, spec.dir, 0, 0, spec.cgroup);
  auto body = [&]() -> Result<void> {
    for (const char* sub : {"/upper", "/work", "/root"})
      if (::mkdir((spec.dir + sub).c_str(), 0700) != 0) return errno_error(cat("mkdir `", spec.dir, sub, "`"));
    // The overlay's root takes its attributes from the upper layer: make it look like "/".
    SL_TRY(copy_owner_and_mode("/", c.upper()));
    SL_TRY(build_base_layer(spec.dir + "/base", "/", spec.from_sink));
    for (const auto& f : spec.dummies) SL_TRY_CTX(make_dummy(c.upper(), f), "standing in for `", f.path, "`");
    const auto shown = shown_top_level("/");
    for (const auto& d : spec.dirs)
      SL_TRY_CTX(make_directory(c.upper(), d, "/", shown_as_is(d.path, shown)), "directory `", d.path, "`");
    if (!spec.loggers.empty()) {
      std::string lines;
      for (const auto& l : spec.loggers) {
        if (!packfmt::valid_logger(l)) return make_error(ErrorKind::Invalid, "logger `", l, "` is not allowed");
        lines += l + "\n";
      }
      SL_TRY(sys::write_file(spec.dir + kLoggersFile, lines, 0600));
    }
    if (!spec.shipped.empty()) {
      if (!spec.cache) return make_error(ErrorKind::Invalid, "shipped files but no file cache");
      SL_TRY(spec.cache->build_layer(spec.dir + "/shipped", spec.shipped));
    }
    if (!spec.tree.empty()) SL_TRY(build_tree_layer(spec.dir + "/tree", spec.tree, spec.tree_contents));
    std::vector<std::string> init = {self_exe, "--container-init", spec.dir, spec.hostname};
    if (!spec.cgroup.empty()) init.push_back(spec.cgroup);
    auto out = SL_TRY(run_ok(init, Millis(60000)));
    c.init_ = pid_t(std::atoi(out.c_str()));
    c.start_ = start_time(c.init_);
    if (c.init_ <= 1 || c.start_ == 0)
      return make_error(ErrorKind::System, "the container's init is gone: `", out, "`");
    if (before_network) SL_TRY(before_network(c.init_));
    SL_TRY_CTX(c.setup_network(spec), "network of container `", spec.id, "`");
    qmp::ArgWriter w;
    w.str("id", spec.id).num("init", c.init_).str("start", std::to_string(c.start_)).str("hostname", spec.hostname);
    w.str("cgroup", spec.cgroup);
    SL_TRY(sys::write_file(spec.dir + kStateFile, w.finish(), 0600));
    return ok();
  };
  if (auto r = body(); !r.ok()) {
    c.destroy();
    return std::move(r).error().wrap(cat("creating sink container `", spec.id, "`"));
  }
  SL_LOG(Info, kModule, "container `", spec.id, "` up, init pid ", c.init_);
  return c;
}

Result<void> Container::setup_network(const ContainerSpec& spec) const {
  // The container stands in for a VM that configured itself long ago: its interfaces solicit
  // no routers (the routes come from the pack) and wait for no duplicate-address check.
  // Set before the links move in, which take the namespace's defaults.
  (void)in_netns(netns(), [] {
    for (const char* knob : {"router_solicitations", "accept_dad"})
      (void)sys::write_file(cat("/proc/sys/net/ipv6/conf/default/", knob), "0");
    return ok();
  });
  if (spec.quiet) SL_TRY(drop_output(netns(), "-I"));
  // Each `ip` command its own argv, run in the container's network namespace: a manifest's
  // values (checked by Manifest::parse) are never text of a batch or a shell.
  std::vector<std::vector<std::string>> commands = {{"link", "set", "lo", "up"}};
  for (size_t i = 0; i < spec.interfaces.size(); ++i) {
    const auto& iface = spec.interfaces[i];
    if (!packfmt::valid_interface_name(iface.name) || !packfmt::valid_mac(iface.mac))
      return make_error(ErrorKind::Invalid, "interface ", qmp::quote(iface.name), " with MAC ", qmp::quote(iface.mac),
                        " cannot be made");
    // Named after the init, so no two containers pick the same name in the sink's namespace.
    const std::string link = cat("slc", init_, "i", i);
    SL_TRY(run_ok({"ip", "link", "add", "link", spec.nic, "name", link, "address", iface.mac, "type", "macvlan", "mode",
                   "bridge"}));
    if (auto moved = run_ok({"ip", "link", "set", link, "netns", std::to_string(init_)}); !moved.ok()) {
      (void)seamless::run({"ip", "link", "del", link});
      return std::move(moved).error();
    }
    commands.push_back({"link", "set", link, "name", iface.name});
    for (const auto& a : iface.addresses) {
      if (!packfmt::valid_prefix(a)) return make_error(ErrorKind::Invalid, "address ", qmp::quote(a), " is not one");
      commands.push_back({"addr", "replace", a, "dev", iface.name});
      if (a.find(':') != std::string::npos) commands.back().push_back("nodad");
    }
    commands.push_back({"link", "set", iface.name});
    if (spec.quiet) commands.back().insert(commands.back().end(), {"arp", "off"});
    commands.back().push_back("up");
  }
  for (const auto& r : spec.routes) {
    const std::string dst = r.dst == "default" && r.ipv6 ? "::/0" : r.dst;
    commands.push_back({"route", "replace", dst});
    if (!r.via.empty()) commands.back().insert(commands.back().end(), {"via", r.via});
    commands.back().insert(commands.back().end(), {"dev", r.dev});
  }
  for (auto& argv : commands) {
    argv.insert(argv.begin(), {"nsenter", "-t", std::to_string(init_), "-n", "ip"});
    SL_TRY(run_ok(argv));
  }
  return ok();
}

Result<Container> Container::adopt(const std::string& dir) {
  auto text = SL_TRY(sys::read_file(dir + kStateFile));
  auto json = SL_TRY(qmp::parse(text));
  auto id = SL_TRY(qmp::get_string(json.root(), "id"));
  auto init = SL_TRY(qmp::get_int(json.root(), "init"));
  auto start = std::strtoull(SL_TRY(qmp::get_string(json.root(), "start")).c_str(), nullptr, 10);
  Container c(id, dir, pid_t(init), start, qmp::opt_string(json.root(), "cgroup").value_or(""));
  if (!c.alive()) return make_error(ErrorKind::NotFound, "the init of container `", id, "` (pid ", init, ") is gone");
  return c;
}

std::string Container::root() const { return cat("/proc/", init_, "/root"); }

std::string Container::netns() const { return cat("/proc/", init_, "/ns/net"); }

bool Container::alive() const {
  if (init_ <= 1 || start_time(init_) != start_) return false;
  auto cmdline = sys::read_file(cat("/proc/", init_, "/cmdline"));
  return cmdline.ok() && cmdline->find("--container-init") != std::string::npos &&
         cmdline->find(dir_) != std::string::npos;
}

Result<RunResult> Container::run(const std::vector<std::string>& argv, Millis timeout) const {
  if (!alive()) return make_error(ErrorKind::NotFound, "container `", id_, "` is gone");
  // In its cgroup (a restored gateway is born under the container's limits) and cgroup
  // namespace (CRIU there sees the container's cgroup as "/").
  std::vector<std::string> full;
  if (!cgroup_.empty()) full = {"/proc/self/exe", "--join-cgroup", cgroup_};
  for (const char* a : {"nsenter", "-t"}) full.push_back(a);
  full.push_back(std::to_string(init_));
  for (const char* a : {"-p", "-m", "-n", "-u", "-i", "-C", "-r", "-w", "--"}) full.push_back(a);
  full.insert(full.end(), argv.begin(), argv.end());
  return seamless::run(full, timeout);
}

Result<UniqueFd> Container::drain_stream() const {
  // Made in the container's network namespace (the drain's abstract address lives there).
  UniqueFd fd;
  SL_TRY(in_netns(netns(), [&]() -> Result<void> {
    fd.reset(::socket(AF_UNIX, SOCK_STREAM, 0));  // not close-on-exec: CRIU inherits it
    socklen_t len = 0;
    sockaddr_un a = drain_address(&len);
    if (!fd.valid() || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), len) != 0)
      return errno_error(cat("connecting to the drain of container `", id_, "`"));
    return ok();
  }));
  return fd;
}

std::vector<std::pair<pid_t, pid_t>> Container::processes() const {
  std::vector<std::pair<pid_t, pid_t>> out;
  const std::string ns = ns_of(init_, "pid");
  if (ns.empty()) return out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    pid_t pid = std::atoi(name.c_str());
    if (pid == init_ || ns_of(pid, "pid") != ns) continue;
    if (pid_t inner = inner_pid(pid); inner > 1) out.emplace_back(pid, inner);
  }
  return out;
}

Result<void> Container::silence() const {
  // The drop first: changing an interface's flags sends MLD reports.
  SL_TRY(drop_output(netns(), "-I"));
  SL_TRY_CTX(change_link_flags(netns(), IFF_NOARP, 0), "no ARP in container `", id_, "`");
  return ok();
}

Result<void> Container::speak() const {
  SL_TRY_CTX(change_link_flags(netns(), 0, IFF_NOARP), "ARP in container `", id_, "`");
  // Neighbours resolved while ARP was off point at the container's own MAC.
  SL_TRY(run_ok({"nsenter", "--net=" + netns(), "ip", "neigh", "flush", "all"}));
  while (drop_output(netns(), "-D").ok()) {
  }
  return ok();
}

void Container::destroy() {
  if (alive()) {
    // The VM's MAC and addresses leave the wire now, not when the kernel gets round to
    // freeing the namespace (a reset or solicitation from a dying one reaches the VM's
    // clients, or teaches the switch the VM's MAC at the sink's port).
    if (auto down = change_link_flags(netns(), 0, IFF_UP); !down.ok())
      SL_LOG(Warn, kModule, "container `", id_, "`: taking its links down: ", down.error().message);
    ::kill(init_, SIGKILL);
    // The namespaces (and the macvlans and mounts in them) go with their last process;
    // an exited init shows no namespaces even before its parent (not us) reaps it.
    for (int i = 0; i < 100 && !ns_of(init_, "mnt").empty() && start_time(init_) == start_; ++i) ::usleep(50 * 1000);
  }
  if (!cgroup_.empty())
    if (auto r = remove_cgroup(cgroup_, Millis(5000)); !r.ok()) SL_LOG(Warn, kModule, r.error().message);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  if (ec) SL_LOG(Warn, kModule, "removing `", dir_, "`: ", ec.message());
}

}  // namespace seamless::sink
