// SPDX-License-Identifier: Apache-2.0
// JsonStream: reads framed JSON messages from a socket with deadlines and limits.
#pragma once

#include <deque>
#include <string>

#include "common/fd.h"
#include "common/result.h"
#include "common/time.h"
#include "qmp/framing.h"
#include "qmp/json.h"

namespace seamless::qmp {

class JsonStream {
 public:
  JsonStream(UniqueFd fd, size_t max_message, std::string peer)
      : fd_(std::move(fd)), splitter_(max_message), peer_(std::move(peer)) {}

  // The next frame: a parsed message, a 0xFF delimiter, or a framing error. A frame
  // that is not valid JSON comes back as a Protocol error; the stream stays usable.
  // Closed/Timeout/System errors come from the socket.
  struct Item {
    bool delimiter = false;
    Json message;
  };
  Result<Item> next(Deadline deadline);
  Result<void> write(std::string_view bytes, Deadline deadline);
  bool closed() const { return closed_; }
  void close();
  const std::string& peer() const { return peer_; }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
  Splitter splitter_;
  std::deque<Frame> frames_;
  std::string peer_;
  bool closed_ = false;
};

}  // namespace seamless::qmp
