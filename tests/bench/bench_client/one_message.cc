// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/one_message.h"

#include <cstdint>
#include <cstdio>
#include <string>

#include "tests/bench/bench_client/digest.h"
#include "tests/bench/bench_client/failure.h"
#include "tests/bench/bench_client/imap_client.h"
#include "tests/bench/bench_client/pop3_client.h"
#include "tests/bench/bench_client/timing.h"

namespace popbridge::bench {
namespace {

struct Timing {
  std::uint64_t octets = 0;      // message octets over all timed runs
  std::uint64_t wire_bytes = 0;  // plaintext octets read over all timed runs
  double seconds = 0;
  double best_seconds = 0;
};

void print_result(const char* mode, unsigned repeat, std::uint64_t message_octets,
                  const std::string& sha256, const Timing& timing) {
  const double mb = 1e6;
  const double rate = timing.seconds > 0 ? timing.octets / mb / timing.seconds : 0;
  const double best = timing.best_seconds > 0 ? message_octets / mb / timing.best_seconds : 0;
  std::printf(
      "mode=%s repeat=%u message_octets=%llu sha256=%s octets=%llu wire_bytes=%llu "
      "seconds=%.6f mb_per_s=%.2f best_mb_per_s=%.2f\n",
      mode, repeat, static_cast<unsigned long long>(message_octets), sha256.c_str(),
      static_cast<unsigned long long>(timing.octets),
      static_cast<unsigned long long>(timing.wire_bytes), timing.seconds, rate, best);
  std::fflush(stdout);
}

void add_run(Timing& timing, double seconds) {
  timing.seconds += seconds;
  if (timing.best_seconds == 0 || seconds < timing.best_seconds) {
    timing.best_seconds = seconds;
  }
}

// Runs `once` repeat times into a non-hashing Digest, timing each run and counting the
// message octets and the bytes that crossed the wire for it.
template <typename Stream, typename Once>
Timing timed_runs(unsigned repeat, Stream& stream, Once&& once) {
  Timing timing;
  for (unsigned run = 0; run < repeat; ++run) {
    Digest digest(/*hashing=*/false);
    const std::uint64_t wire_before = stream.bytes_read();
    const Clock::time_point start = Clock::now();
    once(digest, run);
    add_run(timing, since(start));
    timing.octets += digest.octets();
    timing.wire_bytes += stream.bytes_read() - wire_before;
  }
  return timing;
}

}  // namespace

int run_retr(const ConnectOptions& options, unsigned message, unsigned repeat) {
  const Connector connector(options);
  Pop3Client client(connector.open());
  client.read_greeting();
  client.login(options.user, options.password);

  Digest check(/*hashing=*/true);
  client.retr(message, check);
  const std::uint64_t message_octets = check.octets();
  const std::string sha256 = check.finish();

  const Timing timing = timed_runs(repeat, client.stream(), [&](Digest& digest, unsigned run) {
    client.retr(message, digest);
    if (digest.octets() != message_octets) {
      throw Failure("RETR " + std::to_string(run + 1) + " returned " +
                    std::to_string(digest.octets()) + " octets, the first one " +
                    std::to_string(message_octets));
    }
  });
  client.command("QUIT", "QUIT");
  print_result("retr", repeat, message_octets, sha256, timing);
  return 0;
}

int run_imap_fetch(const ConnectOptions& options, unsigned uid, unsigned repeat) {
  const Connector connector(options);
  ImapClient client(connector.open());
  client.read_greeting();
  client.run(protocol::ImapCommand("LOGIN").astring(options.user).astring(options.password),
             "LOGIN");
  client.run(protocol::ImapCommand("SELECT").string("INBOX"), "SELECT");
  protocol::ImapCommand fetch("UID FETCH");
  fetch.raw(std::to_string(uid)).raw("BODY.PEEK[]");

  auto fetch_once = [&](Digest& digest) {
    client.run(fetch, "UID FETCH", &digest);
    if (client.last_bodies() != 1 || digest.octets() != client.last_literal_size()) {
      throw Failure("UID FETCH " + std::to_string(uid) + " returned " +
                    std::to_string(client.last_bodies()) + " bodies, " +
                    std::to_string(digest.octets()) + " octets");
    }
  };
  Digest check(/*hashing=*/true);
  fetch_once(check);
  const std::uint64_t message_octets = check.octets();
  const std::string sha256 = check.finish();

  const Timing timing =
      timed_runs(repeat, client.stream(), [&](Digest& digest, unsigned) { fetch_once(digest); });
  client.run(protocol::ImapCommand("LOGOUT"), "LOGOUT");
  print_result("imap-fetch", repeat, message_octets, sha256, timing);
  return 0;
}

}  // namespace popbridge::bench
