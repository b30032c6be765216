// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/mailstore/mail_store.h"

namespace popbridge::proxy {

// One message fetched from the store before the client asks for it (limits.read_ahead).
// POP3 clients retrieve in order: while the client reads message n and sends RETR n+1,
// n+1 is already on its way, and the RETR is answered from memory instead of waiting a
// round trip to the upstream.
//
// Only whole messages the store confirmed are ever handed out (the data-integrity rule
// of fetch() holds: a read-ahead that failed, was cut short or outgrew the limit is simply
// not there, and the RETR fetches as usual). The store fetches with BODY.PEEK, so nothing
// is marked \Seen by a read-ahead; the session does not read ahead with mark_seen.
//
// The store runs one operation at a time: while a read-ahead is in flight, the session
// waits with its next command until it settles.
class ReadAhead final : MessageSink {
 public:
  struct Message {
    std::uint64_t size = 0;
    std::string octets;
  };

  explicit ReadAhead(std::size_t max_size) : max_size_(max_size) {}

  // Whether a message of this listed size may be read ahead.
  bool fits(std::uint64_t listed_size) const { return max_size_ != 0 && listed_size <= max_size_; }
  // Fetches uid into memory; settled runs once the store answered (not after abandon()).
  void start(MailStore& store, std::uint32_t uid, std::uint64_t listed_size,
             std::function<void()> settled);
  bool in_flight() const { return in_flight_; }
  // The message, if it was read ahead whole; the read-ahead is empty afterwards.
  std::optional<Message> take(std::uint32_t uid);
  // Forgets what is held; true if that was a whole message nobody used.
  bool drop();
  // The store was closed: the fetch in flight will never settle.
  void abandon();

 private:
  // MessageSink
  void on_message_begin(std::optional<std::uint64_t> whole_size) override;
  bool on_message_data(std::string_view chunk) override;
  void settle(const StoreResult& result);

  const std::size_t max_size_;
  bool in_flight_ = false;
  bool whole_ = false;  // the store confirmed every octet of uid_
  bool too_large_ = false;
  std::uint32_t uid_ = 0;
  std::optional<std::uint64_t> size_;
  std::string octets_;
  // Tells a settling fetch from one started after it was abandoned.
  std::uint64_t generation_ = 0;
  std::function<void()> settled_;
};

}  // namespace popbridge::proxy
