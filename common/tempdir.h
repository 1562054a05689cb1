// SPDX-License-Identifier: Apache-2.0
// TempDir: a directory removed with its contents when the owner goes away.
#pragma once

#include <string>

#include "common/result.h"

namespace seamless {

class TempDir {
 public:
  static Result<TempDir> create(const std::string& prefix = "/tmp/seamless-");
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace seamless
