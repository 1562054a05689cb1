// SPDX-License-Identifier: Apache-2.0
// Syscall shims.
#include "common/sys.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace seamless::sys {
namespace {

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path))
    return make_error(ErrorKind::Invalid, "unix socket path `", path, "` is longer than ", sizeof(addr.sun_path) - 1,
                      " bytes");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<UniqueFd> open(const std::string& path, int flags, int mode) {
  int fd;
  do fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno_error(cat("open `", path, "`"));
  return UniqueFd(fd);
}

Result<UniqueFd> connect_unix(const std::string& path) {
  auto addr = SL_TRY(unix_address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return errno_error("socket(AF_UNIX)");
  int rc;
  do rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return errno_error(cat("connect to `", path, "`"));
  SL_TRY(set_nonblocking(fd.get()));
  return fd;
}

Result<UniqueFd> listen_unix(const std::string& path, int backlog) {
  auto addr = SL_TRY(unix_address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return errno_error("socket(AF_UNIX)");
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    return errno_error(cat("bind `", path, "`"));
  if (::listen(fd.get(), backlog) < 0) return errno_error(cat("listen on `", path, "`"));
  return fd;
}

Result<UniqueFd> accept(int listen_fd, Deadline deadline) {
  SL_TRY(wait_fd(listen_fd, POLLIN, deadline));
  int fd;
  do fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno_error("accept");
  return UniqueFd(fd);
}

Result<void> wait_fd(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, deadline.poll_timeout());
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return errno_error("poll");
    if (rc == 0) return make_error(ErrorKind::Timeout, "timed out");
    return ok();  // readable, writable, or HUP/ERR: the next read/write reports it
  }
}

Result<size_t> read_some(int fd, char* buf, size_t max, Deadline deadline) {
  for (;;) {
    ssize_t n = ::read(fd, buf, max);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return make_error(ErrorKind::Closed, "connection reset by peer");
    if (errno != EAGAIN) return errno_error("read");
    SL_TRY(wait_fd(fd, POLLIN, deadline));
  }
}

Result<void> write_all(int fd, std::string_view data, Deadline deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data(), data.size());
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return make_error(ErrorKind::Closed, "peer closed the connection");
    if (errno != EAGAIN) return errno_error("write");
    SL_TRY(wait_fd(fd, POLLOUT, deadline));
  }
  return ok();
}

Result<std::string> read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) return errno_error(cat("readlink `", path, "`"));
  return std::string(buf, size_t(n));
}

Result<std::string> read_file(const std::string& path, size_t limit) {
  auto fd = SL_TRY(open(path, O_RDONLY));
  return read_fd(fd.get(), limit, path);
}

Result<std::string> read_fd(int fd, size_t limit, const std::string& what) {
  std::string out;
  struct stat st {};
  // A regular file's size, where it is within the limit: one allocation instead of a
  // string doubling (and copying) its way up.
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && uint64_t(st.st_size) <= limit) out.reserve(size_t(st.st_size));
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(cat("read `", what, "`"));
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > limit)
      return make_error(ErrorKind::Invalid, "`", what, "` is larger than ", limit, " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
}

namespace {

// The names of a relative or absolute path, `.` dropped; `..` is left for openat2 to keep
// inside the root.
std::vector<std::string> path_names(const std::string& path) {
  std::vector<std::string> out;
  for (size_t start = 0; start <= path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string n = path.substr(start, slash - start);
    if (!n.empty() && n != ".") out.push_back(std::move(n));
    start = slash + 1;
  }
  return out;
}

Result<UniqueFd> openat_in_root(int root_fd, const std::string& rel, int flags, mode_t mode, const std::string& what) {
  open_how how{};
  how.flags = uint64_t(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | __O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, root_fd, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(int(fd));
    if (errno != EINTR && errno != EAGAIN) return errno_error(cat("open `", what, "` in its root"));
  }
}

constexpr int kMaxRemoveDepth = 128;

// Removes entry `name` of directory `dir` and all below it, without following links or
// crossing into another mount.
Result<void> remove_entry(int dir, const std::string& name, dev_t dev, int depth, const std::string& what) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno == ENOENT ? ok() : errno_error(cat("stat `", what, "/", name, "`"));
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != dev) return make_error(ErrorKind::Invalid, "`", what, "/", name, "` is another mount");
    if (depth >= kMaxRemoveDepth)
      return make_error(ErrorKind::Invalid, "`", what, "` is nested more than ", kMaxRemoveDepth, " deep");
    int sub = ::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0) return errno_error(cat("open `", what, "/", name, "`"));
    DIR* d = ::fdopendir(sub);
    if (!d) {
      ::close(sub);
      return errno_error(cat("list `", what, "/", name, "`"));
    }
    std::vector<std::string> entries;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) entries.emplace_back(e->d_name);
    Result<void> r = ok();
    for (const auto& e : entries)
      if (r = remove_entry(::dirfd(d), e, dev, depth + 1, what + "/" + name); !r.ok()) break;
    ::closedir(d);
    SL_TRY(std::move(r));
    if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
      return errno_error(cat("remove `", what, "/", name, "`"));
    return ok();
  }
  if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT)
    return errno_error(cat("remove `", what, "/", name, "`"));
  return ok();
}

}  // namespace

Result<UniqueFd> open_in_root(const std::string& root, const std::string& path, int flags, mode_t mode) {
  UniqueFd r = SL_TRY(open(root, O_PATH | O_DIRECTORY));
  auto names = path_names(path);
  std::string rel;
  for (const auto& n : names) rel += (rel.empty() ? "" : "/") + n;
  return openat_in_root(r.get(), rel, flags, mode, cat(root, "/", rel));
}

Result<void> remove_in_root(const std::string& root, const std::string& path) {
  auto names = path_names(path);
  if (names.empty()) return make_error(ErrorKind::Invalid, "will not remove the root `", root, "` itself");
  const std::string leaf = names.back();
  names.pop_back();
  std::string parent;
  for (const auto& n : names) parent += (parent.empty() ? "" : "/") + n;
  if (leaf == "..") return make_error(ErrorKind::Invalid, "`", path, "` ends in `..`");
  auto dir = open_in_root(root, parent, O_RDONLY | O_DIRECTORY);
  if (!dir.ok()) return dir.error().kind == ErrorKind::NotFound ? ok() : Result<void>(std::move(dir).error());
  struct stat st {};
  if (::fstat(dir->get(), &st) != 0) return errno_error(cat("stat `", root, "/", parent, "`"));
  return remove_entry(dir->get(), leaf, st.st_dev, 0, cat(root, "/", parent));
}

Result<void> make_dirs_in_root(const std::string& root, const std::string& path) {
  UniqueFd at = SL_TRY(open_in_root(root, "", O_RDONLY | O_DIRECTORY));
  for (const auto& n : path_names(path)) {
    if (n == "..") return make_error(ErrorKind::Invalid, "`", path, "` holds `..`");
    if (::mkdirat(at.get(), n.c_str(), 0755) != 0 && errno != EEXIST)
      return errno_error(cat("mkdir `", n, "` in `", root, "`"));
    int next = ::openat(at.get(), n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return errno_error(cat("open `", n, "` in `", root, "`"));
    at = UniqueFd(next);
  }
  return ok();
}

Result<void> write_file(const std::string& path, std::string_view data, int mode) {
  auto fd = SL_TRY(open(path, O_WRONLY | O_CREAT | O_TRUNC, mode));
  SL_TRY_CTX(write_all(fd.get(), data, Deadline::never()), "write `", path, "`");
  return ok();
}

Result<void> set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno_error("fcntl(O_NONBLOCK)");
  return ok();
}

std::vector<std::string> split_nul(std::string_view raw) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\0') {
      out.emplace_back(raw.substr(start, i - start));
      start = i + 1;
    }
  }
  if (start < raw.size()) out.emplace_back(raw.substr(start));
  return out;
}

}  // namespace seamless::sys
