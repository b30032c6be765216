// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/base64.h"

#include <gtest/gtest.h>

#include <string>

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

struct Vector {
  std::string data;
  std::string text;
};

class Base64VectorTest : public testing::TestWithParam<Vector> {};

TEST_P(Base64VectorTest, Encodes) { EXPECT_EQ(base64_encode(GetParam().data), GetParam().text); }

TEST_P(Base64VectorTest, Decodes) {
  const std::optional<std::string> decoded = base64_decode(GetParam().text);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(*decoded, GetParam().data);
}

// RFC 4648 §10, plus binary and a SASL PLAIN message.
INSTANTIATE_TEST_SUITE_P(Rfc4648, Base64VectorTest,
                         testing::Values(Vector{"", ""}, Vector{"f", "Zg=="}, Vector{"fo", "Zm8="},
                                         Vector{"foo", "Zm9v"}, Vector{"foob", "Zm9vYg=="},
                                         Vector{"fooba", "Zm9vYmE="}, Vector{"foobar", "Zm9vYmFy"},
                                         Vector{"\0alice\0secret"s, "AGFsaWNlAHNlY3JldA=="},
                                         Vector{"\xff\xfe\xfd", "//79"},
                                         Vector{"\xfb\xef\xbe", "++++"}));

TEST(Base64Test, RoundTripsEveryOctetAndLength) {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all.push_back(static_cast<char>(i));
  }
  for (std::size_t length = 0; length <= all.size(); ++length) {
    const std::string data = all.substr(all.size() - length);
    const std::string text = base64_encode(data);
    EXPECT_EQ(text.size(), (length + 2) / 3 * 4);
    const std::optional<std::string> decoded = base64_decode(text);
    ASSERT_TRUE(decoded.has_value()) << length;
    EXPECT_EQ(*decoded, data);
  }
}

TEST(Base64Test, LongToken) {
  const std::string token(12000, '\x5a');
  const std::optional<std::string> decoded = base64_decode(base64_encode(token));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(*decoded, token);
}

TEST(Base64Test, NonZeroPadBitsAreAccepted) {
  // "Zh==" is a non-canonical "Zg==": lenient like most decoders (RFC 4648 §3.5 MAY).
  const std::optional<std::string> decoded = base64_decode("Zh==");
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(*decoded, "f");
}

class Base64InvalidTest : public testing::TestWithParam<std::string> {};

TEST_P(Base64InvalidTest, Rejects) { EXPECT_FALSE(base64_decode(GetParam()).has_value()); }

// Not whole quads; whitespace; octets outside the alphabet; misplaced padding.
INSTANTIATE_TEST_SUITE_P(Strict, Base64InvalidTest,
                         testing::Values("Z"s, "Zg"s, "Zg="s, "Zm9vY"s, "Zg==="s, "Zm9v\r\n"s,
                                         "Zm9v\n"s, " Zm9v"s, "Zm9v "s, "Zm 9v"s, "Zm\t9v"s,
                                         "Zg==\r\n"s, "Zm9v!!!!"s, "Zm9v-_8="s, "Zm9v\0\0\0\0"s,
                                         "Zm9\xff"s, "Zg==Zg=="s, "=Zg="s, "Z==="s, "===="s,
                                         "Zm=v"s, "Z=m9"s, "Zm9vZ=8="s),
                         [](const testing::TestParamInfo<std::string>& info) {
                           return "Case" + std::to_string(info.index);
                         });

}  // namespace
}  // namespace popbridge::protocol
