// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the parsers of what a guest or a sink's kernel hands over in binary — the
// CRIU image reader (entries, messages and the fields nested in them), the sock_diag
// replies the guest reads its unix sockets from, the nfnetlink_queue messages the sink's
// packet hold takes packets from — and the sink's activity policy text. The first byte
// picks the parser. Must never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "guest-agent/unix_diag.h"
#include "pack/criu_images.h"
#include "sinkd/hold.h"
#include "sinkd/policy.h"

using namespace seamless;

namespace {

// Parses a message and every length-delimited field of it as a message again, as the
// image reader does with nested entries, down to a few levels.
void messages(std::string_view msg, int depth) {
  auto fields = packfmt::criu_images::parse_message(msg);
  if (!fields.ok() || depth == 0) return;
  for (const auto& f : *fields)
    if (f.is_bytes) messages(f.bytes, depth - 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 4) {
    case 0:
      if (auto entries = packfmt::criu_images::image_entries(rest); entries.ok())
        for (auto e : *entries) messages(e, 4);
      messages(rest, 4);
      break;
    case 1: (void)guest::parse_unix_diag(rest); break;
    case 2: (void)sink::parse_queue_messages(rest); break;
    case 3:
      if (auto p = sink::Policy::parse(rest, "sshd"); p.ok())
        for (long nr = 0; nr < 460; ++nr) (void)p->verdict(nr);
      break;
  }
  return 0;
}
