// SPDX-License-Identifier: Apache-2.0
#include "protocol/pop3/uidl_map.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

TEST(UidlMapTest, ReadsTheValidityAndOneUidlPerUid) {
  const UidlMapParse parsed = parse_uidl_map(
      "# written by a migration tool\r\n"
      "\n"
      "uidvalidity 1796454268\r\n"
      "1 AAAA0001-old\r\n"
      "7\t0000000a4b3c2d1e  \n"
      "9 UID9-from-courier");
  ASSERT_TRUE(parsed.map);
  EXPECT_TRUE(parsed.problems.empty());
  EXPECT_EQ(parsed.map->uidvalidity, 1796454268u);
  EXPECT_EQ(parsed.map->uidls,
            (std::unordered_map<std::uint32_t, std::string>{
                {1, "AAAA0001-old"}, {7, "0000000a4b3c2d1e"}, {9, "UID9-from-courier"}}));
  EXPECT_EQ(format_uidl_map(*parsed.map),
            "uidvalidity 1796454268\n1 AAAA0001-old\n7 0000000a4b3c2d1e\n9 UID9-from-courier\n");
}

TEST(UidlMapTest, BadLinesAreLeftOutAndNamed) {
  const UidlMapParse parsed = parse_uidl_map(
      "uidvalidity 5\n"
      "x bad-uid\n"    // line 2
      "0 zero-uid\n"   // line 3
      "3 has blank\n"  // line 4: two fields only, the rest is the UIDL
      "4 " +
      std::string(71, 'a') +
      "\n"  // line 5: too long
      "5 good\n"
      "5 again\n"  // line 7
      "6 good\n"   // line 8: the same UIDL as UID 5
      "8\n");      // line 9
  ASSERT_TRUE(parsed.map);
  EXPECT_EQ(parsed.map->uidls, (std::unordered_map<std::uint32_t, std::string>{{5, "good"}}));
  EXPECT_EQ(
      parsed.problems,
      (std::vector<std::string>{
          "line 2: expected a UID and a UIDL", "line 3: expected a UID and a UIDL",
          "line 4: not a UIDL (1-70 printable characters, no blanks)",
          "line 5: not a UIDL (1-70 printable characters, no blanks)", "line 7: UID 5 again",
          "line 8: UIDL good again", "line 9: not a UIDL (1-70 printable characters, no blanks)"}));
}

TEST(UidlMapTest, WithoutTheValidityFirstTheFileIsUnusable) {
  EXPECT_FALSE(parse_uidl_map("1 AAAA\nuidvalidity 5\n").map);
  EXPECT_FALSE(parse_uidl_map("uidvalidity 0\n").map);
  EXPECT_FALSE(parse_uidl_map("uidvalidity x\n").map);
  EXPECT_FALSE(parse_uidl_map("# only a comment\n").map);
  EXPECT_FALSE(parse_uidl_map("").map);
  const UidlMapParse empty = parse_uidl_map("uidvalidity 9\n");
  ASSERT_TRUE(empty.map);
  EXPECT_TRUE(empty.map->uidls.empty());
}

}  // namespace
}  // namespace popbridge::protocol
