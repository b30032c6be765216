// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace popbridge::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// Diagnostics as the operator sees them, so one comparison checks key path, line and message.
std::vector<std::string> texts(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  for (const Diagnostic& d : diagnostics) {
    out.push_back(d.to_string("f"));
  }
  return out;
}

const std::string kMissing = "/nonexistent/popbridge-test/file.pem";

class LoadConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cert_ = make_temp_file("-----BEGIN CERTIFICATE-----\n");
    key_ = make_temp_file("-----BEGIN PRIVATE KEY-----\n");
    ca_ = make_temp_file("-----BEGIN CERTIFICATE-----\n");
  }

  void TearDown() override {
    for (const std::string& path : temp_files_) {
      ::unlink(path.c_str());
    }
  }

  std::string make_temp_file(std::string_view contents) {
    std::string path = ::testing::TempDir() + "popbridge-config-test-XXXXXX";
    const int fd = ::mkstemp(path.data());
    EXPECT_GE(fd, 0);
    if (fd >= 0) {
      EXPECT_EQ(::write(fd, contents.data(), contents.size()),
                static_cast<ssize_t>(contents.size()));
      ::close(fd);
      temp_files_.push_back(path);
    }
    return path;
  }

  // The YAML below starts on the line after R"( so line numbers read naturally; $CERT, $KEY
  // and $CA become the temporary files.
  LoadResult load(std::string_view yaml) {
    std::string text(yaml.substr(yaml.starts_with('\n') ? 1 : 0));
    for (const auto& [name, value] :
         {std::pair<std::string, std::string>{"$CERT", cert_}, {"$KEY", key_}, {"$CA", ca_}}) {
      for (std::size_t at = text.find(name); at != std::string::npos; at = text.find(name)) {
        text.replace(at, name.size(), value);
      }
    }
    return load_config_string(text);
  }

  // Only the errors, expecting no config.
  std::vector<std::string> errors(std::string_view yaml) {
    const LoadResult result = load(yaml);
    EXPECT_FALSE(result.config.has_value());
    return texts(result.errors);
  }

  std::string cert_;
  std::string key_;
  std::string ca_;
  std::vector<std::string> temp_files_;
};

// Nine lines every test can extend: one TLS listener and an upstream with a readable CA.
constexpr std::string_view kBase = R"(
listeners:
  - name: pop3s
    address: 0.0.0.0:995
tls:
  certificate: $CERT
  private_key: $KEY
upstream:
  address: imap.example.com:993
  ca_file: $CA
)";

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

TEST_F(LoadConfigTest, EmptySectionsTakeDefaults) {
  const LoadResult result = load(std::string(kBase) + "auth:\nlimits: {}\nlogging: ~\n");
  EXPECT_TRUE(result.errors.empty()) << ::testing::PrintToString(texts(result.errors));
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->auth.max_attempts, 3u);
  EXPECT_EQ(result.config->logging.level, "info");
}

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

TEST_F(LoadConfigTest, UidlMapNeedsAReadableDirectory) {
  const LoadResult none = load(kBase);
  ASSERT_TRUE(none.config);
  EXPECT_TRUE(none.config->upstream.uidl_map.directory.empty());
  const LoadResult dir = load(std::string(kBase) + "  uidl_map:\n    directory: /tmp\n");
  ASSERT_TRUE(dir.config) << (dir.errors.empty() ? "" : dir.errors[0].message);
  EXPECT_EQ(dir.config->upstream.uidl_map.directory, "/tmp");
  EXPECT_EQ(errors(std::string(kBase) + "  uidl_map:\n    directory: $CERT\n"),
            (std::vector<std::string>{"f:11: upstream.uidl_map.directory: must be a readable "
                                      "directory: '" +
                                      cert_ + "' (Not a directory)"}));
  const LoadResult metadata = load(std::string(kBase) + "  uidl_map:\n    store: metadata\n");
  ASSERT_TRUE(metadata.config) << (metadata.errors.empty() ? "" : metadata.errors[0].message);
  EXPECT_TRUE(metadata.config->upstream.uidl_map.metadata);
  EXPECT_TRUE(metadata.config->upstream.uidl_map.enabled());
  EXPECT_EQ(errors(std::string(kBase) + "  uidl_map:\n    store: metadata\n    directory: /tmp\n"),
            (std::vector<std::string>{"f:12: upstream.uidl_map.directory: only with store: "
                                      "directory (store: metadata keeps the map on the mailbox)"}));
  EXPECT_EQ(errors(std::string(kBase) + "  uidl_map:\n    store: ldap\n    directory: /tmp\n"),
            (std::vector<std::string>{
                "f:11: upstream.uidl_map.store: expected directory or metadata, got 'ldap'"}));
  EXPECT_EQ(
      errors(std::string(kBase) + "  uidl_map: {}\n"),
      (std::vector<std::string>{"f:10: upstream.uidl_map.directory: required key is missing"}));
}

TEST_F(LoadConfigTest, HookRouteTlsInheritsUnlessSet) {
  const std::string hook = "auth:\n  mode: http\n  http:\n    url: http://127.0.0.1:9000/auth\n";
  const LoadResult inherit = load(std::string(kBase) + hook);
  ASSERT_TRUE(inherit.config) << (inherit.errors.empty() ? "" : inherit.errors[0].message);
  EXPECT_FALSE(inherit.config->auth.http.route_tls.has_value());
  const LoadResult none = load(std::string(kBase) + hook + "    route_tls: none\n");
  ASSERT_TRUE(none.config) << (none.errors.empty() ? "" : none.errors[0].message);
  EXPECT_EQ(none.config->auth.http.route_tls, std::optional<TlsMode>(TlsMode::kNone));
  const LoadResult explicit_inherit = load(std::string(kBase) + hook + "    route_tls: inherit\n");
  ASSERT_TRUE(explicit_inherit.config);
  EXPECT_FALSE(explicit_inherit.config->auth.http.route_tls.has_value());
  EXPECT_EQ(errors(std::string(kBase) + hook + "    route_tls: tls\n"),
            (std::vector<std::string>{"f:14: auth.http.route_tls: expected one of inherit, "
                                      "implicit, starttls, none, got 'tls'"}));
}

TEST_F(LoadConfigTest, HashedUserNamesNeedAKey) {
  EXPECT_EQ(errors(std::string(kBase) + "logging:\n  user: hash\n"),
            (std::vector<std::string>{
                "f:11: logging.user: needs user_hash_key_file or user_hash_key_env"}));
  EXPECT_EQ(errors(std::string(kBase) + "logging:\n  user: hash\n  user_hash_key: abc\n"),
            (std::vector<std::string>{
                "f:11: logging.user: needs user_hash_key_file or user_hash_key_env",
                "f:12: logging.user_hash_key: secrets are not written in the config: use "
                "user_hash_key_file or user_hash_key_env"}));
  const LoadResult keyed =
      load(std::string(kBase) + "logging:\n  user: hash\n  user_hash_key_file: $CA\n");
  ASSERT_TRUE(keyed.config) << (keyed.errors.empty() ? "" : keyed.errors[0].message);
  EXPECT_EQ(keyed.config->logging.user, UserLogging::kHash);
  EXPECT_FALSE(keyed.config->logging.user_hash_key.file.empty());
}

TEST_F(LoadConfigTest, ServerNameDefaultsToTheUpstreamHost) {
  const LoadResult result = load(std::string(kBase) + "  server_name: mail.example.net\n");
  ASSERT_TRUE(result.config.has_value());
  EXPECT_EQ(result.config->upstream.server_name, "mail.example.net");
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

TEST_F(LoadConfigTest, UidlFormatTakesPresetsAndDovecotTemplates) {
  struct Case {
    std::string value;
    std::string template_text;
  };
  for (const Case& c : {Case{"dovecot", "%08Xu%08Xv"}, Case{"uid", "%v.%u"},
                        Case{"\"%08Xv-%u\"", "%08Xv-%u"}, Case{"\"%g\"", "%g"},
                        Case{"\"%{uid | hex(8)}%{uidvalidity | hex(8)}\"",
                             "%{uid | hex(8)}%{uidvalidity | hex(8)}"}}) {
    const LoadResult result = load(std::string(kBase) + "  uidl_format: " + c.value + "\n");
    ASSERT_TRUE(result.config.has_value())
        << c.value << ": " << ::testing::PrintToString(texts(result.errors));
    EXPECT_EQ(result.config->upstream.uidl_format.text(), c.template_text);
  }
}

TEST_F(LoadConfigTest, UidlFormatErrorsNameTheProblem) {
  EXPECT_EQ(texts(load(std::string(kBase) + "  uidl_format: \"%q\"\n").errors),
            (std::vector<std::string>{
                "f:10: upstream.uidl_format: invalid template '%q': unknown variable 'q' (known: "
                "u, v, g, m, {uid}, {uidvalidity}, {guid}, {md5})"}));
  EXPECT_EQ(texts(load(std::string(kBase) + "  uidl_format: \"%m\"\n").errors),
            (std::vector<std::string>{"f:10: upstream.uidl_format: %m (Dovecot's mbox header "
                                      "MD5) cannot be reproduced over IMAP"}));
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

TEST_F(LoadConfigTest, ProbeAndKeepAliveSettings) {
  const LoadResult good =
      load(std::string(kBase) +
           "  keepalive_idle: 2m\n  keepalive_interval: 15s\n  keepalive_count: 6\n"
           "metrics:\n  address: 127.0.0.1:9101\n  probe_interval: 5s\n  probe_failures: 4\n");
  ASSERT_TRUE(good.config.has_value()) << ::testing::PrintToString(texts(good.errors));
  EXPECT_EQ(good.config->upstream.keepalive_idle, std::chrono::minutes(2));
  EXPECT_EQ(good.config->upstream.keepalive_interval, std::chrono::seconds(15));
  EXPECT_EQ(good.config->upstream.keepalive_count, 6u);
  EXPECT_EQ(good.config->metrics.probe_interval, std::chrono::seconds(5));
  EXPECT_EQ(good.config->metrics.probe_failures, 4u);

  const LoadResult defaults = load(kBase);
  ASSERT_TRUE(defaults.config.has_value());
  EXPECT_EQ(defaults.config->upstream.keepalive_interval, std::chrono::seconds(30));
  EXPECT_EQ(defaults.config->upstream.keepalive_count, 4u);
  EXPECT_EQ(defaults.config->metrics.probe_failures, 3u);

  EXPECT_EQ(texts(load(std::string(kBase) + "  keepalive_interval: 500ms\n").errors),
            (std::vector<std::string>{"f:10: upstream.keepalive_interval: must be at least 1s "
                                      "(TCP counts keep-alive in seconds)"}));
}

TEST_F(LoadConfigTest, LoginReuseIsReadAndBounded) {
  const LoadResult good = load(std::string(kBase) + "  login_reuse:\n    idle: 5m\n    max: 40\n");
  ASSERT_TRUE(good.config.has_value()) << ::testing::PrintToString(texts(good.errors));
  EXPECT_EQ(good.config->upstream.login_reuse.idle, std::chrono::minutes(5));
  EXPECT_EQ(good.config->upstream.login_reuse.max, 40u);

  const LoadResult defaults = load(kBase);
  ASSERT_TRUE(defaults.config.has_value());
  EXPECT_EQ(defaults.config->upstream.login_reuse.idle.count(), 0) << "off unless asked for";
  EXPECT_EQ(defaults.config->upstream.login_reuse.max, 256u);
  EXPECT_EQ(defaults.config->upstream.login_reuse.max_age, std::chrono::hours(1));
  EXPECT_EQ(
      texts(load(std::string(kBase) + "  login_reuse:\n    max_age: 0s\n").errors),
      (std::vector<std::string>{"f:11: upstream.login_reuse.max_age: must be greater than 0"}));

  EXPECT_EQ(texts(load(std::string(kBase) + "  login_reuse:\n    idle: 31m\n").errors),
            (std::vector<std::string>{"f:11: upstream.login_reuse.idle: at most 25m: IMAP servers "
                                      "may log out a connection idle for 30 minutes"}));
  EXPECT_EQ(texts(load(std::string(kBase) + "  login_reuse:\n    max: 0\n").errors).size(), 1u);
  EXPECT_EQ(texts(load(std::string(kBase) + "  login_reuse:\n    idel: 5m\n").errors).size(), 1u)
      << "a misspelt key is named";
}

TEST_F(LoadConfigTest, OnDeleteAndLoginDelayAreRead) {
  const LoadResult result = load(std::string(kBase) + R"(  on_delete:
    action: move
    folder: Deleted Items
    keyword: $Hidden
pop3:
  login_delay: 15m
)");
  ASSERT_TRUE(result.config) << (result.errors.empty() ? "" : result.errors[0].message);
  EXPECT_EQ(result.config->upstream.on_delete.action, DeleteAction::kMove);
  EXPECT_EQ(result.config->upstream.on_delete.folder, "Deleted Items");
  EXPECT_EQ(result.config->upstream.on_delete.keyword, "$Hidden");
  EXPECT_EQ(result.config->pop3.login_delay, std::chrono::minutes(15));
}

TEST_F(LoadConfigTest, WorkaroundsAreReadByName) {
  const LoadResult defaults = load(kBase);
  ASSERT_TRUE(defaults.config);
  EXPECT_FALSE(defaults.config->pop3.workarounds.outlook_no_nuls);
  EXPECT_FALSE(defaults.config->pop3.workarounds.oe_ns_eoh);

  const LoadResult both =
      load(std::string(kBase) + "pop3:\n  workarounds: [outlook-no-nuls, oe-ns-eoh]\n");
  ASSERT_TRUE(both.config) << (both.errors.empty() ? "" : both.errors[0].message);
  EXPECT_TRUE(both.config->pop3.workarounds.outlook_no_nuls);
  EXPECT_TRUE(both.config->pop3.workarounds.oe_ns_eoh);

  const LoadResult one = load(std::string(kBase) + "pop3:\n  workarounds:\n    - oe-ns-eoh\n");
  ASSERT_TRUE(one.config);
  EXPECT_FALSE(one.config->pop3.workarounds.outlook_no_nuls);
  EXPECT_TRUE(one.config->pop3.workarounds.oe_ns_eoh);

  EXPECT_EQ(errors(std::string(kBase) + "pop3:\n  workarounds:\n    - outlook-idle\n"),
            (std::vector<std::string>{"f:12: pop3.workarounds[0]: unknown workaround "
                                      "\"outlook-idle\"; known: outlook-no-nuls, oe-ns-eoh"}));
  EXPECT_EQ(errors(std::string(kBase) + "pop3:\n  workarounds: oe-ns-eoh\n"),
            (std::vector<std::string>{"f:11: pop3.workarounds: expected a sequence of workaround "
                                      "names, got 'oe-ns-eoh'"}));
}

TEST_F(LoadConfigTest, OnDeleteDefaultsExpungeAndNoLoginDelay) {
  const LoadResult result = load(kBase);
  ASSERT_TRUE(result.config);
  EXPECT_EQ(result.config->upstream.on_delete.action, DeleteAction::kExpunge);
  EXPECT_EQ(result.config->upstream.on_delete.folder, "POP3 Deleted");
  EXPECT_EQ(result.config->upstream.on_delete.keyword, "$POP3Deleted");
  EXPECT_EQ(result.config->pop3.login_delay.count(), 0);
}

TEST_F(LoadConfigTest, OnDeleteValuesAreChecked) {
  EXPECT_EQ(errors(std::string(kBase) + R"(  on_delete:
    action: trash
    folder: "Gelöscht"
    keyword: "\\Deleted"
pop3:
  login_delay: 1500ms
)"),
            (std::vector<std::string>{
                "f:11: upstream.on_delete.action: expected one of expunge, move, hide, keep, got "
                "'trash'",
                "f:12: upstream.on_delete.folder: must be a non-empty mailbox name of printable "
                "ASCII (IMAP's modified UTF-7 form for other characters, e.g. \"Gel&APY-scht\")",
                "f:13: upstream.on_delete.keyword: must be an IMAP keyword: 1-64 printable "
                "characters without spaces or ( ) { % * \" \\ ] (system flags such as \\Deleted "
                "are not keywords)",
                "f:15: pop3.login_delay: must be whole seconds (CAPA announces it in seconds)",
            }));
  EXPECT_EQ(errors(std::string(kBase) + R"(  on_delete:
    folder: inbox
    keyword: $PopbridgePending
)"),
            (std::vector<std::string>{
                "f:11: upstream.on_delete.folder: must differ from upstream.mailbox",
                "f:12: upstream.on_delete.keyword: is popbridge's own mark for deletions in "
                "progress",
            }));
}

}  // namespace
}  // namespace popbridge::config
