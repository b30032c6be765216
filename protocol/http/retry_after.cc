// SPDX-License-Identifier: Apache-2.0
#include "protocol/http/retry_after.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstdint>

namespace popbridge::protocol {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  return text;
}

// strptime needs a terminated string; a date is short, so a fixed buffer does.
std::optional<std::int64_t> parse_http_date(std::string_view text) {
  std::array<char, 64> buffer{};
  if (text.size() >= buffer.size()) {
    return std::nullopt;
  }
  text.copy(buffer.data(), text.size());
  // The process never calls setlocale, so day and month names are the C locale's English.
  static constexpr const char* kForms[] = {
      "%a, %d %b %Y %H:%M:%S GMT",  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
      "%A, %d-%b-%y %H:%M:%S GMT",  // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT
      "%a %b %e %H:%M:%S %Y",       // asctime:     Sun Nov  6 08:49:37 1994
  };
  for (const char* form : kForms) {
    struct tm fields {};
    const char* end = strptime(buffer.data(), form, &fields);
    if (end != nullptr && *end == '\0') {
      return static_cast<std::int64_t>(timegm(&fields));
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      std::chrono::system_clock::time_point now,
                                                      std::chrono::seconds max_wait) {
  value = trim(value);
  if (value.empty()) {
    return std::nullopt;
  }
  if (is_digit(value.front())) {
    std::int64_t seconds = 0;
    for (const char c : value) {
      if (!is_digit(c)) {
        return std::nullopt;
      }
      if (seconds <= max_wait.count()) {  // past the cap the exact value does not matter
        seconds = seconds * 10 + (c - '0');
      }
    }
    return std::chrono::seconds(std::min<std::int64_t>(seconds, max_wait.count()));
  }
  const std::optional<std::int64_t> date = parse_http_date(value);
  if (!date) {
    return std::nullopt;
  }
  const std::int64_t wait =
      *date - std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  return std::chrono::seconds(std::clamp<std::int64_t>(wait, 0, max_wait.count()));
}

}  // namespace popbridge::protocol
