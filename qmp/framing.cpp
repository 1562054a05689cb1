// SPDX-License-Identifier: Apache-2.0
// Byte-level JSON object splitter for QMP and QGA streams.
#include "qmp/framing.h"

#include "common/result.h"

namespace seamless::qmp {

void Splitter::reset() {
  buf_.clear();
  seen_ = 0;
  depth_ = 0;
  in_object_ = in_string_ = escape_ = skipping_ = in_garbage_ = false;
}

void Splitter::feed(std::string_view bytes, std::vector<Frame>* out) {
  for (char ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    if (c == 0xFF) {
      // QGA puts 0xFF before the guest-sync-delimited reply; it is never valid inside
      // UTF-8 JSON, so it always resynchronises: drop whatever was half-read.
      if (in_object_)
        out->push_back({Frame::Type::Garbage, cat("message cut off after ", seen_, " bytes by a 0xFF delimiter")});
      reset();
      out->push_back({Frame::Type::Delimiter, {}});
      continue;
    }
    if (!in_object_) {
      if (c == '{') {
        in_object_ = true;
        in_garbage_ = false;
        depth_ = 1;
        seen_ = 1;
        buf_.assign(1, '{');
      } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
        if (!in_garbage_)
          out->push_back({Frame::Type::Garbage,
                          cat("unexpected byte 0x", std::hex, static_cast<int>(c), " outside a JSON object")});
        in_garbage_ = true;
      }
      continue;
    }
    ++seen_;
    if (!skipping_) {
      if (seen_ > max_) {
        skipping_ = true;
        buf_.clear();
        buf_.shrink_to_fit();
      } else {
        buf_ += ch;
      }
    }
    if (in_string_) {
      if (escape_)
        escape_ = false;
      else if (c == '\\')
        escape_ = true;
      else if (c == '"')
        in_string_ = false;
      continue;
    }
    if (c == '"')
      in_string_ = true;
    else if (c == '{' || c == '[')
      ++depth_;
    else if (c == '}' || c == ']')
      --depth_;
    if (depth_ == 0) {
      if (skipping_)
        out->push_back({Frame::Type::Oversized, cat("message of ", seen_, " bytes exceeds the limit of ", max_)});
      else
        out->push_back({Frame::Type::Message, std::move(buf_)});
      buf_.clear();
      in_object_ = skipping_ = false;
      seen_ = 0;
    }
  }
}

}  // namespace seamless::qmp
