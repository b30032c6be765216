// SPDX-License-Identifier: Apache-2.0
// Random sessions against the fake store, read-ahead on: whatever the order of the
// commands, the read-ahead budget, batches or not, snapshot sizes that lie, messages that
// vanish, a batch that brings what the store cannot vouch for, or a connection that
// breaks inside a message, a client is never handed a message it
// would store wrongly, and QUIT deletes exactly what it deleted. The named cases in
// session_test.cc show each rule once; this walks the combinations nobody wrote down.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/support/pop3_answers.h"
#include "tests/support/session_harness.h"
#include "tests/support/session_test.h"

namespace popbridge::testing {
namespace {

class RandomSession {
 public:
  explicit RandomSession(std::uint32_t seed) : random_(seed) {}

  std::shared_ptr<FakeMailbox> mailbox() {
    auto mailbox = std::make_shared<FakeMailbox>();
    const int count = pick(3, 10);
    for (int number = 1; number <= count; ++number) {
      const auto uid = static_cast<std::uint32_t>(number * 3 + pick(0, 2));
      std::string body = "Subject: " + std::to_string(uid) + "\r\n\r\n";
      const std::size_t target = static_cast<std::size_t>(pick(0, 6000));
      while (body.size() < target) {
        // Lines that need stuffing, lines that look like the terminator, long lines.
        switch (pick(0, 4)) {
          case 0:
            body += ".\r\n";
            break;
          case 1:
            body += "..two dots\r\n";
            break;
          case 2:
            body += std::string(static_cast<std::size_t>(pick(1, 900)), 'x') + "\r\n";
            break;
          default:
            body += "line " + std::to_string(body.size()) + "\r\n";
            break;
        }
      }
      FakeMailbox::Message message{uid, body, std::nullopt};
      if (one_in(8)) {  // the snapshot's size lies, either way
        message.listed_size = one_in(2) ? body.size() / 2 : body.size() + 100;
      }
      if (one_in(10)) {
        mailbox->missing.insert(uid);  // listed, gone when fetched
      }
      mailbox->messages.push_back(std::move(message));
    }
    if (one_in(6)) {
      const auto& victim = mailbox->messages[static_cast<std::size_t>(pick(0, count - 1))];
      mailbox->break_fetch = {
          {victim.uid, static_cast<std::size_t>(pick(0, static_cast<int>(victim.body.size())))}};
    }
    mailbox->batches = one_in(2);
    if (mailbox->batches && one_in(3)) {
      mailbox->batch_unconfirmed.insert(
          mailbox->messages[static_cast<std::size_t>(pick(0, count - 1))].uid);
    }
    mailbox->chunk_size = static_cast<std::size_t>(pick(100, 2000));
    return mailbox;
  }

  std::string config() {
    static constexpr const char* kBudgets[] = {"0", "2KiB", "8KiB", "64KiB"};
    return std::string("limits:\n  read_ahead: ") + kBudgets[pick(0, 3)] + "\n";
  }

  int pick(int low, int high) { return std::uniform_int_distribution<int>(low, high)(random_); }
  bool one_in(int n) { return pick(1, n) == 1; }

 private:
  std::mt19937 random_;
};

// A RETR or TOP answer that ends in the terminator must carry exactly what the store
// holds (TOP: a prefix of it); one without the terminator is only acceptable when the
// session then closes, so that the client discards it.
void check_answer(SessionHarness& session, const std::string& answer, const std::string& body,
                  bool whole, const std::string& context) {
  if (!answer.starts_with("+OK")) {
    return;
  }
  if (!answer.ends_with("\r\n.\r\n")) {
    EXPECT_TRUE(session.wait_closed()) << context << "cut short and left open";
    EXPECT_TRUE(session.mailbox().break_fetch) << context << "cut short: " << answer.size();
    return;
  }
  const std::string got = unstuffed(answer);
  if (whole) {
    EXPECT_EQ(got, body) << context;
  } else {
    EXPECT_TRUE(body.starts_with(got)) << context << got;
  }
}

TEST(SessionRandomTest, EveryAnswerIsWholeOrAnErrorAndQuitDeletesWhatTheClientDeleted) {
  for (std::uint32_t seed = 1; seed <= 150; ++seed) {
    RandomSession random(seed);
    auto mailbox = random.mailbox();
    const std::string yaml = random.config();
    SCOPED_TRACE("seed " + std::to_string(seed) + "\n" + yaml);
    SessionHarness session(mailbox, yaml);
    SessionTest::login(session);
    if (::testing::Test::HasFatalFailure()) {
      return;
    }

    // The commands, mostly RETRs in order as clients retrieve, sometimes anything anywhere;
    // a pipelining client (RFC 2449) sends them all at once.
    enum class Kind { kRetr, kTop, kDele, kOther };
    struct Step {
      Kind kind;
      int number;
      std::string line;
    };
    const int count = static_cast<int>(mailbox->messages.size());
    std::vector<Step> steps;
    for (int step = 0, steps_wanted = random.pick(5, 30), next = 1; step < steps_wanted; ++step) {
      const int roll = random.pick(1, 100);
      const int number = roll <= 70 ? next : random.pick(1, count);
      const std::string n = std::to_string(number);
      if (roll <= 80) {
        next = number % count + 1;
        steps.push_back({Kind::kRetr, number, "RETR " + n});
      } else if (roll <= 87) {
        steps.push_back({Kind::kTop, number, "TOP " + n + " " + std::to_string(random.pick(0, 3))});
      } else if (roll <= 94) {
        steps.push_back({Kind::kDele, number, "DELE " + n});
      } else {
        steps.push_back({Kind::kOther, number, random.one_in(2) ? "NOOP" : "STAT"});
      }
    }
    const bool pipelined = random.one_in(3);
    if (pipelined) {
      std::string all;
      for (const Step& step : steps) {
        all += step.line + "\r\n";
      }
      session.send(all);
    }

    std::set<std::uint32_t> deleted;
    for (std::size_t at = 0; at < steps.size() && !session.peer_closed(); ++at) {
      const Step& step = steps[at];
      const auto& message = mailbox->messages[static_cast<std::size_t>(step.number - 1)];
      const bool gone = deleted.count(message.uid) != 0 || mailbox->missing.count(message.uid) != 0;
      const std::string context =
          (pipelined ? "pipelined " : "") + step.line + " (step " + std::to_string(at) + "): ";
      if (!pipelined) {
        session.send(step.line + "\r\n");
      }
      std::string answer = session.read_until("\r\n");
      if ((step.kind == Kind::kRetr || step.kind == Kind::kTop) && answer.starts_with("+OK")) {
        answer += session.read_until("\r\n.\r\n");
      }
      switch (step.kind) {
        case Kind::kRetr:
          if (gone) {
            EXPECT_TRUE(answer.starts_with("-ERR")) << context << answer.substr(0, 80);
          } else if (!answer.starts_with("+OK") || !answer.ends_with("\r\n.\r\n")) {
            // Only a broken upstream connection may keep a message from the client.
            ASSERT_TRUE(mailbox->break_fetch) << context << answer.substr(0, 80);
          }
          check_answer(session, answer, message.body, true, context);
          break;
        case Kind::kTop:
          if (gone) {
            EXPECT_TRUE(answer.starts_with("-ERR")) << context << answer.substr(0, 80);
          }
          check_answer(session, answer, message.body, false, context);
          break;
        case Kind::kDele:
          if (deleted.count(message.uid) != 0) {
            EXPECT_TRUE(answer.starts_with("-ERR")) << context << answer;
          } else if (answer.starts_with("+OK")) {
            deleted.insert(message.uid);
          }
          break;
        case Kind::kOther:
          break;
      }
      if (answer.starts_with("-ERR [SYS/TEMP]")) {
        ASSERT_TRUE(mailbox->break_fetch) << context << answer;
        ASSERT_TRUE(session.wait_closed()) << context << "the store broke: the session ends";
      }
    }
    const std::string bye = session.peer_closed() ? "" : session.command("QUIT");
    ASSERT_TRUE(session.wait_finished());
    std::set<std::uint32_t> committed;
    for (const auto& commit : mailbox->commits) {
      committed.insert(commit.begin(), commit.end());
    }
    if (bye.starts_with("+OK")) {
      EXPECT_LE(mailbox->commits.size(), 1u);
      EXPECT_EQ(committed, deleted);
    } else {
      // The store broke: nothing the client deleted is deleted.
      EXPECT_TRUE(mailbox->break_fetch) << bye;
      EXPECT_TRUE(mailbox->commits.empty()) << bye;
    }
    if (::testing::Test::HasFailure()) {
      return;  // one seed's story is enough to read
    }
  }
}

}  // namespace
}  // namespace popbridge::testing
