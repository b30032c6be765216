// SPDX-License-Identifier: Apache-2.0
// The configuration reader's parts shared by its files (not installed, not for proxy/):
// where a YAML node sits, how a map is read against its keys, and the Loader whose typed
// readers (loader.cc) and section readers (sections.cc) fill a Config.
//
// Each section is read by a MapReader that knows the section's keys, so unknown and
// duplicate keys are found even where values are also wrong. Readers never stop at the first
// bad value: a bad value leaves the field at its default and only records a Diagnostic, and
// cross-field checks run only on fields that were read successfully, so one mistake does not
// cascade into several errors.
#pragma once

#include <yaml-cpp/yaml.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace popbridge::config::detail {

// RFC 1939 section 3: the autologout timer "MUST be of at least 10 minutes' duration".
constexpr Duration kRfc1939MinIdle = std::chrono::minutes(10);
// limits.read_ahead: each session may hold one message this large in memory.
constexpr std::size_t kMaxReadAhead = 16 * 1024 * 1024;

int line_of(const YAML::Node& node);
// Values and keys are echoed in messages that end up in terminals and logs; they are cut
// short and control bytes are escaped so a hostile or binary file cannot garble either.
std::string sanitize(std::string_view text);
std::string quoted(std::string_view text);
// "a map", "a sequence", "'value'": what was found where something else was expected.
std::string describe(const YAML::Node& node);
// " (did you mean 'tls'?)" for a key one or two edits from a known one, else "".
std::string did_you_mean(std::string_view key, std::span<const std::string_view> known);
std::string join(std::string_view path, std::string_view key);
// Why `path` cannot be read, or empty when it can.
std::string unreadable_reason(const std::string& path);
std::string lower(std::string text);
bool is_loopback(std::string_view host);

template <typename T>
struct Choice {
  std::string_view name;
  T value;
};

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
  // protocol: jmap: the session URL gives address and tls; IMAP-only keys are refused.
  bool read_jmap_url(const MapReader& m, Upstream& up);
  void refuse_imap_only_keys(const MapReader& m, const Upstream& up);
  void read_auth(const std::optional<Value>& v);
  void read_limits(const std::optional<Value>& v);
  void read_logging(const std::optional<Value>& v);
  void read_metrics(const std::optional<Value>& v);
  void read_login(const std::optional<Value>& v);
  void read_on_delete(const std::optional<Value>& v);
  void read_uidl_map(const std::optional<Value>& v);
  void read_login_reuse(const std::optional<Value>& v);
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

}  // namespace popbridge::config::detail
