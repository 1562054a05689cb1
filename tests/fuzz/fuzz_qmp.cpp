// SPDX-License-Identifier: Apache-2.0
// Fuzz target: arbitrary bytes through the splitter, the JSON parser and every reply
// and event decoder. Must never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "qmp/commands.h"
#include "qmp/framing.h"

using namespace seamless::qmp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Splitter splitter(4096);
  std::vector<Frame> frames;
  // Feed in two uneven pieces to exercise state carried across reads.
  size_t cut = size > 0 ? data[0] % (size + 1) : 0;
  splitter.feed({reinterpret_cast<const char*>(data), cut}, &frames);
  splitter.feed({reinterpret_cast<const char*>(data) + cut, size - cut}, &frames);
  for (auto& f : frames) {
    if (f.type != Frame::Type::Message) continue;
    auto json = parse(f.text);
    if (!json.ok()) continue;
    const Value& root = json->root();
    (void)StatusInfo::parse(root);
    (void)BalloonInfo::parse(root);
    (void)BalloonStats::parse(root);
    (void)NameInfo::parse(root);
    (void)GuestInfoReply::parse(root);
    (void)ExecStatus::parse(root);
    (void)ReadChunk::parse(root);
    (void)WriteCount::parse(root);
    (void)FileHandle::parse(root);
    (void)ExecPid::parse(root);
    auto copy = parse(f.text);
    if (root.IsObject() && root.HasMember("event"))
      (void)decode_event(std::move(copy).value());
    else
      (void)decode_reply(std::move(copy).value(), "fuzz", "fuzzer");
  }
  return 0;
}
