// SPDX-License-Identifier: Apache-2.0
// Result<T> and Error: the one error type of seamless (errno or remote class plus message).
#pragma once

#include <cerrno>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace seamless {

// What went wrong, coarsely, so callers can branch without parsing messages.
enum class ErrorKind {
  System,    // a syscall failed; code holds errno
  Protocol,  // the peer sent something malformed or unexpected
  Remote,    // the peer answered with an error (remote_class holds its class)
  Timeout,   // no answer before the deadline
  Closed,    // the peer went away
  Invalid,   // bad argument or bad input from the user
  NotFound,  // a named object (domain, file, cgroup) does not exist
};

std::string_view to_string(ErrorKind kind);

struct [[nodiscard]] Error {
  ErrorKind kind = ErrorKind::System;
  int code = 0;              // errno for System errors, 0 otherwise
  std::string message;       // "what failed: why", outermost context first
  std::string remote_class;  // QMP/QGA error class ("GenericError", ...) for Remote errors

  // Prefixes context: Error{"EOF"}.wrap("reading `x`") -> "reading `x`: EOF".
  Error wrap(std::string_view context) const&;
  Error wrap(std::string_view context) &&;
};

// Builds a string from pieces: cat("pid ", 42, " gone").
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

template <typename... Parts>
Error make_error(ErrorKind kind, const Parts&... parts) {
  return Error{kind, 0, cat(parts...), {}};
}

// An Error from errno (read at the call): "connect to `/x`: No such file or directory".
Error errno_error(std::string_view operation, int err = errno);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

  Result wrap(std::string_view context) && {
    if (!ok()) return std::move(*this).error().wrap(context);
    return std::move(*this);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }
  void value() const {}

  Result wrap(std::string_view context) && {
    if (!ok_) return std::move(error_).wrap(context);
    return {};
  }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace seamless

// Unwraps a Result or returns its error from the enclosing function (GNU statement
// expression, supported by g++ and clang).
#define SL_TRY(expr)                                                    \
  ({                                                                    \
    auto sl_try_result_ = (expr);                                       \
    if (!sl_try_result_.ok()) return std::move(sl_try_result_).error(); \
    std::move(sl_try_result_).value();                                  \
  })

// As SL_TRY, adding context to the error.
#define SL_TRY_CTX(expr, ...)                                                                              \
  ({                                                                                                       \
    auto sl_try_result_ = (expr);                                                                          \
    if (!sl_try_result_.ok()) return std::move(sl_try_result_).error().wrap(::seamless::cat(__VA_ARGS__)); \
    std::move(sl_try_result_).value();                                                                     \
  })
