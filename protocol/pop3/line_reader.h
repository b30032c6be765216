// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace popbridge::protocol {

// Splits a byte stream into lines. A line ends at LF; a CR just before the LF is
// removed. Bytes may arrive split anywhere. The reader keeps unread input so a caller
// can stop taking lines (e.g. while an upstream command is in flight) and continue later.
//
// A line longer than max_line octets (without its CRLF) is not buffered: its bytes are
// dropped as they arrive and, once its LF is seen, next() reports it as too_long. Bytes
// of lines already taken are wiped, since they may hold passwords.
class LineReader {
 public:
  struct Line {
    std::string_view text;  // valid until the next call to any member
    bool too_long = false;  // text is empty then
  };

  explicit LineReader(std::size_t max_line);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Adds bytes to the unread input.
  void append(std::string_view bytes);
  // The next complete line, or nullopt when none is complete yet.
  std::optional<Line> next();
  // The line still waiting for its LF is already longer than max_line: a caller can
  // refuse it at once instead of waiting for an LF that may never come.
  bool overflowing() const { return discarding_; }
  // A complete line is waiting: next() would return it (a pipelining client's next
  // command is already here).
  bool has_line() const { return tail_ > start_; }
  // Octets received but not yet returned as lines.
  std::size_t buffered() const;
  // Drops all unread input (STLS: plaintext after the command must never be parsed).
  void discard();

 private:
  void compact();
  void mark_tail_too_long();

  // buffer_ holds [consumed | complete lines | tail]. append() checks each line's length
  // as it arrives, so [start_, tail_) holds only complete lines and next() never rescans
  // the tail. An over-long line is kept as max_line_ + 1 filler octets (+ LF once it
  // ends), so next() recognises it by its length and memory stays bounded.
  std::size_t max_line_;
  std::string buffer_;
  std::size_t start_ = 0;    // first unread octet in buffer_
  std::size_t tail_ = 0;     // first octet of the line still waiting for its LF
  std::size_t wiped_ = 0;    // octets before this offset are already wiped
  bool discarding_ = false;  // inside an over-long line
};

}  // namespace popbridge::protocol
