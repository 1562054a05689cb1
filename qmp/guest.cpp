// SPDX-License-Identifier: Apache-2.0
// Guest program execution and chunked, verified file transfer over QGA.
#include "qmp/guest.h"

#include <algorithm>
#include <thread>

#include "common/encoding.h"
#include "common/log.h"

namespace seamless::qmp {
namespace {

// Closes a guest file handle on every path out of a transfer.
class GuestFile {
 public:
  GuestFile(Channel& agent, int64_t handle) : agent_(agent), handle_(handle) {}
  GuestFile(const GuestFile&) = delete;
  GuestFile& operator=(const GuestFile&) = delete;
  ~GuestFile() {
    if (handle_ >= 0) (void)close();
  }
  int64_t handle() const { return handle_; }
  Result<void> close() {
    int64_t h = std::exchange(handle_, -1);
    auto r = execute(agent_, GuestFileClose{h});
    if (!r.ok()) return std::move(r).error();
    return ok();
  }

 private:
  Channel& agent_;
  int64_t handle_;
};

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<ExecStatus> guest_run(Channel& agent, const std::string& path, const std::vector<std::string>& args,
                             const RunOptions& opts) {
  Deadline deadline(opts.timeout);
  GuestExec cmd{path, args, opts.env, opts.input, true};
  auto pid = SL_TRY_CTX(execute(agent, cmd), "running `", path, "` in the guest");
  auto pause = Millis(1);
  for (;;) {
    // A guest busy paging (just after a swap-out) answers slowly; asking about a process is
    // harmless to wait for, and a timeout makes libvirt shut the agent off for a while.
    const Millis patience = std::clamp(deadline.left(), Millis(10000), Millis(60000));
    auto st = SL_TRY_CTX(execute(agent, GuestExecStatus{pid.pid}, patience), "waiting for `", path, "` (guest pid ",
                         pid.pid, ")");
    if (st.exited) return st;
    if (deadline.expired())
      return make_error(ErrorKind::Timeout, "`", path, "` (guest pid ", pid.pid, ") still running after ",
                        opts.timeout.count(), " ms");
    std::this_thread::sleep_for(std::min(pause, deadline.left()));
    pause = std::min(pause * 2, Millis(100));
  }
}

Result<std::string> guest_run_ok(Channel& agent, const std::string& path, const std::vector<std::string>& args,
                                 const RunOptions& opts) {
  auto st = SL_TRY(guest_run(agent, path, args, opts));
  if (st.exitcode.value_or(-1) != 0) {
    std::string how = st.signal ? cat("killed by signal ", *st.signal) : cat("exit code ", st.exitcode.value_or(-1));
    // Both streams: seamless-guest says why on stdout (one JSON object, errors and aborts too).
    std::string said = trimmed(st.err);
    if (std::string out = trimmed(st.out); !out.empty())
      said += cat(said.empty() ? "" : "; ", "stdout: ", out.substr(0, 4000), out.size() > 4000 ? " ..." : "");
    return make_error(ErrorKind::Remote, "`", path, "` failed in the guest (", how, "): ", said);
  }
  return std::move(st.out);
}

Result<std::string> guest_sha256(Channel& agent, const std::string& guest_path) {
  auto out = SL_TRY(guest_run_ok(agent, "sha256sum", {"--", guest_path}));
  auto space = out.find(' ');
  if (space != 64) return make_error(ErrorKind::Protocol, "unexpected sha256sum output: ", out.substr(0, 100));
  return out.substr(0, 64);
}

Result<void> write_guest_file(Channel& agent, const std::string& guest_path, std::string_view data,
                              const TransferOptions& opts) {
  auto ctx = cat("writing `", guest_path, "` in the guest");
  auto fh = SL_TRY_CTX(execute(agent, GuestFileOpen{guest_path, "w"}), ctx);
  GuestFile file(agent, fh.handle);
  const size_t chunk = opts.chunk ? opts.chunk : agent.transfer_chunk();
  size_t done = 0;
  while (done < data.size()) {
    size_t n = std::min(chunk, data.size() - done);
    auto wrote = SL_TRY_CTX(
        execute(agent, GuestFileWrite{file.handle(), std::string(data.substr(done, n))}, opts.per_chunk_timeout), ctx,
        " at offset ", done);
    if (wrote.count <= 0 || static_cast<size_t>(wrote.count) > n)
      return make_error(ErrorKind::Protocol, ctx, ": guest-file-write reported ", wrote.count, " of ", n, " bytes");
    done += static_cast<size_t>(wrote.count);
  }
  SL_TRY_CTX(file.close(), ctx);
  if (opts.verify) {
    auto theirs = SL_TRY_CTX(guest_sha256(agent, guest_path), ctx);
    auto ours = sha256_hex(data);
    if (theirs != ours)
      return make_error(ErrorKind::Protocol, ctx, ": checksum mismatch after transfer (sent ", ours, ", guest has ",
                        theirs, ")");
  }
  return ok();
}

Result<std::string> read_guest_file(Channel& agent, const std::string& guest_path, const TransferOptions& opts,
                                    size_t limit) {
  auto ctx = cat("reading `", guest_path, "` from the guest");
  std::string expected;
  if (opts.verify) expected = SL_TRY_CTX(guest_sha256(agent, guest_path), ctx);
  auto fh = SL_TRY_CTX(execute(agent, GuestFileOpen{guest_path, "r"}), ctx);
  GuestFile file(agent, fh.handle);
  const auto count = static_cast<int64_t>(opts.chunk ? opts.chunk : agent.transfer_chunk());
  std::string out;
  for (;;) {
    auto chunk = SL_TRY_CTX(execute(agent, GuestFileRead{file.handle(), count}, opts.per_chunk_timeout), ctx,
                            " at offset ", out.size());
    if (out.size() + chunk.data.size() > limit)
      return make_error(ErrorKind::Invalid, ctx, ": larger than the limit of ", limit, " bytes");
    out += chunk.data;
    if (chunk.eof || chunk.data.empty()) break;
  }
  SL_TRY_CTX(file.close(), ctx);
  if (opts.verify && sha256_hex(out) != expected)
    return make_error(ErrorKind::Protocol, ctx, ": checksum mismatch after transfer (guest has ", expected,
                      ", received ", sha256_hex(out), ")");
  return out;
}

}  // namespace seamless::qmp
