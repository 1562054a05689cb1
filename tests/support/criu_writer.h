// SPDX-License-Identifier: Apache-2.0
// Writing CRIU images as CRIU does, for fakes and tests: protobuf fields (varints and
// length-delimited ones), and an image file (the common magic, its own, then u32 length +
// message per entry).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace seamless::test::criu_writer {

inline std::string varint(uint64_t v) {
  std::string out;
  do {
    unsigned char c = v & 0x7f;
    v >>= 7;
    out += char(v ? c | 0x80 : c);
  } while (v);
  return out;
}
inline std::string num(uint32_t field, uint64_t v) { return varint(field << 3) + varint(v); }
inline std::string bytes(uint32_t field, const std::string& b) { return varint(field << 3 | 2) + varint(b.size()) + b; }
inline std::string image(uint32_t magic, const std::vector<std::string>& entries) {
  auto u32 = [](uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); };
  std::string out = u32(0x54564319) + u32(magic);
  for (const auto& e : entries) out += u32(uint32_t(e.size())) + e;
  return out;
}

}  // namespace seamless::test::criu_writer
