// SPDX-License-Identifier: Apache-2.0
#include "protocol/sasl/sasl.h"

#include <gtest/gtest.h>

#include <string>

#include "protocol/common/base64.h"

namespace popbridge::protocol {
namespace {

using namespace std::string_literals;

struct PlainCase {
  const char* name;
  std::string message;
  bool valid;
  std::string authzid = "";
  std::string authcid = "";
  std::string password = "";
};

class SaslPlainTest : public testing::TestWithParam<PlainCase> {};

TEST_P(SaslPlainTest, Parses) {
  const PlainCase& c = GetParam();
  const std::optional<PlainCredentials> credentials = parse_sasl_plain(c.message);
  ASSERT_EQ(credentials.has_value(), c.valid);
  if (c.valid) {
    EXPECT_EQ(credentials->authzid, c.authzid);
    EXPECT_EQ(credentials->authcid, c.authcid);
    EXPECT_EQ(credentials->password.view(), c.password);
  }
}

TEST_P(SaslPlainTest, BuildGivesTheMessageBack) {
  const PlainCase& c = GetParam();
  if (c.valid) {
    EXPECT_EQ(build_sasl_plain(c.authzid, c.authcid, c.password).view(), c.message);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Messages, SaslPlainTest,
    testing::Values(PlainCase{"NoAuthzid", "\0alice\0secret"s, true, "", "alice", "secret"},
                    PlainCase{"Authzid", "admin\0alice\0pw"s, true, "admin", "alice", "pw"},
                    PlainCase{"SpacesAndUtf8", "\0j\xc3\xb6rg\0a b \xe2\x82\xac"s, true, "",
                              "j\xc3\xb6rg", "a b \xe2\x82\xac"},
                    PlainCase{"OneOctetFields", "z\0a\0p"s, true, "z", "a", "p"},
                    PlainCase{"OneNul", "alice\0secret"s, false},
                    PlainCase{"NoNul", "alicesecret"s, false},
                    PlainCase{"ThreeNuls", "a\0b\0c\0d"s, false},
                    PlainCase{"TrailingNul", "\0alice\0secret\0"s, false},
                    PlainCase{"EmptyAuthcid", "\0\0secret"s, false},
                    PlainCase{"EmptyPassword", "\0alice\0"s, false},
                    PlainCase{"OnlyNuls", "\0\0"s, false}, PlainCase{"Empty", "", false}),
    [](const testing::TestParamInfo<PlainCase>& info) { return std::string(info.param.name); });

struct ResponseCase {
  const char* name;
  std::string line;
  SaslResponse::Kind kind;
  std::string data = "";
};

class SaslResponseTest : public testing::TestWithParam<ResponseCase> {};

TEST_P(SaslResponseTest, Decodes) {
  const ResponseCase& c = GetParam();
  const SaslResponse response = decode_sasl_response(c.line);
  EXPECT_EQ(response.kind, c.kind);
  EXPECT_EQ(response.data.view(), c.data);
}

using Kind = SaslResponse::Kind;

INSTANTIATE_TEST_SUITE_P(
    Lines, SaslResponseTest,
    testing::Values(ResponseCase{"Cancel", "*", Kind::kCancel},
                    ResponseCase{"EmptyByEquals", "=", Kind::kData},
                    // RFC 5034 grammar: *(CRLF [base64]), so an empty line is the empty response.
                    ResponseCase{"EmptyLine", "", Kind::kData},
                    ResponseCase{"Text", "dGVzdA==", Kind::kData, "test"},
                    ResponseCase{"Plain", "AGFsaWNlAHNlY3JldA==", Kind::kData, "\0alice\0secret"s},
                    ResponseCase{"LoginUser", "YWxpY2U=", Kind::kData, "alice"},
                    ResponseCase{"TwoStars", "**", Kind::kInvalid},
                    ResponseCase{"StarWithSpace", "* ", Kind::kInvalid},
                    ResponseCase{"StarAndData", "*dGVz", Kind::kInvalid},
                    ResponseCase{"DoubleEquals", "==", Kind::kInvalid},
                    ResponseCase{"EqualsWithSpace", "= ", Kind::kInvalid},
                    ResponseCase{"Unpadded", "dGVzdA", Kind::kInvalid},
                    ResponseCase{"InnerSpace", "dGVz dA==", Kind::kInvalid},
                    ResponseCase{"TrailingCr", "dGVzdA==\r", Kind::kInvalid},
                    ResponseCase{"BadAlphabet", "dGVz!A==", Kind::kInvalid},
                    ResponseCase{"MisplacedPadding", "dG==dA==", Kind::kInvalid}),
    [](const testing::TestParamInfo<ResponseCase>& info) { return std::string(info.param.name); });

TEST(SaslTest, InitialResponseThroughBase64) {
  const Secret message = build_sasl_plain("", "alice", "p w");
  const std::string encoded = base64_encode(message.view());
  const SaslResponse response = decode_sasl_response(encoded);
  ASSERT_EQ(response.kind, SaslResponse::Kind::kData);
  const std::optional<PlainCredentials> credentials = parse_sasl_plain(response.data.view());
  ASSERT_TRUE(credentials.has_value());
  EXPECT_EQ(credentials->authcid, "alice");
  EXPECT_EQ(credentials->password.view(), "p w");
}

}  // namespace
}  // namespace popbridge::protocol

namespace popbridge::protocol {
namespace {

TEST(Xoauth2, ParsesUserAndToken) {
  auto parsed =
      parse_xoauth2(std::string_view("user=alice@example.org\x01"
                                     "auth=Bearer ya29.abc\x01\x01"));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->user, "alice@example.org");
  EXPECT_EQ(parsed->token.view(), "ya29.abc");
}

TEST(Xoauth2, RejectsMalformed) {
  for (std::string_view bad : {std::string_view("user=alice\x01"
                                                "auth=Bearer t\x01"),
                               std::string_view("user=\x01"
                                                "auth=Bearer t\x01\x01"),
                               std::string_view("alice\x01"
                                                "auth=Bearer t\x01\x01"),
                               std::string_view("user=a\x01"
                                                "auth=Basic t\x01\x01"),
                               std::string_view("user=a\x01\x01"), std::string_view("")}) {
    EXPECT_FALSE(parse_xoauth2(bad)) << bad;
  }
}

TEST(OauthBearer, ParsesWithAndWithoutAuthzid) {
  auto with = parse_oauthbearer(
      std::string_view("n,a=bob@example.org,\x01host=imap.example.org\x01port=993\x01"
                       "auth=Bearer tok\x01\x01"));
  ASSERT_TRUE(with);
  EXPECT_EQ(with->user, "bob@example.org");
  EXPECT_EQ(with->token.view(), "tok");
  auto without =
      parse_oauthbearer(std::string_view("n,,\x01"
                                         "auth=Bearer tok\x01\x01"));
  ASSERT_TRUE(without);
  EXPECT_EQ(without->user, "");
}

TEST(OauthBearer, RejectsMalformed) {
  for (std::string_view bad : {std::string_view("x,,\x01"
                                                "auth=Bearer t\x01\x01"),
                               std::string_view("n,a=bob\x01"
                                                "auth=Bearer t\x01\x01"),
                               std::string_view("n,,\x01host=x\x01\x01"),
                               std::string_view("n,,\x01"
                                                "auth=Bearer t\x01"
                                                "auth=Bearer u\x01\x01")}) {
    EXPECT_FALSE(parse_oauthbearer(bad)) << bad;
  }
}

}  // namespace
}  // namespace popbridge::protocol
