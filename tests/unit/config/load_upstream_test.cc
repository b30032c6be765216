// SPDX-License-Identifier: Apache-2.0
// The upstream and what the session does with it: UIDL formats and maps, hook routes,
// probes and keep-alive, login reuse, deletions and workarounds.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "config/config.h"
#include "tests/support/load_config_fixture.h"

namespace popbridge::config {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

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
