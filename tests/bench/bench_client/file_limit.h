// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>

namespace popbridge::bench {

// Raises RLIMIT_NOFILE's soft limit to `needed` descriptors (one per session the client
// holds open, plus slack); fails if the hard limit is below that.
void raise_file_limit(std::size_t needed);

}  // namespace popbridge::bench
