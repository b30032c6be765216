// SPDX-License-Identifier: Apache-2.0
// What parsing a mailbox snapshot costs: the "* n FETCH (UID .. RFC822.SIZE .. FLAGS (..))"
// lines a poll of a large mailbox reads on every login, in the shapes Dovecot and Cyrus
// send. Prints nanoseconds per line for the parser and, measured in the same run, for
// the least any line parser does (find each line end and copy the line), and the ratio of
// the two. No target, just figures.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/imap/imap_parser.h"

namespace {

using Clock = std::chrono::steady_clock;
using popbridge::protocol::ImapEvents;
using popbridge::protocol::ImapParser;
using popbridge::protocol::ImapStatus;

// Keeps a sum of what arrives, so the compiler cannot drop the parse.
class SummingEvents : public ImapEvents {
 public:
  void on_status(const ImapStatus& status) override { sum_ += status.text.size(); }
  void on_continuation(std::string_view) override {}
  void on_capability(const std::vector<std::string_view>&) override {}
  void on_exists(std::uint32_t count) override { sum_ += count; }
  void on_expunge(std::uint32_t) override {}
  void on_fetch_begin(std::uint32_t sequence) override { sum_ += sequence; }
  void on_fetch_uid(std::uint32_t uid) override { sum_ += uid; }
  void on_fetch_size(std::uint64_t size) override { sum_ += size; }
  void on_fetch_flags(std::string_view flags) override { sum_ += flags.size(); }
  void on_fetch_guid(std::string_view guid) override { sum_ += guid.size(); }
  void on_body_begin(std::string_view, std::uint64_t, std::uint64_t) override {}
  void on_body_data(std::string_view chunk) override { sum_ += chunk.size(); }
  void on_body_end() override {}
  void on_fetch_end() override { ++lines_; }
  std::uint64_t sum() const { return sum_ + lines_; }

 private:
  std::uint64_t sum_ = 0;
  std::uint64_t lines_ = 0;
};

struct Shape {
  const char* name;
  const char* format;  // sequence, UID, size
};

std::string snapshot(const Shape& shape, int lines) {
  std::string text;
  char line[256];
  for (int n = 1; n <= lines; ++n) {
    const int size = std::snprintf(line, sizeof line, shape.format, n, n + n / 7, 900 + n % 40000);
    text.append(line, static_cast<std::size_t>(size));
  }
  text += "A3 OK Fetch completed (0.012 + 0.000 + 0.011 secs).\r\n";
  return text;
}

constexpr std::size_t kReadSize = 65536;  // what one socket read hands the parser

template <typename Work>
double best_nanoseconds_per_line(int lines, Work work) {
  double best = 1e30;
  for (int round = 0; round < 7; ++round) {
    const auto start = Clock::now();
    work();
    const double elapsed = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
    best = std::min(best, elapsed / lines);
  }
  return best;
}

}  // namespace

int main() {
  constexpr int kLines = 100'000;
  const Shape shapes[] = {
      {"Dovecot (UID, size, FLAGS)", "* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Seen))\r\n"},
      {"Cyrus (FLAGS, size, EMAILID)",
       "* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Seen $X-Me-Annot-2) "
       "EMAILID (Mc5fdf2a9c4e6a1b0d7f3e8a2))\r\n"},
  };
  std::uint64_t keep = 0;
  for (const Shape& shape : shapes) {
    const std::string text = snapshot(shape, kLines);
    const double floor = best_nanoseconds_per_line(kLines, [&] {
      std::string line;
      for (std::size_t at = 0; at < text.size();) {
        const char* end =
            static_cast<const char*>(std::memchr(text.data() + at, '\n', text.size() - at));
        const std::size_t next =
            end == nullptr ? text.size() : static_cast<std::size_t>(end - text.data()) + 1;
        line.assign(text, at, next - at);
        keep += line.size();
        at = next;
      }
    });
    const double parse = best_nanoseconds_per_line(kLines, [&] {
      SummingEvents events;
      ImapParser parser(events);
      for (std::size_t at = 0; at < text.size(); at += kReadSize) {
        parser.feed(std::string_view(text).substr(at, kReadSize));
      }
      keep += events.sum();
    });
    std::printf(
        "snapshot lines, %-30s parser %6.1f ns/line, line split and copy %5.1f ns/line, ratio "
        "%.1f\n",
        shape.name, parse, floor, parse / floor);
  }
  return keep == 0 ? 1 : 0;
}
