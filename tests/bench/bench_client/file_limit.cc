// SPDX-License-Identifier: Apache-2.0
#include "tests/bench/bench_client/file_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <string>

#include "tests/bench/bench_client/failure.h"

namespace popbridge::bench {

void raise_file_limit(std::size_t needed) {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0) {
    throw Failure("getrlimit: " + errno_text(errno));
  }
  if (files.rlim_cur >= needed) {
    return;
  }
  if (files.rlim_max < needed) {
    throw Failure("RLIMIT_NOFILE hard limit " + std::to_string(files.rlim_max) + " is below the " +
                  std::to_string(needed) + " descriptors needed");
  }
  files.rlim_cur = needed;
  if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
    throw Failure("setrlimit: " + errno_text(errno));
  }
}

}  // namespace popbridge::bench
