// SPDX-License-Identifier: Apache-2.0
// A whole POP3 session under arbitrary client input: a real Pop3Session on a libuv loop,
// its client a loopback socket, its store a FakeMailStore whose faults the first input
// byte chooses. Beyond crashes and sanitizer findings it checks the integrity rules:
// deletions reach the store only after a QUIT and only for messages the mailbox has, and
// a message cut by a store fault never ends with a terminator.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "tests/support/session_harness.h"

namespace {

using popbridge::testing::FakeMailbox;
using popbridge::testing::SessionHarness;

std::shared_ptr<FakeMailbox> mailbox_for(std::uint8_t faults) {
  auto mailbox = std::make_shared<FakeMailbox>();
  mailbox->messages = {
      {1, "Subject: a\r\n\r\nline\r\n.dot\r\n", std::nullopt},
      {2, "Subject: b\r\nX-Long: " + std::string(3000, 'b') + "\r\n\r\nbody\r\n", std::nullopt},
      {4, "no header at all", std::nullopt},
  };
  mailbox->chunk_size = 1 + (faults >> 4) * 97;
  if ((faults & 1) != 0) {
    mailbox->break_fetch = {{2, 1500}};
  }
  if ((faults & 2) != 0) {
    mailbox->missing = {1};
  }
  if ((faults & 4) != 0) {
    mailbox->commit_status = popbridge::proxy::StoreStatus::kTemporary;
  }
  if ((faults & 8) != 0) {
    mailbox->messages[2].listed_size = 999;  // the snapshot's size is wrong
  }
  return mailbox;
}

void check(bool holds, const char* what) {
  if (!holds) {
    std::fprintf(stderr, "integrity rule broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) {
    return 0;
  }
  auto mailbox = mailbox_for(data[0]);
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  SessionHarness session(mailbox);
  session.send(input);
  // Whatever state the input left, this ends the session: the line is closed, a SASL
  // exchange cancelled, then QUIT.
  session.send("\r\n*\r\nQUIT\r\n");
  if (!session.wait_finished(std::chrono::seconds(5))) {
    std::fprintf(stderr, "session did not finish after QUIT\n");
    std::abort();
  }
  session.wait_closed(std::chrono::seconds(1));
  if (mailbox->break_fetch) {
    check(session.unread().find("body\r\n.\r\n") == std::string::npos,
          "a message cut by the store has no terminator");
  }
  std::string upper(input);
  for (char& c : upper) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  check(mailbox->commits.size() <= 1, "one UPDATE per session");
  for (const auto& commit : mailbox->commits) {
    std::set<std::uint32_t> seen;
    for (std::uint32_t uid : commit) {
      check(mailbox->find(uid) != nullptr, "only the mailbox's messages are deleted");
      check(seen.insert(uid).second, "a message is deleted once");
    }
    check(commit.empty() || upper.find("DELE") != std::string::npos,
          "nothing is deleted without DELE");
  }
  return 0;
}
