// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstring>
#include <stdexcept>
#include <string>

namespace popbridge::bench {

// Any failure ends the run with a message on stderr and status 1; the runner shows it.
class Failure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string errno_text(int error) { return std::strerror(error); }

}  // namespace popbridge::bench
