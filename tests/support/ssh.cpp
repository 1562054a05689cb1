// SPDX-License-Identifier: Apache-2.0
// SSH keys and sessions for integration tests.
#include "tests/support/ssh.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "common/sys.h"

namespace seamless::test {

Result<std::string> make_trusted_ssh_key(qmp::Channel& agent, const std::string& dir) {
  const std::string key = dir + "/id";
  SL_TRY(run_ok({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key}));
  auto pub = SL_TRY(sys::read_file(key + ".pub"));
  SL_TRY(qmp::guest_run_ok(agent, "/bin/mkdir", {"-p", "-m", "700", "/root/.ssh"}));
  SL_TRY(qmp::write_guest_file(agent, "/root/.ssh/authorized_keys", pub));
  // The agent creates files world-writable; dropbear ignores such key files.
  SL_TRY(qmp::guest_run_ok(agent, "/bin/chmod", {"600", "/root/.ssh/authorized_keys"}));
  return key;
}

// Keep-alives a client lets go unanswered before it gives up. A park's window (from the
// gateway's dump in the guest until the sink speaks for it) took 30 s under TCG on a
// loaded 2-core CI host; ssh's default of 3 gave up on a 10 s interval then.
constexpr int kAliveCount = 9;

Result<std::unique_ptr<SshSession>> SshSession::open(const Testbed& bed, const std::string& key, const std::string& dir,
                                                     const std::string& ip, int port, int keepalive_s) {
  std::unique_ptr<SshSession> s(new SshSession());
  s->fifo_ = cat(dir, "/ssh-", ip, "-", port, ".in");
  s->out_ = cat(dir, "/ssh-", ip, "-", port, ".out");
  ::unlink(s->fifo_.c_str());
  if (::mkfifo(s->fifo_.c_str(), 0600) != 0) return errno_error(cat("mkfifo `", s->fifo_, "`"));
  // O_RDWR: opening does not wait for the reader, and the FIFO never sees EOF.
  s->in_ = UniqueFd(::open(s->fifo_.c_str(), O_RDWR | O_CLOEXEC));
  if (!s->in_.valid()) return errno_error(cat("open `", s->fifo_, "`"));
  const std::string cmd =
      cat("exec ip netns exec ", bed.netns, " ssh -tt -i ", key,
          " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes",
          keepalive_s > 0 ? cat(" -o ServerAliveInterval=", keepalive_s, " -o ServerAliveCountMax=", kAliveCount) : "",
          " -p ", port, " root@", ip, " < ", s->fifo_, " > ", s->out_, " 2>&1");
  s->ssh_ = SL_TRY(ChildProcess::spawn({"/bin/sh", "-c", cmd}));
  return s;
}

Result<void> SshSession::type(const std::string& line, const std::string& expect, Millis timeout) {
  SL_TRY(send(line));
  return wait_for(expect, timeout);
}

Result<void> SshSession::send(const std::string& line) {
  return sys::write_all(in_.get(), line + "\n", Deadline(Millis(5000)));
}

Result<void> SshSession::wait_for(const std::string& expect, Millis timeout) {
  for (Deadline d(timeout); !d.expired(); std::this_thread::sleep_for(Millis(200))) {
    auto out = sys::read_file(out_);
    if (out.ok() && out->find(expect) != std::string::npos) return ok();
    if (!ssh_.running()) break;
  }
  auto out = sys::read_file(out_);
  return make_error(ErrorKind::Timeout, "`", expect, "` did not appear in the SSH session (ssh ",
                    ssh_.running() ? "running" : "exited", "); it printed: ", out.ok() ? *out : "nothing");
}

}  // namespace seamless::test
