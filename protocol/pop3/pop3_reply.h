// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace popbridge::protocol {

// RFC 2449 / RFC 3206 response codes.
enum class RespCode : std::uint8_t { kNone, kAuth, kSysTemp, kSysPerm, kInUse, kLoginDelay };

// "+OK text\r\n" (or "+OK\r\n" for empty text).
std::string ok_reply(std::string_view text);
// "-ERR [CODE] text\r\n"; no brackets for kNone.
std::string err_reply(RespCode code, std::string_view text);

// The streaming byte-stuffer of RFC 1939 §3 for multi-line replies. Feed the message
// in chunks of any size; a '.' at the start of a line gets another '.' in front. The
// output is appended to a caller-owned buffer, so no allocation happens per byte.
class DotStuffer {
 public:
  DotStuffer() = default;
  // Dovecot's outlook-no-nuls: NUL octets go out as 0x80 (Outlook ends a message at a NUL).
  explicit DotStuffer(bool replace_nuls) : replace_nuls_(replace_nuls) {}

  void feed(std::string_view chunk, std::string& out);
  // Ends the reply: adds CRLF if the data did not end with LF, then ".\r\n".
  void finish(std::string& out);
  // Dovecot's oe-ns-eoh: as finish(), with an empty line before the terminator, for a
  // message whose header never ended (Outlook Express and Netscape want the empty line).
  void finish_with_empty_line(std::string& out);
  // Octets fed (unstuffed), for comparing with the listed size.
  std::uint64_t octets() const { return octets_; }

 private:
  bool replace_nuls_ = false;
  bool at_line_start_ = true;
  std::uint64_t octets_ = 0;
};

// TOP (RFC 1939 §7): the header, the blank line after it, then at most `body_lines`
// lines of the body. Feed the message (or the header part and then the body part, in
// order) in chunks; take() returns the prefix of each chunk to send on. Once done(),
// all further input is dropped.
class TopFilter {
 public:
  explicit TopFilter(std::uint64_t body_lines) : body_lines_left_(body_lines) {}
  // Passes the whole message and tells whether its header ended (in_body()).
  static TopFilter whole_message() { return TopFilter(UINT64_MAX); }
  std::string_view take(std::string_view chunk);
  bool done() const { return done_; }
  bool in_body() const { return in_body_; }

 private:
  std::uint64_t body_lines_left_;
  bool in_body_ = false;
  bool done_ = false;
  bool at_line_start_ = true;
  bool only_cr_ = false;  // the header line so far is a lone CR: an LF next ends the header
};

}  // namespace popbridge::protocol
