// SPDX-License-Identifier: Apache-2.0
// Framed JSON reads over a non-blocking socket.
#include "qmp/stream.h"

#include "common/sys.h"

namespace seamless::qmp {

void JsonStream::close() {
  closed_ = true;
  fd_.reset();
}

Result<JsonStream::Item> JsonStream::next(Deadline deadline) {
  while (frames_.empty()) {
    if (closed_) return make_error(ErrorKind::Closed, peer_, " is closed");
    char buf[65536];
    auto n = sys::read_some(fd_.get(), buf, sizeof buf, deadline);
    if (!n.ok()) {
      if (n.error().kind == ErrorKind::Timeout)
        return make_error(ErrorKind::Timeout, "no message from ", peer_, " before the deadline");
      auto err = std::move(n).error().wrap(cat("reading from ", peer_));
      if (err.kind != ErrorKind::Timeout) close();
      return err;
    }
    if (*n == 0) {
      size_t partial = splitter_.pending();
      close();
      if (partial > 0)
        return make_error(ErrorKind::Closed, peer_, " closed the connection in the middle of a message (", partial,
                          " bytes read)");
      return make_error(ErrorKind::Closed, peer_, " closed the connection");
    }
    std::vector<Frame> frames;
    splitter_.feed({buf, *n}, &frames);
    for (auto& f : frames) frames_.push_back(std::move(f));
  }
  Frame f = std::move(frames_.front());
  frames_.pop_front();
  switch (f.type) {
    case Frame::Type::Delimiter: return Item{true, {}};
    case Frame::Type::Oversized:
    case Frame::Type::Garbage: return make_error(ErrorKind::Protocol, peer_, " sent ", f.text);
    case Frame::Type::Message: break;
  }
  auto json = parse(f.text);
  if (!json.ok()) return std::move(json).error().wrap(cat("message from ", peer_));
  if (!json->root().IsObject())
    return make_error(ErrorKind::Protocol, peer_, " sent a JSON value that is not an object");
  return Item{false, std::move(json).value()};
}

Result<void> JsonStream::write(std::string_view bytes, Deadline deadline) {
  if (closed_) return make_error(ErrorKind::Closed, peer_, " is closed");
  auto r = sys::write_all(fd_.get(), bytes, deadline);
  if (!r.ok()) {
    if (r.error().kind == ErrorKind::Closed) close();
    return std::move(r).error().wrap(cat("writing to ", peer_));
  }
  return ok();
}

}  // namespace seamless::qmp
