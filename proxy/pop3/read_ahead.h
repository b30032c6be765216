// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/mailstore/mail_store.h"

namespace popbridge::proxy {

// Messages fetched from the store before the client asks for them (limits.read_ahead).
// POP3 clients retrieve in order: while the client reads message n and sends RETR n+1,
// n+1 is already on its way, and the RETR is answered from memory instead of waiting a
// round trip to the upstream. A store that fetches in batches brings the next messages,
// as many as fit in limits.read_ahead together, in one exchange: one round trip for all.
//
// Only whole messages the store confirmed are ever handed out (the data-integrity rule
// of fetch() holds: a read-ahead that failed, was cut short or outgrew the limit is simply
// not there, and the RETR fetches as usual). The store fetches with BODY.PEEK, so nothing
// is marked \Seen by a read-ahead; the session does not read ahead with mark_seen.
//
// The store runs one operation at a time: while a read-ahead is in flight, the session
// waits with its next command until it settles.
class ReadAhead final : MessageSink, BatchSink {
 public:
  struct Message {
    std::uint64_t size = 0;
    std::string octets;
  };

  explicit ReadAhead(std::size_t max_size) : max_size_(max_size) {}

  // The octets held at most, together: a message may be read ahead if it fits alone.
  std::size_t budget() const { return max_size_; }
  bool fits(std::uint64_t listed_size) const { return max_size_ != 0 && listed_size <= max_size_; }
  // Fetches uid into memory; settled runs once the store answered (not after abandon()).
  void start(MailStore& store, std::uint32_t uid, std::uint64_t listed_size,
             std::function<void()> settled);
  // Fetches these messages in one exchange (MailStore::fetch_batch).
  void start_batch(MailStore& store, std::vector<BatchItem> items, std::function<void()> settled);
  bool in_flight() const { return in_flight_; }
  // Whole messages are held that nobody took yet.
  bool holding() const { return !held_.empty(); }
  // The message, if it was read ahead whole; it is no longer held afterwards.
  std::optional<Message> take(std::uint32_t uid);
  // Forgets what is held; returns how many whole messages nobody used.
  std::size_t drop();
  // The store was closed: the fetch in flight will never settle.
  void abandon();

 private:
  struct Held {
    std::uint32_t uid = 0;
    std::string octets;
  };

  void begin(std::uint32_t uid, std::optional<std::uint64_t> size);
  bool append(std::string_view chunk);
  void end(bool whole);
  // MessageSink (start)
  void on_message_begin(std::optional<std::uint64_t> whole_size) override;
  bool on_message_data(std::string_view chunk) override;
  // BatchSink (start_batch)
  void on_batch_message_begin(std::uint32_t uid, std::uint64_t size) override;
  void on_batch_message_data(std::string_view chunk) override;
  void on_batch_message_end(bool whole) override;
  void settle(const StoreResult& result);

  const std::size_t max_size_;
  bool in_flight_ = false;
  std::vector<Held> held_;  // whole messages, once the fetch settled ok
  // The message arriving now.
  std::uint32_t uid_ = 0;
  std::optional<std::uint64_t> size_;
  std::string octets_;
  bool too_large_ = false;
  std::vector<Held> arrived_;       // whole as far as the message goes; kept if the fetch ends ok
  std::size_t arrived_octets_ = 0;  // their octets together, kept as they arrive
  // Tells a settling fetch from one started after it was abandoned.
  std::uint64_t generation_ = 0;
  std::function<void()> settled_;
};

}  // namespace popbridge::proxy
