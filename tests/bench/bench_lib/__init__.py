# SPDX-License-Identifier: Apache-2.0
"""The benchmark behind tests/bench/run_bench.py, one job per module:

  procstats         CPU, memory and process-group figures read from /proc
  server_config     Dovecot and popbridge settings for the session counts asked for
  constants         the benchmark's users, password, workload names, and BenchError
  client            one pop3_bench_client run and its key=value result line
  bench             Bench: starts and stops the servers, fills the mailboxes, runs the workloads
  workloads_*       the workloads (retr-one; retr-big, retr-small and cpu; short; idle)
  report            the header, the rows of the final table, and --json

Importing the package makes the integration tests' harness (tests/integration) and this
directory's peer_dovecot importable, however the runner was started.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests", "bench"))
