// SPDX-License-Identifier: Apache-2.0
// Splits a QMP/QGA byte stream into whole JSON objects without trusting newlines.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace seamless::qmp {

// One item out of the splitter: a complete top-level JSON object, a 0xFF delimiter
// (QGA's guest-sync-delimited marker), or a framing problem the reader should report.
struct Frame {
  enum class Type { Message, Delimiter, Oversized, Garbage };
  Type type;
  std::string text;  // the message (Message), or a description (Oversized/Garbage)
};

// Tracks object depth and string/escape state byte by byte. A message larger than
// the limit is skipped to its end and reported once as Oversized; bytes outside any
// object other than whitespace are reported as Garbage (one frame per run).
class Splitter {
 public:
  explicit Splitter(size_t max_message) : max_(max_message) {}
  void feed(std::string_view bytes, std::vector<Frame>* out);
  // Bytes of an unfinished message held now (non-zero at EOF means "stopped mid-message").
  size_t pending() const { return in_object_ ? seen_ : 0; }
  void reset();

 private:
  size_t max_;
  std::string buf_;
  size_t seen_ = 0;  // bytes of the current object, kept or skipped
  int depth_ = 0;
  bool in_object_ = false;
  bool in_string_ = false;
  bool escape_ = false;
  bool skipping_ = false;  // current object exceeded the limit
  bool in_garbage_ = false;
};

}  // namespace seamless::qmp
