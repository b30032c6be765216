// SPDX-License-Identifier: Apache-2.0
// The short-sessions subcommand: concurrent clients making short sessions back to back,
// as polling mail clients do.
#pragma once

#include <string>

#include "tests/bench/bench_client/connection.h"

namespace popbridge::bench {

// `clients` threads, each with its own user (<user>1 .. <user>N, or --user for all with
// --users 0), run short sessions back to back until `duration` seconds have passed
// (sessions under way then complete) or `max_sessions` are done. Every session's
// Every INBOX holds `count` messages; each session retrieves the first `retrieve` of them
// (0: a poll that finds nothing new). The retrieved messages are hashed and compared with
// --expect-sha256 (or with each other).
int run_short_sessions(bool imap, const ConnectOptions& options, unsigned clients, double duration,
                       unsigned max_sessions, unsigned count, unsigned retrieve, unsigned users,
                       const std::string& expect_sha256);

}  // namespace popbridge::bench
