// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>

#include "metrics/metrics.h"

namespace popbridge::proxy {

// This process's memory, descriptors and CPU time, from /proc and getrusage; fields that
// cannot be read stay 0.
metrics::Metrics::ProcessSample sample_process();

// The resident set in bytes (from /proc/self/statm); 0 where unknown.
std::size_t resident_bytes();

}  // namespace popbridge::proxy
