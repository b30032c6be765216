// SPDX-License-Identifier: Apache-2.0
#include "protocol/common/header_field.h"

#include <gtest/gtest.h>

namespace popbridge::protocol {
namespace {

TEST(FirstHeaderField, FindsTheFirstFieldCaseInsensitively) {
  const std::string header = "From: a@example.org\r\nx-uidl: one\r\nX-UIDL: two\r\n\r\n";
  EXPECT_EQ(first_header_field(header, "X-UIDL"), "one");
  EXPECT_EQ(first_header_field(header, "from"), "a@example.org");
  EXPECT_EQ(first_header_field(header, "Subject"), std::nullopt);
}

TEST(FirstHeaderField, TrimsAndUnfolds) {
  EXPECT_EQ(first_header_field("X-UIDL:   spaced  \t\r\n", "X-UIDL"), "spaced");
  EXPECT_EQ(first_header_field("X-UIDL: folded\r\n  on two\r\nTo: x\r\n", "X-UIDL"),
            "folded  on two");
  EXPECT_EQ(first_header_field("X-UIDL:\r\n", "X-UIDL"), "");
  EXPECT_EQ(first_header_field("X-UIDL : old-style\n", "X-UIDL"), "old-style");
}

TEST(FirstHeaderField, StopsAtTheEndOfTheHeader) {
  EXPECT_EQ(first_header_field("To: x\r\n\r\nX-UIDL: in the body\r\n", "X-UIDL"), std::nullopt);
  EXPECT_EQ(first_header_field("To: x\n\nX-UIDL: body\n", "X-UIDL"), std::nullopt);
  EXPECT_EQ(first_header_field("", "X-UIDL"), std::nullopt);
}

TEST(FirstHeaderField, IgnoresContinuationsAndLinesWithoutAColon) {
  EXPECT_EQ(first_header_field("Subject: a\r\n X-UIDL: not a field\r\nGarbage\r\nX-UIDL: b\r\n",
                               "X-UIDL"),
            "b");
  EXPECT_EQ(first_header_field("X-UIDL-Other: no\r\nX-UIDLX: no\r\n", "X-UIDL"), std::nullopt);
}

}  // namespace
}  // namespace popbridge::protocol
