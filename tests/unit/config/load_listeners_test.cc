// SPDX-License-Identifier: Apache-2.0
// Listeners and TLS: endpoints, duplicate listeners, certificate, key and CA files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "tests/support/load_config_fixture.h"

namespace popbridge::config {
namespace {

TEST_F(LoadConfigTest, TlsSectionIsRequiredWhenAListenerUsesTls) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: plain
    address: 0.0.0.0:110
    tls: none
  - name: pop3
    address: 0.0.0.0:1110
    tls: starttls
upstream:
  address: imap.example.com:993
  ca_file: $CA
)"),
            std::vector<std::string>{"f:1: tls: required key is missing (listeners[1] uses TLS "
                                     "and needs a certificate)"});
}

TEST_F(LoadConfigTest, TlsSectionIsIgnoredWhenNoListenerUsesTls) {
  const LoadResult result = load(R"(
listeners:
  - name: local
    address: 127.0.0.1:110
    tls: none
tls:
  certificate: /nonexistent/cert.pem
  private_key: /nonexistent/key.pem
upstream:
  address: 127.0.0.1:143
  tls: none
auth:
  allow_plaintext: true
)");
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  EXPECT_EQ(texts(result.warnings),
            std::vector<std::string>{"f:5: tls: ignored: no listener uses implicit or starttls"});
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->tls.certificate, "");
  EXPECT_EQ(result.config->tls.private_key, "");
}

TEST_F(LoadConfigTest, ListenersMustBeANonEmptySequenceOfMaps) {
  const std::string rest = "upstream:\n  address: 127.0.0.1:143\n  tls: none\n";
  EXPECT_EQ(errors("listeners: []\n" + rest),
            std::vector<std::string>{"f:1: listeners: must list at least one listener"});
  EXPECT_EQ(errors("listeners:\n" + rest),
            std::vector<std::string>{
                "f:1: listeners: expected a sequence of listeners, got an empty value"});
  EXPECT_EQ(errors("listeners:\n  - pop3s\n  -\n" + rest),
            (std::vector<std::string>{
                "f:2: listeners[0]: expected a map, got 'pop3s'",
                // yaml-cpp marks an empty item at the next token; the sequence's line is blamed.
                "f:2: listeners[1]: expected a map, got an empty value"}));
  // An alias to the sequence itself: no endless recursion.
  EXPECT_EQ(errors("listeners: &a [*a]\n" + rest),
            std::vector<std::string>{"f:1: listeners[0]: expected a map, got a sequence"});
}

TEST_F(LoadConfigTest, EndpointsAreChecked) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: a
    address: 0.0.0.0:0
  - name: b
    address: ::1:995
  - name: c
    address: localhost
  - name: d
    address: ":995"
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:70000
  ca_file: $CA
metrics:
  address: {host: localhost}
)"),
            (std::vector<std::string>{
                "f:3: listeners[0].address: port must be 1-65535, got '0.0.0.0:0'",
                "f:5: listeners[1].address: an IPv6 address needs brackets, like [::1]:995, got "
                "'::1:995'",
                "f:7: listeners[2].address: missing port (expected host:port), got 'localhost'",
                "f:9: listeners[3].address: host is empty, got ':995'",
                "f:14: upstream.address: port must be 1-65535, got 'imap.example.com:70000'",
                "f:17: metrics.address: expected an address like host:port, got a map",
            }));
}

TEST_F(LoadConfigTest, DuplicateListenersAndAddresses) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
  - name: pop3s
    address: 0.0.0.0:995
  - name: other
    address: "[::1]:110"
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
  ca_file: $CA
metrics:
  address: "[::1]:110"
)"),
            (std::vector<std::string>{
                "f:4: listeners[1].name: duplicate listener name 'pop3s' (also used by "
                "listeners[0])",
                "f:5: listeners[1].address: duplicate listen address '0.0.0.0:995' (also used by "
                "listeners[0])",
                "f:15: metrics.address: address '[::1]:110' is already used by listeners[2]",
            }));
}

TEST_F(LoadConfigTest, CertificateFilesMustBeReadable) {
  const std::string directory = ::testing::TempDir();
  EXPECT_EQ(errors(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
tls:
  certificate: )" + kMissing +
                   R"(
  private_key: )" + directory +
                   R"(
upstream:
  address: imap.example.com:993
  ca_file: $CA
)"),
            (std::vector<std::string>{
                "f:5: tls.certificate: file '" + kMissing +
                    "' is not readable: No such file or directory",
                "f:6: tls.private_key: file '" + directory + "' is not readable: Is a directory",
            }));
}

TEST_F(LoadConfigTest, UnreadableBecauseOfPermissions) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "root reads any file";
  }
  ASSERT_EQ(::chmod(key_.c_str(), 0), 0);
  EXPECT_EQ(errors(kBase), std::vector<std::string>{"f:6: tls.private_key: file '" + key_ +
                                                    "' is not readable: Permission denied"});
}

TEST_F(LoadConfigTest, CaFileIsCheckedOnlyWhenItIsUsed) {
  const std::string upstream = R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
)";
  EXPECT_EQ(errors(upstream + "  ca_file: " + kMissing + "\n"),
            std::vector<std::string>{"f:9: upstream.ca_file: file '" + kMissing +
                                     "' is not readable: No such file or directory"});

  const LoadResult unverified =
      load(upstream + "  ca_file: " + kMissing + "\n  verify_certificate: false\n");
  EXPECT_TRUE(unverified.errors.empty()) << ::testing::PrintToString(texts(unverified.errors));
  EXPECT_EQ(texts(unverified.warnings),
            std::vector<std::string>{"f:10: upstream.verify_certificate: the upstream's "
                                     "certificate is not verified; anyone on the path can read "
                                     "passwords"});

  const LoadResult loopback =
      load(upstream + "  ca_file: " + kMissing + "\n  tls: none\n  address: 127.0.0.1:143\n");
  // The duplicate address key is the only problem: tls: none needs no CA file.
  EXPECT_EQ(texts(loopback.errors),
            std::vector<std::string>{"f:11: upstream.address: duplicate key 'address'"});
}

TEST_F(LoadConfigTest, ServerNameDefaultsToTheUpstreamHost) {
  const LoadResult result = load(std::string(kBase) + "  server_name: mail.example.net\n");
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->upstream.server_name, "mail.example.net");
}

}  // namespace
}  // namespace popbridge::config
