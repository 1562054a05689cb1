// SPDX-License-Identifier: Apache-2.0
// Error formatting and wrapping.
#include "common/result.h"

#include <cstring>

namespace seamless {

std::string_view to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::System: return "system";
    case ErrorKind::Protocol: return "protocol";
    case ErrorKind::Remote: return "remote";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::Closed: return "closed";
    case ErrorKind::Invalid: return "invalid";
    case ErrorKind::NotFound: return "not-found";
  }
  return "unknown";
}

Error Error::wrap(std::string_view context) const& {
  Error e = *this;
  return std::move(e).wrap(context);
}

Error Error::wrap(std::string_view context) && {
  message = cat(context, ": ", message);
  return std::move(*this);
}

Error errno_error(std::string_view operation, int err) {
  ErrorKind kind = ErrorKind::System;
  if (err == ENOENT) kind = ErrorKind::NotFound;
  if (err == ETIMEDOUT) kind = ErrorKind::Timeout;
  return Error{kind, err, cat(operation, ": ", std::strerror(err)), {}};
}

}  // namespace seamless
