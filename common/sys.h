// SPDX-License-Identifier: Apache-2.0
// Syscall shims: O_CLOEXEC by default, EINTR retried, Result back, paths in messages.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "common/time.h"

namespace seamless::sys {

Result<UniqueFd> open(const std::string& path, int flags, int mode = 0644);
// Connects a SOCK_STREAM unix socket to `path` (non-blocking, close-on-exec).
Result<UniqueFd> connect_unix(const std::string& path);
// Creates a listening unix socket at `path` (replacing a stale socket file).
Result<UniqueFd> listen_unix(const std::string& path, int backlog = 8);
Result<UniqueFd> accept(int listen_fd, Deadline deadline);

// Waits until fd is readable (events=POLLIN) or writable (POLLOUT); Timeout error on expiry.
Result<void> wait_fd(int fd, short events, Deadline deadline);
// Reads what is available (at most max bytes), waiting up to the deadline; 0 means EOF.
Result<size_t> read_some(int fd, char* buf, size_t max, Deadline deadline);
// Writes all bytes, waiting on a non-blocking fd up to the deadline.
Result<void> write_all(int fd, std::string_view data, Deadline deadline);

Result<std::string> read_file(const std::string& path, size_t limit = 64 << 20);
// Reads an open file from where it stands to its end; an error if that is more than
// `limit` bytes (`what` names it in messages).
Result<std::string> read_fd(int fd, size_t limit, const std::string& what);

// Paths inside a directory tree another party controls (a sink container's root, seen at
// /proc/INIT/root): each resolved as if `root` were `/` (openat2 RESOLVE_IN_ROOT |
// RESOLVE_NO_MAGICLINKS), so neither a link planted there nor `..` leads out of it.
Result<UniqueFd> open_in_root(const std::string& root, const std::string& path, int flags, mode_t mode = 0);
// Removes `path` below `root` and everything in it, following nothing and crossing no
// mount; ok when it is not there.
Result<void> remove_in_root(const std::string& root, const std::string& path);
// Makes the directories of `path` below `root` that are missing (mode 0755).
Result<void> make_dirs_in_root(const std::string& root, const std::string& path);
// The target of symbolic link `path` (up to 4096 bytes).
Result<std::string> read_link(const std::string& path);
Result<void> write_file(const std::string& path, std::string_view data, int mode = 0644);

Result<void> set_nonblocking(int fd);
// Splits NUL-terminated strings (/proc/PID/cmdline, environ); a last unterminated one counts.
std::vector<std::string> split_nul(std::string_view raw);

}  // namespace seamless::sys
