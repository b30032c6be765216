// SPDX-License-Identifier: Apache-2.0
// Every configuration section's keys and enumerated values, in one place: the readers check
// against them and known_keys() lists them, so a key added to a reader is documented (and
// tested against the example file) at once.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/loader.h"

namespace popbridge::config::detail {

inline constexpr std::array<Choice<UpstreamProtocol>, 2> kUpstreamProtocols{{
    {"imap", UpstreamProtocol::kImap},
    {"jmap", UpstreamProtocol::kJmap},
}};
inline constexpr std::array<Choice<TlsMode>, 3> kTlsModes{{
    {"implicit", TlsMode::kImplicit},
    {"starttls", TlsMode::kStartTls},
    {"none", TlsMode::kNone},
}};
inline constexpr std::array<Choice<TlsVersion>, 2> kTlsVersions{{
    {"1.2", TlsVersion::k1_2},
    {"1.3", TlsVersion::k1_3},
}};
inline constexpr std::array<Choice<LogFormat>, 2> kLogFormats{{
    {"logfmt", LogFormat::kLogfmt},
    {"json", LogFormat::kJson},
}};
inline constexpr std::array<Choice<std::string_view>, 6> kLogLevels{{
    {"trace", "trace"},
    {"debug", "debug"},
    {"info", "info"},
    {"warn", "warn"},
    {"error", "error"},
    {"off", "off"},
}};

inline constexpr std::array<std::string_view, 9> kTopKeys{
    "listeners", "tls", "upstream", "auth", "pop3", "limits", "logging", "metrics", "workers"};
inline constexpr std::array<std::string_view, 2> kPop3Keys{"login_delay", "workarounds"};
inline constexpr std::array<std::string_view, 3> kOnDeleteKeys{"action", "folder", "keyword"};
inline constexpr std::array<Choice<DeleteAction>, 4> kDeleteActions{{
    {"expunge", DeleteAction::kExpunge},
    {"move", DeleteAction::kMove},
    {"hide", DeleteAction::kHide},
    {"keep", DeleteAction::kKeep},
}};
inline constexpr std::array<std::string_view, 4> kListenerKeys{"name", "address", "tls",
                                                               "proxy_protocol"};
inline constexpr std::array<std::string_view, 3> kTlsKeys{"certificate", "private_key",
                                                          "min_version"};
inline constexpr std::array<std::string_view, 24> kUpstreamKeys{"protocol",
                                                                "url",
                                                                "address",
                                                                "tls",
                                                                "ca_file",
                                                                "verify_certificate",
                                                                "server_name",
                                                                "mailbox",
                                                                "connect_timeout",
                                                                "command_timeout",
                                                                "mark_seen",
                                                                "uidl_format",
                                                                "expunge_without_uidplus",
                                                                "send_id",
                                                                "pipelining",
                                                                "login",
                                                                "keepalive_idle",
                                                                "keepalive_interval",
                                                                "keepalive_count",
                                                                "on_delete",
                                                                "reuse_xuidl",
                                                                "uidl_map",
                                                                "login_reuse",
                                                                "remember_session"};
inline constexpr std::array<std::string_view, 2> kUidlMapKeys{"store", "directory"};
inline constexpr std::array<std::string_view, 3> kLoginReuseKeys{"idle", "max_age", "max"};
inline constexpr std::array<std::string_view, 7> kLoginKeys{
    "mode",   "master_user",    "master_password_file", "master_password_env", "credentials_file",
    "oauth2", "master_password"};
inline constexpr std::array<std::string_view, 11> kOAuth2Keys{"token_url",
                                                              "grant",
                                                              "client_id",
                                                              "client_secret_file",
                                                              "client_secret_env",
                                                              "refresh_tokens_file",
                                                              "scope",
                                                              "mechanism",
                                                              "ca_file",
                                                              "verify_certificate",
                                                              "client_secret"};
inline constexpr std::array<std::string_view, 5> kHttpAuthKeys{"url", "timeout", "ca_file",
                                                               "verify_certificate", "route_tls"};
inline constexpr std::array<Choice<std::optional<TlsMode>>, 4> kRouteTlsModes{{
    {"inherit", std::nullopt},
    {"implicit", TlsMode::kImplicit},
    {"starttls", TlsMode::kStartTls},
    {"none", TlsMode::kNone},
}};
inline constexpr std::array<Choice<UpstreamLoginMode>, 4> kLoginModes{{
    {"passthrough", UpstreamLoginMode::kPassthrough},
    {"master", UpstreamLoginMode::kMaster},
    {"mapped", UpstreamLoginMode::kMapped},
    {"oauth2", UpstreamLoginMode::kOAuth2},
}};
inline constexpr std::array<Choice<OAuth2Grant>, 2> kGrants{{
    {"refresh_token", OAuth2Grant::kRefreshToken},
    {"client_credentials", OAuth2Grant::kClientCredentials},
}};
inline constexpr std::array<Choice<OAuth2Mechanism>, 2> kOAuth2Mechanisms{{
    {"xoauth2", OAuth2Mechanism::kXoauth2},
    {"oauthbearer", OAuth2Mechanism::kOauthbearer},
}};
inline constexpr std::array<Choice<AuthMode>, 3> kAuthModes{{
    {"passthrough", AuthMode::kPassthrough},
    {"users_file", AuthMode::kUsersFile},
    {"http", AuthMode::kHttp},
}};
inline constexpr std::array<std::string_view, 9> kAuthKeys{
    "allow_plaintext",   "failure_delay",  "max_attempts",      "mode", "users_file", "http",
    "max_failure_delay", "failure_memory", "exclusive_sessions"};
inline constexpr std::array<std::string_view, 6> kLimitsKeys{"idle_timeout",
                                                             "drain_timeout",
                                                             "max_connections",
                                                             "client_write_high_watermark",
                                                             "client_write_low_watermark",
                                                             "read_ahead"};
inline constexpr std::array<std::string_view, 6> kLoggingKeys{
    "level", "format", "user", "user_hash_key_file", "user_hash_key_env", "user_hash_key"};
inline constexpr std::array<Choice<UserLogging>, 3> kUserLogging{{
    {"plain", UserLogging::kPlain},
    {"hash", UserLogging::kHash},
    {"omit", UserLogging::kOmit},
}};
inline constexpr std::array<std::string_view, 3> kMetricsKeys{"address", "probe_interval",
                                                              "probe_failures"};

// Inline secrets are known only to refuse them with a pointed message.
inline bool documented(std::string_view key) {
  return key != "master_password" && key != "client_secret" && key != "user_hash_key";
}

template <std::size_t N>
void add_keys(std::vector<std::string>& out, const std::string& prefix,
              const std::array<std::string_view, N>& keys) {
  for (std::string_view key : keys) {
    if (documented(key)) {
      out.push_back(prefix + std::string(key));
    }
  }
}

}  // namespace popbridge::config::detail
