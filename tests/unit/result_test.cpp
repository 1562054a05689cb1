// SPDX-License-Identifier: Apache-2.0
// Result, Error wrapping and SL_TRY.
#include "common/result.h"

#include <gtest/gtest.h>

namespace seamless {
namespace {

Result<int> half(int x) {
  if (x % 2 != 0) return make_error(ErrorKind::Invalid, x, " is odd");
  return x / 2;
}

Result<int> quarter(int x) {
  int h = SL_TRY_CTX(half(x), "halving ", x);
  return SL_TRY(half(h));
}

TEST(Result, ValueAndError) {
  auto r = quarter(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2);
  auto e = quarter(3);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().kind, ErrorKind::Invalid);
  EXPECT_EQ(e.error().message, "halving 3: 3 is odd");
  auto inner = quarter(6);
  ASSERT_FALSE(inner.ok());
  EXPECT_EQ(inner.error().message, "3 is odd");
}

TEST(Result, ErrnoError) {
  Error e = errno_error("open `/nope`", ENOENT);
  EXPECT_EQ(e.kind, ErrorKind::NotFound);
  EXPECT_EQ(e.code, ENOENT);
  EXPECT_EQ(e.message, "open `/nope`: No such file or directory");
}

TEST(Result, VoidResult) {
  Result<void> good = ok();
  EXPECT_TRUE(good.ok());
  Result<void> bad = make_error(ErrorKind::Closed, "gone");
  auto wrapped = std::move(bad).wrap("reading");
  EXPECT_FALSE(wrapped.ok());
  EXPECT_EQ(wrapped.error().message, "reading: gone");
}

}  // namespace
}  // namespace seamless
