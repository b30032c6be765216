// SPDX-License-Identifier: Apache-2.0
#include "proxy/pop3/mailbox_history.h"

#include <gtest/gtest.h>

namespace popbridge::proxy {
namespace {

TEST(MailboxHistoryTest, ReportsTheUidvalidityAChangeReplaced) {
  MailboxHistory history;
  EXPECT_EQ(history.record("alice", 100), std::nullopt) << "first login: nothing to compare";
  EXPECT_EQ(history.record("alice", 100), std::nullopt);
  EXPECT_EQ(history.record("bob", 200), std::nullopt) << "per user";
  EXPECT_EQ(history.record("alice", 101), std::optional<std::uint32_t>(100));
  EXPECT_EQ(history.record("alice", 101), std::nullopt) << "reported once";
}

TEST(MailboxHistoryTest, StaysBounded) {
  MailboxHistory history;
  for (std::size_t i = 0; i < MailboxHistory::kMaxUsers + 10; ++i) {
    history.record("user" + std::to_string(i), 1);
  }
  // The newest user is still remembered.
  const std::string last = "user" + std::to_string(MailboxHistory::kMaxUsers + 9);
  EXPECT_EQ(history.record(last, 2), std::optional<std::uint32_t>(1));
}

}  // namespace
}  // namespace popbridge::proxy
