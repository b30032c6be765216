// SPDX-License-Identifier: Apache-2.0
#include "proxy/server/memory_trimmer.h"

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "proxy/base/log.h"
#include "proxy/server/process_stats.h"

namespace popbridge::proxy {

namespace {

// Often enough to see a burst of sessions that opens and closes within a second (the
// count is one atomic load; nothing else runs unless load has dropped).
constexpr std::uint64_t kSampleMs = 100;

}  // namespace

MemoryTrimmer::MemoryTrimmer(uv_loop_t* loop, const std::atomic<std::size_t>& open_sessions)
    : timer_(loop), open_sessions_(open_sessions) {}

void MemoryTrimmer::start() {
  timer_.start(kSampleMs, [this] { sample(); });
}

void MemoryTrimmer::sample() {
  const std::size_t now = open_sessions_.load(std::memory_order_relaxed);
  peak_ = std::max(peak_, now);
  if (load_dropped(peak_, now)) {
#if defined(__GLIBC__)
    const std::size_t before = resident_bytes();
    malloc_trim(0);
    const std::size_t after = resident_bytes();
    log::info("memory_returned", {{"sessions", now},
                                  {"peak_sessions", peak_},
                                  {"resident_before", before},
                                  {"resident_after", after}});
#endif
    peak_ = now;
  }
  start();
}

}  // namespace popbridge::proxy
