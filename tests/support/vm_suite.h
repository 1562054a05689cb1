// SPDX-License-Identifier: Apache-2.0
// The base of the integration and e2e suites that boot their VMs once per suite
// (SetUpTestSuite): why the set-up failed is kept, and every test of the suite then fails
// in CI (skips elsewhere) saying so, instead of crashing on a VM that is not there.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "tests/support/require.h"

namespace seamless::test {

template <typename Suite>
class VmSuite : public ::testing::Test {
 protected:
  // SetUpTestSuite calls this on an error and returns; the first reason is kept.
  static void fail(const std::string& why) {
    if (setup_error_.empty()) setup_error_ = why;
  }
  // From each test's SetUp: `ready` is the suite's own check (its VMs are there).
  void require(bool ready) {
    SL_REQUIRE(ready && setup_error_.empty(),
               setup_error_.empty() ? std::string("the suite's set-up did not finish") : setup_error_);
  }
  static inline std::string setup_error_;
};

}  // namespace seamless::test
