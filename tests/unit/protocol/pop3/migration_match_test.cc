// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/migration_match.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

constexpr std::string_view kHeader =
    "Return-Path: <a@example.org>\r\n"
    "Received: from mx.example.org by old.example.org;\r\n"
    "\tMon, 2 Mar 2026 10:00:00 +0000\r\n"
    "From: A <a@example.org>\r\n"
    "Subject: Caf\xc3\xa9 r\xc3\xa9union\r\n"
    "Message-ID: <1@example.org>\r\n"
    "Status: RO\r\n"
    "\r\n"
    "body text\r\n";

TEST(MigrationHeaderHash, SurvivesWhatMigrationDoesToAHeader) {
  const std::string original = migration_header_hash(kHeader);
  EXPECT_EQ(original.size(), 64u);
  // LF line ends, refolded, volatile fields dropped or changed, 8-bit re-encoded, another
  // body: the same message.
  EXPECT_EQ(migration_header_hash("Received: from mx.example.org   by old.example.org;\n"
                                  " Mon, 2 Mar 2026 10:00:00 +0000\n"
                                  "From: A <a@example.org>\n"
                                  "Subject: Caf\xe9 r\xe9union\n"
                                  "Message-ID: <1@example.org>\n"
                                  "X-UID: 77\n"
                                  "X-Keywords: $Seen\n"
                                  "Status: O\n"
                                  "\n"
                                  "other body\n"),
            original);
  EXPECT_EQ(migration_header_hash(std::string(kHeader.substr(0, kHeader.find("\r\n\r\n") + 2))),
            original)
      << "a header without its empty line (TOP n 0 of a header-only message)";
}

TEST(MigrationHeaderHash, TellsDifferentMessagesApart) {
  const std::string original = migration_header_hash(kHeader);
  std::string other(kHeader);
  other.replace(other.find("<1@"), 3, "<2@");
  EXPECT_NE(migration_header_hash(other), original);
  other = kHeader;
  other.replace(other.find("10:00:00"), 8, "10:00:01");
  EXPECT_NE(migration_header_hash(other), original) << "a continuation line counts";
  EXPECT_NE(migration_header_hash(""), original);
}

MigrationMessage message(std::string id, std::uint64_t size, std::string hash,
                         std::string message_id = {}) {
  return MigrationMessage{std::move(id), size, std::move(hash), std::move(message_id)};
}

TEST(MatchMigratedMessages, UniqueHashesPairWhateverTheOrder) {
  const MigrationMatch got = match_migrated_messages(
      {message("old-a", 10, "ha"), message("old-b", 20, "hb"), message("old-c", 30, "hc")},
      {message("7", 12, "hc"), message("8", 21, "ha"), message("9", 5, "hnew")});
  EXPECT_EQ(got.pairs, (std::vector<std::pair<std::size_t, std::size_t>>{{0, 1}, {2, 0}}))
      << "sizes may differ: a migration tool adds a header";
  EXPECT_EQ(got.unmatched_old, std::vector<std::size_t>{1});
  EXPECT_EQ(got.unmatched_new, std::vector<std::size_t>{2});
  EXPECT_EQ(got.ambiguous, 0u);
}

TEST(MatchMigratedMessages, IdenticalHeadersPairOnlyByADistinctSize) {
  const MigrationMatch got = match_migrated_messages(
      {message("o1", 100, "dup"), message("o2", 200, "dup"), message("o3", 200, "dup")},
      {message("1", 200, "dup"), message("2", 100, "dup"), message("3", 200, "dup")});
  EXPECT_EQ(got.pairs, (std::vector<std::pair<std::size_t, std::size_t>>{{0, 1}}));
  EXPECT_EQ(got.unmatched_old, (std::vector<std::size_t>{1, 2})) << "never guessed";
  EXPECT_EQ(got.ambiguous, 2u);
}

TEST(MatchMigratedMessages, MessageIdAndSizeForRewrittenHeaders) {
  const MigrationMatch got = match_migrated_messages(
      {message("o1", 100, "h-old", "<m1@x>"), message("o2", 100, "h-old2", "<m2@x>"),
       message("o3", 100, "h-old3", "")},
      {message("1", 100, "h-new", "<m1@x>"), message("2", 101, "h-new2", "<m2@x>"),
       message("3", 100, "h-new3", "")});
  EXPECT_EQ(got.pairs, (std::vector<std::pair<std::size_t, std::size_t>>{{0, 0}}));
  EXPECT_EQ(got.unmatched_old, (std::vector<std::size_t>{1, 2}));
  EXPECT_EQ(got.unmatched_new, (std::vector<std::size_t>{1, 2}));
}

TEST(MatchMigratedMessages, EmptySides) {
  EXPECT_TRUE(match_migrated_messages({}, {}).pairs.empty());
  EXPECT_EQ(match_migrated_messages({message("o", 1, "h")}, {}).unmatched_old.size(), 1u);
  EXPECT_EQ(match_migrated_messages({}, {message("1", 1, "h")}).unmatched_new.size(), 1u);
}

}  // namespace
}  // namespace popbridge::protocol
