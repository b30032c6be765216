// SPDX-License-Identifier: Apache-2.0
// The idle-sessions subcommand: authenticated POP3 sessions held open while the runner
// reads the gateway's memory.
#pragma once

#include "tests/bench/bench_client/connection.h"

namespace popbridge::bench {

// Logs in `count` sessions, `parallel` at a time, prints "ready ...", waits for stdin to
// close, then QUITs them all; returns 1 if any QUIT failed.
int run_idle_sessions(const ConnectOptions& options, unsigned count, unsigned parallel);

}  // namespace popbridge::bench
