// SPDX-License-Identifier: Apache-2.0
#pragma once

// The lexical pieces of IMAP responses shared by the parser's files (internal to
// protocol/imap): character classes, numbers, quoted strings, literal markers.

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>

#include "protocol/common/ascii.h"
#include "protocol/imap/imap_parser.h"

namespace popbridge::protocol::imap_lexer {

constexpr std::uint64_t kMaxNumber32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kMaxNumber64 = std::numeric_limits<std::uint64_t>::max();

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

constexpr bool is_ctl_or_8bit(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u >= 0x7f;
}

// A character class as a 256-entry table, so the per-octet scans of a large FETCH listing
// make one load per octet rather than a chain of comparisons.
class CharClass {
 public:
  template <typename Predicate>
  explicit constexpr CharClass(Predicate predicate) {
    for (int c = 0; c < 256; ++c) {
      members_[static_cast<std::size_t>(c)] = predicate(static_cast<char>(c));
    }
  }
  constexpr bool contains(char c) const { return members_[static_cast<unsigned char>(c)]; }

 private:
  std::array<bool, 256> members_{};
};

// A tag is an astring-char run without "+" (RFC 3501 §9).
inline constexpr CharClass kTagChars([](char c) {
  return !is_ctl_or_8bit(c) && std::string_view(" (){%*\"\\+").find(c) == std::string_view::npos;
});
inline bool is_tag_char(char c) { return kTagChars.contains(c); }

// FETCH item names: "UID", "RFC822.SIZE", "BODY" (the section follows in brackets).
inline constexpr CharClass kItemNameChars([](char c) {
  return !is_ctl_or_8bit(c) && std::string_view(" ()[]{\"\\<").find(c) == std::string_view::npos;
});
inline bool is_item_name_char(char c) { return kItemNameChars.contains(c); }

// Atoms inside values we skip (flags like \Seen, NIL, numbers, X-GM-MSGID values). 8-bit
// octets are let through: some servers send raw UTF-8 there and we discard it anyway.
inline constexpr CharClass kSkipAtomChars([](char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u != 0x7f && std::string_view(" ()\"{").find(c) == std::string_view::npos;
});
inline bool is_skip_atom_char(char c) { return kSkipAtomChars.contains(c); }

// Decimal digits at text[pos...], at most max. Advances pos past them.
inline bool parse_number(std::string_view text, std::size_t& pos, std::uint64_t max,
                         std::uint64_t& value) {
  const std::size_t start = pos;
  const std::uint64_t max_tens = max / 10;
  const std::uint64_t max_last_digit = max % 10;
  value = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    const auto digit = static_cast<std::uint64_t>(text[pos] - '0');
    if (value > max_tens || (value == max_tens && digit > max_last_digit)) {
      return false;
    }
    value = value * 10 + digit;
    ++pos;
  }
  return pos > start;
}

inline bool at_delimiter(std::string_view text, std::size_t pos) {
  return pos == text.size() || text[pos] == ' ' || text[pos] == ')';
}

// Index of the closing quote of the quoted string opening at text[open], or npos.
inline std::size_t find_quote_end(std::string_view text, std::size_t open) {
  for (std::size_t i = open + 1; i < text.size(); ++i) {
    if (text[i] == '\\') {
      ++i;  // the escaped octet, whatever it is
    } else if (text[i] == '"') {
      return i;
    }
  }
  return std::string_view::npos;
}

struct LiteralMarker {
  enum class Kind { kNone, kValid, kBad } kind = Kind::kNone;
  std::size_t start = 0;  // offset of "{" (or of "~" for a literal8)
  std::uint64_t size = 0;
};

// A segment that ends with "{n}" (or "~{n}", or "{n+}") announces a literal.
inline LiteralMarker find_literal_marker(std::string_view text) {
  LiteralMarker marker;
  if (text.empty() || text.back() != '}') {
    return marker;
  }
  const std::size_t open = text.rfind('{');
  if (open == std::string_view::npos) {
    return marker;
  }
  std::string_view inner = text.substr(open + 1, text.size() - open - 2);
  // Braces around anything but digits are text (a greeting may say "{user}"); digits in
  // a broken shape ("{}", "{+5}", too many) are a literal we cannot read.
  for (char c : inner) {
    if (!is_digit(c) && c != '+') {
      return marker;
    }
  }
  marker.kind = LiteralMarker::Kind::kBad;
  if (!inner.empty() && inner.back() == '+') {
    inner.remove_suffix(1);
  }
  std::size_t pos = 0;
  if (!parse_number(inner, pos, kMaxNumber64, marker.size) || pos != inner.size()) {
    return marker;
  }
  marker.kind = LiteralMarker::Kind::kValid;
  marker.start = (open > 0 && text[open - 1] == '~') ? open - 1 : open;
  return marker;
}

inline std::optional<ImapStatusKind> status_kind(std::string_view word) {
  if (equals_ignoring_ascii_case(word, "OK")) {
    return ImapStatusKind::kOk;
  }
  if (equals_ignoring_ascii_case(word, "NO")) {
    return ImapStatusKind::kNo;
  }
  if (equals_ignoring_ascii_case(word, "BAD")) {
    return ImapStatusKind::kBad;
  }
  if (equals_ignoring_ascii_case(word, "BYE")) {
    return ImapStatusKind::kBye;
  }
  if (equals_ignoring_ascii_case(word, "PREAUTH")) {
    return ImapStatusKind::kPreauth;
  }
  return std::nullopt;
}

inline std::string_view first_word(std::string_view text) { return text.substr(0, text.find(' ')); }

}  // namespace popbridge::protocol::imap_lexer
