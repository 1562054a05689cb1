// SPDX-License-Identifier: Apache-2.0
// Temporary directories.
#include "common/tempdir.h"

#include <stdlib.h>

#include <filesystem>

namespace seamless {

Result<TempDir> TempDir::create(const std::string& prefix) {
  std::string tmpl = prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return errno_error(cat("mkdtemp `", tmpl, "`"));
  return TempDir(tmpl);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace seamless
