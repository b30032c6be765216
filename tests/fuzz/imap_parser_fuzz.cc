// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the IMAP codecs (and the capability list the client keeps). The parser is
// fed the same bytes once whole and once in pseudo-random pieces (one byte at a time included);
// both runs must agree, and an events sink checks the event grammar as it goes. The writer's
// quoting is decoded again and must give back its input.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/imap/capability_list.h"
#include "protocol/imap/imap_parser.h"
#include "protocol/imap/imap_writer.h"

namespace popbridge::protocol {
namespace {

void check(bool ok) {
  if (!ok) {
    std::abort();
  }
}

// Checks nesting and sizes, and logs events so that two runs can be compared.
class CheckingEvents : public ImapEvents {
 public:
  void on_status(const ImapStatus& status) override {
    check(!silent_);
    outside_fetch();
    log_ += "S" + std::string(status.tag) + "|" + std::to_string(static_cast<int>(status.kind)) +
            "|" + std::string(status.code) + "|" + std::string(status.text) + "\n";
    // A [CAPABILITY ...] code's atoms, as the IMAP client keeps them: each one is found.
    CapabilityList list;
    list.assign(status.code);
    for (std::string_view rest = status.code; !rest.empty();) {
      const std::size_t end = rest.find(' ');
      check(rest.substr(0, end).empty() || list.has(rest.substr(0, end)));
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    }
    after_event();
  }
  void on_continuation(std::string_view text) override {
    check(!silent_);
    outside_fetch();
    log_ += "+" + std::string(text) + "\n";
    after_event();
  }
  void on_capability(const std::vector<std::string_view>& capabilities) override {
    check(!silent_);
    outside_fetch();
    log_ += "C";
    CapabilityList list;  // what the IMAP client keeps of them
    list.assign(capabilities);
    for (std::string_view c : capabilities) {
      check(!c.empty() && c.find(' ') == std::string_view::npos);
      check(list.has(c));
      log_ += " " + std::string(c);
    }
    log_ += "\n";
    after_event();
  }
  void on_exists(std::uint32_t count) override {
    check(!silent_);
    outside_fetch();
    log_ += "E" + std::to_string(count) + "\n";
    after_event();
  }
  void on_expunge(std::uint32_t sequence) override {
    check(!silent_);
    outside_fetch();
    log_ += "X" + std::to_string(sequence) + "\n";
    after_event();
  }
  void on_fetch_begin(std::uint32_t sequence) override {
    check(!silent_);
    outside_fetch();
    in_fetch_ = true;
    log_ += "F" + std::to_string(sequence) + "\n";
    after_event();
  }
  void on_fetch_uid(std::uint32_t uid) override {
    check(!silent_);
    in_fetch_not_body();
    log_ += "U" + std::to_string(uid) + "\n";
    after_event();
  }
  void on_fetch_size(std::uint64_t size) override {
    check(!silent_);
    in_fetch_not_body();
    log_ += "Z" + std::to_string(size) + "\n";
    after_event();
  }
  void on_body_begin(std::string_view section, std::uint64_t origin, std::uint64_t size) override {
    check(!silent_);
    in_fetch_not_body();
    in_body_ = true;
    body_size_ = size;
    body_received_ = 0;
    body_chunks_ = 0;
    log_ += "B" + std::string(section) + "|" + std::to_string(origin) + "|" + std::to_string(size) +
            "\n";
    after_event();
  }
  void on_body_data(std::string_view chunk) override {
    check(!silent_);
    check(!closed_ && in_body_);
    check(!chunk.empty());
    body_received_ += chunk.size();
    ++body_chunks_;
    check(body_received_ <= body_size_);
    // Literal chunks are views of the bytes being fed; only a quoted value (one chunk,
    // the whole value) may come from elsewhere.
    const bool in_piece = chunk.data() >= piece_.data() &&
                          chunk.data() + chunk.size() <= piece_.data() + piece_.size();
    check(in_piece || (body_chunks_ == 1 && chunk.size() == body_size_));
    log_ += chunk;  // unmarked, so any split logs the same
    after_event();
  }
  void on_body_end() override {
    check(!silent_);
    check(!closed_ && in_body_);
    check(body_received_ == body_size_);
    in_body_ = false;
    log_ += "\nb\n";
    after_event();
  }
  void on_fetch_end() override {
    check(!silent_);
    in_fetch_not_body();
    in_fetch_ = false;
    log_ += "f\n";
    after_event();
  }
  void on_metadata(std::string_view entry, std::optional<std::string_view> value) override {
    check(!silent_);
    outside_fetch();
    check(!entry.empty());
    check(!value || value->size() <= ImapParser::kMaxMetadataValue);
    log_ += "M" + std::string(entry) + (value ? " " + std::string(*value) : " NIL") + "\n";
    after_event();
  }
  void on_other_untagged(std::string_view line) override {
    check(!silent_);
    outside_fetch();
    check(!line.empty() && line[0] == '*');
    log_ += "O" + std::string(line) + "\n";
    after_event();
  }

  void set_piece(std::string_view piece) { piece_ = piece; }
  // Makes the n-th event (counting from 1) reset the parser; 0 never does.
  void reset_at(ImapParser* parser, std::uint64_t n) {
    parser_ = parser;
    reset_at_ = n;
  }
  // The feed that was interrupted by reset() has returned.
  void end_silence() { silent_ = false; }
  // The driver called reset() between feeds.
  void forget() {
    closed_ = false;
    in_fetch_ = false;
    in_body_ = false;
  }
  // After a failed feed, no further event may arrive.
  void close() { closed_ = true; }
  const std::string& log() const { return log_; }

 private:
  void after_event() {
    if (++events_seen_ == reset_at_) {
      parser_->reset();
      forget();
      silent_ = true;  // nothing more from the bytes being fed
    }
  }
  void outside_fetch() const { check(!closed_ && !in_fetch_ && !in_body_); }
  void in_fetch_not_body() const { check(!closed_ && in_fetch_ && !in_body_); }

  std::string log_;
  std::string_view piece_;
  bool closed_ = false;
  bool in_fetch_ = false;
  bool in_body_ = false;
  std::uint64_t body_size_ = 0;
  std::uint64_t body_received_ = 0;
  std::size_t body_chunks_ = 0;
  ImapParser* parser_ = nullptr;
  std::uint64_t reset_at_ = 0;
  std::uint64_t events_seen_ = 0;
  bool silent_ = false;
};

struct Run {
  std::string log;
  bool failed = false;
  std::string error;
};

std::uint64_t next_random(std::uint64_t& state) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

// Feeds input whole, or in pseudo-random pieces (often of one byte) when split is set.
// With resets, the parser is also reset from inside the reset_event-th event and, now
// and then, between pieces; only the event grammar is checked then.
Run parse(std::string_view input, std::size_t max_line, std::uint64_t seed, bool split,
          bool resets = false) {
  CheckingEvents events;
  ImapParser parser(events, max_line);
  std::uint64_t state = seed | 1;
  if (resets) {
    events.reset_at(&parser, next_random(state) % 16 + 1);
  }
  bool ok = true;
  while (!input.empty()) {
    std::size_t size = input.size();
    const std::uint64_t r = next_random(state);
    if (split) {
      size = (r & 3) == 0 ? 1 : static_cast<std::size_t>((r >> 8) % 64) + 1;
      size = std::min(size, input.size());
    }
    if (resets && (r >> 20) % 8 == 0) {
      parser.reset();
      events.forget();
      check(!parser.failed() && parser.error().empty());
      ok = true;
    }
    // Copy each piece so that views of it outlive nothing they should not.
    const std::string piece(input.substr(0, size));
    input.remove_prefix(size);
    events.set_piece(piece);
    const bool fed = parser.feed(piece);
    events.end_silence();
    check(fed == !parser.failed());
    check(ok || !fed || resets);  // once failed, failed until reset
    if (!fed) {
      check(!parser.error().empty());
      events.close();
    }
    ok = fed;
  }
  return {events.log(), parser.failed(), parser.error()};
}

bool is_atom_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u > 0x20 && u < 0x7f && std::string_view("(){%*\"\\]").find(c) == std::string_view::npos;
}

// Decodes one argument as written by ImapCommand and checks it gives text back.
void check_argument(std::string_view text, bool allow_atom, bool literal_plus) {
  ImapCommand command("X");
  if (allow_atom) {
    command.astring(text);
  } else {
    command.string(text);
  }
  const std::vector<std::string> parts = command.render("t", literal_plus);
  std::string joined;
  for (const std::string& part : parts) {
    joined += part;
  }
  std::string_view wire = joined;
  check(wire.substr(0, 4) == "t X ");
  wire.remove_prefix(4);
  check(wire.size() >= 2 && wire.substr(wire.size() - 2) == "\r\n");
  wire.remove_suffix(2);
  if (!wire.empty() && wire[0] == '{') {
    const std::size_t close = wire.find('}');
    check(close != std::string_view::npos);
    std::string_view number = wire.substr(1, close - 1);
    if (literal_plus) {
      check(!number.empty() && number.back() == '+');
      number.remove_suffix(1);
    }
    check(number == std::to_string(text.size()));
    check(wire.substr(close + 1, 2) == "\r\n");
    check(wire.substr(close + 3) == text);
    check(parts.size() == (literal_plus ? 1u : 2u));
    if (!literal_plus) {
      check(parts[0].size() >= 2 && parts[0].substr(parts[0].size() - 2) == "\r\n");
    }
    return;
  }
  check(parts.size() == 1);
  if (!wire.empty() && wire[0] == '"') {
    check(wire.size() >= 2 && wire.back() == '"');
    std::string decoded;
    for (std::size_t i = 1; i + 1 < wire.size(); ++i) {
      const auto u = static_cast<unsigned char>(wire[i]);
      check(u >= 0x20 && u < 0x7f);
      if (wire[i] == '\\') {
        ++i;
        check(i + 1 < wire.size() && (wire[i] == '"' || wire[i] == '\\'));
      } else {
        check(wire[i] != '"');
      }
      decoded.push_back(wire[i]);
    }
    check(decoded == text);
    return;
  }
  check(allow_atom && wire == text && !text.empty());
  for (char c : wire) {
    check(is_atom_char(c));
  }
}

void check_uid_set(const std::uint8_t* data, std::size_t size) {
  std::vector<unsigned> uids;
  unsigned uid = 0;
  for (std::size_t i = 0; i < size && i < 64; ++i) {
    uid += 1 + data[i] % 3;  // ascending, with runs and gaps
    uids.push_back(uid);
  }
  std::vector<unsigned> decoded;
  const std::string set = compress_uid_set(uids);
  std::size_t pos = 0;
  while (pos < set.size()) {
    std::size_t end = set.find(',', pos);
    if (end == std::string::npos) {
      end = set.size();
    }
    const std::string range = set.substr(pos, end - pos);
    const std::size_t colon = range.find(':');
    const unsigned first = static_cast<unsigned>(std::stoul(range.substr(0, colon)));
    const unsigned last = colon == std::string::npos
                              ? first
                              : static_cast<unsigned>(std::stoul(range.substr(colon + 1)));
    check(first <= last);
    for (unsigned u = first; u <= last; ++u) {
      decoded.push_back(u);
    }
    pos = end + 1;
  }
  check(decoded == uids);
}

}  // namespace
}  // namespace popbridge::protocol

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace popbridge::protocol;
  if (size < 1) {
    return 0;
  }
  // The first octet picks a line limit: small ones reach the limit checks.
  const std::size_t max_line = (data[0] & 0x80) != 0 ? 65536 : 8 + data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  std::uint64_t seed = 1469598103934665603ull;
  for (char c : input) {
    seed = (seed ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  }
  const Run whole = parse(input, max_line, seed, false);
  const Run pieces = parse(input, max_line, seed, true);
  check(whole.log == pieces.log);
  check(whole.failed == pieces.failed);
  check(whole.error == pieces.error);
  parse(input, max_line, seed, true, true);

  const std::string_view text = input.substr(0, 2048);
  check_argument(text, true, false);
  check_argument(text, true, true);
  check_argument(text, false, false);
  check_uid_set(data, size);
  return 0;
}
