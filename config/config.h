// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/pop3/uidl_template.h"

namespace popbridge::config {

using Duration = std::chrono::milliseconds;

enum class TlsMode { kNone, kStartTls, kImplicit };
enum class TlsVersion { k1_2, k1_3 };
enum class LogFormat { kLogfmt, kJson };

struct Endpoint {
  std::string host;  // IPv6 without brackets
  std::uint16_t port = 0;
  std::string to_string() const;  // "host:port" or "[v6]:port"
};

struct Listener {
  std::string name;
  Endpoint address;
  TlsMode tls = TlsMode::kImplicit;
  // A load balancer sends a PROXY protocol header (v1 or v2) first; required when set.
  bool proxy_protocol = false;
};

struct TlsSettings {
  std::string certificate;  // PEM chain; empty when no listener needs TLS
  std::string private_key;
  TlsVersion min_version = TlsVersion::k1_2;
};

enum class UpstreamLoginMode { kPassthrough, kMaster, kMapped, kOAuth2 };
enum class OAuth2Grant { kRefreshToken, kClientCredentials };
enum class OAuth2Mechanism { kXoauth2, kOauthbearer };

// A secret is never written in the config itself: it comes from a file (a mounted
// Kubernetes Secret) or from an environment variable.
struct SecretSource {
  std::string file;
  std::string env;
  bool empty() const { return file.empty() && env.empty(); }
};

struct OAuth2 {
  std::string token_url;
  OAuth2Grant grant = OAuth2Grant::kRefreshToken;
  std::string client_id;
  SecretSource client_secret;
  std::string refresh_tokens_file;  // user:refresh_token lines
  std::string scope;
  OAuth2Mechanism mechanism = OAuth2Mechanism::kXoauth2;
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  bool verify_certificate = true;
};

struct UpstreamLogin {
  UpstreamLoginMode mode = UpstreamLoginMode::kPassthrough;
  std::string master_user;
  SecretSource master_password;
  std::string credentials_file;  // mapped: user:upstream_user:password lines
  OAuth2 oauth2;
};

// What a POP3 DELE does upstream at QUIT (Dovecot: pop3_deleted_flag for hide).
enum class DeleteAction { kExpunge, kMove, kHide, kKeep };

struct OnDelete {
  DeleteAction action = DeleteAction::kExpunge;
  std::string folder = "POP3 Deleted";   // move: where deleted messages go; created if missing
  std::string keyword = "$POP3Deleted";  // hide: messages with it are left out of POP3
};

// Where the old POP3 server's UIDLs for migrated mail are kept (see protocol/pop3/uidl_map.h).
struct UidlMapStore {
  std::string directory;  // store: directory: one file per user, named by the user
  // store: metadata: on the mailbox itself, IMAP METADATA entry kMetadataEntry (RFC 5464),
  // so the map travels with the mailbox and every replica sees it.
  bool metadata = false;
  static constexpr std::string_view kMetadataEntry = "/private/vendor/popbridge/uidl-map";
  bool enabled() const { return metadata || !directory.empty(); }
};

// What the upstream mail store speaks.
enum class UpstreamProtocol { kImap, kJmap };

struct Upstream {
  UpstreamProtocol protocol = UpstreamProtocol::kImap;
  // protocol: jmap: the JMAP session resource (RFC 8620 section 2); address and tls are
  // then taken from it (https: implicit TLS, http: none).
  std::string url;
  Endpoint address;
  TlsMode tls = TlsMode::kImplicit;
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  bool verify_certificate = true;
  std::string server_name;  // defaults to address.host
  std::string mailbox = "INBOX";
  Duration connect_timeout = std::chrono::seconds(10);
  Duration command_timeout = std::chrono::seconds(60);
  bool mark_seen = false;  // RETR sets \Seen (BODY[] instead of BODY.PEEK[])
  // upstream.uidl_format: a preset ("dovecot", "uid") or a Dovecot pop3_uidl_format
  // template, compiled once.
  protocol::UidlTemplate uidl_format =
      *protocol::UidlTemplate::parse(protocol::UidlTemplate::kDovecot, nullptr);
  // A message's X-UIDL header, when it has one, is its UIDL (Dovecot's pop3_reuse_xuidl):
  // UIDLs a previous POP3 server or a migration tool wrote into the messages carry over.
  bool reuse_xuidl = false;
  UidlMapStore uidl_map;
  bool expunge_without_uidplus = false;  // allow a bare EXPUNGE when UIDPLUS is missing
  bool send_id = true;  // IMAP ID with x-originating-ip/port when the server offers ID
  // Commands whose reading does not depend on the answer before them go out without
  // waiting for it (ID with the login, SELECT with the snapshot FETCH): two round trips
  // fewer per session. Off sends one command at a time, for a server that mishandles it.
  bool pipelining = true;
  // TCP keep-alive on the upstream connection: first probe after idle, then every
  // interval, given up after count unanswered probes.
  Duration keepalive_idle = std::chrono::seconds(60);
  Duration keepalive_interval = std::chrono::seconds(30);
  std::uint32_t keepalive_count = 4;
  // Logged-in connections kept after a session for the same user's next one (IMAP, passwords).
  struct LoginReuse {
    Duration idle = Duration(0);  // how long one waits; 0: never kept
    // How long after its login a connection may still be handed on: a password changed
    // or an account disabled upstream takes effect within this.
    Duration max_age = std::chrono::hours(1);
    std::uint32_t max = 256;  // kept at once, per worker
  } login_reuse;
  // protocol: jmap: how long a worker remembers where a user's mailbox is (session
  // resource, API URL, mailbox id) after an open that read them all, so that the next
  // open is one request; 0 reads the session resource at every open.
  Duration remember_session = std::chrono::minutes(15);
  UpstreamLogin login;
  OnDelete on_delete;
};

enum class AuthMode { kPassthrough, kUsersFile, kHttp };

struct HttpAuth {
  std::string url;  // http:// or https://
  Duration timeout = std::chrono::seconds(5);
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";
  bool verify_certificate = true;
  // How popbridge reaches a server the hook routes to (Auth-Server/Auth-Port); absent:
  // as upstream.tls. nginx's mail proxy speaks plain IMAP to its backends, so a hook
  // written for nginx usually answers a plain port: route_tls none.
  std::optional<TlsMode> route_tls;
};

struct Auth {
  AuthMode mode = AuthMode::kPassthrough;
  std::string users_file;  // users_file: user:crypt-hash lines
  HttpAuth http;
  bool allow_plaintext = false;
  Duration failure_delay = std::chrono::seconds(2);  // after the first failure; doubles
  Duration max_failure_delay = std::chrono::seconds(15);
  Duration failure_memory = std::chrono::minutes(15);  // failures are forgotten after this
  std::uint32_t max_attempts = 3;   // failed logins per connection before it is closed
  bool exclusive_sessions = false;  // a second session of a user gets -ERR [IN-USE]
};

// POP3 behaviour towards clients.
struct Pop3 {
  // RFC 2449 LOGIN-DELAY: a user may log in again only this long after the last login
  // (advertised in CAPA; -ERR [LOGIN-DELAY] otherwise). 0: no delay.
  Duration login_delay = Duration(0);
  // Dovecot's pop3_client_workarounds, for clients that cannot be fixed. Off by default:
  // each changes the octets a client receives.
  struct Workarounds {
    bool outlook_no_nuls = false;  // NUL octets sent as 0x80 (Outlook stops at a NUL)
    bool oe_ns_eoh = false;        // a header-only message gets the blank line that ends a header
  } workarounds;
};

struct Limits {
  Duration idle_timeout = std::chrono::minutes(10);
  Duration drain_timeout = std::chrono::seconds(30);  // SIGTERM: how long sessions may finish
  std::uint32_t max_connections = 10000;
  std::size_t client_write_high_watermark = 256 * 1024;
  std::size_t client_write_low_watermark = 64 * 1024;
  // A client that retrieved messages n-1 and n in order gets n+1 fetched while it reads n,
  // when n+1 is no larger than this (held in memory until its RETR). 0: off.
  std::size_t read_ahead = 64 * 1024;
};

enum class UserLogging { kPlain, kHash, kOmit };

struct Logging {
  std::string level = "info";  // trace | debug | info | warn | error | off
  LogFormat format = LogFormat::kLogfmt;
  // How user names appear in logs: as given, as a short keyed hash (still correlates one
  // user's lines, without storing the address), or not at all.
  UserLogging user = UserLogging::kPlain;
  // user: hash: the HMAC key. An unkeyed hash of an address is reversed with a list of
  // addresses; with a key kept out of the logs it is not.
  SecretSource user_hash_key;
};

struct Metrics {
  std::optional<Endpoint> address;  // absent: no admin endpoint
  // /readyz probes the upstream this often, and turns unready only after this many
  // probes in a row failed, so one blip does not take every replica out at once.
  Duration probe_interval = std::chrono::seconds(10);
  std::uint32_t probe_failures = 3;
};

struct Config {
  std::uint32_t workers = 0;  // event loops, each on its own thread; 0 = one per core ("auto")
  std::vector<Listener> listeners;
  TlsSettings tls;
  Upstream upstream;
  Auth auth;
  Pop3 pop3;
  Limits limits;
  Logging logging;
  Metrics metrics;
};

struct Diagnostic {
  std::string key_path;  // e.g. "listeners[1].address" (0-based); empty for the file as a whole
  int line = 0;          // 1-based line in the file; 0 when unknown
  std::string message;
  std::string to_string(std::string_view source) const;  // "file:12: key: message"
};

struct LoadResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<Diagnostic> errors;
  std::vector<Diagnostic> warnings;  // e.g. idle_timeout below RFC 1939's 10 minutes
};

// Parses and validates the whole document in one pass, collecting every problem.
LoadResult load_config_string(std::string_view yaml);
// Reads the file; an unreadable file is a single error.
LoadResult load_config_file(const std::string& path);

// "10m", "30s", "500ms", "1h" or a bare number of seconds. Units may be combined largest
// first, each once ("2h30m", "1m30s500ms"). Rejects signs, fractions, spaces and anything
// longer than std::chrono::nanoseconds can hold, so callers may convert freely.
std::optional<Duration> parse_duration(std::string_view text);
// "host:port", "[v6]:port"; host may be a name.
std::optional<Endpoint> parse_endpoint(std::string_view text);
// As above; on failure `error` says what is wrong, e.g. "port must be 1-65535".
std::optional<Endpoint> parse_endpoint(std::string_view text, std::string& error);
// A byte count: "65536", "512B", "64KiB", "1MiB" or "1GiB" (binary units only).
std::optional<std::size_t> parse_size(std::string_view text);

// The configuration as YAML, every key with its value in force (defaults included);
// secrets only by their file or variable. Loading the output gives the same configuration.
std::string to_yaml(const Config& config);

// Every key the loader accepts, as dotted paths ("upstream.login.oauth2.token_url",
// "listeners[].name"); maps are listed as well as their keys.
std::vector<std::string> known_keys();

}  // namespace popbridge::config
