# SPDX-License-Identifier: Apache-2.0
"""Names the benchmark's pieces share: the users the upstream holds for each workload,
their password, and the workloads --workloads accepts (in the order they run)."""

HOST = "127.0.0.1"
USER = "bench"            # one big message (retr-one) and the idle sessions
BIG_USER = "benchbig"     # retr-big and cpu: --big-count messages of --big-kib
SMALL_USER = "benchsmall" # retr-small: --small-count messages of --small-kib
SHORT_USER = "short"      # short sessions: short1 .. shortN, --short-messages each
PASSWORD = "bench-secret"

WORKLOADS = ("retr-one", "retr-big", "cpu", "retr-small", "short", "poll", "idle")


class BenchError(Exception):
    """The benchmark could not produce a figure; the message says what went wrong."""
