// SPDX-License-Identifier: Apache-2.0
// SL_REQUIRE: a test that cannot run fails in CI (CI=true) and is skipped elsewhere;
// either way it says why.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace seamless::test {

inline bool in_ci() {
  const char* ci = std::getenv("CI");
  if (ci == nullptr) return false;
  std::string v = ci;
  return !v.empty() && v != "0" && v != "false";
}

}  // namespace seamless::test

#define SL_REQUIRE(cond, why)                                           \
  do {                                                                  \
    if (!(cond)) {                                                      \
      if (::seamless::test::in_ci()) FAIL() << "cannot run: " << (why); \
      GTEST_SKIP() << "cannot run: " << (why);                          \
    }                                                                   \
  } while (0)
