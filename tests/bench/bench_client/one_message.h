// SPDX-License-Identifier: Apache-2.0
// The retr and imap-fetch subcommands: one message retrieved repeatedly in one session.
#pragma once

#include "tests/bench/bench_client/connection.h"

namespace popbridge::bench {

// RETR `message` through POP3: once hashed, then `repeat` timed runs.
int run_retr(const ConnectOptions& options, unsigned message, unsigned repeat);

// UID FETCH `uid` BODY.PEEK[] over IMAP: once hashed, then `repeat` timed runs.
int run_imap_fetch(const ConnectOptions& options, unsigned uid, unsigned repeat);

}  // namespace popbridge::bench
