// SPDX-License-Identifier: Apache-2.0
// Read-ahead (limits.read_ahead) in the POP3 session, with a fake store: what is fetched
// before the client asks, one message or a batch, and that only whole messages the store
// confirmed are ever served from it.
#include <gtest/gtest.h>

#include <algorithm>

#include "tests/support/pop3_answers.h"
#include "tests/support/session_harness.h"
#include "tests/support/session_test.h"

namespace popbridge::testing {
namespace {

std::shared_ptr<FakeMailbox> five_small_messages() {
  auto mailbox = std::make_shared<FakeMailbox>();
  for (std::uint32_t uid = 1; uid <= 5; ++uid) {
    mailbox->messages.push_back({uid,
                                 "Subject: " + std::to_string(uid) + "\r\n\r\n.dot\r\nbody " +
                                     std::to_string(uid) + "\r\n" + std::string(1500, 'a') + "\r\n",
                                 std::nullopt});
  }
  mailbox->chunk_size = 500;
  return mailbox;
}

std::size_t fetches_of(const FakeMailbox& mailbox, std::uint32_t uid) {
  return static_cast<std::size_t>(std::count(mailbox.fetches.begin(), mailbox.fetches.end(), uid));
}

// Logs in, retrieves 1 and 2, and waits until message 3 is being read ahead.
bool retrieve_two_and_wait_for_read_ahead(SessionHarness& session, const FakeMailbox& mailbox) {
  return session.read_until("\r\n").starts_with("+OK") &&
         session.command("USER alice").starts_with("+OK") &&
         session.command("PASS secret").starts_with("+OK") &&
         session.multiline("RETR 1").starts_with("+OK") &&
         session.multiline("RETR 2").starts_with("+OK") &&
         session.run_until([&] { return fetches_of(mailbox, 3) == 1; }, std::chrono::seconds(10));
}

TEST_F(SessionTest, InOrderRetrievalFetchesTheNextMessageBeforeTheClientAsks) {
  auto mailbox = five_small_messages();
  SessionHarness session(mailbox);
  login(session);
  EXPECT_EQ(unstuffed(session.multiline("RETR 1")), mailbox->messages[0].body);
  EXPECT_EQ(fetches_of(*mailbox, 2), 0u) << "one RETR is not yet an order";
  EXPECT_EQ(unstuffed(session.multiline("RETR 2")), mailbox->messages[1].body);
  // The client has not asked for 3: the session fetches it on its own.
  ASSERT_TRUE(
      session.run_until([&] { return fetches_of(*mailbox, 3) == 1; }, std::chrono::seconds(10)));
  const std::string third = session.multiline("RETR 3");
  EXPECT_TRUE(
      third.starts_with("+OK " + std::to_string(mailbox->messages[2].body.size()) + " octets\r\n"))
      << third;
  EXPECT_EQ(unstuffed(third), mailbox->messages[2].body);
  EXPECT_EQ(fetches_of(*mailbox, 3), 1u) << "RETR 3 was answered from the read-ahead";
  EXPECT_EQ(unstuffed(session.multiline("RETR 4")), mailbox->messages[3].body);
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 2);
  EXPECT_EQ(session.command_counts(protocol::Pop3Verb::kRetr), (std::pair<double, double>{4, 0}));
  // 5 was read ahead and never asked for: dropped, and QUIT still commits.
  ASSERT_TRUE(
      session.run_until([&] { return fetches_of(*mailbox, 5) == 1; }, std::chrono::seconds(10)));
  EXPECT_TRUE(session.command("DELE 1").starts_with("+OK"));
  EXPECT_TRUE(session.command("QUIT").starts_with("+OK"));
  ASSERT_EQ(mailbox->commits.size(), 1u);
  EXPECT_EQ(mailbox->commits[0], (std::vector<std::uint32_t>{1}));
  EXPECT_TRUE(session.wait_finished());
  EXPECT_EQ(session.metrics().read_ahead_unused.Value(), 1);
}

TEST_F(SessionTest, CommandsWhileAReadAheadIsInFlightWaitForItInOrder) {
  auto mailbox = five_small_messages();
  mailbox->chunk_size = 10;  // the read-ahead takes many loop turns
  SessionHarness session(mailbox);
  login(session);
  session.multiline("RETR 1");
  session.multiline("RETR 2");
  session.send("DELE 2\r\nRETR 3\r\nSTAT\r\n");
  const std::string answers =
      session.read_until("body 3\r\n" + std::string(1500, 'a') + "\r\n.\r\n+OK 4 ");
  EXPECT_TRUE(answers.starts_with("+OK message 2 deleted\r\n+OK ")) << answers;
  EXPECT_EQ(fetches_of(*mailbox, 3), 1u);
}

TEST_F(SessionTest, NoReadAheadWhenRetrSetsSeenOrTheMessageIsLargeOrCommandsArePipelined) {
  auto check = [](std::string_view yaml, bool pipelined, std::size_t large_size) {
    auto mailbox = five_small_messages();
    mailbox->messages[2].body += std::string(large_size, 'b') + "\r\n";
    SessionHarness session(mailbox, yaml);
    login(session);
    if (pipelined) {
      session.send("RETR 1\r\nRETR 2\r\nRETR 3\r\n");
      // Message 3 ends with the line added above (empty here), then the terminator.
      const std::string third = session.read_until("body 3\r\n" + std::string(1500, 'a') + "\r\n" +
                                                   std::string(large_size, 'b') + "\r\n.\r\n");
      EXPECT_TRUE(third.ends_with("\r\n.\r\n")) << yaml;
    } else {
      session.multiline("RETR 1");
      session.multiline("RETR 2");
      EXPECT_EQ(fetches_of(*mailbox, 3), 0u) << yaml;
      EXPECT_EQ(unstuffed(session.multiline("RETR 3")), mailbox->messages[2].body);
    }
    EXPECT_EQ(fetches_of(*mailbox, 3), 1u) << yaml;
    EXPECT_EQ(session.metrics().read_ahead_used.Value(), 0) << yaml;
  };
  check("  mark_seen: true\n", false, 0);  // continues upstream:
  check("limits:\n  read_ahead: 0\n", false, 0);
  check("limits:\n  read_ahead: 2KiB\n", false, 4096);
  check("", true, 0);
}

TEST_F(SessionTest, ReadAheadOfAMessageLargerThanListedIsNotUsed) {
  auto mailbox = five_small_messages();
  mailbox->messages[2].listed_size = 100;  // the snapshot says it fits
  mailbox->messages[2].body += std::string(8000, 'c') + "\r\n";
  SessionHarness session(mailbox, "limits:\n  read_ahead: 4KiB\n");
  ASSERT_TRUE(retrieve_two_and_wait_for_read_ahead(session, *mailbox));
  EXPECT_EQ(unstuffed(session.multiline("RETR 3")), mailbox->messages[2].body);
  EXPECT_EQ(fetches_of(*mailbox, 3), 2u) << "fetched again, whole, for the RETR";
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 0);
}

TEST_F(SessionTest, FailedReadAheadNeverReachesTheClientAsAMessage) {
  {
    // Gone upstream: the RETR asks the store itself and relays its answer.
    auto mailbox = five_small_messages();
    mailbox->missing = {3};
    SessionHarness session(mailbox);
    ASSERT_TRUE(retrieve_two_and_wait_for_read_ahead(session, *mailbox));
    EXPECT_TRUE(session.multiline("RETR 3").starts_with("-ERR"));
    EXPECT_EQ(unstuffed(session.multiline("RETR 4")), mailbox->messages[3].body);
  }
  {
    // The connection breaks halfway through the read-ahead: the part that arrived is
    // never sent; the client gets an error for RETR 3, not a short message.
    auto mailbox = five_small_messages();
    mailbox->break_fetch = {{3, 700}};
    SessionHarness session(mailbox);
    ASSERT_TRUE(retrieve_two_and_wait_for_read_ahead(session, *mailbox));
    session.send("RETR 3\r\n");
    EXPECT_TRUE(session.wait_closed());
    const std::string got = session.read_until("never");
    EXPECT_TRUE(got.starts_with("-ERR [SYS/TEMP]")) << got;
    EXPECT_EQ(got.find("Subject: 3"), std::string::npos) << got;
  }
}

// A store that fetches in batches (IMAP): the messages after n, as many as fit in
// limits.read_ahead together, come in one exchange; the next batch starts when the
// client has used them up.
TEST_F(SessionTest, BatchReadAheadAnswersTheNextRetrsFromOneExchange) {
  auto mailbox = five_small_messages();
  mailbox->batches = true;
  SessionHarness session(mailbox, "limits:\n  read_ahead: 4KiB\n");  // two of ~1.5 KiB
  login(session);
  EXPECT_EQ(unstuffed(session.multiline("RETR 1")), mailbox->messages[0].body);
  EXPECT_EQ(unstuffed(session.multiline("RETR 2")), mailbox->messages[1].body);
  ASSERT_TRUE(session.run_until([&] { return mailbox->batch_fetches.size() == 1; },
                                std::chrono::seconds(10)));
  EXPECT_EQ(mailbox->batch_fetches[0], (std::vector<std::uint32_t>{3, 4}));
  EXPECT_EQ(unstuffed(session.multiline("RETR 3")), mailbox->messages[2].body);
  EXPECT_EQ(mailbox->batch_fetches.size(), 1u) << "4 is still held: no new batch yet";
  const std::string fourth = session.multiline("RETR 4");
  EXPECT_TRUE(
      fourth.starts_with("+OK " + std::to_string(mailbox->messages[3].body.size()) + " octets\r\n"))
      << fourth;
  EXPECT_EQ(unstuffed(fourth), mailbox->messages[3].body);
  ASSERT_TRUE(session.run_until([&] { return mailbox->batch_fetches.size() == 2; },
                                std::chrono::seconds(10)));
  EXPECT_EQ(mailbox->batch_fetches[1], (std::vector<std::uint32_t>{5}));
  EXPECT_EQ(unstuffed(session.multiline("RETR 5")), mailbox->messages[4].body);
  EXPECT_EQ(mailbox->fetches, (std::vector<std::uint32_t>{1, 2})) << "3-5 from the batches";
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 3);
  EXPECT_TRUE(session.command("QUIT").starts_with("+OK"));
  EXPECT_TRUE(session.wait_finished());
  EXPECT_EQ(session.metrics().read_ahead_unused.Value(), 0);
}

TEST_F(SessionTest, BatchReadAheadServesPipelinedRetrsAndCountsWhatWasNotUsed) {
  auto mailbox = five_small_messages();
  mailbox->batches = true;
  SessionHarness session(mailbox);
  login(session);
  session.send("RETR 1\r\nRETR 2\r\nRETR 3\r\nQUIT\r\n");
  session.read_until("body 3\r\n" + std::string(1500, 'a') + "\r\n.\r\n+OK");
  EXPECT_TRUE(session.wait_finished());
  ASSERT_EQ(mailbox->batch_fetches.size(), 1u);
  EXPECT_EQ(mailbox->batch_fetches[0], (std::vector<std::uint32_t>{3, 4, 5}));
  EXPECT_EQ(fetches_of(*mailbox, 3), 0u);
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 1);
  EXPECT_EQ(session.metrics().read_ahead_unused.Value(), 2) << "4 and 5, dropped at QUIT";
}

// The listed sizes fit the budget together, the real size of 4 does not: 4 is left out,
// the messages around it are served, and only what was kept counts against the budget.
TEST_F(SessionTest, BatchLeavesOutAMessageLargerThanListedAndKeepsTheRest) {
  auto mailbox = five_small_messages();
  mailbox->batches = true;
  mailbox->messages[3].listed_size = 100;
  mailbox->messages[3].body += std::string(8000, 'd') + "\r\n";
  SessionHarness session(mailbox, "limits:\n  read_ahead: 8KiB\n");
  login(session);
  session.multiline("RETR 1");
  session.multiline("RETR 2");
  ASSERT_TRUE(session.run_until([&] { return mailbox->batch_fetches.size() == 1; },
                                std::chrono::seconds(10)));
  EXPECT_EQ(mailbox->batch_fetches[0], (std::vector<std::uint32_t>{3, 4, 5}));
  EXPECT_EQ(unstuffed(session.multiline("RETR 3")), mailbox->messages[2].body);
  EXPECT_EQ(unstuffed(session.multiline("RETR 4")), mailbox->messages[3].body);
  EXPECT_EQ(unstuffed(session.multiline("RETR 5")), mailbox->messages[4].body);
  EXPECT_EQ(mailbox->fetches, (std::vector<std::uint32_t>{1, 2, 4})) << "4 on its own";
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 2);
}

// Message 3 arrived whole, but the exchange broke inside 4: nothing of the batch is
// served, and RETR 3 gets an error rather than a message the store never confirmed.
TEST_F(SessionTest, BatchThatBreaksHandsOutNothing) {
  auto mailbox = five_small_messages();
  mailbox->batches = true;
  mailbox->break_fetch = {{4, 700}};
  SessionHarness session(mailbox);
  login(session);
  session.multiline("RETR 1");
  session.multiline("RETR 2");
  ASSERT_TRUE(session.run_until([&] { return mailbox->batch_fetches.size() == 1; },
                                std::chrono::seconds(10)));
  session.send("RETR 3\r\n");
  EXPECT_TRUE(session.wait_closed());
  const std::string got = session.read_until("never");
  EXPECT_TRUE(got.starts_with("-ERR [SYS/TEMP]")) << got;
  EXPECT_EQ(got.find("Subject: 3"), std::string::npos) << got;
  EXPECT_EQ(session.metrics().read_ahead_used.Value(), 0);
}

TEST_F(SessionTest, ClientLeavingDuringAReadAheadEndsTheSessionCleanly) {
  auto mailbox = five_small_messages();
  mailbox->chunk_size = 10;
  SessionHarness session(mailbox);
  ASSERT_TRUE(retrieve_two_and_wait_for_read_ahead(session, *mailbox));
  session.reset_client();
  ASSERT_TRUE(session.wait_finished());
  EXPECT_TRUE(mailbox->commits.empty());
  EXPECT_EQ(mailbox->closes, 1u);
}

}  // namespace
}  // namespace popbridge::testing
