// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/idle_sessions.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "tests/bench/bench_client/failure.h"
#include "tests/bench/bench_client/file_limit.h"
#include "tests/bench/bench_client/pop3_client.h"
#include "tests/bench/bench_client/timing.h"

namespace popbridge::bench {

// Opens `count` sessions in batches of `parallel`: every command of a batch is sent
// before any reply is read, so the gateway and the upstream work on a batch at once,
// while the batch size keeps login bursts within what the upstream's login processes and
// the gateway's command timeout allow.
int run_idle_sessions(const ConnectOptions& options, unsigned count, unsigned parallel) {
  raise_file_limit(count + 64);
  const Connector connector(options);
  std::vector<std::unique_ptr<Pop3Client>> sessions;
  sessions.reserve(count);
  const Clock::time_point start = Clock::now();

  auto each = [&](std::size_t from, auto&& action) {
    for (std::size_t i = from; i < sessions.size(); ++i) {
      try {
        action(*sessions[i]);
      } catch (const Failure& e) {
        throw Failure("session " + std::to_string(i + 1) + ": " + e.what());
      }
    }
  };
  while (sessions.size() < count) {
    const std::size_t from = sessions.size();
    const std::size_t batch = std::min<std::size_t>(parallel, count - from);
    for (std::size_t i = 0; i < batch; ++i) {
      try {
        sessions.push_back(std::make_unique<Pop3Client>(connector.open()));
      } catch (const Failure& e) {
        throw Failure("session " + std::to_string(from + i + 1) + ": " + e.what());
      }
    }
    each(from, [](Pop3Client& s) { s.read_greeting(); });
    each(from, [&](Pop3Client& s) { s.send("USER " + options.user); });
    each(from, [](Pop3Client& s) { s.reply("USER"); });
    each(from, [&](Pop3Client& s) { s.send("PASS " + options.password); });
    each(from, [](Pop3Client& s) { s.reply("PASS"); });
    // A STAT answer proves the session is in TRANSACTION with its snapshot loaded.
    each(from, [](Pop3Client& s) { s.send("STAT"); });
    each(from, [](Pop3Client& s) { s.reply("STAT"); });
    if (sessions.size() % 100 == 0 || sessions.size() == count) {
      std::fprintf(stderr, "pop3_bench_client: %zu sessions logged in\n", sessions.size());
    }
  }
  std::printf("ready sessions=%u seconds=%.3f\n", count, since(start));
  std::fflush(stdout);

  // The runner measures now; it closes our stdin when done.
  char discard[256];
  while (true) {
    const ssize_t n = read(STDIN_FILENO, discard, sizeof discard);
    if (n == 0 || (n < 0 && errno != EINTR)) {
      break;
    }
  }

  unsigned quit_ok = 0;
  unsigned quit_failed = 0;
  for (auto& s : sessions) {
    try {
      s->send("QUIT");
    } catch (const Failure&) {
      ++quit_failed;
      s.reset();
    }
  }
  std::string first_failure;
  for (auto& s : sessions) {
    if (!s) {
      continue;
    }
    try {
      s->reply("QUIT");
      ++quit_ok;
    } catch (const Failure& e) {
      if (first_failure.empty()) {
        first_failure = e.what();
      }
      ++quit_failed;
    }
  }
  std::printf("quit ok=%u failed=%u\n", quit_ok, quit_failed);
  std::fflush(stdout);
  if (quit_failed > 0) {
    std::fprintf(stderr, "pop3_bench_client: QUIT failed on %u sessions, first: %s\n", quit_failed,
                 first_failure.c_str());
    return 1;
  }
  return 0;
}

}  // namespace popbridge::bench
