// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/pop3_source.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

TEST(Pop3SourceUrl, SchemesPortsAndAddresses) {
  std::string error;
  auto url = parse_pop3_source_url("pop3s://old.example.org", error);
  ASSERT_TRUE(url) << error;
  EXPECT_TRUE(url->implicit_tls);
  EXPECT_EQ(url->address.host, "old.example.org");
  EXPECT_EQ(url->address.port, 995);
  url = parse_pop3_source_url("pop3://127.0.0.1:1110/", error);
  ASSERT_TRUE(url) << error;
  EXPECT_FALSE(url->implicit_tls);
  EXPECT_EQ(url->address.port, 1110);
  EXPECT_EQ(url->to_string(), "pop3://127.0.0.1:1110");
  url = parse_pop3_source_url("pop3://[::1]", error);
  ASSERT_TRUE(url) << error;
  EXPECT_EQ(url->address.host, "::1");
  EXPECT_EQ(url->address.port, 110);
}

TEST(Pop3SourceUrl, RefusesWhatIsNotAPop3Url) {
  for (const char* bad : {"imap://host", "host:995", "pop3s://", "pop3s://host:0",
                          "pop3s://host:99999", "pop3://host:x"}) {
    std::string error;
    EXPECT_FALSE(parse_pop3_source_url(bad, error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

}  // namespace
}  // namespace popbridge::proxy
