// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the parsers of what a guest or a sink's kernel hands over in binary — the
// CRIU image reader (entries, messages and the fields nested in them), the sock_diag
// replies the guest reads its unix sockets from, the nfnetlink_queue messages the sink's
// packet hold takes packets from — the sink's activity policy text, and the rewriting of a
// dump's core and seccomp images (a sink confining a guest's gateway, a guest taking back
// a sink's hand-back), and the walk over a dumped process's malloc heaps (its memory is the
// process's to write). The first byte picks the parser. Must never crash, hang or read out
// of bounds.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/sys.h"
#include "guest-agent/unix_diag.h"
#include "pack/criu_confine.h"
#include "pack/criu_images.h"
#include "pack/malloc_heap.h"
#include "sinkd/hold.h"
#include "sinkd/policy.h"
#include "tests/fuzz/scratch.h"
#include "tests/support/criu_writer.h"

using namespace seamless;
using seamless::test::criu_writer::image;

namespace {

// Parses a message and every length-delimited field of it as a message again, as the
// image reader does with nested entries, down to a few levels.
void messages(std::string_view msg, int depth) {
  auto fields = packfmt::criu_images::parse_message(msg);
  if (!fields.ok() || depth == 0) return;
  for (const auto& f : *fields)
    if (f.is_bytes) messages(f.bytes, depth - 1);
}

// A dump of one task (pid 40, one thread): two bytes give the length of its core entry,
// the rest is seccomp.img's entry. Read, confined as a sink does, and taken back as a
// guest does.
void rewrite(std::string_view in) {
  if (in.size() < 2) return;
  const size_t n = std::min<size_t>(in.size() - 2, size_t(uint8_t(in[0])) | size_t(uint8_t(in[1])) << 8);
  static const seamless::fuzz::Scratch scratch("parsers");
  const std::string& dir = scratch.path;
  const std::string pstree("\x08\x28\x10\x00\x18\x28\x20\x28\x28\x28", 10);  // pid 40, thread 40
  (void)seamless::sys::write_file(dir + "/pstree.img", image(0x50273030, {pstree}));
  (void)seamless::sys::write_file(dir + "/core-40.img", image(0x54545454, {std::string(in.substr(2, n))}));
  (void)seamless::sys::write_file(dir + "/seccomp.img", image(0x64413049, {std::string(in.substr(2 + n))}));
  auto ids = packfmt::criu_images::task_identities(dir);
  if (!ids.ok()) return;
  (void)packfmt::criu_images::identities_from_json(packfmt::criu_images::identities_to_json(*ids));
  if (!packfmt::criu_images::confine(dir, std::string(8, '\x06')).ok()) return;
  (void)packfmt::criu_images::restore_as_dumped(dir, *ids);
}

// The input as a process's memory: its pages as a main heap at 16 MiB (the first half)
// and an arena's heap at 64 MiB (the rest); what the walk calls unused must lie in them.
void heaps(std::string_view in) {
  constexpr uint64_t kPage = 4096, kBrk = 16 << 20, kArena = 64 << 20;
  const size_t pages = (in.size() + kPage - 1) / kPage, half = (pages + 1) / 2;
  std::string memory(in);
  memory.resize(pages * kPage);
  packfmt::malloc_heap::Memory m;
  m.mappings = {{kBrk, kBrk + half * kPage}, {kArena, kArena + (pages - half) * kPage}};
  m.brk_start = kBrk;
  m.brk = kBrk + half * kPage;
  m.page = [&](uint64_t a) -> const unsigned char* {
    size_t i = pages;
    if (a >= kBrk && a < kBrk + half * kPage) i = (a - kBrk) / kPage;
    if (a >= kArena && a < kArena + (pages - half) * kPage) i = half + (a - kArena) / kPage;
    return i < pages ? reinterpret_cast<const unsigned char*>(memory.data() + i * kPage) : nullptr;
  };
  for (const auto& r : packfmt::malloc_heap::unused(m)) {
    const bool in_brk = r.start >= kBrk && r.end <= m.brk, in_arena = r.start >= kArena && r.end <= m.mappings[1].end;
    if (r.start >= r.end || (!in_brk && !in_arena)) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] == 0xff) {  // (the other parsers' seeds never start so)
    heaps(rest);
    return 0;
  }
  switch (data[0] % 5) {
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
    case 4: rewrite(rest); break;
  }
  return 0;
}
