// SPDX-License-Identifier: Apache-2.0
// The byte-level JSON object splitter.
#include "qmp/framing.h"

#include <gtest/gtest.h>

namespace seamless::qmp {
namespace {

std::vector<Frame> split(Splitter& s, std::string_view bytes) {
  std::vector<Frame> out;
  s.feed(bytes, &out);
  return out;
}

TEST(Splitter, WholeMessagesWithoutNewlines) {
  Splitter s(1024);
  auto f = split(s, R"({"a":1}{"b":{"c":[1,{"d":2}]}} {"e":"}"})");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].text, R"({"a":1})");
  EXPECT_EQ(f[1].text, R"({"b":{"c":[1,{"d":2}]}})");
  EXPECT_EQ(f[2].text, R"({"e":"}"})");
}

TEST(Splitter, MessageSplitAcrossReadsByteByByte) {
  Splitter s(1024);
  std::string msg = R"({"return": {"s": "a \"quoted\" {brace} \\"}, "id": 7})";
  std::vector<Frame> all;
  for (char c : msg + "\r\n") s.feed(std::string_view(&c, 1), &all);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].type, Frame::Type::Message);
  EXPECT_EQ(all[0].text, msg);
}

TEST(Splitter, DelimiterResynchronises) {
  Splitter s(1024);
  auto f = split(s, "{\"half\": \"mess\xff{\"return\": 5}");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].type, Frame::Type::Garbage);
  EXPECT_EQ(f[1].type, Frame::Type::Delimiter);
  EXPECT_EQ(f[2].text, R"({"return": 5})");
}

TEST(Splitter, OversizedMessageSkippedThenRecovers) {
  Splitter s(16);
  auto f = split(s, R"({"data": "0123456789abcdefghij"}{"ok":1})");
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].type, Frame::Type::Oversized);
  EXPECT_EQ(f[1].type, Frame::Type::Message);
  EXPECT_EQ(f[1].text, R"({"ok":1})");
}

TEST(Splitter, GarbageOutsideObjectsReportedOncePerRun) {
  Splitter s(1024);
  auto f = split(s, "hello world {\"a\":1} ]]");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].type, Frame::Type::Garbage);
  EXPECT_EQ(f[1].type, Frame::Type::Message);
  EXPECT_EQ(f[2].type, Frame::Type::Garbage);
}

TEST(Splitter, PendingReportsUnfinishedMessage) {
  Splitter s(1024);
  auto f = split(s, R"({"return": {"status": "runn)");
  EXPECT_TRUE(f.empty());
  EXPECT_GT(s.pending(), 0u);
}

}  // namespace
}  // namespace seamless::qmp
