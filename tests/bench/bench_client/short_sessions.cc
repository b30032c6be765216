// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/short_sessions.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/bench/bench_client/digest.h"
#include "tests/bench/bench_client/failure.h"
#include "tests/bench/bench_client/file_limit.h"
#include "tests/bench/bench_client/imap_client.h"
#include "tests/bench/bench_client/pop3_client.h"
#include "tests/bench/bench_client/timing.h"

namespace popbridge::bench {
namespace {

// One short session as a polling mail client makes it.
// POP3: greeting, USER/PASS, STAT, UIDL, LIST, RETR 1..retrieve, QUIT.
// IMAP: greeting, LOGIN, SELECT, UID FETCH 1:* (UID RFC822.SIZE), retrieve x
//       UID FETCH uid BODY.PEEK[], LOGOUT.
// Returns the SHA-256 of the concatenated messages retrieved.
std::string short_session(bool imap, const Connector& connector, const ConnectOptions& options,
                          const std::string& user, unsigned count, unsigned retrieve) {
  Digest digest(/*hashing=*/true);
  if (imap) {
    ImapClient client(connector.open());
    client.read_greeting();
    client.run(protocol::ImapCommand("LOGIN").astring(user).astring(options.password), "LOGIN");
    client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
    const std::vector<std::uint32_t> uids = client.list_uids();
    if (uids.size() != count) {
      throw Failure("INBOX of " + user + " has " + std::to_string(uids.size()) +
                    " messages, expected " + std::to_string(count));
    }
    for (std::size_t i = 0; i < retrieve; ++i) {
      client.run(protocol::ImapCommand("UID FETCH").raw(std::to_string(uids[i])).raw("BODY.PEEK[]"),
                 "UID FETCH BODY.PEEK[]", &digest);
    }
    client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  } else {
    Pop3Client client(connector.open());
    client.read_greeting();
    client.login(user, options.password);
    const std::string stat = client.command("STAT", "STAT");
    unsigned have = 0;
    if (std::sscanf(stat.c_str(), "+OK %u", &have) != 1 || have != count) {
      throw Failure("STAT of " + user + " says \"" + stat + "\", expected " +
                    std::to_string(count) + " messages");
    }
    if (client.listing("UIDL", "UIDL") != count || client.listing("LIST", "LIST") != count) {
      throw Failure("UIDL or LIST of " + user + " did not list " + std::to_string(count) +
                    " messages");
    }
    for (unsigned n = 1; n <= retrieve; ++n) {
      client.retr(n, digest);
    }
    client.command("QUIT", "QUIT");
  }
  return digest.finish();
}

}  // namespace

int run_short_sessions(bool imap, const ConnectOptions& options, unsigned clients, double duration,
                       unsigned max_sessions, unsigned count, unsigned retrieve, unsigned users,
                       const std::string& expect_sha256) {
  retrieve = std::min(retrieve, count);
  raise_file_limit(clients + 64);
  const Connector connector(options);
  std::mutex mutex;
  std::vector<double> latencies;
  std::string first_error;
  std::string reference = expect_sha256;
  unsigned failed = 0;
  unsigned mismatched = 0;
  std::atomic<unsigned> started{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));

  auto worker = [&](unsigned index) {
    const std::string user =
        users == 0 ? options.user : options.user + std::to_string(index % users + 1);
    std::vector<double> mine;
    for (;;) {
      if (max_sessions != 0 ? started.fetch_add(1) >= max_sessions : Clock::now() >= deadline) {
        break;
      }
      const Clock::time_point begin = Clock::now();
      try {
        const std::string sha = short_session(imap, connector, options, user, count, retrieve);
        mine.push_back(since(begin));
        const std::lock_guard<std::mutex> lock(mutex);
        if (reference.empty()) {
          reference = sha;
        } else if (sha != reference) {
          ++mismatched;
        }
      } catch (const Failure& e) {
        const std::lock_guard<std::mutex> lock(mutex);
        ++failed;
        if (first_error.empty()) {
          first_error = user + ": " + e.what();
        }
        break;  // one failure ends this client; the run fails
      }
    }
    const std::lock_guard<std::mutex> lock(mutex);
    latencies.insert(latencies.end(), mine.begin(), mine.end());
  };
  std::vector<std::thread> threads;
  threads.reserve(clients);
  for (unsigned i = 0; i < clients; ++i) {
    threads.emplace_back(worker, i);
  }
  for (std::thread& t : threads) {
    t.join();
  }
  const double elapsed = since(start);
  std::sort(latencies.begin(), latencies.end());
  auto percentile = [&](double p) {
    if (latencies.empty()) {
      return 0.0;
    }
    const std::size_t i = std::min(
        latencies.size() - 1, static_cast<std::size_t>(p * static_cast<double>(latencies.size())));
    return latencies[i] * 1000;
  };
  const std::size_t sessions = latencies.size();
  std::printf(
      "mode=short-sessions protocol=%s clients=%u sessions=%zu failed=%u mismatched=%u "
      "seconds=%.6f sessions_per_s=%.2f p50_ms=%.2f p95_ms=%.2f sha256=%s\n",
      imap ? "imap" : "pop3", clients, sessions, failed, mismatched, elapsed,
      elapsed > 0 ? static_cast<double>(sessions) / elapsed : 0, percentile(0.5), percentile(0.95),
      reference.empty() ? "-" : reference.c_str());
  std::fflush(stdout);
  if (failed > 0) {
    std::fprintf(stderr, "pop3_bench_client: %u sessions failed, first: %s\n", failed,
                 first_error.c_str());
    return 1;
  }
  if (mismatched > 0) {
    std::fprintf(stderr, "pop3_bench_client: %u sessions retrieved other octets than %s\n",
                 mismatched, expect_sha256.empty() ? "the first session" : "--expect-sha256");
    return 1;
  }
  if (sessions == 0) {
    std::fprintf(stderr, "pop3_bench_client: no session completed\n");
    return 1;
  }
  return 0;
}

}  // namespace popbridge::bench
