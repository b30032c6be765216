// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>

namespace popbridge::bench {

using Clock = std::chrono::steady_clock;

inline double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace popbridge::bench
