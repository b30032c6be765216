#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace popbridge::proxy {

// The POP3 view of the mailbox, fixed at login (RFC 1939 §4: numbers 1..n do not change
// during a session).
//
//   POP3 number n (1-based)  <->  index n-1 in messages_  <->  IMAP UID messages_[n-1].uid
//
// Messages are ordered by ascending UID. Deletion marks live only here until QUIT; new
// mail that arrives upstream during the session appears in the next session.
class Maildrop {
 public:
  struct Message {
    std::uint32_t uid = 0;
    std::uint64_t size = 0;  // RFC822.SIZE: octets with CRLF line ends
    bool deleted = false;
  };

  Maildrop() = default;
  // Sorts by UID and drops duplicates (a server may repeat a FETCH item).
  Maildrop(std::vector<Message> messages, std::uint32_t uidvalidity, config::UidlFormat format);

  std::size_t count() const { return messages_.size(); }
  // Not deleted: for STAT and the LIST header.
  std::size_t visible_count() const;
  std::uint64_t visible_octets() const;
  // The message for a POP3 number, or null if out of range or deleted.
  const Message* find(std::uint32_t number) const;
  bool mark_deleted(std::uint32_t number);
  void reset();  // RSET
  // UIDs marked deleted, ascending.
  std::vector<std::uint32_t> deleted_uids() const;
  std::string uidl(const Message& message) const;
  const std::vector<Message>& messages() const { return messages_; }

 private:
  std::vector<Message> messages_;
  std::uint32_t uidvalidity_ = 0;
  config::UidlFormat format_ = config::UidlFormat::kDovecot;
};

}  // namespace popbridge::proxy
