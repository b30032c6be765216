// SPDX-License-Identifier: Apache-2.0
// FETCH responses: items, FLAGS, sizes, GUIDs and BODY[...] values (streamed), and the
// items the parser does not model, skipped.
#include <algorithm>
#include <cstring>

#include "protocol/imap/imap_lexer.h"
#include "protocol/imap/imap_parser.h"

namespace popbridge::protocol {

using namespace imap_lexer;  // NOLINT(google-build-using-namespace): this library's own lexer

namespace {

enum class ItemName : std::uint8_t {
  kUid,
  kRfc822Size,
  kFlags,
  kGuid,  // X-GUID or EMAILID
  kBody,  // BODY or BODY.PEEK
  kRfc822,
  kRfc822Header,
  kRfc822Text,
  kOther,
};

// One comparison per item: the length picks the only name it can be. A snapshot of a
// large mailbox is thousands of lines of the same three items.
ItemName classify_item_name(std::string_view name) {
  switch (name.size()) {
    case 3:
      return equals_ignoring_ascii_case(name, "UID") ? ItemName::kUid : ItemName::kOther;
    case 4:
      return equals_ignoring_ascii_case(name, "BODY") ? ItemName::kBody : ItemName::kOther;
    case 5:
      return equals_ignoring_ascii_case(name, "FLAGS") ? ItemName::kFlags : ItemName::kOther;
    case 6:
      if (equals_ignoring_ascii_case(name, "X-GUID")) {
        return ItemName::kGuid;
      }
      return equals_ignoring_ascii_case(name, "RFC822") ? ItemName::kRfc822 : ItemName::kOther;
    case 7:
      return equals_ignoring_ascii_case(name, "EMAILID") ? ItemName::kGuid : ItemName::kOther;
    case 9:
      return equals_ignoring_ascii_case(name, "BODY.PEEK") ? ItemName::kBody : ItemName::kOther;
    case 11:
      if (equals_ignoring_ascii_case(name, "RFC822.SIZE")) {
        return ItemName::kRfc822Size;
      }
      return equals_ignoring_ascii_case(name, "RFC822.TEXT") ? ItemName::kRfc822Text
                                                             : ItemName::kOther;
    case 13:
      return equals_ignoring_ascii_case(name, "RFC822.HEADER") ? ItemName::kRfc822Header
                                                               : ItemName::kOther;
    default:
      return ItemName::kOther;
  }
}

}  // namespace

void ImapParser::parse_fetch(std::string_view text, bool has_literal, std::uint64_t literal) {
  std::size_t pos = 0;
  const auto skip_spaces = [&] {
    while (pos < text.size() && text[pos] == ' ') {
      ++pos;
    }
  };
  while (!failed_ && !halted_) {
    switch (fetch_state_) {
      case FetchState::kOpen:
        skip_spaces();
        if (pos == text.size() || text[pos] != '(') {
          fail("malformed FETCH: expected \"(\"");
          return;
        }
        ++pos;
        fetch_state_ = FetchState::kItem;
        break;
      case FetchState::kItem:
        skip_spaces();
        if (pos == text.size()) {
          fail(has_literal ? "malformed FETCH: literal in place of an item name"
                           : "malformed FETCH: missing \")\"");
          return;
        }
        if (text[pos] == ')') {
          ++pos;
          fetch_state_ = FetchState::kClosed;
        } else if (!parse_item(text, pos, has_literal, literal)) {
          return;
        }
        break;
      case FetchState::kAfterItem:
        if (pos == text.size()) {
          fail(has_literal ? "malformed FETCH: unexpected literal"
                           : "malformed FETCH: missing \")\"");
          return;
        }
        if (text[pos] == ')') {
          ++pos;
          fetch_state_ = FetchState::kClosed;
        } else if (text[pos] == ' ') {
          fetch_state_ = FetchState::kItem;
        } else {
          fail("malformed FETCH: expected SP or \")\" after an item");
          return;
        }
        break;
      case FetchState::kSkip:
        if (!skip_value(text, pos, has_literal, literal)) {
          return;
        }
        break;
      case FetchState::kClosed:
        skip_spaces();
        if (pos != text.size() || has_literal) {
          fail("malformed FETCH: data after \")\"");
          return;
        }
        events_.on_fetch_end();
        end_response();
        return;
    }
  }
}

// Parses one item at text[pos] (not SP, not ")"). Returns false when the segment is done
// with: an error, or its trailing literal was taken on.
bool ImapParser::parse_item(std::string_view text, std::size_t& pos, bool has_literal,
                            std::uint64_t literal) {
  const std::size_t name_start = pos;
  while (pos < text.size() && is_item_name_char(text[pos])) {
    ++pos;
  }
  const std::string_view name = text.substr(name_start, pos - name_start);
  if (name.empty()) {
    fail(text[pos] == '{' ? "bad literal syntax" : "malformed FETCH: bad item name");
    return false;
  }
  bool has_section = false;
  std::string_view section;
  std::uint64_t origin = 0;
  if (pos < text.size() && text[pos] == '[') {
    const std::size_t close = text.find(']', pos);
    if (close == std::string_view::npos) {
      fail("malformed FETCH: unterminated section");
      return false;
    }
    has_section = true;
    section = text.substr(pos + 1, close - pos - 1);
    pos = close + 1;
    if (pos < text.size() && text[pos] == '<') {
      ++pos;
      if (!parse_number(text, pos, kMaxNumber64, origin) || pos == text.size() ||
          text[pos] != '>') {
        fail("malformed FETCH: bad partial origin");
        return false;
      }
      ++pos;
    }
  }
  if (pos == text.size() || text[pos] != ' ') {
    fail("malformed FETCH: item without a value");
    return false;
  }
  while (pos < text.size() && text[pos] == ' ') {
    ++pos;
  }

  const ItemName item = classify_item_name(name);
  const bool uid = !has_section && item == ItemName::kUid;
  if (uid || (!has_section && item == ItemName::kRfc822Size)) {
    std::uint64_t value = 0;
    if (!parse_number(text, pos, uid ? kMaxNumber32 : kMaxNumber64, value) ||
        !at_delimiter(text, pos)) {
      fail(uid ? "malformed FETCH: bad UID" : "malformed FETCH: bad RFC822.SIZE");
      return false;
    }
    fetch_state_ = FetchState::kAfterItem;
    if (uid) {
      events_.on_fetch_uid(static_cast<std::uint32_t>(value));
    } else {
      events_.on_fetch_size(value);
    }
    return true;
  }

  if (!has_section && item == ItemName::kFlags) {
    const std::size_t close = text.find(')', pos);
    if (pos == text.size() || text[pos] != '(' || close == std::string_view::npos ||
        !at_delimiter(text, close + 1)) {
      fail("malformed FETCH: bad FLAGS");
      return false;
    }
    const std::string_view flags = text.substr(pos + 1, close - pos - 1);
    for (char c : flags) {
      if (c != ' ' && !is_skip_atom_char(c)) {
        fail(c == '{' ? "bad literal syntax" : "malformed FETCH: bad FLAGS");
        return false;
      }
    }
    pos = close + 1;
    fetch_state_ = FetchState::kAfterItem;
    events_.on_fetch_flags(flags);
    return true;
  }
  if (!has_section && item == ItemName::kGuid) {
    // X-GUID (Dovecot) is an astring; EMAILID (RFC 8474) an objectid in parentheses.
    const bool parenthesised = pos < text.size() && text[pos] == '(';
    std::size_t start = pos + (parenthesised ? 1 : 0);
    std::size_t end = start;
    std::string_view value;
    if (end < text.size() && text[end] == '"') {
      end = find_quote_end(text, start);
      if (end == std::string_view::npos) {
        fail("malformed FETCH: bad message GUID");
        return false;
      }
      value = text.substr(start + 1, end - start - 1);
      ++end;
    } else {
      while (end < text.size() && is_skip_atom_char(text[end]) && text[end] != '\\') {
        ++end;
      }
      value = text.substr(start, end - start);
      if (equals_ignoring_ascii_case(value, "NIL")) {
        value = {};
      }
    }
    if (parenthesised) {
      if (end == text.size() || text[end] != ')') {
        fail("malformed FETCH: bad message GUID");
        return false;
      }
      ++end;
    }
    if (end == start || !at_delimiter(text, end)) {
      fail("malformed FETCH: bad message GUID");
      return false;
    }
    pos = end;
    fetch_state_ = FetchState::kAfterItem;
    events_.on_fetch_guid(value);
    return true;
  }
  bool body = has_section && item == ItemName::kBody;
  if (!has_section) {
    // RFC 1730 names, which some servers still answer with.
    if (item == ItemName::kRfc822) {
      body = true;
    } else if (item == ItemName::kRfc822Header) {
      body = true;
      section = "HEADER";
    } else if (item == ItemName::kRfc822Text) {
      body = true;
      section = "TEXT";
    }
  }
  if (body) {
    return parse_body_value(text, pos, section, origin, has_literal, literal);
  }
  // BINARY[...] lands here too: we never ask for it, so its value is skipped.
  fetch_state_ = FetchState::kSkip;
  skip_depth_ = 0;
  return true;
}

bool ImapParser::parse_body_value(std::string_view text, std::size_t& pos, std::string_view section,
                                  std::uint64_t origin, bool has_literal, std::uint64_t literal) {
  if (pos == text.size()) {
    if (!has_literal) {
      fail("malformed FETCH: body without a value");
      return false;
    }
    fetch_state_ = FetchState::kAfterItem;
    if (literal > 0) {
      read_state_ = ReadState::kBodyLiteral;
      literal_left_ = literal;
    }
    events_.on_body_begin(section, origin, literal);
    if (literal == 0 && !halted_) {
      events_.on_body_end();
    }
    return false;
  }
  std::string_view value;
  if (text[pos] == '"') {
    const std::size_t close = find_quote_end(text, pos);
    if (close == std::string_view::npos) {
      fail("malformed FETCH: unterminated quoted string");
      return false;
    }
    value = text.substr(pos + 1, close - pos - 1);
    pos = close + 1;
    if (value.find('\\') != std::string_view::npos) {
      unescaped_.clear();
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\\') {
          ++i;  // find_quote_end() guarantees an octet follows
        }
        unescaped_.push_back(value[i]);
      }
      value = unescaped_;
    }
  } else if (text.size() - pos >= 3 && equals_ignoring_ascii_case(text.substr(pos, 3), "NIL") &&
             at_delimiter(text, pos + 3)) {
    pos += 3;
  } else {
    fail("malformed FETCH: bad body value");
    return false;
  }
  fetch_state_ = FetchState::kAfterItem;
  events_.on_body_begin(section, origin, value.size());
  if (!value.empty() && !halted_) {
    events_.on_body_data(value);
  }
  if (!halted_) {
    events_.on_body_end();
  }
  return true;
}

// Skips the value of an item we do not model: an atom, a quoted string, a literal or a
// list nested to any depth. Returns false when the segment is done with.
bool ImapParser::skip_value(std::string_view text, std::size_t& pos, bool has_literal,
                            std::uint64_t literal) {
  while (true) {
    if (pos == text.size()) {
      if (!has_literal) {
        fail("malformed FETCH: missing \")\"");
        return false;
      }
      if (skip_depth_ == 0) {
        fetch_state_ = FetchState::kAfterItem;
      }
      skip_literal(literal);
      return false;
    }
    const char c = text[pos];
    if (c == ' ') {
      ++pos;
      continue;
    }
    if (c == '(') {
      ++skip_depth_;
      ++pos;
      continue;
    }
    if (c == ')') {
      if (skip_depth_ == 0) {
        fail("malformed FETCH: item without a value");
        return false;
      }
      ++pos;
      --skip_depth_;
    } else if (c == '"') {
      const std::size_t close = find_quote_end(text, pos);
      if (close == std::string_view::npos) {
        fail("malformed FETCH: unterminated quoted string");
        return false;
      }
      pos = close + 1;
    } else if (is_skip_atom_char(c)) {
      while (pos < text.size() && is_skip_atom_char(text[pos])) {
        ++pos;
      }
    } else {
      fail(c == '{' ? "bad literal syntax" : "malformed FETCH: unexpected octet");
      return false;
    }
    if (skip_depth_ == 0) {
      fetch_state_ = FetchState::kAfterItem;
      return true;
    }
  }
}

}  // namespace popbridge::protocol
