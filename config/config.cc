// SPDX-License-Identifier: Apache-2.0
// Turns the YAML document into a Config, collecting every problem in one pass.
//
// Each section is read by a MapReader that knows the section's keys, so unknown and
// duplicate keys are found even where values are also wrong. Readers never stop at the first
// bad value: a bad value leaves the field at its default and only records a Diagnostic, and
// cross-field checks run only on fields that were read successfully, so one mistake does not
// cascade into several errors.

#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace popbridge::config {
namespace {

// A config file is a few KiB; anything far larger is a wrong path (a log, a binary).
constexpr std::size_t kMaxFileBytes = 1024 * 1024;
// RFC 1939 section 3: the autologout timer "MUST be of at least 10 minutes' duration".
constexpr Duration kRfc1939MinIdle = std::chrono::minutes(10);

int line_of(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : 0;
}

// Values and keys are echoed in messages that end up in terminals and logs; they are cut
// short and control bytes are escaped so a hostile or binary file cannot garble either.
std::string sanitize(std::string_view text) {
  constexpr std::size_t kMaxShown = 60;
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMaxShown) {
    out += "...";
  }
  return out;
}

std::string quoted(std::string_view text) { return "'" + sanitize(text) + "'"; }

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return quoted(node.Scalar());
    case YAML::NodeType::Null:
      return "an empty value";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

// Optimal string alignment distance (Levenshtein plus adjacent transpositions), so "tsl"
// is one edit from "tls".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) {
    d[i][0] = i;
  }
  for (std::size_t j = 0; j <= b.size(); ++j) {
    d[0][j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string did_you_mean(std::string_view key, std::span<const std::string_view> known) {
  // Short keys get less slack, or every three-letter typo would "mean" something.
  const std::size_t allowed = key.size() <= 4 ? 1 : 2;
  std::string_view best;
  std::size_t best_distance = allowed + 1;
  for (std::string_view candidate : known) {
    const std::size_t gap = candidate.size() > key.size() ? candidate.size() - key.size()
                                                          : key.size() - candidate.size();
    if (gap > allowed) {
      continue;  // also keeps the quadratic distance off huge fuzzed keys
    }
    const std::size_t distance = edit_distance(key, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best.empty() ? "" : " (did you mean '" + std::string(best) + "'?)";
}

std::string join(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : std::string(path) + "." + std::string(key);
}

// Why `path` cannot be read, or empty when it can. stat and access rather than open: opening a
// device node can have effects (a watchdog, a tape rewind), and the path is only checked here.
// access() follows symlinks, so the dangling links of a Kubernetes Secret mount are caught.
std::string unreadable_reason(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || ::access(path.c_str(), R_OK) != 0) {
    return std::generic_category().message(errno);
  }
  if (S_ISDIR(st.st_mode)) {
    return std::generic_category().message(EISDIR);
  }
  return "";
}

// Host names and IPv6 hex digits compare case-insensitively.
std::string lower(std::string text) {
  for (char& c : text) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return text;
}

bool is_loopback(std::string_view host) {
  return host == "localhost" || host.starts_with("127.") || host == "::1";
}

template <typename T>
struct Choice {
  std::string_view name;
  T value;
};

constexpr std::array<Choice<TlsMode>, 3> kTlsModes{{
    {"implicit", TlsMode::kImplicit},
    {"starttls", TlsMode::kStartTls},
    {"none", TlsMode::kNone},
}};
constexpr std::array<Choice<TlsVersion>, 2> kTlsVersions{{
    {"1.2", TlsVersion::k1_2},
    {"1.3", TlsVersion::k1_3},
}};
constexpr std::array<Choice<LogFormat>, 2> kLogFormats{{
    {"logfmt", LogFormat::kLogfmt},
    {"json", LogFormat::kJson},
}};
constexpr std::array<Choice<std::string_view>, 6> kLogLevels{{
    {"trace", "trace"},
    {"debug", "debug"},
    {"info", "info"},
    {"warn", "warn"},
    {"error", "error"},
    {"off", "off"},
}};

constexpr std::array<std::string_view, 9> kTopKeys{
    "listeners", "tls", "upstream", "auth", "pop3", "limits", "logging", "metrics", "workers"};
constexpr std::array<std::string_view, 2> kPop3Keys{"login_delay", "workarounds"};
constexpr std::array<std::string_view, 3> kOnDeleteKeys{"action", "folder", "keyword"};
constexpr std::array<Choice<DeleteAction>, 4> kDeleteActions{{
    {"expunge", DeleteAction::kExpunge},
    {"move", DeleteAction::kMove},
    {"hide", DeleteAction::kHide},
    {"keep", DeleteAction::kKeep},
}};
constexpr std::array<std::string_view, 4> kListenerKeys{"name", "address", "tls", "proxy_protocol"};
constexpr std::array<std::string_view, 3> kTlsKeys{"certificate", "private_key", "min_version"};
constexpr std::array<std::string_view, 19> kUpstreamKeys{"address",
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
                                                         "login",
                                                         "keepalive_idle",
                                                         "keepalive_interval",
                                                         "keepalive_count",
                                                         "on_delete",
                                                         "reuse_xuidl",
                                                         "uidl_map"};
constexpr std::array<std::string_view, 2> kUidlMapKeys{"store", "directory"};
constexpr std::array<std::string_view, 7> kLoginKeys{
    "mode",   "master_user",    "master_password_file", "master_password_env", "credentials_file",
    "oauth2", "master_password"};
constexpr std::array<std::string_view, 11> kOAuth2Keys{"token_url",
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
constexpr std::array<std::string_view, 5> kHttpAuthKeys{"url", "timeout", "ca_file",
                                                        "verify_certificate", "route_tls"};
constexpr std::array<Choice<std::optional<TlsMode>>, 4> kRouteTlsModes{{
    {"inherit", std::nullopt},
    {"implicit", TlsMode::kImplicit},
    {"starttls", TlsMode::kStartTls},
    {"none", TlsMode::kNone},
}};
constexpr std::array<Choice<UpstreamLoginMode>, 4> kLoginModes{{
    {"passthrough", UpstreamLoginMode::kPassthrough},
    {"master", UpstreamLoginMode::kMaster},
    {"mapped", UpstreamLoginMode::kMapped},
    {"oauth2", UpstreamLoginMode::kOAuth2},
}};
constexpr std::array<Choice<OAuth2Grant>, 2> kGrants{{
    {"refresh_token", OAuth2Grant::kRefreshToken},
    {"client_credentials", OAuth2Grant::kClientCredentials},
}};
constexpr std::array<Choice<OAuth2Mechanism>, 2> kOAuth2Mechanisms{{
    {"xoauth2", OAuth2Mechanism::kXoauth2},
    {"oauthbearer", OAuth2Mechanism::kOauthbearer},
}};
constexpr std::array<Choice<AuthMode>, 3> kAuthModes{{
    {"passthrough", AuthMode::kPassthrough},
    {"users_file", AuthMode::kUsersFile},
    {"http", AuthMode::kHttp},
}};
constexpr std::array<std::string_view, 9> kAuthKeys{
    "allow_plaintext",   "failure_delay",  "max_attempts",      "mode", "users_file", "http",
    "max_failure_delay", "failure_memory", "exclusive_sessions"};
constexpr std::array<std::string_view, 5> kLimitsKeys{
    "idle_timeout", "drain_timeout", "max_connections", "client_write_high_watermark",
    "client_write_low_watermark"};
constexpr std::array<std::string_view, 6> kLoggingKeys{
    "level", "format", "user", "user_hash_key_file", "user_hash_key_env", "user_hash_key"};
constexpr std::array<Choice<UserLogging>, 3> kUserLogging{{
    {"plain", UserLogging::kPlain},
    {"hash", UserLogging::kHash},
    {"omit", UserLogging::kOmit},
}};
constexpr std::array<std::string_view, 3> kMetricsKeys{"address", "probe_interval",
                                                       "probe_failures"};

// Inline secrets are known only to refuse them with a pointed message.
bool documented(std::string_view key) {
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

// A node with where it sits: its key path, the line to blame for a bad value, and the line
// of the key that introduced it (what a missing-key error inside a map points at).
struct Value {
  YAML::Node node;
  std::string path;
  int line = 0;
  int key_line = 0;
};

class Loader;

// One YAML map read against a fixed set of keys. Key problems are reported on construction.
class MapReader {
 public:
  MapReader(Loader& loader, const Value& map, std::span<const std::string_view> keys);

  // The value under `key`, or nullopt when absent (the field keeps its default).
  std::optional<Value> get(std::string_view key) const;
  // Like get(), but reports a missing key.
  std::optional<Value> required(std::string_view key) const;
  int line() const { return line_; }

 private:
  Loader& loader_;
  std::string path_;
  int line_;
  std::vector<std::pair<std::string, Value>> entries_;
};

class Loader {
 public:
  LoadResult run(const YAML::Node& root);

  void error(std::string path, int line, std::string message) {
    errors_.push_back(Diagnostic{std::move(path), line, std::move(message)});
  }
  void warn(std::string path, int line, std::string message) {
    warnings_.push_back(Diagnostic{std::move(path), line, std::move(message)});
  }

 private:
  // Typed field readers. Each leaves `out` alone when the value is absent or invalid, and
  // returns false only when it reported an error, so callers know whether `out` is usable.
  const std::string* scalar(const Value& v, std::string_view expected);
  bool read_string(const std::optional<Value>& v, std::string& out);
  void read_uidl_format(const std::optional<Value>& v, protocol::UidlTemplate& out);
  bool read_bool(const std::optional<Value>& v, bool& out);
  bool read_uint(const std::optional<Value>& v, std::uint32_t min, std::uint32_t max,
                 std::uint32_t& out);
  bool read_duration(const std::optional<Value>& v, Duration& out);
  bool read_size(const std::optional<Value>& v, std::size_t& out);
  bool read_endpoint(const std::optional<Value>& v, Endpoint& out);
  template <typename T, std::size_t N>
  bool read_choice(const std::optional<Value>& v, const std::array<Choice<T>, N>& choices, T& out);
  // Reports `file` under key_path and line when it cannot be read.
  void check_readable(const std::string& key_path, int line, const std::string& file);
  std::optional<MapReader> open_map(const std::optional<Value>& v,
                                    std::span<const std::string_view> keys);

  void read_listeners(const std::optional<Value>& v);
  void read_workarounds(const std::optional<Value>& v);
  void read_listener(const Value& item);
  void read_tls(const std::optional<Value>& v, int root_line);
  void read_upstream(const std::optional<Value>& v);
  void read_auth(const std::optional<Value>& v);
  void read_limits(const std::optional<Value>& v);
  void read_logging(const std::optional<Value>& v);
  void read_metrics(const std::optional<Value>& v);
  void read_login(const std::optional<Value>& v);
  void read_on_delete(const std::optional<Value>& v);
  void read_uidl_map(const std::optional<Value>& v);
  void read_pop3(const std::optional<Value>& v);
  int login_mode_line_ = 0;
  void read_secret(const MapReader& m, const Value& parent, std::string_view base,
                   SecretSource& out, bool required);
  void read_workers(const std::optional<Value>& v);

  Config config_;
  std::vector<Diagnostic> errors_;
  std::vector<Diagnostic> warnings_;
  // Listen addresses already claimed, lower-cased, with the key path that claimed them.
  std::map<std::string, std::string> addresses_;
  // The first listener that needs a certificate, to explain why tls is required.
  std::string first_tls_listener_;
  // Some listener's tls value was invalid, so whether a certificate is needed is unknown.
  bool tls_need_unknown_ = false;
  // Listeners with tls: none, as (key path, line), for the login warning.
  std::vector<std::pair<std::string, int>> plaintext_listeners_;
};

MapReader::MapReader(Loader& loader, const Value& map, std::span<const std::string_view> keys)
    : loader_(loader), path_(map.path), line_(map.key_line != 0 ? map.key_line : map.line) {
  if (!map.node.IsMap()) {
    return;  // an empty section ("auth:" alone): every key keeps its default
  }
  // By value: yaml-cpp's iterator hands out a temporary, so `it->first` would dangle.
  for (const auto& entry : map.node) {
    const YAML::Node key = entry.first;
    const YAML::Node value = entry.second;
    const int key_line = line_of(key);
    if (!key.IsScalar()) {
      loader.error(path_, key_line, "expected a key name, got " + describe(key));
      continue;
    }
    const std::string& name = key.Scalar();
    const std::string path = join(path_, sanitize(name));
    if (std::find(keys.begin(), keys.end(), name) == keys.end()) {
      loader.error(path, key_line, "unknown key " + quoted(name) + did_you_mean(name, keys));
      continue;
    }
    const bool seen = std::any_of(entries_.begin(), entries_.end(),
                                  [&](const auto& entry) { return entry.first == name; });
    if (seen) {
      loader.error(path, key_line, "duplicate key " + quoted(name));
      continue;
    }
    // yaml-cpp marks an empty value at the token after it, often the next line; the key's
    // own line is where the user has to look.
    const int line = value.IsNull() ? key_line : line_of(value);
    entries_.emplace_back(name, Value{value, path, line, key_line});
  }
}

std::optional<Value> MapReader::get(std::string_view key) const {
  for (const auto& [name, value] : entries_) {
    if (name == key) {
      return value;
    }
  }
  return std::nullopt;
}

std::optional<Value> MapReader::required(std::string_view key) const {
  std::optional<Value> value = get(key);
  if (!value) {
    loader_.error(join(path_, key), line_, "required key is missing");
  }
  return value;
}

const std::string* Loader::scalar(const Value& v, std::string_view expected) {
  if (!v.node.IsScalar()) {
    error(v.path, v.line, "expected " + std::string(expected) + ", got " + describe(v.node));
    return nullptr;
  }
  return &v.node.Scalar();
}

void Loader::read_uidl_format(const std::optional<Value>& v, protocol::UidlTemplate& out) {
  std::string text;
  if (!v || !read_string(v, text)) {
    return;
  }
  if (text == "dovecot") {
    text = protocol::UidlTemplate::kDovecot;
  } else if (text == "uid") {
    text = protocol::UidlTemplate::kUid;
  } else if (text.find('%') == std::string::npos) {
    error(v->path, v->line,
          "expected dovecot, uid or a template with %u, %v or %g (Dovecot's pop3_uidl_format), "
          "got '" +
              text + "'");
    return;
  }
  std::string why;
  std::optional<protocol::UidlTemplate> parsed = protocol::UidlTemplate::parse(text, &why);
  if (!parsed) {
    error(v->path, v->line, "invalid template '" + text + "': " + why);
    return;
  }
  if (parsed->needs_md5()) {
    error(v->path, v->line, "%m (Dovecot's mbox header MD5) cannot be reproduced over IMAP");
    return;
  }
  out = std::move(*parsed);
}

bool Loader::read_string(const std::optional<Value>& v, std::string& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "a string");
  if (text == nullptr) {
    return false;
  }
  if (text->empty()) {
    error(v->path, v->line, "must not be empty");
    return false;
  }
  // Every string here ends up in a path, a host name or an IMAP command line, where a
  // control character is at best a confusing failure and at worst an injection.
  const bool has_control = std::any_of(text->begin(), text->end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (has_control) {
    error(v->path, v->line, "must not contain control characters");
    return false;
  }
  out = *text;
  return true;
}

bool Loader::read_bool(const std::optional<Value>& v, bool& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "true or false");
  if (text == nullptr) {
    return false;
  }
  // Only YAML 1.2's spellings: "yes", "on" and friends are the YAML 1.1 trap.
  if (*text == "true") {
    out = true;
  } else if (*text == "false") {
    out = false;
  } else {
    error(v->path, v->line, "expected true or false, got " + quoted(*text));
    return false;
  }
  return true;
}

bool Loader::read_uint(const std::optional<Value>& v, std::uint32_t min, std::uint32_t max,
                       std::uint32_t& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "an integer");
  if (text == nullptr) {
    return false;
  }
  const char* begin = text->data();
  const char* end = begin + text->size();
  std::int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ptr == begin || ptr != end || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    error(v->path, v->line, "expected an integer, got " + quoted(*text));
    return false;
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    error(v->path, v->line,
          "must be " + std::to_string(min) + "-" + std::to_string(max) + ", got " + quoted(*text));
    return false;
  }
  out = static_cast<std::uint32_t>(value);
  return true;
}

bool Loader::read_duration(const std::optional<Value>& v, Duration& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "a duration");
  if (text == nullptr) {
    return false;
  }
  const std::optional<Duration> duration = parse_duration(*text);
  if (!duration) {
    error(v->path, v->line, "expected a duration like 30s or 10m, got " + quoted(*text));
    return false;
  }
  out = *duration;
  return true;
}

bool Loader::read_size(const std::optional<Value>& v, std::size_t& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "a size");
  if (text == nullptr) {
    return false;
  }
  const std::optional<std::size_t> size = parse_size(*text);
  if (!size) {
    error(v->path, v->line, "expected a size like 65536, 64KiB or 1MiB, got " + quoted(*text));
    return false;
  }
  out = *size;
  return true;
}

bool Loader::read_endpoint(const std::optional<Value>& v, Endpoint& out) {
  if (!v) {
    return true;
  }
  const std::string* text = scalar(*v, "an address like host:port");
  if (text == nullptr) {
    return false;
  }
  std::string why;
  std::optional<Endpoint> endpoint = parse_endpoint(*text, why);
  if (!endpoint) {
    error(v->path, v->line, why + ", got " + quoted(*text));
    return false;
  }
  out = std::move(*endpoint);
  return true;
}

template <typename T, std::size_t N>
bool Loader::read_choice(const std::optional<Value>& v, const std::array<Choice<T>, N>& choices,
                         T& out) {
  if (!v) {
    return true;
  }
  std::string names;
  for (const Choice<T>& choice : choices) {
    names += names.empty() ? "" : ", ";
    names += choice.name;
  }
  const std::string expected = "one of " + names;
  const std::string* text = scalar(*v, expected);
  if (text == nullptr) {
    return false;
  }
  for (const Choice<T>& choice : choices) {
    if (*text == choice.name) {
      out = choice.value;
      return true;
    }
  }
  error(v->path, v->line, "expected " + expected + ", got " + quoted(*text));
  return false;
}

void Loader::check_readable(const std::string& key_path, int line, const std::string& file) {
  const std::string reason = unreadable_reason(file);
  if (!reason.empty()) {
    error(key_path, line, "file " + quoted(file) + " is not readable: " + reason);
  }
}

std::optional<MapReader> Loader::open_map(const std::optional<Value>& v,
                                          std::span<const std::string_view> keys) {
  if (!v->node.IsMap() && !v->node.IsNull()) {
    error(v->path, v->line, "expected a map, got " + describe(v->node));
    return std::nullopt;
  }
  return MapReader(*this, *v, keys);
}

LoadResult Loader::run(const YAML::Node& root) {
  LoadResult result;
  if (root.IsNull()) {
    error("", 0, "the document is empty");
  } else if (!root.IsMap()) {
    error("", line_of(root), "expected a map, got " + describe(root));
  } else {
    const Value doc{root, "", line_of(root), line_of(root)};
    MapReader top(*this, doc, kTopKeys);
    read_listeners(top.required("listeners"));
    read_tls(top.get("tls"), top.line());
    read_upstream(top.required("upstream"));
    read_auth(top.get("auth"));
    read_pop3(top.get("pop3"));
    read_limits(top.get("limits"));
    read_logging(top.get("logging"));
    read_metrics(top.get("metrics"));
    read_workers(top.get("workers"));
    if (config_.auth.mode == AuthMode::kPassthrough &&
        config_.upstream.login.mode != UpstreamLoginMode::kPassthrough) {
      // Nobody would check the client's password: anyone could read any mailbox.
      error("upstream.login.mode", login_mode_line_,
            "a master, mapped or oauth2 upstream login needs the gateway to check clients "
            "itself: set auth.mode to users_file or http");
    }
    if (!config_.auth.allow_plaintext) {
      for (const auto& [path, line] : plaintext_listeners_) {
        warn(path, line,
             "no client can log in here: the listener has no TLS and auth.allow_plaintext is "
             "false");
      }
    }
  }
  // The sections are read in a fixed order; sorting gives the order of the file.
  const auto by_line = [](const Diagnostic& a, const Diagnostic& b) { return a.line < b.line; };
  std::stable_sort(errors_.begin(), errors_.end(), by_line);
  std::stable_sort(warnings_.begin(), warnings_.end(), by_line);
  if (errors_.empty()) {
    result.config = std::move(config_);
  }
  result.errors = std::move(errors_);
  result.warnings = std::move(warnings_);
  return result;
}

void Loader::read_listeners(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  if (!v->node.IsSequence()) {
    error(v->path, v->line, "expected a sequence of listeners, got " + describe(v->node));
    return;
  }
  if (v->node.size() == 0) {
    error(v->path, v->line, "must list at least one listener");
    return;
  }
  std::size_t index = 0;
  for (const YAML::Node& node : v->node) {
    const std::string path = v->path + "[" + std::to_string(index++) + "]";
    // yaml-cpp marks an empty item at the token after it; the sequence is the better guess.
    const int line = node.IsNull() ? v->line : line_of(node);
    read_listener(Value{node, path, line, line});
  }
}

void Loader::read_listener(const Value& item) {
  if (!item.node.IsMap()) {
    error(item.path, item.line, "expected a map, got " + describe(item.node));
    return;
  }
  MapReader m(*this, item, kListenerKeys);
  Listener listener;

  const std::optional<Value> name = m.required("name");
  if (name && read_string(name, listener.name)) {
    // The name is a log field and a metric label; keeping it to a token avoids quoting both.
    const bool token = std::all_of(listener.name.begin(), listener.name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || c == '.';
    });
    if (!token || listener.name.size() > 64) {
      error(name->path, name->line,
            "a listener name is at most 64 letters, digits, '-', '_' or '.', got " +
                quoted(listener.name));
    } else {
      for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
        if (config_.listeners[i].name == listener.name) {
          error(name->path, name->line,
                "duplicate listener name " + quoted(listener.name) + " (also used by listeners[" +
                    std::to_string(i) + "])");
          break;
        }
      }
    }
  }

  const std::optional<Value> address = m.required("address");
  if (address && read_endpoint(address, listener.address)) {
    // Every worker binds with SO_REUSEPORT, so a repeated address would bind without error
    // and silently share connections between two listeners.
    const auto [it, inserted] = addresses_.emplace(lower(listener.address.to_string()), item.path);
    if (!inserted) {
      error(address->path, address->line,
            "duplicate listen address " + quoted(listener.address.to_string()) + " (also used by " +
                it->second + ")");
    }
  }

  const std::optional<Value> tls = m.get("tls");
  if (read_choice(tls, kTlsModes, listener.tls)) {
    if (listener.tls == TlsMode::kNone) {
      plaintext_listeners_.emplace_back(tls->path, tls->line);
    } else if (first_tls_listener_.empty()) {
      first_tls_listener_ = item.path;
    }
  } else {
    tls_need_unknown_ = true;
  }
  read_bool(m.get("proxy_protocol"), listener.proxy_protocol);
  config_.listeners.push_back(std::move(listener));
}

void Loader::read_tls(const std::optional<Value>& v, int root_line) {
  const bool needed = !first_tls_listener_.empty();
  if (!v) {
    if (needed) {
      error(
          "tls", root_line,
          "required key is missing (" + first_tls_listener_ + " uses TLS and needs a certificate)");
    }
    return;
  }
  std::optional<MapReader> m = open_map(v, kTlsKeys);
  if (!m) {
    return;
  }
  TlsSettings& tls = config_.tls;
  read_choice(m->get("min_version"), kTlsVersions, tls.min_version);
  if (!needed) {
    // Still checked for typos, but the files are not loaded, so they need not exist; the
    // struct's contract is that the paths are empty when no listener needs them.
    std::string ignored;
    const std::optional<Value> certificate = m->get("certificate");
    read_string(certificate, ignored);
    read_string(m->get("private_key"), ignored);
    if (!tls_need_unknown_ && (certificate || m->get("private_key"))) {
      warn(v->path, v->key_line, "ignored: no listener uses implicit or starttls");
    }
    return;
  }
  for (const auto& [key, out] :
       {std::pair<std::string_view, std::string*>{"certificate", &tls.certificate},
        std::pair<std::string_view, std::string*>{"private_key", &tls.private_key}}) {
    const std::optional<Value> file = m->required(key);
    if (file && read_string(file, *out)) {
      check_readable(file->path, file->line, *out);
    }
  }
}

void Loader::read_upstream(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kUpstreamKeys);
  if (!m) {
    return;
  }
  Upstream& up = config_.upstream;
  const std::optional<Value> address = m->required("address");
  const bool address_ok = address && read_endpoint(address, up.address);
  const std::optional<Value> tls = m->get("tls");
  const bool tls_ok = read_choice(tls, kTlsModes, up.tls);
  const std::optional<Value> ca_file = m->get("ca_file");
  const bool ca_ok = read_string(ca_file, up.ca_file);
  const std::optional<Value> verify = m->get("verify_certificate");
  const bool verify_ok = read_bool(verify, up.verify_certificate);
  const std::optional<Value> server_name = m->get("server_name");
  if (read_string(server_name, up.server_name) && !server_name && address_ok) {
    up.server_name = up.address.host;
  }
  read_string(m->get("mailbox"), up.mailbox);
  for (const auto& [key, out] :
       {std::pair<std::string_view, Duration*>{"connect_timeout", &up.connect_timeout},
        std::pair<std::string_view, Duration*>{"command_timeout", &up.command_timeout}}) {
    const std::optional<Value> timeout = m->get(key);
    if (read_duration(timeout, *out) && timeout && out->count() == 0) {
      error(timeout->path, timeout->line, "must be greater than 0");
    }
  }
  read_bool(m->get("mark_seen"), up.mark_seen);
  read_uidl_format(m->get("uidl_format"), up.uidl_format);
  read_bool(m->get("reuse_xuidl"), up.reuse_xuidl);
  read_bool(m->get("expunge_without_uidplus"), up.expunge_without_uidplus);
  read_bool(m->get("send_id"), up.send_id);
  for (const auto& [key, out] :
       {std::pair<std::string_view, Duration*>{"keepalive_idle", &up.keepalive_idle},
        std::pair<std::string_view, Duration*>{"keepalive_interval", &up.keepalive_interval}}) {
    const std::optional<Value> value = m->get(key);
    if (read_duration(value, *out) && value && *out < std::chrono::seconds(1)) {
      error(value->path, value->line, "must be at least 1s (TCP counts keep-alive in seconds)");
    }
  }
  read_uint(m->get("keepalive_count"), 1, 100, up.keepalive_count);
  read_login(m->get("login"));
  read_on_delete(m->get("on_delete"));
  read_uidl_map(m->get("uidl_map"));

  if (tls_ok && up.tls != TlsMode::kNone) {
    if (verify_ok && up.verify_certificate && ca_ok) {
      // The default path has no line of its own; the upstream key stands in for it.
      check_readable(ca_file ? ca_file->path : join(v->path, "ca_file"),
                     ca_file ? ca_file->line : m->line(), up.ca_file);
    }
    if (verify_ok && !up.verify_certificate) {
      warn(verify->path, verify->line,
           "the upstream's certificate is not verified; anyone on the path can read passwords");
    }
  }
  // tls: none is never the default, so `tls` is present here.
  if (tls_ok && address_ok && up.tls == TlsMode::kNone && !is_loopback(up.address.host)) {
    warn(tls->path, tls->line, "passwords are sent to the upstream unencrypted");
  }
}

void Loader::read_auth(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kAuthKeys);
  if (!m) {
    return;
  }
  Auth& auth = config_.auth;
  read_bool(m->get("allow_plaintext"), auth.allow_plaintext);
  read_duration(m->get("failure_delay"), auth.failure_delay);
  read_duration(m->get("max_failure_delay"), auth.max_failure_delay);
  read_duration(m->get("failure_memory"), auth.failure_memory);
  read_uint(m->get("max_attempts"), 1, 100, auth.max_attempts);
  read_bool(m->get("exclusive_sessions"), auth.exclusive_sessions);
  const std::optional<Value> mode = m->get("mode");
  if (!read_choice(mode, kAuthModes, auth.mode)) {
    return;
  }
  const std::optional<Value> users = m->get("users_file");
  if (auth.mode == AuthMode::kUsersFile && !users) {
    error(mode->path, mode->line, "mode users_file needs auth.users_file");
  } else if (read_string(users, auth.users_file) && users) {
    check_readable(users->path, users->line, auth.users_file);
  }
  const std::optional<Value> http = m->get("http");
  if (auth.mode == AuthMode::kHttp && !http) {
    error(mode->path, mode->line, "mode http needs auth.http.url");
  }
  if (!http) {
    return;
  }
  std::optional<MapReader> h = open_map(http, kHttpAuthKeys);
  if (!h) {
    return;
  }
  const std::optional<Value> url = h->required("url");
  if (url && read_string(url, auth.http.url) && auth.http.url.rfind("http://", 0) != 0 &&
      auth.http.url.rfind("https://", 0) != 0) {
    error(url->path, url->line, "expected an http:// or https:// URL");
  }
  read_duration(h->get("timeout"), auth.http.timeout);
  const std::optional<Value> ca = h->get("ca_file");
  read_string(ca, auth.http.ca_file);
  read_bool(h->get("verify_certificate"), auth.http.verify_certificate);
  read_choice(h->get("route_tls"), kRouteTlsModes, auth.http.route_tls);
  if (auth.http.url.rfind("https://", 0) == 0 && auth.http.verify_certificate) {
    check_readable(ca ? ca->path : join(http->path, "ca_file"), ca ? ca->line : h->line(),
                   auth.http.ca_file);
  }
}

void Loader::read_secret(const MapReader& m, const Value& parent, std::string_view base,
                         SecretSource& out, bool required) {
  const std::string file_key = std::string(base) + "_file";
  const std::string env_key = std::string(base) + "_env";
  if (const std::optional<Value> inline_secret = m.get(base)) {
    error(inline_secret->path, inline_secret->line,
          "secrets are not written in the config: use " + file_key + " or " + env_key);
  }
  const std::optional<Value> file = m.get(file_key);
  const std::optional<Value> env = m.get(env_key);
  if (read_string(file, out.file) && file) {
    check_readable(file->path, file->line, out.file);
  }
  if (read_string(env, out.env) && env && std::getenv(out.env.c_str()) == nullptr) {
    error(env->path, env->line, "environment variable " + quoted(out.env) + " is not set");
  }
  if (file && env) {
    error(env->path, env->line, "give " + file_key + " or " + env_key + ", not both");
  }
  if (required && !file && !env) {
    error(parent.path, parent.line, "needs " + file_key + " or " + env_key);
  }
}

void Loader::read_login(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLoginKeys);
  if (!m) {
    return;
  }
  UpstreamLogin& login = config_.upstream.login;
  const std::optional<Value> mode = m->get("mode");
  if (!read_choice(mode, kLoginModes, login.mode)) {
    return;
  }
  login_mode_line_ = mode ? mode->line : v->line;
  const bool master = login.mode == UpstreamLoginMode::kMaster;
  read_string(master ? m->required("master_user") : m->get("master_user"), login.master_user);
  read_secret(*m, *v, "master_password", login.master_password, master);
  const std::optional<Value> credentials = login.mode == UpstreamLoginMode::kMapped
                                               ? m->required("credentials_file")
                                               : m->get("credentials_file");
  if (read_string(credentials, login.credentials_file) && credentials) {
    check_readable(credentials->path, credentials->line, login.credentials_file);
  }
  const std::optional<Value> oauth2 =
      login.mode == UpstreamLoginMode::kOAuth2 ? m->required("oauth2") : m->get("oauth2");
  if (!oauth2) {
    return;
  }
  std::optional<MapReader> o = open_map(oauth2, kOAuth2Keys);
  if (!o) {
    return;
  }
  OAuth2& settings = login.oauth2;
  const std::optional<Value> url = o->required("token_url");
  if (url && read_string(url, settings.token_url) && settings.token_url.rfind("https://", 0) != 0 &&
      settings.token_url.rfind("http://", 0) != 0) {
    error(url->path, url->line, "expected an https:// URL");
  }
  read_choice(o->get("grant"), kGrants, settings.grant);
  read_string(o->required("client_id"), settings.client_id);
  read_secret(*o, *oauth2, "client_secret", settings.client_secret,
              settings.grant == OAuth2Grant::kClientCredentials);
  const std::optional<Value> tokens = settings.grant == OAuth2Grant::kRefreshToken
                                          ? o->required("refresh_tokens_file")
                                          : o->get("refresh_tokens_file");
  if (read_string(tokens, settings.refresh_tokens_file) && tokens) {
    check_readable(tokens->path, tokens->line, settings.refresh_tokens_file);
  }
  read_string(o->get("scope"), settings.scope);
  read_choice(o->get("mechanism"), kOAuth2Mechanisms, settings.mechanism);
  read_string(o->get("ca_file"), settings.ca_file);
  read_bool(o->get("verify_certificate"), settings.verify_certificate);
}

void Loader::read_limits(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLimitsKeys);
  if (!m) {
    return;
  }
  Limits& limits = config_.limits;
  const std::optional<Value> idle = m->get("idle_timeout");
  if (read_duration(idle, limits.idle_timeout) && idle) {
    if (limits.idle_timeout.count() == 0) {
      error(idle->path, idle->line, "must be greater than 0");
    } else if (limits.idle_timeout < kRfc1939MinIdle) {
      warn(idle->path, idle->line,
           "below the 10-minute minimum of RFC 1939's autologout timer; idle clients may be "
           "cut off");
    }
  }
  const std::optional<Value> drain = m->get("drain_timeout");
  if (read_duration(drain, limits.drain_timeout) && drain && limits.drain_timeout.count() == 0) {
    error(drain->path, drain->line, "must be greater than 0");
  }
  read_uint(m->get("max_connections"), 1, 1'000'000, limits.max_connections);
  const bool high_ok =
      read_size(m->get("client_write_high_watermark"), limits.client_write_high_watermark);
  const std::optional<Value> low = m->get("client_write_low_watermark");
  const bool low_ok = read_size(low, limits.client_write_low_watermark);
  if (high_ok && low_ok &&
      limits.client_write_low_watermark >= limits.client_write_high_watermark) {
    // Blame the key the user wrote; when both are defaults this cannot happen.
    const std::optional<Value> high = m->get("client_write_high_watermark");
    const Value& blamed = low ? *low : *high;
    error(blamed.path, blamed.line,
          "client_write_low_watermark (" + std::to_string(limits.client_write_low_watermark) +
              " bytes) must be less than client_write_high_watermark (" +
              std::to_string(limits.client_write_high_watermark) + " bytes)");
  }
}

void Loader::read_workers(const std::optional<Value>& v) {
  // "auto" (one event loop per core) or how many.
  if (!v) {
    return;
  }
  if (v->node.IsScalar() && v->node.Scalar() == "auto") {
    config_.workers = 0;
    return;
  }
  std::uint32_t count = 0;
  if (v->node.IsScalar() && !v->node.Scalar().empty() &&
      v->node.Scalar().find_first_not_of("0123456789") == std::string::npos) {
    if (read_uint(v, 1, 256, count)) {
      config_.workers = count;
    }
    return;
  }
  error(v->path, v->line, "expected auto or a number of worker loops from 1 to 256");
}

void Loader::read_logging(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kLoggingKeys);
  if (!m) {
    return;
  }
  std::string_view level = config_.logging.level;
  if (read_choice(m->get("level"), kLogLevels, level)) {
    config_.logging.level = std::string(level);
  }
  read_choice(m->get("format"), kLogFormats, config_.logging.format);
  const std::optional<Value> user = m->get("user");
  read_choice(user, kUserLogging, config_.logging.user);
  read_secret(*m, user ? *user : *v, "user_hash_key", config_.logging.user_hash_key,
              config_.logging.user == UserLogging::kHash);
}

void Loader::read_uidl_map(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kUidlMapKeys);
  if (!m) {
    return;
  }
  if (const std::optional<Value> store = m->get("store")) {
    std::string name;
    if (read_string(store, name) && name != "directory") {
      error(store->path, store->line,
            name == "metadata" ? "metadata (IMAP METADATA) is not available yet: use directory"
                               : "expected directory, got " + quoted(name));
    }
  }
  const std::optional<Value> directory = m->required("directory");
  std::string& out = config_.upstream.uidl_map.directory;
  if (!read_string(directory, out) || !directory) {
    return;
  }
  struct stat st {};
  std::string why;
  if (out.empty()) {
    why = "empty";
  } else if (::stat(out.c_str(), &st) != 0) {
    why = std::generic_category().message(errno);
  } else if (!S_ISDIR(st.st_mode)) {
    why = std::generic_category().message(ENOTDIR);
  } else if (::access(out.c_str(), R_OK | X_OK) != 0) {
    why = std::generic_category().message(errno);
  }
  if (!why.empty()) {
    error(directory->path, directory->line,
          "must be a readable directory: " + quoted(out) + " (" + why + ")");
  }
}

void Loader::read_on_delete(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kOnDeleteKeys);
  if (!m) {
    return;
  }
  OnDelete& on_delete = config_.upstream.on_delete;
  read_choice(m->get("action"), kDeleteActions, on_delete.action);
  const std::optional<Value> folder = m->get("folder");
  if (read_string(folder, on_delete.folder) && folder) {
    const bool printable = std::all_of(on_delete.folder.begin(), on_delete.folder.end(),
                                       [](char c) { return c >= 0x20 && c < 0x7f; });
    if (on_delete.folder.empty() || !printable) {
      error(folder->path, folder->line,
            "must be a non-empty mailbox name of printable ASCII (IMAP's modified UTF-7 "
            "form for other characters, e.g. \"Gel&APY-scht\")");
    } else if (lower(on_delete.folder) == lower(config_.upstream.mailbox)) {
      error(folder->path, folder->line, "must differ from upstream.mailbox");
    }
  }
  const std::optional<Value> keyword = m->get("keyword");
  if (read_string(keyword, on_delete.keyword) && keyword) {
    // An IMAP flag-keyword is an atom: no space, control, or one of ( ) { % * " \ ].
    const bool atom = !on_delete.keyword.empty() && on_delete.keyword.size() <= 64 &&
                      std::all_of(on_delete.keyword.begin(), on_delete.keyword.end(), [](char c) {
                        return c > 0x20 && c < 0x7f &&
                               std::string_view("(){%*\"\\]").find(c) == std::string_view::npos;
                      });
    if (lower(on_delete.keyword) == "$popbridgepending") {
      error(keyword->path, keyword->line, "is popbridge's own mark for deletions in progress");
    } else if (!atom) {
      error(keyword->path, keyword->line,
            "must be an IMAP keyword: 1-64 printable characters without spaces or ( ) { % * "
            "\" \\ ] (system flags such as \\Deleted are not keywords)");
    }
  }
}

void Loader::read_pop3(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kPop3Keys);
  if (!m) {
    return;
  }
  const std::optional<Value> delay = m->get("login_delay");
  if (read_duration(delay, config_.pop3.login_delay) && delay &&
      config_.pop3.login_delay.count() % 1000 != 0) {
    error(delay->path, delay->line, "must be whole seconds (CAPA announces it in seconds)");
  }
  read_workarounds(m->get("workarounds"));
}

void Loader::read_workarounds(const std::optional<Value>& v) {
  if (!v || v->node.IsNull()) {
    return;
  }
  if (!v->node.IsSequence()) {
    error(v->path, v->line, "expected a sequence of workaround names, got " + describe(v->node));
    return;
  }
  std::size_t index = 0;
  for (const YAML::Node& node : v->node) {
    const Value item{node, v->path + "[" + std::to_string(index++) + "]",
                     node.IsNull() ? v->line : line_of(node),
                     node.IsNull() ? v->line : line_of(node)};
    std::string name;
    if (!read_string(item, name)) {
      continue;
    }
    if (name == "outlook-no-nuls") {
      config_.pop3.workarounds.outlook_no_nuls = true;
    } else if (name == "oe-ns-eoh") {
      config_.pop3.workarounds.oe_ns_eoh = true;
    } else {
      error(item.path, item.line,
            "unknown workaround \"" + name + "\"; known: outlook-no-nuls, oe-ns-eoh");
    }
  }
}

void Loader::read_metrics(const std::optional<Value>& v) {
  if (!v) {
    return;
  }
  std::optional<MapReader> m = open_map(v, kMetricsKeys);
  if (!m) {
    return;
  }
  const std::optional<Value> address = m->required("address");
  Endpoint endpoint;
  if (address && read_endpoint(address, endpoint)) {
    const auto it = addresses_.find(lower(endpoint.to_string()));
    if (it != addresses_.end()) {
      error(address->path, address->line,
            "address " + quoted(endpoint.to_string()) + " is already used by " + it->second);
    }
    config_.metrics.address = std::move(endpoint);
  }
  const std::optional<Value> interval = m->get("probe_interval");
  if (read_duration(interval, config_.metrics.probe_interval) && interval &&
      config_.metrics.probe_interval < std::chrono::seconds(1)) {
    error(interval->path, interval->line, "must be at least 1s");
  }
  read_uint(m->get("probe_failures"), 1, 100, config_.metrics.probe_failures);
}

// Where the first node of a document sits; the rest of the events are of no interest.
class FirstNodeMark : public YAML::EventHandler {
 public:
  std::optional<YAML::Mark> mark;

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& m, YAML::anchor_t) override { note(m); }
  void OnAlias(const YAML::Mark& m, YAML::anchor_t) override { note(m); }
  void OnScalar(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                const std::string&) override {
    note(m);
  }
  void OnSequenceStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    note(m);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& m, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    note(m);
  }
  void OnMapEnd() override {}

 private:
  void note(const YAML::Mark& m) {
    if (!mark) {
      mark = m;
    }
  }
};

// The position of a second document in `text`, or nullopt when there is only one. Stops
// after the second document, so yaml-cpp's endless stream of phantom documents cannot hang it.
std::optional<YAML::Mark> second_document(const std::string& text) {
  std::istringstream stream(text);
  YAML::Parser parser(stream);
  FirstNodeMark first;
  if (!parser.HandleNextDocument(first)) {
    return std::nullopt;
  }
  FirstNodeMark second;
  if (!parser.HandleNextDocument(second)) {
    return std::nullopt;
  }
  return second.mark.value_or(YAML::Mark::null_mark());
}

}  // namespace

std::string Diagnostic::to_string(std::string_view source) const {
  std::string out(source);
  if (line > 0) {
    out += ":" + std::to_string(line);
  }
  if (!out.empty()) {
    out += ": ";
  }
  if (!key_path.empty()) {
    out += key_path + ": ";
  }
  return out + message;
}

LoadResult load_config_string(std::string_view yaml) {
  // yaml-cpp reports problems by throwing; nothing of that may reach the caller.
  try {
    const std::string text(yaml);
    // YAML::LoadAll would be the obvious call, but in yaml-cpp 0.7 it loops forever, allocating,
    // on a stray ',' (jbeder/yaml-cpp#1040, fixed upstream after 0.7). Load reads one document;
    // a second, bounded pass only asks whether anything follows it.
    const YAML::Node root = YAML::Load(text);
    if (const std::optional<YAML::Mark> more = second_document(text)) {
      LoadResult result;
      result.errors.push_back(Diagnostic{"", more->is_null() ? 0 : more->line + 1,
                                         "expected a single YAML document, but more follows"});
      return result;
    }
    return Loader().run(root);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp gives this one the message "bad file", which helps nobody.
    LoadResult result;
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    result.errors.push_back(Diagnostic{"", line, "invalid YAML: nested too deeply"});
    return result;
  } catch (const YAML::Exception& e) {
    LoadResult result;
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    result.errors.push_back(Diagnostic{"", line, "invalid YAML: " + e.msg});
    return result;
  } catch (const std::exception& e) {
    LoadResult result;
    result.errors.push_back(Diagnostic{"", 0, std::string("cannot load: ") + e.what()});
    return result;
  }
}

LoadResult load_config_file(const std::string& path) {
  const auto fail = [&](const std::string& reason) {
    LoadResult result;
    result.errors.push_back(
        Diagnostic{"", 0, "file " + quoted(path) + " is not readable: " + reason});
    return result;
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    return fail(std::generic_category().message(errno));
  }
  std::string text;
  std::string reason;
  char buffer[16 * 1024];
  while (reason.empty()) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      reason = std::generic_category().message(errno);
    } else if (n == 0) {
      break;
    } else if (text.size() + static_cast<std::size_t>(n) > kMaxFileBytes) {
      reason = "larger than 1 MiB, which no config file needs";
    } else {
      text.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  if (!reason.empty()) {
    return fail(reason);
  }
  return load_config_string(text);
}

std::vector<std::string> known_keys() {
  // The maps the readers open, by where they sit; the same arrays the readers check
  // against, so a key added to a reader shows up here (and in the example test) at once.
  std::vector<std::string> keys;
  add_keys(keys, "", kTopKeys);
  add_keys(keys, "listeners[].", kListenerKeys);
  add_keys(keys, "tls.", kTlsKeys);
  add_keys(keys, "upstream.", kUpstreamKeys);
  add_keys(keys, "upstream.login.", kLoginKeys);
  add_keys(keys, "upstream.login.oauth2.", kOAuth2Keys);
  add_keys(keys, "upstream.on_delete.", kOnDeleteKeys);
  add_keys(keys, "upstream.uidl_map.", kUidlMapKeys);
  add_keys(keys, "pop3.", kPop3Keys);
  add_keys(keys, "auth.", kAuthKeys);
  add_keys(keys, "auth.http.", kHttpAuthKeys);
  add_keys(keys, "limits.", kLimitsKeys);
  add_keys(keys, "logging.", kLoggingKeys);
  add_keys(keys, "metrics.", kMetricsKeys);
  return keys;
}

}  // namespace popbridge::config
