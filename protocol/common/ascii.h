// SPDX-License-Identifier: Apache-2.0
// ASCII case mapping for protocol text: commands, capabilities, keywords, header names,
// host names. They are ASCII by definition, and unlike std::tolower this never depends on
// the process's locale.
#pragma once

#include <string>
#include <string_view>

namespace popbridge::protocol {

inline char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

inline char ascii_upper(char c) {
  return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

inline bool is_ascii_letter(char c) {
  const char lower = static_cast<char>(c | 0x20);
  return lower >= 'a' && lower <= 'z';
}

// Peers mostly send names in the case we compare with, so equal octets are the fast path
// (the snapshot FETCH parser compares several names per message).
inline bool equals_ignoring_ascii_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i] && ((a[i] ^ b[i]) != 0x20 || !is_ascii_letter(a[i]))) {
      return false;
    }
  }
  return true;
}

inline std::string ascii_lowercase(std::string_view text) {
  std::string lowered(text);
  for (char& c : lowered) {
    c = ascii_lower(c);
  }
  return lowered;
}

inline std::string ascii_uppercase(std::string_view text) {
  std::string raised(text);
  for (char& c : raised) {
    c = ascii_upper(c);
  }
  return raised;
}

}  // namespace popbridge::protocol
