// SPDX-License-Identifier: Apache-2.0
// The retr-many and imap-fetch-many subcommands: sessions retrieving a whole mailbox.
#pragma once

#include <cstdint>

#include "tests/bench/bench_client/connection.h"

namespace popbridge::bench {

// retr-many / imap-fetch-many: with `check`, one untimed session hashing every message
// (the runner compares length and SHA-256 with what it APPENDed); then `repeat` timed
// sessions, each retrieving messages 1..count, whose octet totals must equal the checked
// session's (or --expect-octets). Prints one line with the seconds of every timed session.
int run_mailbox(const char* mode, bool imap, const ConnectOptions& options, unsigned count,
                unsigned repeat, bool check, std::uint64_t expect_octets);

}  // namespace popbridge::bench
