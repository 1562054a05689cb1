// SPDX-License-Identifier: Apache-2.0
// A client of one gateway as the round-trip tests use it, ZDTM style: opened before the
// gateway moves and used again after. An SSH session typed into, an HTTP keep-alive
// connection (its cookie kept, so a server-side session goes on), or an FTP control
// connection.
#pragma once

#include <memory>
#include <string>

#include "common/fd.h"
#include "common/tempdir.h"
#include "qmp/json.h"
#include "tests/support/ssh.h"
#include "tests/support/testbed.h"

namespace seamless::test {

// seamless-guest run in a guest through its agent, as the host runs it: the exit code
// (-1 when it could not run), its JSON output parsed, and everything it printed.
struct HelperRun {
  int64_t code = -1;
  qmp::Json json;
  std::string text;
};
HelperRun run_guest_helper(qmp::Channel& agent, const std::vector<std::string>& args, Millis timeout = Millis(180000));

// A libvirt guest whose root trusts an SSH key made for the test, in a directory of its own.
struct KeyedGuest {
  std::unique_ptr<LibvirtGuest> guest;
  std::unique_ptr<TempDir> dir;
  std::string key;
  static Result<KeyedGuest> boot(const VmSpec& spec);
};

struct GatewayUse {
  // SshBanner: a connection to an SSH server that has read its banner and not logged in
  // (no login session); its one exchange sends ours and reads the key exchange offer.
  enum class Kind { Ssh, SshBanner, Http, Ftp } kind = Kind::Http;
  uint16_t port = 80;
  std::string path = "/info.php";  // Http: what is asked for
  std::string expect = "php ok";   // Http: what the answer holds
};

// Reads `file` from the TFTP server (UDP 69) at `ip` from the client namespace: a read
// request, sent again every 2 s until the first block comes (a parked VM's sink holds
// the first one while it wakes the VM). Returns the file's contents (one block of up to
// 512 bytes is enough for the tests).
Result<std::string> tftp_get(const Testbed& bed, const std::string& ip, const std::string& file,
                             Millis timeout = Millis(60000));

class GatewayClient {
 public:
  // SSH needs the trusted key and a directory for the session's files.
  static Result<std::unique_ptr<GatewayClient>> open(const Testbed& bed, const std::string& ip, const GatewayUse& use,
                                                     const std::string& ssh_key = "", const std::string& dir = "");
  // One exchange on the open connection; for HTTP the answer must hold `expect` (default:
  // the use's). Returns what the server said.
  Result<std::string> exchange(const std::string& expect = "", Millis timeout = Millis(60000));
  // A new connection in place of the open one (HTTP: the session cookie goes on with it),
  // for a server that ended the kept-alive one while idle; SSH sessions do not reconnect.
  Result<void> reconnect();
  // Whether a new connection to the gateway is accepted.
  static bool accepts(const Testbed& bed, const std::string& ip, uint16_t port);

 private:
  GatewayClient() = default;
  const Testbed* bed_ = nullptr;
  std::string ip_;
  GatewayUse use_;
  std::unique_ptr<SshSession> ssh_;
  UniqueFd conn_;
  std::string cookie_;
  int exchanges_ = 0;
};

}  // namespace seamless::test
