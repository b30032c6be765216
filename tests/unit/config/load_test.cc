// SPDX-License-Identifier: Apache-2.0
// The loader as a whole: defaults, every key, the example file, YAML errors, unknown and
// missing keys, wrong types, several errors at once, files.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "tests/support/load_config_fixture.h"

namespace popbridge::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST_F(LoadConfigTest, MinimalConfigTakesEveryDefault) {
  const LoadResult result = load(kBase);
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  EXPECT_TRUE(result.warnings.empty()) << ::testing::PrintToString(texts(result.warnings));
  ASSERT_TRUE(result.config.has_value());
  const Config& c = *result.config;

  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].name, "pop3s");
  EXPECT_EQ(c.listeners[0].address.host, "0.0.0.0");
  EXPECT_EQ(c.listeners[0].address.port, 995);
  EXPECT_EQ(c.listeners[0].tls, TlsMode::kImplicit);

  EXPECT_EQ(c.tls.certificate, cert_);
  EXPECT_EQ(c.tls.private_key, key_);
  EXPECT_EQ(c.tls.min_version, TlsVersion::k1_2);

  EXPECT_EQ(c.upstream.address.to_string(), "imap.example.com:993");
  EXPECT_EQ(c.upstream.tls, TlsMode::kImplicit);
  EXPECT_EQ(c.upstream.ca_file, ca_);
  EXPECT_TRUE(c.upstream.verify_certificate);
  EXPECT_EQ(c.upstream.server_name, "imap.example.com");
  EXPECT_EQ(c.upstream.mailbox, "INBOX");
  EXPECT_EQ(c.upstream.connect_timeout, seconds(10));
  EXPECT_EQ(c.upstream.command_timeout, seconds(60));
  EXPECT_FALSE(c.upstream.mark_seen);
  EXPECT_EQ(c.upstream.uidl_format.text(), "%08Xu%08Xv");
  EXPECT_FALSE(c.upstream.expunge_without_uidplus);
  EXPECT_TRUE(c.upstream.pipelining);

  EXPECT_FALSE(c.auth.allow_plaintext);
  EXPECT_EQ(c.auth.failure_delay, seconds(2));
  EXPECT_EQ(c.auth.max_attempts, 3u);

  EXPECT_EQ(c.limits.idle_timeout, minutes(10));
  EXPECT_EQ(c.limits.drain_timeout, seconds(30));
  EXPECT_EQ(c.limits.max_connections, 10000u);
  EXPECT_EQ(c.limits.client_write_high_watermark, 256u * 1024);
  EXPECT_EQ(c.limits.client_write_low_watermark, 64u * 1024);
  EXPECT_EQ(c.limits.read_ahead, 64u * 1024);

  EXPECT_EQ(c.logging.level, "info");
  EXPECT_EQ(c.logging.format, LogFormat::kLogfmt);
  EXPECT_FALSE(c.metrics.address.has_value());
}

TEST_F(LoadConfigTest, FullConfigReadsEveryKey) {
  const LoadResult result = load(R"(
# A comment, and keys in an unusual order.
logging:
  level: debug
  format: json
listeners:
  - name: pop3s
    address: "[::]:995"
    tls: implicit
  - name: pop3
    address: 0.0.0.0:110
    tls: starttls
  - name: local
    address: 127.0.0.1:1110
    tls: none
tls:
  certificate: $CERT
  private_key: $KEY
  min_version: 1.3
upstream:
  address: "[2001:db8::5]:143"
  tls: starttls
  ca_file: $CA
  verify_certificate: true
  server_name: imap.example.com
  mailbox: Archive/POP
  connect_timeout: 5s
  command_timeout: 2m
  mark_seen: true
  uidl_format: uid
  expunge_without_uidplus: true
  pipelining: false
auth:
  allow_plaintext: true
  failure_delay: 1500ms
  max_attempts: 5
limits:
  idle_timeout: 1h30m
  drain_timeout: 2m
  max_connections: 500
  client_write_high_watermark: 1MiB
  client_write_low_watermark: 131072
  read_ahead: 0
metrics:
  address: 127.0.0.1:9090
)");
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  EXPECT_TRUE(result.warnings.empty()) << ::testing::PrintToString(texts(result.warnings));
  ASSERT_TRUE(result.config.has_value());
  const Config& c = *result.config;

  ASSERT_EQ(c.listeners.size(), 3u);
  EXPECT_EQ(c.listeners[0].address.host, "::");
  EXPECT_EQ(c.listeners[0].tls, TlsMode::kImplicit);
  EXPECT_EQ(c.listeners[1].name, "pop3");
  EXPECT_EQ(c.listeners[1].tls, TlsMode::kStartTls);
  EXPECT_EQ(c.listeners[2].address.to_string(), "127.0.0.1:1110");
  EXPECT_EQ(c.listeners[2].tls, TlsMode::kNone);

  EXPECT_EQ(c.tls.min_version, TlsVersion::k1_3);

  EXPECT_EQ(c.upstream.address.host, "2001:db8::5");
  EXPECT_EQ(c.upstream.address.port, 143);
  EXPECT_EQ(c.upstream.tls, TlsMode::kStartTls);
  EXPECT_EQ(c.upstream.server_name, "imap.example.com");
  EXPECT_EQ(c.upstream.mailbox, "Archive/POP");
  EXPECT_EQ(c.upstream.connect_timeout, seconds(5));
  EXPECT_EQ(c.upstream.command_timeout, minutes(2));
  EXPECT_TRUE(c.upstream.mark_seen);
  EXPECT_EQ(c.upstream.uidl_format.text(), "%v.%u");
  EXPECT_TRUE(c.upstream.expunge_without_uidplus);
  EXPECT_FALSE(c.upstream.pipelining);

  EXPECT_TRUE(c.auth.allow_plaintext);
  EXPECT_EQ(c.auth.failure_delay, milliseconds(1500));
  EXPECT_EQ(c.auth.max_attempts, 5u);

  EXPECT_EQ(c.limits.idle_timeout, hours(1) + minutes(30));
  EXPECT_EQ(c.limits.drain_timeout, minutes(2));
  EXPECT_EQ(c.limits.max_connections, 500u);
  EXPECT_EQ(c.limits.client_write_high_watermark, 1024u * 1024);
  EXPECT_EQ(c.limits.client_write_low_watermark, 131072u);
  EXPECT_EQ(c.limits.read_ahead, 0u);

  EXPECT_EQ(c.logging.level, "debug");
  EXPECT_EQ(c.logging.format, LogFormat::kJson);
  ASSERT_TRUE(c.metrics.address.has_value());
  EXPECT_EQ(c.metrics.address->to_string(), "127.0.0.1:9090");
}

TEST_F(LoadConfigTest, ExampleFileIsValid) {
  // The reference example documents every key with its default; it must stay loadable.
  std::string path = __FILE__;
  path.erase(path.rfind("tests/unit/config/"));
  const LoadResult result = load_config_file(path + "config/popbridge.example.yaml");
  // Its certificate paths point at a deployment's files, which this machine lacks; every
  // other key must be accepted.
  for (const Diagnostic& d : result.errors) {
    EXPECT_TRUE(d.message.find("is not readable") != std::string::npos) << d.to_string("example");
  }
  EXPECT_TRUE(result.warnings.empty()) << ::testing::PrintToString(texts(result.warnings));
}

// The key paths a YAML reference file mentions, commented-out keys ("# metrics:",
// "#   address: ...") included: those document optional sections and alternatives.
std::set<std::string> keys_in_reference(const std::string& text) {
  static const std::regex kKey(R"(^(\s*)(- )?([a-z0-9_]+):(\s|$))");
  std::set<std::string> found;
  std::vector<std::pair<std::size_t, std::string>> stack;  // indent, segment
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t hash = line.find_first_not_of(' ');
    if (hash != std::string::npos && line[hash] == '#') {
      line.erase(hash, line.compare(hash, 2, "# ") == 0 ? 2 : 1);
    }
    std::smatch match;
    if (!std::regex_search(line, match, kKey)) {
      continue;
    }
    const std::size_t dash = static_cast<std::size_t>(match.length(1));
    const std::size_t indent = dash + static_cast<std::size_t>(match.length(2));
    const std::size_t level = match.length(2) > 0 ? dash : indent;
    while (!stack.empty() && stack.back().first >= level) {
      stack.pop_back();
    }
    if (match.length(2) > 0 && !stack.empty() && !stack.back().second.ends_with("[]")) {
      stack.back().second += "[]";
    }
    stack.emplace_back(indent, match.str(3));
    std::string path;
    for (const auto& [ignored, segment] : stack) {
      path += (path.empty() ? "" : ".") + segment;
    }
    found.insert(path);
  }
  return found;
}

TEST_F(LoadConfigTest, ExampleFileDocumentsExactlyTheKnownKeys) {
  std::string path = __FILE__;
  path.erase(path.rfind("tests/unit/config/"));
  std::ifstream file(path + "config/popbridge.example.yaml");
  ASSERT_TRUE(file) << "config/popbridge.example.yaml";
  const std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const std::set<std::string> documented = keys_in_reference(text);
  const std::vector<std::string> known_list = known_keys();
  const std::set<std::string> known(known_list.begin(), known_list.end());
  std::vector<std::string> missing;
  std::set_difference(known.begin(), known.end(), documented.begin(), documented.end(),
                      std::back_inserter(missing));
  std::vector<std::string> unknown;
  std::set_difference(documented.begin(), documented.end(), known.begin(), known.end(),
                      std::back_inserter(unknown));
  EXPECT_TRUE(missing.empty()) << "keys the example does not document: "
                               << ::testing::PrintToString(missing);
  EXPECT_TRUE(unknown.empty()) << "keys in the example the loader does not know: "
                               << ::testing::PrintToString(unknown);
}

TEST_F(LoadConfigTest, PrintedConfigurationLoadsToTheSame) {
  for (const std::string& extra :
       {std::string(), std::string("  uidl_format: \"%g-%u\"\n  keepalive_interval: 15s\n"
                                   "auth:\n  max_failure_delay: 1m30s\n"
                                   "metrics:\n  address: 127.0.0.1:9101\n  probe_failures: 5\n"
                                   "limits:\n  client_write_high_watermark: 1MiB\n"
                                   "workers: 3\n")}) {
    const LoadResult first = load(std::string(kBase) + extra);
    ASSERT_TRUE(first.config.has_value()) << ::testing::PrintToString(texts(first.errors));
    const std::string printed = to_yaml(*first.config);
    const LoadResult second = load_config_string(printed);
    ASSERT_TRUE(second.config.has_value())
        << printed << ::testing::PrintToString(texts(second.errors));
    EXPECT_EQ(to_yaml(*second.config), printed);
    EXPECT_NE(printed.find("keepalive_count: 4"), std::string::npos) << "defaults are shown";
  }
}

TEST_F(LoadConfigTest, InvalidYamlIsOneErrorWithTheParserLine) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: a
    address: [x
upstream: {}
)"),
            std::vector<std::string>{"f:4: invalid YAML: end of sequence flow not found"});
  EXPECT_EQ(errors("a: b: c\n"), std::vector<std::string>{"f:1: invalid YAML: illegal map value"});
}

TEST_F(LoadConfigTest, DeepNestingIsAnErrorNotACrash) {
  EXPECT_EQ(errors(std::string(100000, '[')),
            std::vector<std::string>{"f:1: invalid YAML: nested too deeply"});
}

TEST_F(LoadConfigTest, StrayCommaIsAnErrorNotAHang) {
  // yaml-cpp 0.7's LoadAll loops forever on these (jbeder/yaml-cpp#1040).
  const std::vector<std::string> expected{"f:1: expected a single YAML document, but more follows"};
  EXPECT_EQ(errors(","), expected);
  EXPECT_EQ(errors(",a"), expected);
  EXPECT_EQ(errors(std::string(kBase) + ","),
            std::vector<std::string>{"f:10: invalid YAML: end of map not found"});
}

TEST_F(LoadConfigTest, EmptyDocumentIsAnError) {
  const std::vector<std::string> expected{"f: the document is empty"};
  EXPECT_EQ(errors(""), expected);
  EXPECT_EQ(errors("# nothing but a comment\n"), expected);
  EXPECT_EQ(errors("~\n"), expected);
  EXPECT_EQ(errors("---\n...\n"), expected);
}

TEST_F(LoadConfigTest, DocumentMustBeOneMap) {
  EXPECT_EQ(errors("- a\n- b\n"), std::vector<std::string>{"f:1: expected a map, got a sequence"});
  EXPECT_EQ(errors("hello\n"), std::vector<std::string>{"f:1: expected a map, got 'hello'"});
  EXPECT_EQ(errors(std::string(kBase) + "---\nlogging: {}\n"),
            std::vector<std::string>{"f:11: expected a single YAML document, but more follows"});
}

TEST_F(LoadConfigTest, UnknownKeysAtEveryLevelWithSuggestions) {
  EXPECT_EQ(errors(R"(
listners:
  - name: pop3s
tls:
  certificate: $CERT
  private_key: $KEY
  min_vresion: "1.2"
upstream:
  adress: imap.example.com:993
  ca_file: $CA
logging:
  colour: true
)"),
            (std::vector<std::string>{
                "f:1: listners: unknown key 'listners' (did you mean 'listeners'?)",
                "f:1: listeners: required key is missing",
                "f:6: tls.min_vresion: unknown key 'min_vresion' (did you mean 'min_version'?)",
                "f:7: upstream.address: required key is missing",
                "f:8: upstream.adress: unknown key 'adress' (did you mean 'address'?)",
                "f:11: logging.colour: unknown key 'colour'",
            }));
}

TEST_F(LoadConfigTest, UnknownListenerKeyAndDuplicateKey) {
  EXPECT_EQ(errors(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
    tsl: none
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
  address: imap2.example.com:993
  ca_file: $CA
)"),
            (std::vector<std::string>{
                "f:4: listeners[0].tsl: unknown key 'tsl' (did you mean 'tls'?)",
                "f:10: upstream.address: duplicate key 'address'",
            }));
}

TEST_F(LoadConfigTest, NonStringKeyIsAnError) {
  EXPECT_EQ(errors(std::string(kBase) + "? [a, b]\n: 1\n"),
            std::vector<std::string>{"f:10: expected a key name, got a sequence"});
}

TEST_F(LoadConfigTest, MissingRequiredKeysPointAtTheirMap) {
  EXPECT_EQ(errors(R"(
# upstream is missing altogether
listeners:
  - address: 0.0.0.0:995
  - name: second
tls:
  private_key: $KEY
auth:
  max_attempts: 3
)"),
            (std::vector<std::string>{
                "f:2: upstream: required key is missing",
                "f:3: listeners[0].name: required key is missing",
                "f:4: listeners[1].address: required key is missing",
                "f:5: tls.certificate: required key is missing",
            }));
  // Inside a section, the line is the section's key.
  EXPECT_EQ(errors(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
    tls: none
auth:
  allow_plaintext: true
upstream:
  tls: none
metrics: {}
)"),
            (std::vector<std::string>{
                "f:7: upstream.address: required key is missing",
                "f:9: metrics.address: required key is missing",
            }));
}

TEST_F(LoadConfigTest, WrongTypesAreErrors) {
  EXPECT_EQ(errors(R"(
listeners:
  pop3s: 0.0.0.0:995
upstream:
  address: imap.example.com:993
  ca_file: $CA
  verify_certificate: yes
  mailbox: {name: INBOX}
  mark_seen: 1
  server_name:
auth: [allow_plaintext]
limits:
  max_connections: many
  idle_timeout: [10m]
logging: info
)"),
            (std::vector<std::string>{
                "f:2: listeners: expected a sequence of listeners, got a map",
                "f:6: upstream.verify_certificate: expected true or false, got 'yes'",
                "f:7: upstream.mailbox: expected a string, got a map",
                "f:8: upstream.mark_seen: expected true or false, got '1'",
                "f:9: upstream.server_name: expected a string, got an empty value",
                "f:10: auth: expected a map, got a sequence",
                "f:12: limits.max_connections: expected an integer, got 'many'",
                "f:13: limits.idle_timeout: expected a duration, got a sequence",
                "f:14: logging: expected a map, got 'info'",
            }));
}

TEST_F(LoadConfigTest, EmptySectionsTakeDefaults) {
  const LoadResult result = load(std::string(kBase) + "auth:\nlimits: {}\nlogging: ~\n");
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->auth.max_attempts, 3u);
  EXPECT_EQ(result.config->logging.level, "info");
}

TEST_F(LoadConfigTest, WarningsLeaveTheConfigUsable) {
  const LoadResult result = load(R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
  - name: plain
    address: 0.0.0.0:110
    tls: none
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:143
  tls: none
limits:
  idle_timeout: 5m
)");
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  EXPECT_EQ(texts(result.warnings),
            (std::vector<std::string>{
                "f:6: listeners[1].tls: no client can log in here: the listener has no TLS and "
                "auth.allow_plaintext is false",
                "f:12: upstream.tls: passwords are sent to the upstream unencrypted",
                "f:14: limits.idle_timeout: below the 10-minute minimum of RFC 1939's autologout "
                "timer; idle clients may be cut off",
            }));
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->limits.idle_timeout, minutes(5));
}

TEST_F(LoadConfigTest, SeveralErrorsAreReportedAtOnceInFileOrder) {
  const LoadResult result = load(R"(
logging:
  level: loud
listeners:
  - name: pop3s
    address: 0.0.0.0:99999
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
  ca_file: $CA
  mailbox: ""
auth:
  max_attempts: 1000
limits:
  idle_timeout: 10 minutes
extra: 1
)");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_EQ(texts(result.errors),
            (std::vector<std::string>{
                "f:2: logging.level: expected one of trace, debug, info, warn, error, off, got "
                "'loud'",
                "f:5: listeners[0].address: port must be 1-65535, got '0.0.0.0:99999'",
                "f:12: upstream.mailbox: must not be empty",
                "f:14: auth.max_attempts: must be 1-100, got '1000'",
                "f:16: limits.idle_timeout: expected a duration like 30s or 10m, got '10 "
                "minutes'",
                "f:17: extra: unknown key 'extra'",
            }));
}

TEST_F(LoadConfigTest, LongAndBinaryValuesAreShortenedInMessages) {
  const LoadResult result =
      load(std::string(kBase) + "  tls: \"\\x01" + std::string(100, 'x') + "\"\n");
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_EQ(result.errors[0].message,
            "expected one of implicit, starttls, none, got '\\x01" + std::string(59, 'x') + "...'");
}

TEST_F(LoadConfigTest, LoadFileReadsTheFile) {
  const std::string path = make_temp_file(
      "listeners:\n  - name: local\n    address: 127.0.0.1:110\n    tls: none\n"
      "upstream:\n  address: 127.0.0.1:143\n  tls: none\nauth:\n  allow_plaintext: true\n");
  const LoadResult result = load_config_file(path);
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->listeners.at(0).name, "local");
}

TEST_F(LoadConfigTest, LoadFileReportsAnUnreadableFileAsOneError) {
  const LoadResult missing = load_config_file("/nonexistent/popbridge.yaml");
  EXPECT_FALSE(missing.config.has_value());
  EXPECT_EQ(texts(missing.errors),
            std::vector<std::string>{"f: file '/nonexistent/popbridge.yaml' is not readable: No "
                                     "such file or directory"});

  const std::string directory = ::testing::TempDir();
  EXPECT_EQ(
      texts(load_config_file(directory).errors),
      std::vector<std::string>{"f: file '" + directory + "' is not readable: Is a directory"});

  const std::string huge = make_temp_file(std::string(2 * 1024 * 1024, '#'));
  EXPECT_EQ(texts(load_config_file(huge).errors),
            std::vector<std::string>{"f: file '" + huge +
                                     "' is not readable: larger than 1 MiB, which no config file "
                                     "needs"});
}

}  // namespace
}  // namespace popbridge::config
