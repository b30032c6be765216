// SPDX-License-Identifier: Apache-2.0
// What the metrics cost on the hot path: the per-event operations a RETR performs
// (counter increments, a histogram observation), single-threaded and with every core
// updating the same children at once (workers share the metric children). Prints
// nanoseconds per operation and per RETR; no target, just figures.
#include <prometheus/registry.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "metrics/metrics.h"

namespace {

using Clock = std::chrono::steady_clock;

// One RETR's metric work: the command counter, its duration, messages retrieved, and the
// byte counters synced at the end of the command.
void one_retr(popbridge::metrics::Metrics& metrics) {
  auto& command = metrics.command(0);
  command.ok->Increment();
  command.duration->Observe(0.012);
  metrics.messages_retrieved.Increment();
  metrics.bytes(popbridge::metrics::Direction::kClientOut).Increment(20971520);
  metrics.bytes(popbridge::metrics::Direction::kUpstreamIn).Increment(20971600);
  metrics.bytes(popbridge::metrics::Direction::kClientIn).Increment(8);
  metrics.bytes(popbridge::metrics::Direction::kUpstreamOut).Increment(40);
}

double nanoseconds_per_retr(popbridge::metrics::Metrics& metrics, unsigned threads,
                            long iterations) {
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (long i = 0; i < iterations; ++i) {
        one_retr(metrics);
      }
    });
  }
  for (auto& thread : pool) {
    thread.join();
  }
  const double elapsed = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  return elapsed / static_cast<double>(iterations);  // per RETR on each thread
}

}  // namespace

int main() {
  prometheus::Registry registry;
  popbridge::metrics::Metrics metrics(registry, {"pop3s"}, {"RETR"}, "bench", "bench", "BoringSSL");
  constexpr long kIterations = 2'000'000;
  nanoseconds_per_retr(metrics, 1, kIterations / 10);  // warm-up
  const double single = nanoseconds_per_retr(metrics, 1, kIterations);
  const unsigned cores = std::max(2u, std::thread::hardware_concurrency());
  const double contended = nanoseconds_per_retr(metrics, cores, kIterations);
  std::printf("metrics per RETR (7 updates), 1 thread:        %8.1f ns\n", single);
  std::printf("metrics per RETR (7 updates), %u threads:       %8.1f ns (same children)\n", cores,
              contended);
  // A 20 MiB RETR at 400 MB/s takes about 52 ms: the share the metrics take of it.
  std::printf("share of a 20 MiB RETR at 400 MB/s:            %8.6f %%\n",
              contended / 52'000'000.0 * 100.0);
  std::printf("share of a 4 KiB RETR at 20k RETR/s:           %8.4f %%\n",
              contended / 50'000.0 * 100.0);
  return 0;
}
