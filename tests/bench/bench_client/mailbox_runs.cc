// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/mailbox_runs.h"

#include <cstdio>
#include <string>
#include <vector>

#include "tests/bench/bench_client/digest.h"
#include "tests/bench/bench_client/failure.h"
#include "tests/bench/bench_client/imap_client.h"
#include "tests/bench/bench_client/pop3_client.h"
#include "tests/bench/bench_client/timing.h"

namespace popbridge::bench {
namespace {

// What one retrieval session of a whole mailbox gives: the message octets (dot-unstuffed for
// POP3, the literals for IMAP) in order, hashed as one stream when asked.
struct MailboxPass {
  unsigned messages = 0;
  std::uint64_t octets = 0;
  std::uint64_t wire_bytes = 0;
  double seconds = 0;  // from the first retrieval command to the end of the last one
  std::string sha256;  // of the concatenated messages; empty unless hashing
};

// POP3: greeting, USER/PASS, STAT, then RETR 1..count (timed), QUIT.
MailboxPass pop3_pass(const Connector& connector, const ConnectOptions& options, unsigned count,
                      bool hashing) {
  Pop3Client client(connector.open());
  client.read_greeting();
  client.login(options.user, options.password);
  const std::string stat = client.command("STAT", "STAT");
  unsigned have = 0;
  if (std::sscanf(stat.c_str(), "+OK %u", &have) != 1 || have < count) {
    throw Failure("STAT says \"" + stat + "\", need " + std::to_string(count) + " messages");
  }
  MailboxPass pass;
  Digest digest(hashing);
  const std::uint64_t wire_before = client.stream().bytes_read();
  const Clock::time_point start = Clock::now();
  for (unsigned n = 1; n <= count; ++n) {
    client.retr(n, digest);
  }
  pass.seconds = since(start);
  pass.wire_bytes = client.stream().bytes_read() - wire_before;
  client.command("QUIT", "QUIT");
  pass.messages = count;
  pass.octets = digest.octets();
  pass.sha256 = digest.finish();
  return pass;
}

// IMAP: greeting, LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE), then one
// UID FETCH uid BODY.PEEK[] at a time for the first `count` UIDs (timed), LOGOUT.
MailboxPass imap_pass(const Connector& connector, const ConnectOptions& options, unsigned count,
                      bool hashing) {
  ImapClient client(connector.open());
  client.read_greeting();
  client.run(protocol::ImapCommand("LOGIN").astring(options.user).astring(options.password),
             "LOGIN");
  client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
  const std::vector<std::uint32_t> uids = client.list_uids();
  if (uids.size() < count) {
    throw Failure("INBOX has " + std::to_string(uids.size()) + " messages, need " +
                  std::to_string(count));
  }
  MailboxPass pass;
  Digest digest(hashing);
  const std::uint64_t wire_before = client.stream().bytes_read();
  const Clock::time_point start = Clock::now();
  for (unsigned i = 0; i < count; ++i) {
    const std::uint64_t before = digest.octets();
    client.run(protocol::ImapCommand("UID FETCH").raw(std::to_string(uids[i])).raw("BODY.PEEK[]"),
               "UID FETCH BODY.PEEK[]", &digest);
    if (client.last_bodies() != 1 || digest.octets() - before != client.last_literal_size()) {
      throw Failure("UID FETCH " + std::to_string(uids[i]) + " returned " +
                    std::to_string(client.last_bodies()) + " bodies");
    }
  }
  pass.seconds = since(start);
  pass.wire_bytes = client.stream().bytes_read() - wire_before;
  client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  pass.messages = count;
  pass.octets = digest.octets();
  pass.sha256 = digest.finish();
  return pass;
}

std::string join_seconds(const std::vector<double>& values) {
  std::string out;
  for (const double v : values) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.6f", v);
    if (!out.empty()) {
      out += ',';
    }
    out += buffer;
  }
  return out;
}

}  // namespace

int run_mailbox(const char* mode, bool imap, const ConnectOptions& options, unsigned count,
                unsigned repeat, bool check, std::uint64_t expect_octets) {
  const Connector connector(options);
  auto pass = [&](bool hashing) {
    return imap ? imap_pass(connector, options, count, hashing)
                : pop3_pass(connector, options, count, hashing);
  };
  std::string sha256;
  std::uint64_t octets = expect_octets;
  if (check) {
    const MailboxPass checked = pass(true);
    sha256 = checked.sha256;
    if (expect_octets != 0 && checked.octets != expect_octets) {
      throw Failure("checked session retrieved " + std::to_string(checked.octets) +
                    " octets, expected " + std::to_string(expect_octets));
    }
    octets = checked.octets;
  }
  std::vector<double> seconds;
  std::uint64_t wire = 0;
  for (unsigned run = 0; run < repeat; ++run) {
    const MailboxPass timed = pass(false);
    if (octets != 0 && timed.octets != octets) {
      throw Failure("session " + std::to_string(run + 1) + " retrieved " +
                    std::to_string(timed.octets) + " octets, expected " + std::to_string(octets));
    }
    octets = timed.octets;
    seconds.push_back(timed.seconds);
    wire += timed.wire_bytes;
  }
  std::printf(
      "mode=%s messages=%u message_octets=%llu sha256=%s repeat=%u wire_bytes=%llu seconds=%s\n",
      mode, count, static_cast<unsigned long long>(octets), sha256.empty() ? "-" : sha256.c_str(),
      repeat, static_cast<unsigned long long>(wire),
      seconds.empty() ? "-" : join_seconds(seconds).c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace popbridge::bench
