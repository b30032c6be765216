// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <uv.h>

#include <atomic>
#include <cstddef>

#include "proxy/base/uv_handle.h"

namespace popbridge::proxy {

// Gives freed heap back to the system when load drops. glibc keeps memory that sessions
// freed in its arenas: after 10,000 sessions closed, the process stayed at its 178 MB
// peak. When the number of open sessions falls to half of the most seen since the last
// trim (and by at least kMinimumDrop), malloc_trim() returns the free pages; a sampled
// count on the main loop keeps the workers' hot path free of it.
class MemoryTrimmer {
 public:
  static constexpr std::size_t kMinimumDrop = 64;

  MemoryTrimmer(uv_loop_t* loop, const std::atomic<std::size_t>& open_sessions);
  void start();
  void stop() { timer_.stop(); }

  // Whether to give memory back now, with `now` sessions open after at most `peak`
  // since the last trim.
  static bool load_dropped(std::size_t peak, std::size_t now) {
    return peak >= now + kMinimumDrop && now <= peak / 2;
  }

 private:
  void sample();

  Timer timer_;
  const std::atomic<std::size_t>& open_sessions_;
  std::size_t peak_ = 0;  // the most open sessions sampled since the last trim
};

}  // namespace popbridge::proxy
