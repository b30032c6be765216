// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/imap_parser.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>

namespace popbridge::protocol {
namespace {

constexpr std::uint64_t kMaxNumber32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kMaxNumber64 = std::numeric_limits<std::uint64_t>::max();

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_upper(a[i]) != ascii_upper(b[i])) {
      return false;
    }
  }
  return true;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool is_ctl_or_8bit(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u >= 0x7f;
}

// A tag is an astring-char run without "+" (RFC 3501 §9).
bool is_tag_char(char c) {
  if (is_ctl_or_8bit(c)) {
    return false;
  }
  switch (c) {
    case ' ':
    case '(':
    case ')':
    case '{':
    case '%':
    case '*':
    case '"':
    case '\\':
    case '+':
      return false;
    default:
      return true;
  }
}

// FETCH item names: "UID", "RFC822.SIZE", "BODY" (the section follows in brackets).
bool is_item_name_char(char c) {
  if (is_ctl_or_8bit(c)) {
    return false;
  }
  switch (c) {
    case ' ':
    case '(':
    case ')':
    case '[':
    case ']':
    case '{':
    case '"':
    case '\\':
    case '<':
      return false;
    default:
      return true;
  }
}

// Atoms inside values we skip (flags like \Seen, NIL, numbers, X-GM-MSGID values). 8-bit
// octets are let through: some servers send raw UTF-8 there and we discard it anyway.
bool is_skip_atom_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u < 0x20 || u == 0x7f) {
    return false;
  }
  return c != ' ' && c != '(' && c != ')' && c != '"' && c != '{';
}

// Decimal digits at text[pos...], at most max. Advances pos past them.
bool parse_number(std::string_view text, std::size_t& pos, std::uint64_t max,
                  std::uint64_t& value) {
  const std::size_t start = pos;
  value = 0;
  while (pos < text.size() && is_digit(text[pos])) {
    const auto digit = static_cast<std::uint64_t>(text[pos] - '0');
    if (value > (max - digit) / 10) {
      return false;
    }
    value = value * 10 + digit;
    ++pos;
  }
  return pos > start;
}

bool at_delimiter(std::string_view text, std::size_t pos) {
  return pos == text.size() || text[pos] == ' ' || text[pos] == ')';
}

// Index of the closing quote of the quoted string opening at text[open], or npos.
std::size_t find_quote_end(std::string_view text, std::size_t open) {
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
LiteralMarker find_literal_marker(std::string_view text) {
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

std::optional<ImapStatusKind> status_kind(std::string_view word) {
  if (iequals(word, "OK")) {
    return ImapStatusKind::kOk;
  }
  if (iequals(word, "NO")) {
    return ImapStatusKind::kNo;
  }
  if (iequals(word, "BAD")) {
    return ImapStatusKind::kBad;
  }
  if (iequals(word, "BYE")) {
    return ImapStatusKind::kBye;
  }
  if (iequals(word, "PREAUTH")) {
    return ImapStatusKind::kPreauth;
  }
  return std::nullopt;
}

std::string_view first_word(std::string_view text) { return text.substr(0, text.find(' ')); }

}  // namespace

ImapParser::ImapParser(ImapEvents& events, std::size_t max_line)
    : events_(events), max_line_(max_line) {
  line_.reserve(std::min<std::size_t>(max_line_, 1024));
}

bool ImapParser::feed(std::string_view bytes) {
  if (failed_) {
    return false;
  }
  if (in_feed_) {
    // Called from an event handler: these bytes come after the ones being parsed.
    queued_.append(bytes);
    return true;
  }
  in_feed_ = true;
  halted_ = false;
  process(bytes);
  while (!failed_ && !queued_.empty()) {
    halted_ = false;
    std::string pending;
    pending.swap(queued_);
    process(pending);
  }
  queued_.clear();
  halted_ = false;
  in_feed_ = false;
  return !failed_;
}

void ImapParser::reset() {
  end_response();
  read_state_ = ReadState::kText;
  literal_left_ = 0;
  failed_ = false;
  error_.clear();
  queued_.clear();
  halted_ = in_feed_;
}

void ImapParser::process(std::string_view bytes) {
  while (!bytes.empty() && !failed_ && !halted_) {
    switch (read_state_) {
      case ReadState::kText: {
        const void* lf = std::memchr(bytes.data(), '\n', bytes.size());
        const std::size_t take =
            lf != nullptr ? static_cast<std::size_t>(static_cast<const char*>(lf) - bytes.data())
                          : bytes.size();
        // One octet of slack: the CR of a CRLF may arrive before its LF. The exact check
        // is in end_segment().
        const std::size_t segment = line_.size() - segment_start_;
        if (response_bytes_ + segment + take > max_line_ &&
            response_bytes_ + segment + take - max_line_ > 1) {
          fail("response line too long");
          return;
        }
        line_.append(bytes.data(), take);
        if (lf == nullptr) {
          return;
        }
        bytes.remove_prefix(take + 1);
        if (line_.size() > segment_start_ && line_.back() == '\r') {
          line_.pop_back();
        }
        end_segment();
        break;
      }
      case ReadState::kSkipLiteral: {
        const auto take =
            static_cast<std::size_t>(std::min<std::uint64_t>(literal_left_, bytes.size()));
        bytes.remove_prefix(take);
        literal_left_ -= take;
        if (literal_left_ == 0) {
          read_state_ = ReadState::kText;
        }
        break;
      }
      case ReadState::kBodyLiteral: {
        const auto take =
            static_cast<std::size_t>(std::min<std::uint64_t>(literal_left_, bytes.size()));
        const std::string_view chunk = bytes.substr(0, take);
        bytes.remove_prefix(take);
        literal_left_ -= take;
        const bool done = literal_left_ == 0;
        if (done) {
          read_state_ = ReadState::kText;
          fetch_state_ = FetchState::kAfterItem;
        }
        events_.on_body_data(chunk);
        if (done && !halted_) {
          events_.on_body_end();
        }
        break;
      }
    }
  }
}

void ImapParser::end_segment() {
  const std::string_view segment = std::string_view(line_).substr(segment_start_);
  if (response_bytes_ + segment.size() > max_line_) {
    fail("response line too long");
    return;
  }
  if (kind_ == ResponseKind::kUnknown) {
    start_response(segment);
  } else {
    continue_response(segment, 0);
  }
}

void ImapParser::start_response(std::string_view line) {
  if (line.empty()) {
    fail("empty response line");
    return;
  }
  if (line[0] == '+') {
    std::string_view text = line.substr(1);
    if (!text.empty() && text[0] == ' ') {
      text.remove_prefix(1);
    }
    events_.on_continuation(text);
    end_response();
    return;
  }
  if (line[0] == '*') {
    if (line.size() < 2 || line[1] != ' ') {
      fail("malformed untagged response");
      return;
    }
    parse_untagged(line, line.substr(2));
    return;
  }
  const std::string_view tag = first_word(line);
  if (tag.empty() || !std::all_of(tag.begin(), tag.end(), is_tag_char)) {
    fail("response line does not start with a tag, \"*\" or \"+\"");
    return;
  }
  if (tag.size() == line.size()) {
    fail("malformed tagged response");
    return;
  }
  const std::string_view rest = line.substr(tag.size() + 1);
  const std::string_view word = first_word(rest);
  const auto kind = status_kind(word);
  // Only OK, NO and BAD complete a command (RFC 3501 §7.1).
  if (!kind || *kind == ImapStatusKind::kBye || *kind == ImapStatusKind::kPreauth) {
    fail("malformed tagged response");
    return;
  }
  parse_status(tag, *kind, rest.substr(word.size()));
}

void ImapParser::parse_status(std::string_view tag, ImapStatusKind kind, std::string_view rest) {
  ImapStatus status;
  status.tag = tag;
  status.kind = kind;
  if (!rest.empty() && rest[0] == ' ') {
    rest.remove_prefix(1);
  }
  if (!rest.empty() && rest[0] == '[') {
    // A code without its "]" is left in the text rather than guessed at.
    const std::size_t close = rest.find(']');
    if (close != std::string_view::npos) {
      status.code = rest.substr(1, close - 1);
      rest.remove_prefix(close + 1);
      if (!rest.empty() && rest[0] == ' ') {
        rest.remove_prefix(1);
      }
    }
  }
  status.text = rest;
  events_.on_status(status);
  end_response();
}

void ImapParser::parse_untagged(std::string_view line, std::string_view rest) {
  const std::string_view word = first_word(rest);
  if (const auto kind = status_kind(word)) {
    parse_status("*", *kind, rest.substr(word.size()));
    return;
  }
  if (iequals(word, "CAPABILITY")) {
    capabilities_.clear();
    std::string_view list = rest.substr(word.size());
    while (!list.empty()) {
      if (list[0] == ' ') {
        list.remove_prefix(1);
        continue;
      }
      const std::string_view atom = first_word(list);
      capabilities_.push_back(atom);
      list.remove_prefix(atom.size());
    }
    events_.on_capability(capabilities_);
    end_response();
    return;
  }
  if (!word.empty() && is_digit(word[0])) {
    std::size_t pos = 0;
    std::uint64_t number = 0;
    if (!parse_number(word, pos, kMaxNumber32, number) || pos != word.size()) {
      fail("malformed message number");
      return;
    }
    std::string_view after = rest.substr(word.size());
    if (!after.empty()) {
      after.remove_prefix(1);
    }
    const std::string_view what = first_word(after);
    if (iequals(what, "EXISTS")) {
      events_.on_exists(static_cast<std::uint32_t>(number));
      end_response();
      return;
    }
    if (iequals(what, "EXPUNGE")) {
      events_.on_expunge(static_cast<std::uint32_t>(number));
      end_response();
      return;
    }
    if (iequals(what, "FETCH")) {
      kind_ = ResponseKind::kFetch;
      events_.on_fetch_begin(static_cast<std::uint32_t>(number));
      if (halted_) {
        return;
      }
      continue_response(line, static_cast<std::size_t>(what.data() + what.size() - line.data()));
      return;
    }
  }
  kind_ = ResponseKind::kOther;
  first_line_size_ = line_.size();
  continue_response(line, 0);
}

// Handles a segment of a response that may hold literals. For FETCH, the item text starts
// at offset.
void ImapParser::continue_response(std::string_view segment, std::size_t offset) {
  const LiteralMarker marker = find_literal_marker(segment);
  if (marker.kind == LiteralMarker::Kind::kBad) {
    fail("bad literal syntax");
    return;
  }
  const bool has_literal = marker.kind == LiteralMarker::Kind::kValid;
  if (kind_ == ResponseKind::kOther) {
    if (!has_literal) {
      events_.on_other_untagged(std::string_view(line_).substr(0, first_line_size_));
      end_response();
      return;
    }
    // Only the first line is kept, for on_other_untagged.
    response_bytes_ += segment.size();
    line_.resize(first_line_size_);
    segment_start_ = line_.size();
    skip_literal(marker.size);
    return;
  }
  response_bytes_ += segment.size();
  const std::size_t end = has_literal ? std::max(marker.start, offset) : segment.size();
  parse_fetch(segment.substr(offset, end - offset), has_literal, marker.size);
  if (!failed_ && kind_ == ResponseKind::kFetch) {
    // Everything in the segment has been parsed; the FETCH state carries on.
    line_.clear();
    segment_start_ = 0;
  }
}

void ImapParser::skip_literal(std::uint64_t size) {
  if (size > max_line_ - std::min(max_line_, response_bytes_)) {
    fail("response line too long");
    return;
  }
  response_bytes_ += static_cast<std::size_t>(size);
  if (size > 0) {
    literal_left_ = size;
    read_state_ = ReadState::kSkipLiteral;
  }
}

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

  const bool uid = !has_section && iequals(name, "UID");
  if (uid || (!has_section && iequals(name, "RFC822.SIZE"))) {
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

  if (!has_section && iequals(name, "FLAGS")) {
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
  if (!has_section && (iequals(name, "X-GUID") || iequals(name, "EMAILID"))) {
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
      if (iequals(value, "NIL")) {
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
  bool body = has_section && (iequals(name, "BODY") || iequals(name, "BODY.PEEK"));
  if (!has_section) {
    // RFC 1730 names, which some servers still answer with.
    if (iequals(name, "RFC822")) {
      body = true;
    } else if (iequals(name, "RFC822.HEADER")) {
      body = true;
      section = "HEADER";
    } else if (iequals(name, "RFC822.TEXT")) {
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
  } else if (text.size() - pos >= 3 && iequals(text.substr(pos, 3), "NIL") &&
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

void ImapParser::end_response() {
  kind_ = ResponseKind::kUnknown;
  fetch_state_ = FetchState::kOpen;
  skip_depth_ = 0;
  line_.clear();
  segment_start_ = 0;
  first_line_size_ = 0;
  response_bytes_ = 0;
}

void ImapParser::fail(std::string_view why) {
  failed_ = true;
  error_.assign(why);
}

}  // namespace popbridge::protocol
