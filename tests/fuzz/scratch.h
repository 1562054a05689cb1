// SPDX-License-Identifier: Apache-2.0
// A fuzz target's scratch directory: TMPDIR (tests/fuzz/run points it at tmpfs) or /tmp,
// one per process, removed at exit.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace seamless::fuzz {

struct Scratch {
  explicit Scratch(const std::string& name)
      : path(std::filesystem::temp_directory_path().string() + "/fuzz-" + name + "-" + std::to_string(::getpid())) {
    std::filesystem::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  const std::string path;
};

}  // namespace seamless::fuzz
