// SPDX-License-Identifier: Apache-2.0
// Syscall shims.
#include "common/sys.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(cat("read `", path, "`"));
    if (n == 0) return out;
    if (out.size() + static_cast<size_t>(n) > limit)
      return make_error(ErrorKind::Invalid, "`", path, "` is larger than ", limit, " bytes");
    out.append(buf, static_cast<size_t>(n));
  }
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
