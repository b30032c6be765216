// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/imap_parser.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>

#include "protocol/imap/imap_lexer.h"

namespace popbridge::protocol {
using namespace imap_lexer;  // NOLINT(google-build-using-namespace): this library's own lexer

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
      case ReadState::kMetadataLiteral: {
        const auto take =
            static_cast<std::size_t>(std::min<std::uint64_t>(literal_left_, bytes.size()));
        metadata_value_.append(bytes.data(), take);
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
  // Message data ("* n FETCH ...") is tried first: it is nearly every line of a snapshot.
  const bool taken = !word.empty() && is_digit(word[0]) ? parse_message_data(line, rest, word)
                                                        : parse_server_data(line, rest, word);
  if (taken) {
    return;
  }
  kind_ = ResponseKind::kOther;
  first_line_size_ = line_.size();
  continue_response(line, 0);
}

// "* n EXISTS", "* n EXPUNGE", "* n FETCH (...)". Returns false for other message data.
bool ImapParser::parse_message_data(std::string_view line, std::string_view rest,
                                    std::string_view number_word) {
  std::size_t pos = 0;
  std::uint64_t number = 0;
  if (!parse_number(number_word, pos, kMaxNumber32, number) || pos != number_word.size()) {
    fail("malformed message number");
    return true;
  }
  std::string_view after = rest.substr(number_word.size());
  if (!after.empty()) {
    after.remove_prefix(1);
  }
  const std::string_view what = first_word(after);
  if (equals_ignoring_ascii_case(what, "EXISTS")) {
    events_.on_exists(static_cast<std::uint32_t>(number));
    end_response();
    return true;
  }
  if (equals_ignoring_ascii_case(what, "EXPUNGE")) {
    events_.on_expunge(static_cast<std::uint32_t>(number));
    end_response();
    return true;
  }
  if (equals_ignoring_ascii_case(what, "FETCH")) {
    kind_ = ResponseKind::kFetch;
    events_.on_fetch_begin(static_cast<std::uint32_t>(number));
    if (halted_) {
      return true;
    }
    continue_response(line, static_cast<std::size_t>(what.data() + what.size() - line.data()));
    return true;
  }
  return false;
}

// Status, CAPABILITY and METADATA responses. Returns false for other server data.
bool ImapParser::parse_server_data(std::string_view line, std::string_view rest,
                                   std::string_view word) {
  if (const auto kind = status_kind(word)) {
    parse_status("*", *kind, rest.substr(word.size()));
    return true;
  }
  if (equals_ignoring_ascii_case(word, "CAPABILITY")) {
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
    return true;
  }
  if (equals_ignoring_ascii_case(word, "METADATA")) {
    kind_ = ResponseKind::kMetadata;
    metadata_text_.clear();
    metadata_value_.clear();
    continue_response(line, static_cast<std::size_t>(word.data() + word.size() - line.data()));
    return true;
  }
  return false;
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
  if (kind_ == ResponseKind::kMetadata) {
    continue_metadata(segment.substr(offset), has_literal,
                      has_literal ? marker.start - std::min(marker.start, offset) : 0, marker.size);
    return;
  }
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

void ImapParser::continue_metadata(std::string_view segment, bool has_literal,
                                   std::size_t marker_start, std::uint64_t literal) {
  response_bytes_ += segment.size();
  if (!has_literal) {
    metadata_text_.append(segment);
    parse_metadata();
    return;
  }
  // One literal value is kept (the entry asked for); it stands in the text as "\x01".
  if (!metadata_value_.empty() || literal > kMaxMetadataValue) {
    fail(literal > kMaxMetadataValue ? "METADATA value too large" : "METADATA with two literals");
    return;
  }
  metadata_text_.append(segment.substr(0, marker_start));
  metadata_text_.push_back('\x01');
  line_.clear();
  segment_start_ = 0;
  if (literal > 0) {
    metadata_value_.reserve(static_cast<std::size_t>(literal));
    literal_left_ = literal;
    read_state_ = ReadState::kMetadataLiteral;
  }
}

void ImapParser::parse_metadata() {
  // mailbox SP "(" entry SP value *(SP entry SP value) ")"
  std::string_view text = metadata_text_;
  const auto skip_space = [&text] {
    while (!text.empty() && text.front() == ' ') {
      text.remove_prefix(1);
    }
  };
  skip_space();
  if (!text.empty() && text.front() == '"') {
    const std::size_t close = find_quote_end(text, 0);
    if (close == std::string_view::npos) {
      fail("malformed METADATA: mailbox");
      return;
    }
    text.remove_prefix(close + 1);
  } else {
    text.remove_prefix(std::min(text.size(), text.find(' ')));
  }
  skip_space();
  if (text.empty() || text.front() != '(') {
    fail("malformed METADATA: no entry list");
    return;
  }
  text.remove_prefix(1);
  const std::size_t space = text.find(' ');
  if (space == 0 || space == std::string_view::npos) {
    fail("malformed METADATA: entry");
    return;
  }
  const std::string_view entry = text.substr(0, space);
  text.remove_prefix(space + 1);
  std::optional<std::string_view> value;
  if (!text.empty() && text.front() == '\x01') {
    value = metadata_value_;
  } else if (!text.empty() && text.front() == '"') {
    const std::size_t close = find_quote_end(text, 0);
    if (close == std::string_view::npos) {
      fail("malformed METADATA: value");
      return;
    }
    unescaped_.clear();
    for (std::size_t i = 1; i < close; ++i) {
      if (text[i] == '\\' && i + 1 < close) {
        ++i;
      }
      unescaped_.push_back(text[i]);
    }
    value = unescaped_;
  } else if (!equals_ignoring_ascii_case(text.substr(0, 3), "NIL")) {
    fail("malformed METADATA: value");
    return;
  }
  events_.on_metadata(entry, value);
  end_response();
}

void ImapParser::end_response() {
  kind_ = ResponseKind::kUnknown;
  fetch_state_ = FetchState::kOpen;
  skip_depth_ = 0;
  line_.clear();
  segment_start_ = 0;
  first_line_size_ = 0;
  response_bytes_ = 0;
  metadata_text_.clear();
  metadata_value_.clear();
  metadata_value_.shrink_to_fit();
}

void ImapParser::fail(std::string_view why) {
  failed_ = true;
  error_.assign(why);
}

}  // namespace popbridge::protocol
