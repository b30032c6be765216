// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/digest.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

TEST(DigestTest, KnownAnswers) {
  EXPECT_EQ(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(DigestTest, HmacSha256Rfc4231) {
  // RFC 4231 test case 2.
  EXPECT_EQ(hmac_sha256_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_NE(hmac_sha256_hex("other key", "what do ya want for nothing?"),
            hmac_sha256_hex("Jefe", "what do ya want for nothing?"));
}

}  // namespace
}  // namespace popbridge::protocol
