// SPDX-License-Identifier: Apache-2.0
// Base64 (RFC 4648 vectors, strictness) and SHA-256.
#include "common/encoding.h"

#include <gtest/gtest.h>

#include <random>

namespace seamless {
namespace {

TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (auto [plain, coded] : vectors) {
    EXPECT_EQ(base64_encode(plain), coded);
    auto back = base64_decode(coded);
    ASSERT_TRUE(back.ok()) << coded;
    EXPECT_EQ(*back, plain);
  }
}

TEST(Base64, RoundTripBinary) {
  std::mt19937 rng(7);
  for (size_t len : {1u, 2u, 3u, 255u, 4096u, 100001u}) {
    std::string data(len, '\0');
    for (auto& c : data) c = static_cast<char>(rng());
    auto back = base64_decode(base64_encode(data));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, data);
  }
}

TEST(Base64, RejectsBadInput) {
  EXPECT_FALSE(base64_decode("Zm9").ok());       // length
  EXPECT_FALSE(base64_decode("Zm9*").ok());      // alphabet
  EXPECT_FALSE(base64_decode("Zg==Zm9v").ok());  // padding in the middle
  EXPECT_FALSE(base64_decode("Z===").ok());      // too much padding
  EXPECT_FALSE(base64_decode("Zm=v").ok());      // data after padding
}

TEST(Sha256, KnownDigests) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace seamless
