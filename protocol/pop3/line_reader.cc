// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/line_reader.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "protocol/common/secret.h"

namespace popbridge::protocol {

namespace {

const char* find_lf(const char* data, std::size_t size) {
  return static_cast<const char*>(std::memchr(data, '\n', size));
}

}  // namespace

// The cap keeps max_line_ + 2 from overflowing; no real limit comes near it.
LineReader::LineReader(std::size_t max_line)
    : max_line_(std::min(max_line, std::numeric_limits<std::size_t>::max() / 4)) {}

LineReader::~LineReader() {
  buffer_.resize(buffer_.capacity());
  wipe(buffer_.data(), buffer_.size());
}

void LineReader::append(std::string_view bytes) {
  compact();
  while (!bytes.empty()) {
    const char* lf = find_lf(bytes.data(), bytes.size());
    if (discarding_) {
      if (lf == nullptr) {
        return;
      }
      buffer_.push_back('\n');
      tail_ = buffer_.size();
      discarding_ = false;
      bytes.remove_prefix(static_cast<std::size_t>(lf - bytes.data()) + 1);
      continue;
    }
    const std::size_t have = buffer_.size() - tail_;
    if (lf == nullptr) {
      // Without its LF yet, a line of max_line_ + 1 octets may still be legal if the
      // last one is the CR of its CRLF; anything more cannot be.
      const std::size_t total = have + bytes.size();
      if (total > max_line_ + 1 || (total == max_line_ + 1 && bytes.back() != '\r')) {
        mark_tail_too_long();
        discarding_ = true;
      } else {
        buffer_.append(bytes);
      }
      return;
    }
    const std::size_t before_lf = static_cast<std::size_t>(lf - bytes.data());
    std::size_t content = have + before_lf;
    const bool cr =
        before_lf > 0 ? bytes[before_lf - 1] == '\r' : (have > 0 && buffer_.back() == '\r');
    if (cr) {
      --content;
    }
    if (content > max_line_) {
      mark_tail_too_long();
      buffer_.push_back('\n');
    } else {
      buffer_.append(bytes.data(), before_lf + 1);
    }
    tail_ = buffer_.size();
    bytes.remove_prefix(before_lf + 1);
  }
}

std::optional<LineReader::Line> LineReader::next() {
  compact();
  if (start_ == tail_) {
    return std::nullopt;
  }
  const char* line_start = buffer_.data() + start_;
  // Always found: everything before tail_ is complete lines.
  const char* lf = find_lf(line_start, tail_ - start_);
  std::size_t length = static_cast<std::size_t>(lf - line_start);
  start_ += length + 1;
  if (length > 0 && line_start[length - 1] == '\r') {
    --length;
  }
  Line line;
  if (length > max_line_) {
    line.too_long = true;
  } else {
    line.text = std::string_view(line_start, length);
  }
  return line;
}

std::size_t LineReader::buffered() const { return buffer_.size() - start_; }

void LineReader::discard() {
  wipe(buffer_.data(), buffer_.size());
  buffer_.clear();
  start_ = 0;
  tail_ = 0;
  wiped_ = 0;
  discarding_ = false;
}

void LineReader::compact() {
  // Lines already handed out may hold a password: wipe them as soon as the caller is
  // done with them (a returned view lives only until the next call).
  if (start_ > wiped_) {
    wipe(buffer_.data() + wiped_, start_ - wiped_);
    wiped_ = start_;
  }
  if (start_ == 0) {
    return;
  }
  const std::size_t unread = buffer_.size() - start_;
  // Moving only once the consumed part is at least as large as the unread part keeps
  // the copying amortised O(1) per octet.
  if (unread > start_) {
    return;
  }
  std::memmove(buffer_.data(), buffer_.data() + start_, unread);
  // [unread, start_) was wiped above; only the old copy of the unread octets is left.
  wipe(buffer_.data() + start_, unread);
  buffer_.resize(unread);
  tail_ -= start_;
  start_ = 0;
  wiped_ = 0;
}

void LineReader::mark_tail_too_long() {
  // The octets already held are dropped too; filler (never shown to the caller) keeps
  // the length that marks the line as over-long.
  wipe(buffer_.data() + tail_, buffer_.size() - tail_);
  buffer_.resize(tail_);
  buffer_.append(max_line_ + 1, 'x');
}

}  // namespace popbridge::protocol
