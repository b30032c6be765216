// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/uidl_template.h"

#include <algorithm>
#include <charconv>

#include "protocol/common/ascii.h"

namespace popbridge::protocol {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads digits into value; false on an absurd width (nothing real is that wide).
bool read_number(std::string_view text, std::size_t& pos, int& value) {
  while (pos < text.size() && is_digit(text[pos])) {
    value = value * 10 + (text[pos] - '0');
    if (value > 1000) {
      return false;
    }
    ++pos;
  }
  return true;
}

std::string to_hex(std::string_view decimal) {
  // Dovecot parses the value as an unsigned decimal and prints it with %llx; anything
  // that is not such a number becomes 0.
  unsigned long long value = 0;
  auto [end, error] = std::from_chars(decimal.data(), decimal.data() + decimal.size(), value);
  if (error != std::errc() || end != decimal.data() + decimal.size()) {
    value = 0;
  }
  char buffer[24];
  auto [out, ignored] = std::to_chars(buffer, buffer + sizeof(buffer), value, 16);
  (void)ignored;
  return std::string(buffer, out);
}

}  // namespace

std::optional<UidlTemplate::Modifier> UidlTemplate::modifier_of(char letter) {
  switch (letter) {
    case 'X':
      return Modifier::kHex;
    case 'L':
      return Modifier::kLower;
    case 'U':
      return Modifier::kUpper;
    case 'R':
      return Modifier::kReverse;
    case 'T':
      return Modifier::kTrim;
    case 'M':
      return Modifier::kMd5;
    default:
      return std::nullopt;
  }
}

// Dovecot 2.4's "%{uid | hex(8)}": name is "uid | hex(8)" on entry and just "uid" on
// return. Filters: hex, hex(N) (zero-padded, then the last N digits), lower, upper, md5.
bool UidlTemplate::parse_filters(std::string_view& name, Piece& piece, std::string& why) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  std::string_view rest = name;
  const std::size_t bar = rest.find('|');
  name = trim(rest.substr(0, bar));
  rest.remove_prefix(bar + 1);
  while (true) {
    const std::size_t next = rest.find('|');
    std::string_view filter = trim(rest.substr(0, next));
    if (filter == "lower") {
      piece.modifiers.push_back(Modifier::kLower);
    } else if (filter == "upper") {
      piece.modifiers.push_back(Modifier::kUpper);
    } else if (filter == "md5") {
      piece.modifiers.push_back(Modifier::kMd5);
    } else if (filter == "hex") {
      piece.modifiers.push_back(Modifier::kHex);
    } else if (filter.size() > 5 && filter.substr(0, 4) == "hex(" && filter.back() == ')') {
      piece.modifiers.push_back(Modifier::kHex);
      std::string_view digits = filter.substr(4, filter.size() - 5);
      int width = 0;
      std::size_t at = 0;
      if (digits.empty() || !read_number(digits, at, width) || at != digits.size() || width == 0) {
        why = "bad width in '" + std::string(filter) + "'";
        return false;
      }
      piece.width = width;
      piece.zero_padding = true;
      piece.keep_last = true;
    } else {
      why = "unsupported filter '" + std::string(filter) +
            "' (supported: hex, hex(N), lower, "
            "upper, md5)";
      return false;
    }
    if (next == std::string_view::npos) {
      return true;
    }
    rest.remove_prefix(next + 1);
  }
}

std::optional<UidlTemplate> UidlTemplate::parse(std::string_view text, std::string* error) {
  auto failed = [&](std::string why) -> std::optional<UidlTemplate> {
    if (error != nullptr) {
      *error = std::move(why);
    }
    return std::nullopt;
  };
  if (text.empty()) {
    return failed("empty template");
  }
  UidlTemplate result;
  result.text_ = std::string(text);
  Piece piece;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const char c = text[pos++];
    if (c != '%') {
      piece.literal.push_back(c);
      continue;
    }
    if (pos < text.size() && text[pos] == '%') {
      piece.literal.push_back('%');
      ++pos;
      continue;
    }
    // [-][0][width][.[0][-][width]], read as Dovecot 2.3 reads it: the number before "."
    // is the offset (its sign counts only there) and the one after it the width; a "0"
    // before "." counts only when no "." follows.
    int sign = 1;
    if (pos < text.size() && text[pos] == '-') {
      sign = -1;
      ++pos;
    }
    if (pos < text.size() && text[pos] == '0') {
      piece.zero_padding = true;
      ++pos;
    }
    int width = 0;
    if (!read_number(text, pos, width)) {
      return failed("width too large");
    }
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      piece.offset = sign * width;
      sign = 1;
      width = 0;
      piece.zero_padding = false;
      if (pos < text.size() && text[pos] == '0') {
        piece.zero_padding = true;
        ++pos;
      }
      if (pos < text.size() && text[pos] == '-') {
        sign = -1;
        ++pos;
      }
      if (!read_number(text, pos, width)) {
        return failed("width too large");
      }
      piece.width = sign * width;
    } else {
      piece.width = width;
    }
    // A modifier letter counts only when something follows it, as in Dovecot.
    while (pos + 1 < text.size()) {
      if (std::string_view("EHND").find(text[pos]) != std::string_view::npos) {
        return failed(std::string("modifier '") + text[pos] +
                      "' is not supported (supported: X, L, U, R, T, M)");
      }
      const std::optional<Modifier> modifier = modifier_of(text[pos]);
      if (!modifier) {
        break;
      }
      piece.modifiers.push_back(*modifier);
      ++pos;
    }
    if (pos >= text.size()) {
      return failed("'%' at the end without a variable");
    }
    std::string_view name;
    if (text[pos] == '{') {
      const std::size_t close = text.find('}', pos);
      if (close == std::string_view::npos) {
        return failed("unterminated '%{'");
      }
      name = text.substr(pos + 1, close - pos - 1);
      pos = close + 1;
      if (name.find('|') != std::string_view::npos) {
        if (!piece.modifiers.empty() || piece.width != 0 || piece.offset != 0) {
          return failed("Dovecot 2.4 filters cannot be combined with 2.3 modifiers");
        }
        std::string why;
        if (!parse_filters(name, piece, why)) {
          return failed(why);
        }
      }
    } else {
      name = text.substr(pos, 1);
      ++pos;
    }
    if (name == "u" || name == "uid") {
      piece.variable = Variable::kUid;
    } else if (name == "v" || name == "uidvalidity") {
      piece.variable = Variable::kUidValidity;
    } else if (name == "g" || name == "guid") {
      piece.variable = Variable::kGuid;
      result.needs_guid_ = true;
    } else if (name == "m" || name == "md5") {
      piece.variable = Variable::kMd5;
      result.needs_md5_ = true;
    } else if (name == "f" || name == "filename") {
      return failed("%f (the maildir file name) is not visible over IMAP; use %u, %v, %g or %m");
    } else {
      return failed("unknown variable '" + std::string(name) +
                    "' (known: u, v, g, m, {uid}, {uidvalidity}, {guid}, {md5})");
    }
    piece.has_variable = true;
    result.pieces_.push_back(std::move(piece));
    piece = Piece{};
  }
  if (!piece.literal.empty()) {
    result.pieces_.push_back(std::move(piece));
  }
  return result;
}

std::string UidlTemplate::render(const UidlFields& fields) const {
  std::string out;
  render_to(fields, out);
  return out;
}

void UidlTemplate::render_to(const UidlFields& fields, std::string& out) const {
  std::string value;
  char digits[24];
  for (const Piece& piece : pieces_) {
    out += piece.literal;
    if (!piece.has_variable) {
      continue;
    }
    auto modifiers = piece.modifiers.begin();
    const bool number =
        piece.variable == Variable::kUid || piece.variable == Variable::kUidValidity;
    std::string_view view;
    if (number) {
      // The usual templates (Dovecot's %08Xu%08Xv, %v.%u) print the numbers as they are or
      // in hex: straight from the number, as X would from its decimal form.
      const bool hex = modifiers != piece.modifiers.end() && *modifiers == Modifier::kHex;
      if (hex) {
        ++modifiers;
      }
      const std::uint32_t n = piece.variable == Variable::kUid ? fields.uid : fields.uidvalidity;
      const auto printed = std::to_chars(digits, digits + sizeof(digits), n, hex ? 16 : 10);
      view = std::string_view(digits, static_cast<std::size_t>(printed.ptr - digits));
    } else {
      view = piece.variable == Variable::kGuid ? fields.guid : fields.md5;
    }
    if (modifiers != piece.modifiers.end()) {
      value.assign(view);
    }
    for (; modifiers != piece.modifiers.end(); ++modifiers) {
      switch (*modifiers) {
        case Modifier::kHex:
          value = to_hex(value);
          break;
        case Modifier::kLower:
          value = ascii_lowercase(value);
          break;
        case Modifier::kUpper:
          value = ascii_uppercase(value);
          break;
        case Modifier::kReverse:
          std::reverse(value.begin(), value.end());
          break;
        case Modifier::kTrim:
          while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
            value.pop_back();
          }
          break;
        case Modifier::kMd5:
          value = md5_hex(value);
          break;
      }
      view = value;
    }
    if (piece.offset < 0) {
      const std::size_t from_end = static_cast<std::size_t>(-piece.offset);
      if (view.size() > from_end) {
        view.remove_prefix(view.size() - from_end);
      }
    } else {
      view.remove_prefix(std::min(view.size(), static_cast<std::size_t>(piece.offset)));
    }
    if (piece.width == 0) {
      out += view;
    } else if (!piece.zero_padding) {
      // Truncates; a negative width drops that many characters from the end.
      std::size_t keep = view.size();
      if (piece.width > 0) {
        keep = std::min(keep, static_cast<std::size_t>(piece.width));
      } else if (view.size() >= static_cast<std::size_t>(-piece.width)) {
        keep = view.size() - static_cast<std::size_t>(-piece.width);
      }
      out += view.substr(0, keep);
    } else {
      // Like printf's %05d: pads, never truncates (Dovecot 2.3 pads with at most 16 zeros).
      // Dovecot 2.4's hex(N) pads and keeps the last N digits.
      const auto width = static_cast<std::size_t>(std::max(piece.width, 0));
      if (view.size() < width) {
        out.append(
            piece.keep_last ? width - view.size() : std::min<std::size_t>(width - view.size(), 16),
            '0');
      } else if (piece.keep_last) {
        view.remove_prefix(view.size() - width);
      }
      out += view;
    }
  }
}

bool UidlTemplate::unique_per_uid() const {
  bool full_uid = false;
  for (const Piece& piece : pieces_) {
    if (!piece.has_variable) {
      continue;
    }
    if (piece.variable == Variable::kGuid || piece.variable == Variable::kMd5) {
      return false;
    }
    const bool lossless =
        piece.offset == 0 &&
        (piece.width == 0 || (piece.zero_padding && (!piece.keep_last || piece.width >= 8))) &&
        std::all_of(piece.modifiers.begin(), piece.modifiers.end(), [](Modifier m) {
          return m == Modifier::kHex || m == Modifier::kReverse || m == Modifier::kUpper ||
                 m == Modifier::kLower;
        });
    full_uid = full_uid || (piece.variable == Variable::kUid && lossless);
  }
  return full_uid;
}

bool valid_uidl(std::string_view uidl) {
  return !uidl.empty() && uidl.size() <= 70 &&
         std::all_of(uidl.begin(), uidl.end(), [](char c) { return c >= 0x21 && c <= 0x7e; });
}

std::string sanitize_uidl(std::string_view uidl) {
  return valid_uidl(uidl) ? std::string(uidl) : md5_hex(uidl);
}

}  // namespace popbridge::protocol
