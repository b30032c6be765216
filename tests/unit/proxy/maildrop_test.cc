#include "proxy/maildrop.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

Maildrop make(config::UidlFormat format = config::UidlFormat::kDovecot) {
  // Out of order and with a repeated UID, as a server may send them.
  return Maildrop({{30, 300, false}, {10, 100, false}, {20, 200, false}, {10, 100, false}},
                  0x6B082EA4, format);
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
  EXPECT_EQ(drop.deleted_uids(), std::vector<std::uint32_t>{20});
  // Numbers of the others do not shift.
  EXPECT_EQ(drop.find(3)->uid, 30u);
  drop.reset();
  EXPECT_EQ(drop.visible_count(), 3u);
  EXPECT_TRUE(drop.deleted_uids().empty());
}

TEST(Maildrop, DovecotUidlFormat) {
  Maildrop drop = make();
  EXPECT_EQ(drop.uidl(*drop.find(1)), "0000000A6B082EA4");
}

TEST(Maildrop, UidUidlFormat) {
  Maildrop drop = make(config::UidlFormat::kUid);
  EXPECT_EQ(drop.uidl(*drop.find(3)), "1795698340.30");
}

}  // namespace
}  // namespace popbridge::proxy
