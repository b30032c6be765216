// SPDX-License-Identifier: Apache-2.0
// Values: enums, durations, integers, booleans, strings and sizes, with the errors that
// name the key and line.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "tests/support/load_config_fixture.h"

namespace popbridge::config {
namespace {

TEST_F(LoadConfigTest, EnumValuesAreChecked) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
    tls: tsl
tls:
  certificate: $CERT
  private_key: $KEY
  min_version: "1.1"
upstream:
  address: imap.example.com:993
  tls: TLS
  ca_file: $CA
  uidl_format: dovecot2
logging:
  level: verbose
  format: [text]
)"),
            (std::vector<std::string>{
                "f:4: listeners[0].tls: expected one of implicit, starttls, none, got 'tsl'",
                "f:8: tls.min_version: expected one of 1.2, 1.3, got '1.1'",
                "f:11: upstream.tls: expected one of implicit, starttls, none, got 'TLS'",
                "f:13: upstream.uidl_format: expected dovecot, uid or a template with %u, %v or "
                "%g (Dovecot's pop3_uidl_format), got 'dovecot2'",
                "f:15: logging.level: expected one of trace, debug, info, warn, error, off, got "
                "'verbose'",
                "f:16: logging.format: expected one of logfmt, json, got a sequence",
            }));
}

TEST_F(LoadConfigTest, DurationsAndNumbersAreChecked) {
  EXPECT_EQ(errors(std::string(kBase) + R"(  connect_timeout: ten
  command_timeout: 0
auth:
  failure_delay: -2s
  max_attempts: 0
limits:
  idle_timeout: 0s
  max_connections: 1000001
  drain_timeout: 0
)"),
            (std::vector<std::string>{
                "f:10: upstream.connect_timeout: expected a duration like 30s or 10m, got 'ten'",
                "f:11: upstream.command_timeout: must be greater than 0",
                "f:13: auth.failure_delay: expected a duration like 30s or 10m, got '-2s'",
                "f:14: auth.max_attempts: must be 1-100, got '0'",
                "f:16: limits.idle_timeout: must be greater than 0",
                "f:17: limits.max_connections: must be 1-1000000, got '1000001'",
                "f:18: limits.drain_timeout: must be greater than 0",
            }));
}

TEST_F(LoadConfigTest, IntegerEdgeCases) {
  const struct {
    std::string_view value;
    std::string_view error;  // empty: accepted
  } cases[] = {
      {"1", ""},
      {"100", ""},
      {"\"7\"", ""},
      {"101", "must be 1-100, got '101'"},
      {"-1", "must be 1-100, got '-1'"},
      {"99999999999999999999999", "must be 1-100, got '99999999999999999999999'"},
      {"3.0", "expected an integer, got '3.0'"},
      {"0x10", "expected an integer, got '0x10'"},
      {"+3", "expected an integer, got '+3'"},
      {"three", "expected an integer, got 'three'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.value));
    const LoadResult result =
        load(std::string(kBase) + "auth:\n  max_attempts: " + std::string(c.value) + "\n");
    if (c.error.empty()) {
      EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
    } else {
      EXPECT_EQ(texts(result.errors),
                std::vector<std::string>{"f:11: auth.max_attempts: " + std::string(c.error)});
    }
  }
}

TEST_F(LoadConfigTest, BooleansAreOnlyTrueOrFalse) {
  for (std::string_view value : {"yes", "no", "on", "off", "True", "1", "y"}) {
    SCOPED_TRACE(std::string(value));
    EXPECT_EQ(errors(std::string(kBase) + "  mark_seen: " + std::string(value) + "\n"),
              std::vector<std::string>{"f:10: upstream.mark_seen: expected true or false, got '" +
                                       std::string(value) + "'"});
  }
}

TEST_F(LoadConfigTest, StringsMustBeNonEmptyAndPrintable) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: "pop 3"
    address: 0.0.0.0:995
tls:
  certificate: ""
  private_key: $KEY
upstream:
  address: imap.example.com:993
  ca_file: $CA
  mailbox: "INBOX\r\nA1 DELETE INBOX"
)"),
            (std::vector<std::string>{
                "f:2: listeners[0].name: a listener name is at most 64 letters, digits, '-', "
                "'_' or '.', got 'pop 3'",
                "f:5: tls.certificate: must not be empty",
                "f:10: upstream.mailbox: must not contain control characters",
            }));
}

TEST_F(LoadConfigTest, WatermarksAreSizesWithLowBelowHigh) {
  EXPECT_EQ(errors(std::string(kBase) + R"(limits:
  client_write_high_watermark: 256KiB
  client_write_low_watermark: 256KiB
)"),
            std::vector<std::string>{
                "f:12: limits.client_write_low_watermark: client_write_low_watermark (262144 "
                "bytes) must be less than client_write_high_watermark (262144 bytes)"});
  // Only the high mark written: it is the one to blame.
  EXPECT_EQ(errors(std::string(kBase) + "limits:\n  client_write_high_watermark: 32KiB\n"),
            std::vector<std::string>{
                "f:11: limits.client_write_high_watermark: client_write_low_watermark (65536 "
                "bytes) must be less than client_write_high_watermark (32768 bytes)"});
  EXPECT_EQ(errors(std::string(kBase) + "limits:\n  client_write_high_watermark: 256 KB\n"),
            std::vector<std::string>{"f:11: limits.client_write_high_watermark: expected a size "
                                     "like 65536, 64KiB or 1MiB, got '256 KB'"});
}

TEST_F(LoadConfigTest, ReadAheadIsASizeOfAtMostSixteenMebibytes) {
  const LoadResult largest = load(std::string(kBase) + "limits:\n  read_ahead: 16MiB\n");
  ASSERT_TRUE(largest.config.has_value());
  EXPECT_EQ(largest.config->limits.read_ahead, 16u * 1024 * 1024);
  EXPECT_EQ(errors(std::string(kBase) + "limits:\n  read_ahead: 17MiB\n"),
            std::vector<std::string>{"f:11: limits.read_ahead: must be at most 16MiB (each "
                                     "session may hold this much in memory); 0 turns it off"});
  EXPECT_EQ(errors(std::string(kBase) + "limits:\n  read_ahead: lots\n"),
            std::vector<std::string>{"f:11: limits.read_ahead: expected a size like 65536, "
                                     "64KiB or 1MiB, got 'lots'"});
}

}  // namespace
}  // namespace popbridge::config
