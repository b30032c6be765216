// SPDX-License-Identifier: Apache-2.0
#include "protocol/imap/capability_list.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

TEST(CapabilityListTest, FindsAtomsWithoutRegardToCase) {
  CapabilityList list;
  EXPECT_TRUE(list.empty());
  EXPECT_FALSE(list.has("IMAP4rev1"));
  list.assign("IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN");
  EXPECT_FALSE(list.empty());
  EXPECT_TRUE(list.has("IMAP4REV1"));
  EXPECT_TRUE(list.has("sasl-ir"));
  EXPECT_TRUE(list.has("AUTH=PLAIN"));
  EXPECT_TRUE(list.has("LITERAL+"));
  EXPECT_FALSE(list.has("LITERAL")) << "a prefix of an atom is not the atom";
  EXPECT_FALSE(list.has("AUTH=PLAINX"));
  EXPECT_FALSE(list.has("PLAIN")) << "a suffix of an atom is not the atom";
  EXPECT_FALSE(list.has(""));
}

TEST(CapabilityListTest, ExtraSpacesAndReplacing) {
  CapabilityList list;
  list.assign("  UIDPLUS   MOVE ");
  EXPECT_TRUE(list.has("uidplus"));
  EXPECT_TRUE(list.has("MOVE"));
  EXPECT_FALSE(list.has(""));
  list.assign(std::vector<std::string_view>{"IMAP4rev2", "", "METADATA"});
  EXPECT_FALSE(list.has("UIDPLUS")) << "assign replaces";
  EXPECT_TRUE(list.has("imap4rev2"));
  EXPECT_TRUE(list.has("METADATA"));
  list.clear();
  EXPECT_TRUE(list.empty());
  EXPECT_FALSE(list.has("METADATA"));
}

}  // namespace
}  // namespace popbridge::protocol
