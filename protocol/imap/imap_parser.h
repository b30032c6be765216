// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::protocol {

enum class ImapStatusKind { kOk, kNo, kBad, kBye, kPreauth };

struct ImapStatus {
  std::string_view tag;  // "*" for untagged
  ImapStatusKind kind = ImapStatusKind::kOk;
  std::string_view code;  // inside the brackets, e.g. "UIDVALIDITY 42"; empty if none
  std::string_view text;  // human-readable rest
};

// Receives what the parser recognises. Views are valid only during the call.
// A FETCH response arrives as on_fetch_begin, items in order, on_fetch_end. A BODY[...]
// value (literal, quoted string or NIL) is handed on as on_body_begin, zero or more
// on_body_data chunks (whatever split the input had, never the whole message at once),
// on_body_end.
class ImapEvents {
 public:
  virtual ~ImapEvents() = default;
  virtual void on_status(const ImapStatus& status) = 0;
  virtual void on_continuation(std::string_view text) = 0;
  // Untagged CAPABILITY response; atoms as sent (case preserved).
  virtual void on_capability(const std::vector<std::string_view>& capabilities) = 0;
  virtual void on_exists(std::uint32_t count) = 0;
  virtual void on_expunge(std::uint32_t sequence) = 0;
  virtual void on_fetch_begin(std::uint32_t sequence) = 0;
  virtual void on_fetch_uid(std::uint32_t uid) = 0;
  virtual void on_fetch_size(std::uint64_t rfc822_size) = 0;
  // FLAGS: the flags inside the parentheses, space-separated, as sent.
  virtual void on_fetch_flags(std::string_view flags) { (void)flags; }
  // X-GUID (Dovecot) or EMAILID (RFC 8474 OBJECTID): the message's GUID; empty for NIL.
  virtual void on_fetch_guid(std::string_view guid) { (void)guid; }
  // section: text between the brackets, e.g. "" for BODY[], "HEADER", "TEXT". For a
  // partial fetch, origin is the <n> value (0 if absent). size: octets that follow.
  virtual void on_body_begin(std::string_view section, std::uint64_t origin,
                             std::uint64_t size) = 0;
  virtual void on_body_data(std::string_view chunk) = 0;
  virtual void on_body_end() = 0;
  virtual void on_fetch_end() = 0;
  // "* METADATA mailbox (entry value)" (RFC 5464): the first entry and its value, nullopt
  // for NIL. The value may be a literal of up to kMaxMetadataValue octets.
  virtual void on_metadata(std::string_view entry, std::optional<std::string_view> value) {
    (void)entry, (void)value;
  }
  // Any other untagged response (FLAGS, RECENT, LIST, ...), as its first line.
  virtual void on_other_untagged(std::string_view line) { (void)line; }
};

// Incremental parser for an IMAP server's responses (RFC 3501 §7, RFC 9051). Feed bytes
// split anywhere; events fire as soon as their data is complete. Literals other than
// BODY[...] values (e.g. in FLAGS or ENVELOPE of unsolicited responses) are skipped up to
// max_line in total per response. FETCH items it does not model (MODSEQ,
// INTERNALDATE, BINARY[...], ...) are skipped. Text is parsed a line at a time (a line
// ends at LF, CRLF or a literal), so FETCH items fire once the line or literal holding
// them is complete, and on_other_untagged once the whole response has arrived. Status
// responses, continuations and CAPABILITY never carry literals: a "{5}" ending their
// text is text.
class ImapParser {
 public:
  // The largest METADATA value read (a UIDL map of about half a million messages).
  static constexpr std::uint64_t kMaxMetadataValue = 16 * 1024 * 1024;

  explicit ImapParser(ImapEvents& events, std::size_t max_line = 65536);

  // Consumes all bytes; returns false on a protocol error, after which the parser stays
  // failed and error() says why. Events fire from inside feed(). A handler may do
  // anything except destroy the parser; in particular it may call feed() again: those
  // bytes are queued and parsed, in order, before the outer feed() returns (the inner
  // call returns true, the outer one reports any error). Body chunks are views of the
  // caller's bytes, so a large feed yields few chunks and no copies.
  bool feed(std::string_view bytes);
  bool failed() const { return failed_; }
  // Octets of the literal being read that are still to come; 0 between literals. The
  // server sends them without waiting for anything, which is what lets a reader wait for
  // a large read rather than wake for every segment (Connection::expect_bytes).
  std::uint64_t literal_left() const { return literal_left_; }
  const std::string& error() const { return error_; }

  // Forgets everything not yet reported (a partial response, queued bytes) and any error,
  // as if newly constructed. Called from an event handler, it also drops the rest of the
  // bytes of the feed() in progress, and the views of that event become invalid. For
  // STARTTLS: call it on the tagged OK, so no plaintext sent after it (even an incomplete
  // line) is ever parsed together with what arrives over TLS.
  void reset();

 private:
  // Bytes are read as "segments": text up to a line end. A segment that ends with a
  // literal marker "{n}" is followed by n octets of the literal and then by a further
  // segment; a segment without one ends the response.
  enum class ReadState : std::uint8_t {
    kText,             // collecting a segment into line_
    kSkipLiteral,      // discarding a literal that is not a body value
    kBodyLiteral,      // streaming a BODY[...] literal to on_body_data
    kMetadataLiteral,  // collecting a METADATA value into metadata_value_
  };
  enum class ResponseKind : std::uint8_t {
    kUnknown,   // first segment not complete yet
    kFetch,     // "* n FETCH (...)", parsed item by item
    kMetadata,  // "* METADATA ...": text collected, literal values kept
    kOther,     // other untagged data; literals skipped, first line reported
  };
  // Where the FETCH item parser stands between segments.
  enum class FetchState : std::uint8_t {
    kOpen,       // expects "("
    kItem,       // expects an item name or ")"
    kAfterItem,  // expects SP or ")"
    kSkip,       // inside the value of an item that is not modelled (skip_depth_ lists deep)
    kClosed,     // after ")": only the line end may follow
  };

  void process(std::string_view bytes);
  void end_segment();
  void start_response(std::string_view line);
  void parse_status(std::string_view tag, ImapStatusKind kind, std::string_view rest);
  void parse_untagged(std::string_view line, std::string_view rest);
  bool parse_message_data(std::string_view line, std::string_view rest,
                          std::string_view number_word);
  bool parse_server_data(std::string_view line, std::string_view rest, std::string_view word);
  void continue_response(std::string_view segment, std::size_t offset);
  // The FETCH item parser. text is complete up to its end; has_literal says that a
  // literal of size literal follows it.
  void parse_fetch(std::string_view text, bool has_literal, std::uint64_t literal);
  bool parse_item(std::string_view text, std::size_t& pos, bool has_literal, std::uint64_t literal);
  bool parse_body_value(std::string_view text, std::size_t& pos, std::string_view section,
                        std::uint64_t origin, bool has_literal, std::uint64_t literal);
  bool skip_value(std::string_view text, std::size_t& pos, bool has_literal, std::uint64_t literal);
  void skip_literal(std::uint64_t size);
  // kMetadata: one segment; a literal (from marker_start) is collected, and the response
  // is parsed once its last segment has come.
  void continue_metadata(std::string_view segment, bool has_literal, std::size_t marker_start,
                         std::uint64_t literal);
  void parse_metadata();
  void end_response();
  void fail(std::string_view why);

  ImapEvents& events_;
  std::size_t max_line_;
  bool failed_ = false;
  std::string error_;

  ReadState read_state_ = ReadState::kText;
  ResponseKind kind_ = ResponseKind::kUnknown;
  FetchState fetch_state_ = FetchState::kOpen;
  std::string line_;                 // first line (kOther) and the current segment
  std::size_t segment_start_ = 0;    // offset of the current segment in line_
  std::size_t first_line_size_ = 0;  // kOther: the first line is line_[0, this)
  std::size_t response_bytes_ = 0;   // earlier segments and skipped literals, for max_line_
  std::uint64_t literal_left_ = 0;   // octets of the current literal still to come
  std::size_t skip_depth_ = 0;       // open "(" inside a skipped FETCH value
  bool in_feed_ = false;             // feed() re-entered from an event handler
  bool halted_ = false;              // reset() inside feed(): stop parsing those bytes
  std::string queued_;               // bytes fed re-entrantly, parsed after the current ones
  std::string unescaped_;            // a quoted body value with escapes removed
  std::string metadata_text_;        // kMetadata: the response's text, literals marked
  std::string metadata_value_;       // kMetadata: the literal value
  std::vector<std::string_view> capabilities_;  // reused across CAPABILITY responses
};

}  // namespace popbridge::protocol
