// SPDX-License-Identifier: Apache-2.0
// Guest operations built on the typed QGA commands: run a program and wait for it,
// and move files in and out in chunks, verified with SHA-256 on both ends.
#pragma once

#include <string>
#include <vector>

#include "qmp/commands.h"

namespace seamless::qmp {

struct RunOptions {
  Millis timeout = Millis(60000);
  std::optional<std::string> input;
  std::vector<std::string> env;
};

// guest-exec, then guest-exec-status polled with backoff (1 ms doubling to 100 ms).
Result<ExecStatus> guest_run(Channel& agent, const std::string& path, const std::vector<std::string>& args,
                             const RunOptions& opts = {});
// As guest_run, but a non-zero exit or a signal is an error carrying stderr.
Result<std::string> guest_run_ok(Channel& agent, const std::string& path, const std::vector<std::string>& args,
                                 const RunOptions& opts = {});

struct TransferOptions {
  // Raw bytes per guest-file-read/-write; 0 takes the transport's transfer_chunk().
  size_t chunk = 0;
  bool verify = true;  // compare SHA-256 computed in the guest (sha256sum) with ours
  Millis per_chunk_timeout = Millis(30000);
};

Result<void> write_guest_file(Channel& agent, const std::string& guest_path, std::string_view data,
                              const TransferOptions& opts = {});
Result<std::string> read_guest_file(Channel& agent, const std::string& guest_path, const TransferOptions& opts = {},
                                    size_t limit = size_t(1) << 32);
Result<std::string> guest_sha256(Channel& agent, const std::string& guest_path);

}  // namespace seamless::qmp
