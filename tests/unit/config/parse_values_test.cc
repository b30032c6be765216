// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"

namespace popbridge::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST(ParseDuration, AcceptsUnitsCombinationsAndBareSeconds) {
  const struct {
    std::string_view text;
    Duration expected;
  } cases[] = {
      {"500ms", milliseconds(500)},
      {"30s", seconds(30)},
      {"10m", minutes(10)},
      {"1h", hours(1)},
      {"2h30m", hours(2) + minutes(30)},
      {"1m30s500ms", minutes(1) + seconds(30) + milliseconds(500)},
      {"1h500ms", hours(1) + milliseconds(500)},
      {"90", seconds(90)},
      {"0", seconds(0)},
      {"0s", seconds(0)},
      {"007s", seconds(7)},
      {"90m", minutes(90)},
      // The largest value nanoseconds can hold, in whole milliseconds.
      {"9223372036854ms", milliseconds(9223372036854)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.text));
    const std::optional<Duration> parsed = parse_duration(c.text);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, c.expected);
  }
}

TEST(ParseDuration, RejectsGarbageSignsAndOverflow) {
  const std::string_view cases[] = {
      "",
      "ten",
      "s",
      "-5s",
      "+5s",
      "1.5h",
      "10 s",
      " 10s",
      "10s ",
      "10S",
      "10d",
      "10sec",
      "30m1h",
      "1m1m",
      "5ms1s",
      "1h2",
      "h1",
      "10mm",
      "1e3",
      "0x10",
      "9223372036855ms",
      "9223372037s",
      "2562048h",
      "99999999999999999999999999s",
      "9223372036854775807",
      "18446744073709551616ms",
  };
  for (std::string_view text : cases) {
    SCOPED_TRACE(std::string(text));
    EXPECT_FALSE(parse_duration(text).has_value());
  }
}

TEST(ParseSize, AcceptsBytesAndBinaryUnits) {
  const struct {
    std::string_view text;
    std::size_t expected;
  } cases[] = {
      {"0", 0},
      {"65536", 65536},
      {"512B", 512},
      {"64KiB", 64 * 1024},
      {"256KiB", 256 * 1024},
      {"1MiB", 1024 * 1024},
      {"2GiB", std::size_t{2} * 1024 * 1024 * 1024},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.text));
    const std::optional<std::size_t> parsed = parse_size(c.text);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, c.expected);
  }
}

TEST(ParseSize, RejectsOtherSpellings) {
  const std::string_view cases[] = {
      "",
      "KiB",
      "64 KiB",
      "64kib",
      "64KB",
      "64k",
      "1.5MiB",
      "-1",
      "+1",
      "1TiB",
      "64KiBB",
      "99999999999999999999",
      "18014398509481984GiB",
  };
  for (std::string_view text : cases) {
    SCOPED_TRACE(std::string(text));
    EXPECT_FALSE(parse_size(text).has_value());
  }
}

TEST(ParseEndpoint, AcceptsHostsAddressesAndBracketedIpv6) {
  const struct {
    std::string_view text;
    std::string_view host;
    std::uint16_t port;
  } cases[] = {
      {"0.0.0.0:110", "0.0.0.0", 110},
      {"127.0.0.1:995", "127.0.0.1", 995},
      {"imap.example.com:993", "imap.example.com", 993},
      {"imap.example.com.:143", "imap.example.com.", 143},
      {"localhost:1", "localhost", 1},
      {"dovecot_1:65535", "dovecot_1", 65535},
      {"[::1]:995", "::1", 995},
      {"[::]:110", "::", 110},
      {"[2001:db8::5]:9090", "2001:db8::5", 9090},
      {"[fe80::1%eth0]:110", "fe80::1%eth0", 110},
      {"[::ffff:10.0.0.1]:143", "::ffff:10.0.0.1", 143},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.text));
    const std::optional<Endpoint> parsed = parse_endpoint(c.text);
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(parsed->host, c.host);
    EXPECT_EQ(parsed->port, c.port);
  }
}

TEST(ParseEndpoint, RejectsWithAReason) {
  const struct {
    std::string_view text;
    std::string_view reason;
  } cases[] = {
      {"localhost", "missing port (expected host:port)"},
      {"localhost:", "missing port (expected host:port)"},
      {"[::1]", "missing port (expected host:port)"},
      {"[::1]995", "missing port (expected host:port)"},
      {"[::1]:", "missing port (expected host:port)"},
      {"localhost:0", "port must be 1-65535"},
      {"localhost:65536", "port must be 1-65535"},
      {"localhost:99999999999999999999999", "port must be 1-65535"},
      {"localhost:pop3", "port must be a number"},
      {"localhost:-1", "port must be a number"},
      {"localhost:+1", "port must be a number"},
      {"localhost:99 ", "port must be a number"},
      {":995", "host is empty"},
      {"[]:995", "host is empty"},
      {"::1:995", "an IPv6 address needs brackets, like [::1]:995"},
      {"2001:db8::5:993", "an IPv6 address needs brackets, like [::1]:995"},
      {"[::1:995", "missing ']' after the IPv6 address"},
      {"[not-v6]:995", "invalid IPv6 address in brackets"},
      {"[127.0.0.1]:995", "invalid IPv6 address in brackets"},
      {"[fe80::1%]:995", "invalid IPv6 address in brackets"},
      {"999.1.1.1:110", "invalid IPv4 address"},
      {"1.2.3:110", "invalid IPv4 address"},
      {"bad host:110", "host name may contain only letters, digits, '-', '_' and '.'"},
      {"*:110", "host name may contain only letters, digits, '-', '_' and '.'"},
      {"a..b:110", "host name has an empty label"},
      {".a:110", "host name has an empty label"},
      {std::string_view("a\0b:110", 7),
       "host name may contain only letters, digits, '-', '_' and '.'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.text));
    std::string reason;
    EXPECT_FALSE(parse_endpoint(c.text, reason).has_value());
    EXPECT_EQ(reason, c.reason);
    EXPECT_FALSE(parse_endpoint(c.text).has_value());
  }
}

TEST(ParseEndpoint, RejectsOverlongNames) {
  const std::string label(64, 'a');
  std::string reason;
  EXPECT_FALSE(parse_endpoint(label + ".example:110", reason).has_value());
  EXPECT_EQ(reason, "host name has a label longer than 63 characters");

  std::string name;
  while (name.size() < 254) {
    name += "abcdefgh.";
  }
  EXPECT_FALSE(parse_endpoint(name + ":110", reason).has_value());
  EXPECT_EQ(reason, "host name is longer than 253 characters");
}

TEST(Endpoint, ToStringBracketsIpv6) {
  EXPECT_EQ((Endpoint{"0.0.0.0", 110}).to_string(), "0.0.0.0:110");
  EXPECT_EQ((Endpoint{"imap.example.com", 993}).to_string(), "imap.example.com:993");
  EXPECT_EQ((Endpoint{"::1", 995}).to_string(), "[::1]:995");
  // Round trip: what to_string prints, parse_endpoint reads back.
  const std::optional<Endpoint> back = parse_endpoint(Endpoint{"2001:db8::5", 9090}.to_string());
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->host, "2001:db8::5");
  EXPECT_EQ(back->port, 9090);
}

TEST(Diagnostic, ToStringOmitsWhatIsUnknown) {
  EXPECT_EQ(
      (Diagnostic{"upstream.address", 12, "port must be 1-65535"}).to_string("popbridge.yaml"),
      "popbridge.yaml:12: upstream.address: port must be 1-65535");
  EXPECT_EQ((Diagnostic{"upstream", 0, "required key is missing"}).to_string("popbridge.yaml"),
            "popbridge.yaml: upstream: required key is missing");
  EXPECT_EQ((Diagnostic{"", 3, "invalid YAML: oops"}).to_string("popbridge.yaml"),
            "popbridge.yaml:3: invalid YAML: oops");
  EXPECT_EQ((Diagnostic{"", 0, "the document is empty"}).to_string("popbridge.yaml"),
            "popbridge.yaml: the document is empty");
  EXPECT_EQ((Diagnostic{"auth", 0, "x"}).to_string(""), "auth: x");
}

}  // namespace
}  // namespace popbridge::config
