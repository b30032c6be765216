// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "protocol/pop3/uidl_template.h"

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
  // Sorts by UID and drops duplicates (a server may repeat a FETCH item). guids is empty
  // unless the format needs them; then guids[i] belongs to messages[i]. The format must
  // outlive the Maildrop (it lives in the session's settings snapshot).
  // reused (upstream.reuse_xuidl) is empty, or one per message: a UIDL found in the
  // message (its X-UIDL header), which wins over the format.
  Maildrop(std::vector<Message> messages, std::vector<std::string> guids, std::uint32_t uidvalidity,
           const protocol::UidlTemplate& format,
           std::vector<std::optional<std::string>> reused = {});

  std::size_t count() const { return messages_.size(); }
  // Not deleted: for STAT and the LIST header.
  std::size_t visible_count() const;
  std::uint64_t visible_octets() const;
  // Every message, deleted or not: the mailbox as the session found it.
  std::uint64_t total_octets() const;
  // The message for a POP3 number, or null if out of range or deleted.
  const Message* find(std::uint32_t number) const;
  bool mark_deleted(std::uint32_t number);
  void reset();  // RSET
  // UIDs marked deleted, ascending.
  std::vector<std::uint32_t> deleted_uids() const;
  // The unique-id (RFC 1939 §7): the format's rendering, made valid (at most 70 printable
  // characters) and unique within the maildrop. A UIDL that would repeat gets "-2", "-3",
  // ... in message order, as Dovecot's pop3_uidl_duplicates = rename does.
  std::string uidl(const Message& message) const;
  // The same, appended to out: UIDL lists thousands of messages a poll, without a string
  // for each.
  void append_uidl(const Message& message, std::string& out) const;
  const std::vector<Message>& messages() const { return messages_; }

 private:
  std::string base_uidl(std::size_t index) const;
  protocol::UidlFields fields_of(std::size_t index) const;
  std::size_t index_of(const Message& message) const;
  // The "-N" of a message whose UIDL repeats an earlier one, or null.
  const std::uint32_t* rename_suffix(std::size_t index) const;

  std::vector<Message> messages_;
  std::vector<std::string> guids_;                  // empty, or one per message
  std::vector<std::optional<std::string>> reused_;  // empty, or one per message
  std::uint32_t uidvalidity_ = 0;
  const protocol::UidlTemplate* format_ = nullptr;
  // Index of a message whose UIDL repeats an earlier one -> its suffix number (rare).
  std::vector<std::pair<std::size_t, std::uint32_t>> duplicates_;
};

}  // namespace popbridge::proxy
