// SPDX-License-Identifier: Apache-2.0
// upstream.protocol: jmap: the session URL gives the address, and what only an IMAP
// upstream uses is refused by key and line.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace popbridge::config {
namespace {

std::vector<std::string> texts(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) {
    out.push_back(d.to_string("f"));
  }
  return out;
}

// A plain listener (no certificate needed), the upstream section from line 6, then auth.
LoadResult load_upstream(std::string_view upstream) {
  return load_config_string(
      "listeners:\n  - name: pop3\n    address: 127.0.0.1:110\n    tls: none\nupstream:\n" +
      std::string(upstream) + "auth:\n  allow_plaintext: true\n");
}

TEST(JmapUpstreamConfig, TheUrlGivesAddressAndTls) {
  const LoadResult https = load_upstream(
      "  protocol: jmap\n  url: https://jmap.example.org/.well-known/jmap\n  mailbox: "
      "Work/Tickets\n");
  ASSERT_TRUE(https.config) << ::testing::PrintToString(texts(https.errors));
  const Upstream& up = https.config->upstream;
  EXPECT_EQ(up.protocol, UpstreamProtocol::kJmap);
  EXPECT_EQ(up.url, "https://jmap.example.org/.well-known/jmap");
  EXPECT_EQ(up.address.to_string(), "jmap.example.org:443");
  EXPECT_EQ(up.tls, TlsMode::kImplicit);
  EXPECT_EQ(up.server_name, "jmap.example.org");
  EXPECT_EQ(up.mailbox, "Work/Tickets");
  EXPECT_TRUE(https.warnings.empty()) << ::testing::PrintToString(texts(https.warnings));

  const LoadResult loopback =
      load_upstream("  protocol: jmap\n  url: http://[::1]:8080/jmap/session\n");
  ASSERT_TRUE(loopback.config) << ::testing::PrintToString(texts(loopback.errors));
  EXPECT_EQ(loopback.config->upstream.address.to_string(), "[::1]:8080");
  EXPECT_EQ(loopback.config->upstream.tls, TlsMode::kNone);
  EXPECT_EQ(texts(loopback.warnings),
            std::vector<std::string>{
                "f:7: upstream.url: plain http://: passwords go unencrypted (loopback only)"});
}

TEST(JmapUpstreamConfig, BadUrlsAreErrorsOnTheirLine) {
  const std::pair<std::string, std::string> cases[] = {
      {"imap://mail.example.org", "expected the https:// URL of the JMAP session resource"},
      {"http://jmap.example.org/.well-known/jmap", "plain http:// is allowed only to a loopback"},
      {"https://user:pw@jmap.example.org/", "credentials do not belong in the URL"},
      {"https://bad_host!/x", "the URL's host and port"},
  };
  for (const auto& [url, why] : cases) {
    const LoadResult result = load_upstream("  protocol: jmap\n  url: " + url + "\n");
    EXPECT_FALSE(result.config) << url;
    ASSERT_EQ(result.errors.size(), 1u) << url;
    EXPECT_TRUE(texts(result.errors)[0].starts_with("f:7: upstream.url: "))
        << texts(result.errors)[0];
    EXPECT_NE(result.errors[0].message.find(why), std::string::npos) << result.errors[0].message;
  }
  EXPECT_EQ(texts(load_upstream("  protocol: jmap\n").errors),
            std::vector<std::string>{"f:5: upstream.url: required key is missing"});
  EXPECT_EQ(texts(load_upstream("  protocol: pop3\n  address: 127.0.0.1:143\n  tls: none\n").errors)
                .size(),
            1u);
}

TEST(JmapUpstreamConfig, ImapOnlySettingsAreRefused) {
  const LoadResult result = load_upstream(
      "  protocol: jmap\n"
      "  url: https://jmap.example.org/.well-known/jmap\n"
      "  address: jmap.example.org:443\n"
      "  uidl_format: uid\n"
      "  send_id: false\n"
      "  on_delete:\n"
      "    action: move\n");
  EXPECT_EQ(texts(result.errors),
            (std::vector<std::string>{
                "f:8: upstream.address: an IMAP upstream's setting, not used with protocol: jmap "
                "(the url says where and how)",
                "f:9: upstream.uidl_format: an IMAP upstream's setting, not used with protocol: "
                "jmap (a JMAP message's UIDL is its id)",
                "f:10: upstream.send_id: an IMAP upstream's setting, not used with protocol: jmap",
            }));
  // And the other way round: an IMAP upstream has no url.
  EXPECT_EQ(
      texts(load_upstream("  address: 127.0.0.1:143\n  tls: none\n  url: https://x/\n").errors),
      std::vector<std::string>{
          "f:8: upstream.url: used only with protocol: jmap (an IMAP upstream has an address)"});
}

TEST(JmapUpstreamConfig, RememberSessionIsAJmapDuration) {
  const std::string_view jmap = "  protocol: jmap\n  url: https://jmap.example.org/jmap\n";
  const LoadResult defaults = load_upstream(jmap);
  ASSERT_TRUE(defaults.config) << ::testing::PrintToString(texts(defaults.errors));
  EXPECT_EQ(defaults.config->upstream.remember_session, std::chrono::minutes(15));

  const LoadResult off = load_upstream(std::string(jmap) + "  remember_session: 0s\n");
  ASSERT_TRUE(off.config) << ::testing::PrintToString(texts(off.errors));
  EXPECT_EQ(off.config->upstream.remember_session, Duration(0));

  EXPECT_EQ(texts(load_upstream(std::string(jmap) + "  remember_session: 25h\n").errors),
            std::vector<std::string>{"f:8: upstream.remember_session: at most 24h: the session "
                                     "resource is where a server announces its changes"});
  EXPECT_EQ(texts(load_upstream(std::string(jmap) + "  remember_session: soon\n").errors).size(),
            1u);
  EXPECT_EQ(texts(load_upstream("  address: 127.0.0.1:143\n  tls: none\n"
                                "  remember_session: 5m\n")
                      .errors),
            std::vector<std::string>{
                "f:8: upstream.remember_session: used only with protocol: jmap (an IMAP "
                "upstream's counterpart is login_reuse)"});
}

TEST(JmapUpstreamConfig, PrintedConfigurationLoadsToTheSame) {
  const LoadResult first = load_upstream(
      "  protocol: jmap\n  url: https://jmap.example.org/.well-known/jmap\n"
      "  remember_session: 90s\n  on_delete:\n    action: hide\n");
  ASSERT_TRUE(first.config) << ::testing::PrintToString(texts(first.errors));
  const std::string printed = to_yaml(*first.config);
  EXPECT_NE(printed.find("protocol: jmap"), std::string::npos) << printed;
  EXPECT_EQ(printed.find("uidl_format"), std::string::npos) << printed;
  EXPECT_NE(printed.find("remember_session: 90s"), std::string::npos) << printed;
  const LoadResult second = load_config_string(printed);
  ASSERT_TRUE(second.config) << ::testing::PrintToString(texts(second.errors)) << printed;
  EXPECT_EQ(to_yaml(*second.config), printed);
}

}  // namespace
}  // namespace popbridge::config
