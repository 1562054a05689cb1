// SPDX-License-Identifier: Apache-2.0
// Protobuf's wire format and CRIU's image framing, as the image reader (criu_images.cpp)
// and the image rewriter (criu_confine.cpp) share them. Internal to pack/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace seamless::packfmt::criu_images::wire {

// images/magic.h: a v2 image starts with the common (or service) magic, then its own.
inline constexpr uint32_t kCommonMagic = 0x54564319;
inline constexpr uint32_t kServiceMagic = 0x55105940;

inline Error malformed(std::string_view what) {
  return make_error(ErrorKind::Protocol, "malformed CRIU image: ", what);
}

inline Result<uint64_t> read_varint(std::string_view in, size_t* pos) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return malformed("truncated varint");
    const auto c = static_cast<unsigned char>(in[(*pos)++]);
    v |= uint64_t(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  return malformed("varint longer than 10 bytes");
}

inline void write_varint(std::string& out, uint64_t v) {
  do {
    unsigned char c = v & 0x7f;
    v >>= 7;
    out += char(v ? c | 0x80 : c);
  } while (v);
}

}  // namespace seamless::packfmt::criu_images::wire
