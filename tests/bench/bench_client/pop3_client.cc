// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/pop3_client.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "tests/bench/bench_client/failure.h"

namespace popbridge::bench {
namespace {

// Reads a POP3 multi-line body up to its terminating ".\r\n" (RFC 1939 §3), removing
// the byte-stuffing. Scanning is per line with memchr, so it runs far faster than any
// server can send. A line that starts with "." loses that dot; ".\r\n" ends the body.
class MultilineReader {
 public:
  explicit MultilineReader(Digest& digest) : digest_(digest) {}

  // Consumes from `data` up to the end of the body; returns how many octets were used
  // (the rest belongs to the next reply). done() tells whether the terminator was seen.
  std::size_t feed(std::string_view data) {
    const char* const begin = data.data();
    const char* const end = begin + data.size();
    const char* p = begin;
    const char* span = begin;  // first octet not yet handed to the digest
    while (p < end && !done_) {
      switch (state_) {
        case State::kInLine: {
          const void* lf = std::memchr(p, '\n', static_cast<std::size_t>(end - p));
          if (lf == nullptr) {
            p = end;
          } else {
            p = static_cast<const char*>(lf) + 1;
            state_ = State::kLineStart;
          }
          break;
        }
        case State::kLineStart:
          if (*p == '.') {
            digest_.add({span, static_cast<std::size_t>(p - span)});
            ++p;
            span = p;  // the dot is either stuffing or part of the terminator
            state_ = State::kDot;
          } else {
            state_ = State::kInLine;
          }
          break;
        case State::kDot:
          if (*p == '\r') {
            ++p;
            span = p;  // held back: ".\r" may be the start of the terminator
            state_ = State::kDotCr;
          } else {
            ++stuffed_;
            state_ = State::kInLine;
          }
          break;
        case State::kDotCr:
          if (*p == '\n') {
            ++p;
            span = p;
            done_ = true;
          } else {
            // ".\r" then something else: not a terminator; keep the CR (dot dropped).
            digest_.add("\r");
            ++stuffed_;
            state_ = State::kInLine;
          }
          break;
      }
    }
    if (!done_) {
      digest_.add({span, static_cast<std::size_t>(end - span)});
    }
    return static_cast<std::size_t>(p - begin);
  }
  bool done() const { return done_; }
  std::uint64_t stuffed() const { return stuffed_; }

 private:
  enum class State { kLineStart, kInLine, kDot, kDotCr };
  Digest& digest_;
  // The status line's CRLF was just read, so the body starts at a line start.
  State state_ = State::kLineStart;
  bool done_ = false;
  std::uint64_t stuffed_ = 0;
};

}  // namespace

void Pop3Client::read_greeting() { expect_ok(stream_->read_line("the POP3 greeting"), "greeting"); }

void Pop3Client::send(std::string_view command) {
  std::string line(command);
  line += "\r\n";
  stream_->write_all(line);
}

std::string Pop3Client::reply(const char* what) {
  std::string line = stream_->read_line(what);
  expect_ok(line, what);
  return line;
}

std::string Pop3Client::command(std::string_view command, const char* what) {
  send(command);
  return reply(what);
}

void Pop3Client::login(const std::string& user, const std::string& password) {
  command("USER " + user, "USER");
  command("PASS " + password, "PASS");
}

void Pop3Client::retr(unsigned message, Digest& digest) {
  command("RETR " + std::to_string(message), "RETR");
  MultilineReader body(digest);
  for (;;) {
    const std::size_t used = body.feed(stream_->buffered());
    stream_->consume(used);
    if (body.done()) {
      return;
    }
    stream_->fill("the rest of the RETR body");
  }
}

unsigned Pop3Client::listing(std::string_view command, const char* what) {
  this->command(command, what);
  unsigned lines = 0;
  for (;;) {
    const std::string line = stream_->read_line(what);
    if (line == ".") {
      return lines;
    }
    ++lines;
  }
}

void Pop3Client::expect_ok(const std::string& line, const char* what) {
  if (line.rfind("+OK", 0) != 0) {
    throw Failure(std::string(what) + " failed: " + line);
  }
}

}  // namespace popbridge::bench
