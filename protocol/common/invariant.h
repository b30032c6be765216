// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdio>
#include <cstdlib>

// Checks what must hold whatever the input, in every build (unlike assert): when it does
// not, carrying on could hand a client a wrong message or delete the wrong one, so the
// process stops with the place and the condition, and the supervisor restarts it. Input
// from clients and servers is never checked with this: bad input gets an error reply.
#define POPBRIDGE_INVARIANT(condition)                               \
  do {                                                               \
    if (!(condition)) [[unlikely]] {                                 \
      ::popbridge::invariant_failed(#condition, __FILE__, __LINE__); \
    }                                                                \
  } while (false)

namespace popbridge {

[[noreturn]] inline void invariant_failed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "level=fatal event=invariant_failed condition=\"%s\" at=%s:%d\n", condition,
               file, line);
  std::fflush(stderr);
  std::abort();
}

}  // namespace popbridge
