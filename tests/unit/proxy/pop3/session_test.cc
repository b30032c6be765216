// SPDX-License-Identifier: Apache-2.0
// The POP3 session against the MailStore interface, with a fake store: the commands, and
// the data-integrity rules every backend relies on the session for (ARCHITECTURE.md):
// the terminator only after the store confirmed the whole message, nothing deleted
// unless QUIT and confirmed, a failed session's deletions never applied. Read-ahead is in
// session_read_ahead_test.cc, random sessions in session_random_test.cc.
#include "tests/support/session_test.h"

#include <gtest/gtest.h>

#include "tests/support/pop3_answers.h"
#include "tests/support/session_harness.h"

namespace popbridge::testing {
namespace {

using proxy::StoreStatus;

std::string large_body() {
  std::string body = "Subject: large\r\n\r\n";
  for (int line = 0; body.size() < 300 * 1024; ++line) {
    body += (line % 7 == 0 ? "." : "") + std::string("line ") + std::to_string(line) +
            std::string(60, 'x') + "\r\n";
  }
  return body;
}

std::shared_ptr<FakeMailbox> three_messages() {
  auto mailbox = std::make_shared<FakeMailbox>();
  mailbox->messages = {
      {11, "Subject: one\r\n\r\nHello\r\n.starts with a dot\r\n", std::nullopt},
      {12, large_body(), std::nullopt},
      {15, "Subject: three\r\nX-Test: yes\r\n\r\nbody line 1\r\nbody line 2\r\n", std::nullopt},
  };
  return mailbox;
}

// A multi-line answer without its status line, whose text is the server's to choose.
std::string listing(const std::string& answer) {
  EXPECT_TRUE(answer.starts_with("+OK")) << answer;
  return answer.substr(answer.find("\r\n") + 2);
}

TEST_F(SessionTest, LoginHandsTheClientsCredentialsToTheStore) {
  SessionHarness session(three_messages());
  login(session);
  ASSERT_EQ(session.mailbox().opens.size(), 1u);
  EXPECT_EQ(session.mailbox().opens[0].credentials.user, "alice");
  EXPECT_EQ(session.mailbox().opens[0].credentials.secret.view(), "secret");
  EXPECT_EQ(session.mailbox().opens[0].client_address, "127.0.0.1");
}

TEST_F(SessionTest, RefusedPasswordIsAuthAndTheSessionStaysInAuthorization) {
  SessionHarness session(three_messages());
  ASSERT_TRUE(session.read_until("\r\n").starts_with("+OK"));
  session.command("USER alice");
  EXPECT_EQ(session.command("PASS wrong"), "-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_TRUE(session.command("STAT").starts_with("-ERR"));
  EXPECT_TRUE(session.command("USER alice").starts_with("+OK"));
  EXPECT_TRUE(session.command("PASS secret").starts_with("+OK"));
}

TEST_F(SessionTest, StatListAndUidlComeFromTheSnapshot) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  const std::size_t sizes[] = {mailbox->messages[0].body.size(), mailbox->messages[1].body.size(),
                               mailbox->messages[2].body.size()};
  EXPECT_EQ(session.command("STAT"),
            "+OK 3 " + std::to_string(sizes[0] + sizes[1] + sizes[2]) + "\r\n");
  EXPECT_EQ(listing(session.multiline("LIST")), "1 " + std::to_string(sizes[0]) + "\r\n2 " +
                                                    std::to_string(sizes[1]) + "\r\n3 " +
                                                    std::to_string(sizes[2]) + "\r\n.\r\n");
  EXPECT_EQ(listing(session.multiline("UIDL")), "1 1234.11\r\n2 1234.12\r\n3 1234.15\r\n.\r\n");
  EXPECT_EQ(session.command("UIDL 3"), "+OK 3 1234.15\r\n");
  EXPECT_TRUE(session.command("LIST 4").starts_with("-ERR"));
  EXPECT_TRUE(session.command("UIDL 0").starts_with("-ERR"));
}

TEST_F(SessionTest, RetrDotStuffsAndTerminatesOnlyAfterTheWholeMessage) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  const std::string first = session.multiline("RETR 1");
  EXPECT_EQ(first, "+OK " + std::to_string(mailbox->messages[0].body.size()) +
                       " octets\r\nSubject: one\r\n\r\nHello\r\n..starts with a dot\r\n.\r\n");
  // 300 KiB, more than the write watermark: delivered in chunks under backpressure.
  const std::string second = session.multiline("RETR 2");
  EXPECT_EQ(unstuffed(second), mailbox->messages[1].body);
  ASSERT_GE(mailbox->fetches.size(), 2u);
  EXPECT_EQ(mailbox->fetches[0], 11u);
  EXPECT_EQ(mailbox->fetches[1], 12u);
}

TEST_F(SessionTest, SlowClientPausesTheStoreAtTheWatermark) {
  auto mailbox = std::make_shared<FakeMailbox>();
  std::string body = "Subject: big\r\n\r\n";
  while (body.size() < 8 * 1024 * 1024) {
    body += std::string(78, 'y') + "\r\n";
  }
  mailbox->messages = {{1, body, std::nullopt}};
  mailbox->chunk_size = 64 * 1024;
  SessionHarness session(mailbox, R"(
limits:
  client_write_high_watermark: 64KiB
  client_write_low_watermark: 16KiB
)");
  login(session);
  session.send("RETR 1\r\n");
  // The client reads nothing: the socket buffers fill, then the session must stop the
  // store rather than queue the rest of 8 MiB.
  ASSERT_TRUE(session.stall_until([&] { return mailbox->pauses > 0; }));
  const std::string answer = session.read_until("\r\n.\r\n", std::chrono::seconds(30));
  EXPECT_EQ(unstuffed(answer), body);
}

// The listing of a large maildrop (a client that leaves its mail on the server) is written
// as the client takes it: while the client reads nothing, the session queues no more than
// the high watermark and a slice of lines, not megabytes; then the listing arrives whole.
TEST_F(SessionTest, LargeListingsAreQueuedWithinTheWatermark) {
  auto mailbox = std::make_shared<FakeMailbox>();
  constexpr std::uint32_t kMessages = 300000;
  for (std::uint32_t uid = 1; uid <= kMessages; ++uid) {
    mailbox->messages.push_back({uid, "Subject: x\r\n\r\nbody\r\n", std::nullopt});
  }
  SessionHarness session(mailbox, R"(
limits:
  client_write_high_watermark: 64KiB
  client_write_low_watermark: 16KiB
)");
  session.shrink_socket_buffers(16 * 1024);
  login(session);
  ASSERT_TRUE(session.command("DELE 2").starts_with("+OK"));
  for (const bool uidl : {true, false}) {
    session.send(uidl ? "UIDL\r\n" : "LIST\r\n");
    // The socket buffers fill, then the session's own queue reaches the watermark.
    std::size_t most = 0;
    ASSERT_TRUE(session.stall_until([&] {
      most = std::max(most, session.queued_to_client());
      return most >= 64 * 1024;
    }));
    for (int turn = 0; turn < 100; ++turn) {
      session.stall_until([&] {
        most = std::max(most, session.queued_to_client());
        return true;
      });
    }
    EXPECT_LT(most, 160 * 1024u) << "the listing is " << kMessages << " lines";
    const std::string listing = session.read_until("\r\n.\r\n", std::chrono::seconds(60));
    std::string expected =
        uidl ? "+OK unique-id listing follows\r\n" : "+OK 299999 messages (5999980 octets)\r\n";
    for (std::uint32_t number = 1; number <= kMessages; ++number) {
      if (number != 2) {  // deleted
        expected += std::to_string(number) + " " +
                    (uidl ? "1234." + std::to_string(number) : std::string("20")) + "\r\n";
      }
    }
    expected += ".\r\n";
    const auto differs =
        std::mismatch(listing.begin(), listing.end(), expected.begin(), expected.end());
    EXPECT_TRUE(listing == expected)
        << "differs at octet " << (differs.first - listing.begin()) << ": "
        << std::string(differs.first, listing.end()).substr(0, 60);
  }
  EXPECT_TRUE(session.command("NOOP").starts_with("+OK")) << "commands go on after it";
}

TEST_F(SessionTest, ListingsOfAnEmptyMaildropAreJustTheTerminator) {
  SessionHarness session(std::make_shared<FakeMailbox>());
  login(session);
  EXPECT_EQ(session.multiline("LIST"), "+OK 0 messages (0 octets)\r\n.\r\n");
  EXPECT_EQ(session.multiline("UIDL"), "+OK unique-id listing follows\r\n.\r\n");
  EXPECT_TRUE(session.command("NOOP").starts_with("+OK"));
}

// A client that stops reading mid-listing is dropped at the idle timeout: an -ERR line
// inside the listing would read as one more UIDL, and no terminator follows.
TEST_F(SessionTest, ClientThatStopsReadingMidListingIsDroppedWithoutAnErrorLine) {
  auto mailbox = std::make_shared<FakeMailbox>();
  for (std::uint32_t uid = 1; uid <= 50000; ++uid) {
    mailbox->messages.push_back({uid, "Subject: x\r\n\r\nbody\r\n", std::nullopt});
  }
  // Long enough that the session cannot time out between the login and the UIDL, even
  // under the sanitizers on a busy machine; the listing's own wait is what it measures.
  SessionHarness session(mailbox, R"(
limits:
  idle_timeout: 2s
  client_write_high_watermark: 64KiB
  client_write_low_watermark: 16KiB
)");
  session.shrink_socket_buffers(16 * 1024);
  login(session);
  session.send("UIDL\r\n");
  ASSERT_TRUE(session.stall_until([&] { return session.queued_to_client() >= 64 * 1024; }))
      << "the listing is under way, held up by the client";
  ASSERT_TRUE(session.stall_until([&] { return session.finished(); }, std::chrono::seconds(20)));
  const std::string got = session.read_until("never");
  EXPECT_TRUE(got.starts_with("+OK unique-id listing follows\r\n1 1234.1\r\n"))
      << got.substr(0, 80);
  EXPECT_EQ(got.find("-ERR"), std::string::npos);
  EXPECT_FALSE(got.ends_with("\r\n.\r\n"));
}

TEST_F(SessionTest, MessageWithoutFinalLineBreakStillEndsWithATerminatorLine) {
  auto mailbox = std::make_shared<FakeMailbox>();
  mailbox->messages = {{7, "Subject: x\r\n\r\nno line break at the end", std::nullopt}};
  SessionHarness session(mailbox);
  login(session);
  const std::string answer = session.multiline("RETR 1");
  EXPECT_TRUE(answer.ends_with("no line break at the end\r\n.\r\n")) << answer;
}

TEST_F(SessionTest, StoreFailureMidMessageDropsTheClientWithoutATerminator) {
  auto mailbox = three_messages();
  mailbox->break_fetch = {{12, 5000}};
  SessionHarness session(mailbox);
  login(session);
  session.send("RETR 2\r\n");
  ASSERT_TRUE(session.wait_closed());
  const std::string got = session.read_until("never");
  EXPECT_TRUE(got.starts_with("+OK")) << "the message had started";
  EXPECT_EQ(got.find("\r\n.\r\n"), std::string::npos) << "a truncated message looked complete";
  EXPECT_LT(got.size(), 6000u);
  EXPECT_TRUE(mailbox->commits.empty());
}

TEST_F(SessionTest, MessageGoneBeforeItStartedIsAnErrorAndTheSessionGoesOn) {
  auto mailbox = three_messages();
  mailbox->missing = {11};
  SessionHarness session(mailbox);
  login(session);
  EXPECT_TRUE(session.multiline("RETR 1").starts_with("-ERR")) << "no +OK for a vanished message";
  EXPECT_TRUE(session.multiline("RETR 3").ends_with("body line 2\r\n.\r\n"));
}

TEST_F(SessionTest, TopSendsTheHeaderAndTheRequestedLinesAndStopsTheStore) {
  auto mailbox = three_messages();
  mailbox->chunk_size = 8;  // the cut falls inside a chunk somewhere
  SessionHarness session(mailbox);
  login(session);
  EXPECT_EQ(listing(session.multiline("TOP 3 1")),
            "Subject: three\r\nX-Test: yes\r\n\r\nbody line 1\r\n.\r\n");
  EXPECT_EQ(listing(session.multiline("TOP 3 0")), "Subject: three\r\nX-Test: yes\r\n\r\n.\r\n");
  EXPECT_TRUE(mailbox->stopped_early);
}

TEST_F(SessionTest, DeletionsReachTheStoreOnlyAtQuit) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  EXPECT_TRUE(session.command("DELE 1").starts_with("+OK"));
  EXPECT_TRUE(session.command("DELE 1").starts_with("-ERR")) << "already deleted";
  EXPECT_TRUE(session.multiline("RETR 1").starts_with("-ERR"));
  EXPECT_TRUE(session.command("RSET").starts_with("+OK"));
  EXPECT_TRUE(session.command("DELE 3").starts_with("+OK"));
  EXPECT_TRUE(session.command("STAT").starts_with("+OK 2 "));
  EXPECT_TRUE(session.command("NOOP").starts_with("+OK"));
  EXPECT_TRUE(mailbox->commits.empty()) << "nothing changes before QUIT";
  EXPECT_TRUE(session.command("QUIT").starts_with("+OK"));
  ASSERT_EQ(mailbox->commits.size(), 1u);
  EXPECT_EQ(mailbox->commits[0], (std::vector<std::uint32_t>{15}));
  EXPECT_TRUE(session.wait_closed());
}

TEST_F(SessionTest, RefusedCommitIsAnErrorAtQuit) {
  auto mailbox = three_messages();
  mailbox->commit_status = StoreStatus::kTemporary;
  SessionHarness session(mailbox);
  login(session);
  session.command("DELE 2");
  const std::string answer = session.command("QUIT");
  EXPECT_TRUE(answer.starts_with("-ERR")) << answer;
  EXPECT_TRUE(session.wait_closed());
}

TEST_F(SessionTest, ClientThatLeavesWithoutQuitDeletesNothing) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  session.command("DELE 1");
  session.command("DELE 2");
  session.reset_client();
  ASSERT_TRUE(session.wait_finished());
  EXPECT_TRUE(mailbox->commits.empty());
  EXPECT_EQ(mailbox->closes, 1u);
}

TEST_F(SessionTest, ClientThatResetsRightAfterQuitStillGetsItsUpdateFinished) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  session.command("DELE 1");
  session.send("QUIT\r\n");
  session.reset_client();
  ASSERT_TRUE(session.wait_finished());
  ASSERT_EQ(mailbox->commits.size(), 1u) << "the UPDATE was started and must be finished";
  EXPECT_EQ(mailbox->commits[0], (std::vector<std::uint32_t>{11}));
}

TEST_F(SessionTest, QuitWithoutDeletionsCommitsNothing) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  EXPECT_TRUE(session.command("QUIT").starts_with("+OK"));
  EXPECT_TRUE(session.wait_closed());
  for (const auto& commit : mailbox->commits) {
    EXPECT_TRUE(commit.empty());
  }
}

TEST_F(SessionTest, PipelinedCommandsAreAnsweredInOrder) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  login(session);
  session.send("STAT\r\nRETR 1\r\nUIDL 2\r\nTOP 3 0\r\nNOOP\r\n");
  const std::string answers = session.read_until("Subject: three\r\nX-Test: yes\r\n\r\n.\r\n");
  EXPECT_TRUE(answers.starts_with("+OK 3 ")) << answers;
  const std::size_t retr = answers.find("..starts with a dot\r\n.\r\n");
  const std::size_t uidl = answers.find("+OK 2 1234.12\r\n");
  ASSERT_NE(retr, std::string::npos);
  ASSERT_NE(uidl, std::string::npos);
  EXPECT_LT(retr, uidl);
  EXPECT_TRUE(session.read_until("\r\n").starts_with("+OK")) << "NOOP, last";
}

TEST_F(SessionTest, MalformedAndMisplacedCommandsGetErrAndChangeNothing) {
  auto mailbox = three_messages();
  SessionHarness session(mailbox);
  ASSERT_TRUE(session.read_until("\r\n").starts_with("+OK"));
  EXPECT_TRUE(session.command("STAT").starts_with("-ERR")) << "not logged in";
  EXPECT_TRUE(session.command("FROB").starts_with("-ERR"));
  EXPECT_TRUE(session.command("").starts_with("-ERR"));
  login_after_greeting(session);
  EXPECT_TRUE(session.command("RETR one").starts_with("-ERR"));
  EXPECT_TRUE(session.command("TOP 1").starts_with("-ERR"));
  EXPECT_TRUE(session.command("DELE 99999999999999999999").starts_with("-ERR"));
  EXPECT_TRUE(session.command("USER bob").starts_with("-ERR")) << "already logged in";
  EXPECT_TRUE(session.command("STAT").starts_with("+OK 3 "));
  EXPECT_TRUE(mailbox->fetches.empty());
}

TEST_F(SessionTest, EachCommandIsCountedUnderItsOwnVerb) {
  using protocol::Pop3Verb;
  SessionHarness session(three_messages());
  ASSERT_TRUE(session.read_until("\r\n").starts_with("+OK"));
  // AUTH PLAIN with the initial response: one AUTH, no PASS; the "+ " challenge of AUTH
  // LOGIN is not an answer.
  ASSERT_TRUE(session.command("AUTH PLAIN AGFsaWNlAHdyb25n").starts_with("-ERR"));
  ASSERT_EQ(session.command("AUTH LOGIN"), "+ VXNlcm5hbWU6\r\n");
  ASSERT_EQ(session.command("YWxpY2U="), "+ UGFzc3dvcmQ6\r\n");
  ASSERT_TRUE(session.command("c2VjcmV0").starts_with("+OK"));
  EXPECT_EQ(session.command_counts(Pop3Verb::kAuth), (std::pair<double, double>{1, 1}));
  EXPECT_EQ(session.command_counts(Pop3Verb::kPass), (std::pair<double, double>{0, 0}));
  EXPECT_EQ(session.command_counts(Pop3Verb::kUser), (std::pair<double, double>{0, 0}));
  session.multiline("RETR 1");
  session.multiline("RETR 9");
  EXPECT_EQ(session.command_counts(Pop3Verb::kRetr), (std::pair<double, double>{1, 1}));
}

TEST_F(SessionTest, OverlongLineIsRefusedAtOnceAndTheConnectionClosed) {
  SessionHarness session(three_messages());
  ASSERT_TRUE(session.read_until("\r\n").starts_with("+OK"));
  session.send(std::string(100 * 1024, 'A'));
  EXPECT_TRUE(session.read_until("\r\n").starts_with("-ERR"));
  EXPECT_TRUE(session.wait_closed());
}

}  // namespace
}  // namespace popbridge::testing
