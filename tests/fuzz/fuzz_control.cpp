// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the control server's command handling as sinkd sets it up — bytes from
// the channel through the framing, the greeting's negotiation, command dispatch and each
// command's argument parser (sink::proto) — over a real socket pair. Must never crash,
// hang or read out of bounds, and always end when the peer closes.
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <thread>

#include "qmp/server.h"
#include "sinkd/protocol.h"

using namespace seamless;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  // What the handlers use outlives the server, whose workers may still run them after
  // serve() returns (as sinkd's sink does: it waits for them before the sink goes).
  const std::string empty = "{}";
  qmp::ControlServer server("fuzz");
  server.answer_out_of_order(8);  // as sinkd runs it
  namespace proto = sink::proto;
  server.on(proto::kAddGateway, [&](const qmp::Value& a) -> Result<std::string> {
    SL_TRY(proto::AddGateway::parse(a));
    return empty;
  });
  server.on(proto::kHandBack, [&](const qmp::Value& a) -> Result<std::string> {
    SL_TRY(proto::HandBack::parse(a));
    return empty;
  });
  for (const char* c : {proto::kSpeak, proto::kReleasePackets, proto::kRemoveGateway})
    server.on(c, [&](const qmp::Value& a) -> Result<std::string> {
      SL_TRY(proto::IdArg::parse(a));
      return empty;
    });
  // The client: the input fits the socket's buffer (max_len is 16 KiB), so it is written
  // whole before the server starts, and the server's replies fit the buffer forced large
  // (as root), so they are read after it ends: no thread per input, which under ASan costs
  // more than the input. Without the large buffer a thread reads them as they come.
  const int fd = sv[0];
  int big = 64 << 20;
  const bool buffered = size <= 16384 && ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) == 0;
  auto write_input = [fd, data, size] {
    size_t off = 0;
    while (off < size) {
      ssize_t n = ::write(fd, data + off, size - off);
      if (n <= 0) break;
      off += size_t(n);
      char sink[4096];
      while (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0) {
      }
    }
    ::shutdown(fd, SHUT_WR);
  };
  auto read_replies = [fd] {
    char buf[4096];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    ::close(fd);
  };
  std::thread client;
  if (buffered)
    write_input();
  else
    client = std::thread([&] {
      write_input();
      read_replies();
    });
  (void)server.serve(UniqueFd(sv[1]), "fuzz");
  server.wait_idle();
  if (buffered)
    read_replies();
  else
    client.join();
  return 0;
}
