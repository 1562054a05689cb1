// SPDX-License-Identifier: Apache-2.0
#include "tests/support/gateway_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include "common/sys.h"
#include "common/time.h"
#include "qmp/guest.h"

namespace seamless::test {

HelperRun run_guest_helper(qmp::Channel& agent, const std::vector<std::string>& args, Millis timeout) {
  qmp::RunOptions ro;
  ro.timeout = timeout;
  auto st = qmp::guest_run(agent, "/usr/sbin/seamless-guest", args, ro);
  HelperRun h;
  if (!st.ok()) {
    h.text = st.error().message;
    return h;
  }
  h.code = st->exitcode.value_or(-1);
  h.text = st->out + st->err;
  if (auto j = qmp::parse(st->out); j.ok()) h.json = std::move(j).value();
  return h;
}

Result<KeyedGuest> KeyedGuest::boot(const VmSpec& spec) {
  KeyedGuest k;
  k.guest = SL_TRY(LibvirtGuest::boot(spec));
  k.dir = std::make_unique<TempDir>(SL_TRY(TempDir::create()));
  k.key = SL_TRY(make_trusted_ssh_key(*k.guest->agent, k.dir->path()));
  return k;
}

Result<std::unique_ptr<GatewayClient>> GatewayClient::open(const Testbed& bed, const std::string& ip,
                                                           const GatewayUse& use, const std::string& ssh_key,
                                                           const std::string& dir) {
  std::unique_ptr<GatewayClient> c(new GatewayClient());
  c->bed_ = &bed;
  c->ip_ = ip;
  c->use_ = use;
  if (use.kind == GatewayUse::Kind::Ssh)
    c->ssh_ = SL_TRY(SshSession::open(bed, ssh_key, dir, ip, use.port));
  else
    SL_TRY(c->reconnect());
  if (use.kind != GatewayUse::Kind::SshBanner) SL_TRY(c->exchange());
  return c;
}

Result<void> GatewayClient::reconnect() {
  if (use_.kind == GatewayUse::Kind::Ssh) return make_error(ErrorKind::Invalid, "an SSH session does not reconnect");
  conn_ = SL_TRY(bed_->connect_from_client(ip_, use_.port));
  if (use_.kind == GatewayUse::Kind::Ftp) SL_TRY_CTX(read_until(conn_.get(), "220"), "the FTP greeting");
  if (use_.kind == GatewayUse::Kind::SshBanner) SL_TRY_CTX(read_until(conn_.get(), "SSH-2.0"), "the SSH banner");
  return ok();
}

Result<std::string> GatewayClient::exchange(const std::string& expect, Millis timeout) {
  const int n = ++exchanges_;
  switch (use_.kind) {
    case GatewayUse::Kind::Ssh: {
      // The shell computes the answer: an echo of the line typed is not taken for it.
      SL_TRY(ssh_->type(cat("echo exchange-$((", n, "*1000+42))"), cat("exchange-", n * 1000 + 42)));
      return cat("exchange-", n * 1000 + 42);
    }
    case GatewayUse::Kind::SshBanner: {
      SL_TRY(sys::write_all(conn_.get(), "SSH-2.0-seamless_test\r\n", Deadline(Millis(5000))));
      return SL_TRY_CTX(read_until(conn_.get(), "curve25519", timeout), "the SSH key exchange offer");
    }
    case GatewayUse::Kind::Ftp: {
      // Before login vsftpd answers USER with 331 (a password is wanted).
      SL_TRY(sys::write_all(conn_.get(), "USER ftp\r\n", Deadline(Millis(5000))));
      return SL_TRY_CTX(read_until(conn_.get(), "331", timeout), "the FTP control connection");
    }
    case GatewayUse::Kind::Http: {
      std::string request = cat("GET ", use_.path, " HTTP/1.1\r\nHost: guest\r\nConnection: keep-alive\r\n");
      if (!cookie_.empty()) request += cat("Cookie: ", cookie_, "\r\n");
      SL_TRY(sys::write_all(conn_.get(), request + "\r\n", Deadline(Millis(5000))));
      const std::string want = expect.empty() ? use_.expect : expect;
      auto got = SL_TRY_CTX(read_until(conn_.get(), want, timeout), "the HTTP keep-alive connection");
      // A session cookie (Tomcat's JSESSIONID) goes with every later request.
      if (auto at = got.find("Set-Cookie: "); at != std::string::npos) {
        auto end = got.find_first_of(";\r", at);
        cookie_ = got.substr(at + 12, end - at - 12);
      }
      return got;
    }
  }
  return make_error(ErrorKind::Invalid, "unknown gateway use");
}

bool GatewayClient::accepts(const Testbed& bed, const std::string& ip, uint16_t port) {
  return bed.connect_from_client(ip, port).ok();
}

Result<std::string> tftp_get(const Testbed& bed, const std::string& ip, const std::string& file, Millis timeout) {
  UniqueFd s = SL_TRY(bed.udp_from_client());
  sockaddr_in server{};
  server.sin_family = AF_INET;
  server.sin_port = htons(69);
  ::inet_pton(AF_INET, ip.c_str(), &server.sin_addr);
  std::string rrq("\0\1", 2);
  rrq += file;
  rrq.push_back('\0');
  rrq += "octet";
  rrq.push_back('\0');
  for (Deadline d(timeout); !d.expired();) {
    if (::sendto(s.get(), rrq.data(), rrq.size(), 0, reinterpret_cast<sockaddr*>(&server), sizeof server) < 0)
      return errno_error("tftp: sendto");
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) continue;
    char buf[600];
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = ::recvfrom(s.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 4) continue;
    if (buf[1] == 5) return make_error(ErrorKind::Remote, "tftp: error from the server: ", std::string(buf + 4, n - 4));
    if (buf[1] != 3 || buf[3] != 1) continue;
    const char ack[4] = {0, 4, 0, 1};
    (void)::sendto(s.get(), ack, sizeof ack, 0, reinterpret_cast<sockaddr*>(&from), len);
    return std::string(buf + 4, size_t(n - 4));
  }
  return make_error(ErrorKind::Timeout, "tftp: no answer from ", ip, " for `", file, "`");
}

}  // namespace seamless::test
