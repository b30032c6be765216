// SPDX-License-Identifier: Apache-2.0
// Parsers for the scalar value kinds of the config file: durations, sizes, endpoints.

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "config/config.h"

namespace popbridge::config {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_alnum(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Reads the decimal digits at the front of `text` into `value`, failing when there are none
// or when the number exceeds `max`. Consumes the digits read.
bool take_number(std::string_view& text, std::uint64_t max, std::uint64_t& value) {
  std::size_t i = 0;
  value = 0;
  while (i < text.size() && is_digit(text[i])) {
    const std::uint64_t digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (max - digit) / 10) {
      return false;
    }
    value = value * 10 + digit;
    ++i;
  }
  text.remove_prefix(i);
  return i > 0;
}

// The runtime converts durations to nanoseconds (steady_clock arithmetic), so the ceiling is
// what nanoseconds can hold, about 292 years, not what milliseconds can hold.
constexpr std::uint64_t kMaxDurationMs =
    static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / 1'000'000;

struct DurationUnit {
  std::string_view suffix;
  std::uint64_t ms;
};
// Largest first: a combined duration must list its units in this order, each at most once.
// "ms" precedes "m" only in matching, see unit_at().
constexpr std::array<DurationUnit, 4> kDurationUnits{{
    {"h", 3'600'000},
    {"m", 60'000},
    {"s", 1'000},
    {"ms", 1},
}};

// Index into kDurationUnits of the unit at the front of text, or -1.
int unit_at(std::string_view text) {
  if (text.starts_with("ms")) {
    return 3;
  }
  for (int i = 0; i < 3; ++i) {
    if (text.starts_with(kDurationUnits[i].suffix)) {
      return i;
    }
  }
  return -1;
}

bool valid_ipv4(const std::string& text) {
  in_addr addr{};
  return inet_pton(AF_INET, text.c_str(), &addr) == 1;
}

// An IPv6 literal, optionally with a zone ("fe80::1%eth0") for link-local listeners.
bool valid_ipv6(std::string_view text) {
  const std::size_t percent = text.find('%');
  if (percent != std::string_view::npos) {
    const std::string_view zone = text.substr(percent + 1);
    if (zone.empty()) {
      return false;
    }
    for (char c : zone) {
      if (!is_alnum(c) && c != '-' && c != '_' && c != '.') {
        return false;
      }
    }
    text = text.substr(0, percent);
  }
  in6_addr addr{};
  return inet_pton(AF_INET6, std::string(text).c_str(), &addr) == 1;
}

// A DNS name as resolvers accept it, or a dotted-quad IPv4 address. Underscores are allowed
// because internal names carry them in practice; anything else (spaces, control bytes,
// "*") would only fail later, at bind or resolve time, with a worse message.
bool valid_host_name(std::string_view host, std::string& error) {
  if (host.size() > 253) {
    error = "host name is longer than 253 characters";
    return false;
  }
  bool only_digits_and_dots = true;
  std::size_t label = 0;
  for (std::size_t i = 0; i < host.size(); ++i) {
    const char c = host[i];
    if (c == '.') {
      // A single trailing dot (fully qualified) is fine; empty labels elsewhere are not.
      if (label == 0) {
        error = "host name has an empty label";
        return false;
      }
      label = 0;
      continue;
    }
    if (!is_alnum(c) && c != '-' && c != '_') {
      error = "host name may contain only letters, digits, '-', '_' and '.'";
      return false;
    }
    only_digits_and_dots = only_digits_and_dots && is_digit(c);
    if (++label > 63) {
      error = "host name has a label longer than 63 characters";
      return false;
    }
  }
  if (only_digits_and_dots && !valid_ipv4(std::string(host))) {
    error = "invalid IPv4 address";
    return false;
  }
  return true;
}

}  // namespace

std::string Endpoint::to_string() const {
  std::string out;
  if (host.find(':') != std::string::npos) {
    out = "[" + host + "]";
  } else {
    out = host;
  }
  return out + ":" + std::to_string(port);
}

std::optional<Duration> parse_duration(std::string_view text) {
  if (text.empty()) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  if (!take_number(text, kMaxDurationMs, value)) {
    return std::nullopt;
  }
  if (text.empty()) {  // a bare number counts seconds
    if (value > kMaxDurationMs / 1000) {
      return std::nullopt;
    }
    return Duration(static_cast<std::int64_t>(value * 1000));
  }
  std::uint64_t total = 0;
  int next_unit = 0;  // units must come largest first, each once
  while (true) {
    const int unit = unit_at(text);
    if (unit < next_unit) {
      return std::nullopt;
    }
    const std::uint64_t ms = kDurationUnits[unit].ms;
    if (value > (kMaxDurationMs - total) / ms) {
      return std::nullopt;
    }
    total += value * ms;
    text.remove_prefix(kDurationUnits[unit].suffix.size());
    next_unit = unit + 1;
    if (text.empty()) {
      break;
    }
    if (!take_number(text, kMaxDurationMs, value) || text.empty()) {
      return std::nullopt;
    }
  }
  return Duration(static_cast<std::int64_t>(total));
}

std::optional<std::size_t> parse_size(std::string_view text) {
  struct SizeUnit {
    std::string_view suffix;
    std::uint64_t bytes;
  };
  static constexpr std::array<SizeUnit, 4> kUnits{{
      {"B", 1},
      {"KiB", 1024},
      {"MiB", 1024 * 1024},
      {"GiB", 1024 * 1024 * 1024},
  }};
  const std::uint64_t max = std::numeric_limits<std::size_t>::max();
  std::uint64_t value = 0;
  if (!take_number(text, max, value)) {
    return std::nullopt;
  }
  std::uint64_t multiplier = 1;
  if (!text.empty()) {
    bool known = false;
    for (const SizeUnit& unit : kUnits) {
      if (text == unit.suffix) {
        multiplier = unit.bytes;
        known = true;
      }
    }
    if (!known || value > max / multiplier) {
      return std::nullopt;
    }
  }
  return static_cast<std::size_t>(value * multiplier);
}

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  std::string ignored;
  return parse_endpoint(text, ignored);
}

std::optional<Endpoint> parse_endpoint(std::string_view text, std::string& error) {
  std::string_view host;
  std::string_view rest;  // ":port" or less, when malformed
  if (text.starts_with('[')) {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      error = "missing ']' after the IPv6 address";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    rest = text.substr(close + 1);
    if (host.empty()) {
      error = "host is empty";
      return std::nullopt;
    }
    if (!valid_ipv6(host)) {
      error = "invalid IPv6 address in brackets";
      return std::nullopt;
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = "missing port (expected host:port)";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    rest = text.substr(colon);
    if (host.find(':') != std::string_view::npos) {
      error = "an IPv6 address needs brackets, like [::1]:995";
      return std::nullopt;
    }
    if (host.empty()) {
      error = "host is empty";
      return std::nullopt;
    }
    if (!valid_host_name(host, error)) {
      return std::nullopt;
    }
  }
  if (!rest.starts_with(':') || rest.size() == 1) {
    error = "missing port (expected host:port)";
    return std::nullopt;
  }
  rest.remove_prefix(1);
  if (rest.find_first_not_of("0123456789") != std::string_view::npos) {
    error = "port must be a number";
    return std::nullopt;
  }
  std::uint64_t port = 0;
  if (!take_number(rest, 65535, port) || port == 0) {
    error = "port must be 1-65535";
    return std::nullopt;
  }
  return Endpoint{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace popbridge::config
