// SPDX-License-Identifier: Apache-2.0
// SSH for integration tests: a key the guests trust, and an interactive session from the
// client namespace that tests type into and read from.
#pragma once

#include <memory>
#include <string>

#include "common/fd.h"
#include "common/process.h"
#include "common/result.h"
#include "qmp/guest.h"
#include "tests/support/testbed.h"

namespace seamless::test {

// Makes an ed25519 key pair at dir/id (no passphrase) and installs it as root's authorized
// key in the guest; returns the private key's path.
Result<std::string> make_trusted_ssh_key(qmp::Channel& agent, const std::string& dir);

// An interactive SSH session (`ssh -tt`) from the client namespace: typed into through a
// FIFO, its output collected in a file.
class SshSession {
 public:
  static Result<std::unique_ptr<SshSession>> open(const Testbed& bed, const std::string& key, const std::string& dir,
                                                  const std::string& ip, int port = 2222, int keepalive_s = 0);
  // keepalive_s > 0: the client sends SSH keep-alives (ServerAliveInterval) that often, and
  // gives up after nine unanswered.
  // Types a line and waits for `expect` in the output.
  Result<void> type(const std::string& line, const std::string& expect, Millis timeout = Millis(60000));
  // The two halves of type(): a line goes out; `expect` appears in the output.
  Result<void> send(const std::string& line);
  Result<void> wait_for(const std::string& expect, Millis timeout = Millis(60000));
  bool alive() { return ssh_.running(); }

 private:
  SshSession() = default;
  std::string fifo_, out_;
  UniqueFd in_;
  ChildProcess ssh_;
};

}  // namespace seamless::test
