// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/maildrop.h"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace popbridge::proxy {
namespace {

const protocol::UidlTemplate& preset(std::string_view text) {
  static std::vector<std::unique_ptr<protocol::UidlTemplate>> kept;
  kept.push_back(
      std::make_unique<protocol::UidlTemplate>(*protocol::UidlTemplate::parse(text, nullptr)));
  return *kept.back();
}

Maildrop make(std::string_view format = protocol::UidlTemplate::kDovecot) {
  // Out of order and with a repeated UID, as a server may send them.
  return Maildrop({{30, 300, false}, {10, 100, false}, {20, 200, false}, {10, 100, false}}, {},
                  0x6B082EA4, preset(format));
}

TEST(Maildrop, NumbersFollowAscendingUids) {
  Maildrop drop = make();
  ASSERT_EQ(drop.count(), 3u);
  EXPECT_EQ(drop.find(1)->uid, 10u);
  EXPECT_EQ(drop.find(2)->uid, 20u);
  EXPECT_EQ(drop.find(3)->uid, 30u);
  EXPECT_EQ(drop.find(0), nullptr);
  EXPECT_EQ(drop.find(4), nullptr);
  EXPECT_EQ(drop.visible_octets(), 600u);
}

TEST(Maildrop, DeletedMessagesAreHiddenUntilReset) {
  Maildrop drop = make();
  EXPECT_TRUE(drop.mark_deleted(2));
  EXPECT_FALSE(drop.mark_deleted(2)) << "a second DELE of the same message is an error";
  EXPECT_EQ(drop.find(2), nullptr);
  EXPECT_EQ(drop.visible_count(), 2u);
  EXPECT_EQ(drop.visible_octets(), 400u);
  EXPECT_EQ(drop.total_octets(), 600u) << "the mailbox as found, deleted messages included";
  EXPECT_EQ(drop.deleted_uids(), std::vector<std::uint32_t>{20});
  // Numbers of the others do not shift.
  EXPECT_EQ(drop.find(3)->uid, 30u);
  drop.reset();
  EXPECT_EQ(drop.visible_count(), 3u);
  EXPECT_TRUE(drop.deleted_uids().empty());
}

TEST(Maildrop, DovecotUidlFormatIsLowerCaseHexLikeDovecotsPop3) {
  // Dovecot 2.3's %08Xu%08Xv prints with %llx: lower case. Upper case made every migrated
  // client download its whole mailbox again.
  Maildrop drop = make();
  EXPECT_EQ(drop.uidl(*drop.find(1)), "0000000a6b082ea4");
}

TEST(Maildrop, UidUidlFormat) {
  Maildrop drop = make(protocol::UidlTemplate::kUid);
  EXPECT_EQ(drop.uidl(*drop.find(3)), "1795698340.30");
}

TEST(Maildrop, RepeatedUidlsGetDovecotsRenameSuffix) {
  // %v alone repeats for every message: the first keeps it, the next get -2, -3.
  Maildrop drop = make("%v");
  EXPECT_EQ(drop.uidl(*drop.find(1)), "1795698340");
  EXPECT_EQ(drop.uidl(*drop.find(2)), "1795698340-2");
  EXPECT_EQ(drop.uidl(*drop.find(3)), "1795698340-3");
}

TEST(Maildrop, GuidsFollowTheirMessagesThroughSorting) {
  Maildrop drop({{30, 300, false}, {10, 100, false}, {20, 200, false}}, {"g30", "g10", "g20"}, 7,
                preset("%g"));
  EXPECT_EQ(drop.uidl(*drop.find(1)), "g10");
  EXPECT_EQ(drop.uidl(*drop.find(2)), "g20");
  EXPECT_EQ(drop.uidl(*drop.find(3)), "g30");
}

TEST(Maildrop, InvalidUidlsAreReplacedByTheirMd5) {
  Maildrop drop({{1, 10, false}, {2, 20, false}}, {std::string(80, 'a'), "has space"}, 7,
                preset("%g"));
  const std::string long_one = drop.uidl(*drop.find(1));
  EXPECT_EQ(long_one.size(), 32u);
  EXPECT_EQ(long_one, protocol::md5_hex(std::string(80, 'a')));
  EXPECT_TRUE(protocol::valid_uidl(drop.uidl(*drop.find(2))));
}

TEST(Maildrop, ReusedUidlsWinAndRepeatsAreRenamed) {
  // reused follows the messages as given (unsorted); 20 has no X-UIDL, 40 repeats 30's,
  // 50's is not a valid UIDL.
  Maildrop drop({{30, 3, false}, {10, 1, false}, {20, 2, false}, {40, 4, false}, {50, 5, false}},
                {}, 0x6B082EA4, preset(protocol::UidlTemplate::kDovecot),
                {"old-30", "old-10", std::nullopt, "old-30", "has blank"});
  EXPECT_EQ(drop.uidl(*drop.find(1)), "old-10");
  EXPECT_EQ(drop.uidl(*drop.find(2)), "000000146b082ea4");
  EXPECT_EQ(drop.uidl(*drop.find(3)), "old-30");
  EXPECT_EQ(drop.uidl(*drop.find(4)), "old-30-2");
  EXPECT_EQ(drop.uidl(*drop.find(5)), protocol::md5_hex("has blank"));
}

TEST(Maildrop, AnEmptyReusedUidlFallsBackToTheFormat) {
  Maildrop drop({{10, 1, false}, {20, 2, false}}, {}, 0x6B082EA4,
                preset(protocol::UidlTemplate::kDovecot), {"old-10", ""});
  EXPECT_EQ(drop.uidl(*drop.find(1)), "old-10");
  EXPECT_EQ(drop.uidl(*drop.find(2)), "000000146b082ea4");
}

TEST(Maildrop, ReusedUidlsIgnoredWhenNoMessageHasOne) {
  Maildrop drop({{10, 1, false}}, {}, 0x6B082EA4, preset(protocol::UidlTemplate::kDovecot),
                {std::nullopt});
  EXPECT_EQ(drop.uidl(*drop.find(1)), "0000000a6b082ea4");
}

// The UIDL listing appends each UIDL to one buffer: the same text uidl() gives, whatever
// the kind (template, invalid and replaced by its MD5, renamed repeat, reused X-UIDL).
TEST(Maildrop, AppendedUidlsAreTheUidlsOneByOne) {
  const std::vector<Maildrop> drops = [] {
    std::vector<Maildrop> all;
    for (std::string_view format :
         {protocol::UidlTemplate::kDovecot, protocol::UidlTemplate::kUid, std::string_view("%v"),
          std::string_view("x%LXu-%08v"), std::string_view("%Mu")}) {
      all.push_back(make(format));
    }
    all.emplace_back(std::vector<Maildrop::Message>{{1, 10, false}, {2, 20, false}},
                     std::vector<std::string>{std::string(80, 'a'), "has space"}, 7, preset("%g"));
    all.emplace_back(std::vector<Maildrop::Message>{{30, 3, false}, {10, 1, false}, {40, 4, false}},
                     std::vector<std::string>{}, 0x6B082EA4,
                     preset(protocol::UidlTemplate::kDovecot),
                     std::vector<std::optional<std::string>>{"old-30", std::nullopt, "old-30"});
    return all;
  }();
  for (const Maildrop& drop : drops) {
    std::string one_by_one = "+OK\r\n";
    std::string appended = one_by_one;
    for (const Maildrop::Message& message : drop.messages()) {
      one_by_one += drop.uidl(message) + "\r\n";
      drop.append_uidl(message, appended);
      appended += "\r\n";
    }
    EXPECT_EQ(appended, one_by_one);
  }
}

TEST(MaildropDeathTest, AMessageOfAnotherMaildropStopsTheProcess) {
  Maildrop first({{10, 1, false}}, {}, 1, preset(protocol::UidlTemplate::kDovecot));
  Maildrop second({{10, 1, false}}, {}, 1, preset(protocol::UidlTemplate::kDovecot));
  const Maildrop::Message* stale = first.find(1);
  ASSERT_NE(stale, nullptr);
  EXPECT_DEATH(static_cast<void>(second.uidl(*stale)), "invariant_failed");
}

}  // namespace
}  // namespace popbridge::proxy
