// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::protocol {

// Matching a user's messages on the old POP3 server to the same messages on the upstream
// after a migration tool copied them (new UIDs), so the old UIDLs can be carried over.
// Like Dovecot's pop3-migration plugin, the key is a hash of the header section that
// survives what migration tools and servers do to it: it leaves out the fields they add
// or rewrite (Return-Path, Status, X-UID, X-Keywords, ...), and ignores line ends,
// folding, blanks and 8-bit octets (some servers re-encode them).

// The hash (lower-case hex SHA-256) of a header section: the text up to the first empty
// line, CRLF or LF line ends; anything after that line is ignored.
std::string migration_header_hash(std::string_view header);

// One message as a side lists it.
struct MigrationMessage {
  std::string id;  // old side: its UIDL; new side: its UID in decimal
  std::uint64_t size = 0;
  std::string header_hash;
  std::string message_id;  // the Message-ID field, empty without one
};

struct MigrationMatch {
  std::vector<std::pair<std::size_t, std::size_t>> pairs;  // (old index, new index)
  std::vector<std::size_t> unmatched_old;
  std::vector<std::size_t> unmatched_new;
  std::size_t ambiguous = 0;  // old messages left unmatched because more than one fit
};

// Pairs messages that can only be each other; nothing is guessed:
//  1. equal header hash, unique on both sides;
//  2. within a group of equal hashes (identical headers), equal size, unique in the group;
//  3. for what is left, equal Message-ID and size, unique on both sides.
// Everything else stays unmatched (its UIDL will be a fresh one).
MigrationMatch match_migrated_messages(const std::vector<MigrationMessage>& old_messages,
                                       const std::vector<MigrationMessage>& new_messages);

}  // namespace popbridge::protocol
