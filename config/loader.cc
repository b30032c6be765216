// SPDX-License-Identifier: Apache-2.0
// The generic half of the configuration reader: messages, MapReader and the typed field
// readers. The sections are read in sections.cc.
#include "config/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <system_error>

namespace popbridge::config::detail {

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

}  // namespace popbridge::config::detail
