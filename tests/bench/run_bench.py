#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""popbridge benchmark: popbridge side by side with a direct IMAP client and with Dovecot's POP3.

Starts a private Dovecot (the upstream), popbridge (with the integration-test harness) and
the "peer": a second private Dovecot serving POP3 with mail_location = imapc: pointed at
the same upstream (peer_dovecot.py), i.e. what a site would run instead of popbridge. Then
runs tests/bench/pop3_bench_client against all three, one workload at a time
(--workloads, see README.md):

  retr-one    one big message, RETR vs UID FETCH, plain and TLS, and popbridge's peak memory
  retr-big    RETR 1..20 x 5 MiB in one session (plain): MB/s, gateway/direct, gateway/peer
  cpu         popbridge CPU seconds per GB relayed, both legs plain and both legs TLS
  retr-small  RETR 1..500 x 4 KiB in one session over TLS: messages/s
  short       64 concurrent clients making short sessions: sessions/s, and CPU ms per
              session of popbridge, the upstream Dovecot and the peer
  poll        the same with sessions that retrieve nothing (login, STAT, UIDL, LIST, QUIT)
  idle        memory per idle authenticated session (gateway and peer)

Each row is --repeat repetitions (one client run each, the targets taking turns); the table
at the end gives the median with min-max, and the host's load average at start and end.
The direct IMAP client is the reference measured in the same run on the same machine, so
the ratios mean something where an absolute figure would not.

Correctness, not speed, decides the exit status: every retrieval workload hashes what it
retrieves (SHA-256 of the dot-unstuffed octets for POP3, the literals for IMAP) at least
once per target and compares it with what was APPENDed; the short sessions hash every
session. A mismatch, a gateway crash, stall or unclean exit, or descriptors not released
make the exit status 1. Only loopback is used. Every process started here is stopped by
PID (its process group) on the way out, errors and Ctrl-C/SIGTERM included.

Run as root (Dovecot switches users itself): /usr/bin/python3 tests/bench/run_bench.py

This file is the entry point (command line, process limits, signals, exit status); the
benchmark itself is the bench_lib package next to it (see bench_lib/__init__.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

# bench_lib sits next to this file; importing it also puts tests/integration (the harness)
# on the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import REPO  # noqa: E402
from bench_lib.bench import Bench  # noqa: E402
from bench_lib.constants import WORKLOADS, BenchError  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, default all: {','.join(WORKLOADS)}")
    p.add_argument("--repeat", type=int, default=5, help="repetitions per row (default 5; median and min-max)")
    p.add_argument("--size-mib", type=int, default=20, help="retr-one: message size in MiB (default 20)")
    p.add_argument("--big-count", type=int, default=20, help="retr-big, cpu: messages per session (default 20)")
    p.add_argument("--big-kib", type=int, default=5120, help="retr-big, cpu: message size in KiB (default 5120)")
    p.add_argument("--small-count", type=int, default=500, help="retr-small: messages per session (default 500)")
    p.add_argument("--small-kib", type=int, default=4, help="retr-small, short: message size in KiB (default 4)")
    p.add_argument("--short-clients", type=int, default=64, help="short, poll: concurrent clients, one user each (default 64)")
    p.add_argument("--short-duration", type=float, default=8,
                   help="short, poll: seconds each run starts new sessions for (default 8)")
    p.add_argument("--short-messages", type=int, default=20, help="short: messages RETRieved per session; poll: messages in each INBOX (default 20)")
    p.add_argument("--cpu-upstream-tls", choices=("implicit", "starttls"), default="implicit",
                   help="cpu: upstream TLS of the TLS-both-legs gateway (default implicit)")
    p.add_argument("--sessions", type=int, default=1000, help="idle: sessions on the gateway (default 1000)")
    p.add_argument("--peer-sessions", type=int, default=250,
                   help="idle: sessions on the peer (default 250: one pop3 process per session there, and one "
                        "upstream imap process each)")
    p.add_argument("--upstream-imap-client-limit", type=int, default=0,
                   help="the upstream's service imap client_limit (default: 1 up to 2000 sessions, else 25)")
    p.add_argument("--no-peer", action="store_true", help="leave out Dovecot's POP3 (the peer)")
    p.add_argument("--upstream-rtt-ms", type=float, default=0,
                   help="put a relay adding this round-trip time in front of Dovecot, for the gateways and "
                        "the direct IMAP client alike (a distant upstream; implies --no-peer)")
    p.add_argument("--json", help="also write the table (every repetition's value) to this file")
    p.add_argument("--parallel", type=int, default=50, help="logins in flight at once (default 50)")
    p.add_argument("--idle-rounds", type=int, default=2,
                   help="rounds of sessions per gateway in the idle test (default 2; later rounds show leaks)")
    p.add_argument("--idle-modes", default="plain,tls",
                   help="client-side modes for the idle test, comma-separated: plain,tls (default both)")
    p.add_argument("--upstream-tls", choices=("none", "starttls", "implicit"), default="none",
                   help="gateway to Dovecot (default none)")
    p.add_argument("--starttls", dest="upstream_tls", action="store_const", const="starttls",
                   help="same as --upstream-tls starttls")
    p.add_argument("--login-reuse", default="0s",
                   help="the gateway's upstream.login_reuse.idle (default 0s: off): a user's next poll "
                        "skips the upstream login")
    p.add_argument("--binary", default=os.path.join(REPO, "build", "popbridge"), help="popbridge binary")
    p.add_argument("--client", default=os.path.join(REPO, "build", "tests", "bench", "pop3_bench_client"),
                   help="pop3_bench_client binary")
    p.add_argument("--log-level", default="info", help="popbridge logging.level (default info)")
    p.add_argument("--read-timeout", type=int, default=120, help="client read timeout, seconds")
    p.add_argument("--client-timeout", type=float, default=900, help="longest client run, seconds")
    p.add_argument("--quick", action="store_true",
                   help="smoke run for CI: every workload, tiny (see README)")
    p.add_argument("--hold", type=float, default=0,
                   help="soak: keep the idle sessions open this many seconds, sampling popbridge")
    p.add_argument("--sample", type=float, default=10, help="soak: seconds between samples (default 10)")
    p.add_argument("--idle-only", action="store_true", help="same as --workloads idle")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat, args.sessions, args.peer_sessions = 2, 2, 50, 20
        args.big_count, args.big_kib, args.small_count = 3, 1024, 50
        args.short_clients, args.short_duration, args.short_messages = 4, 1, 5
    args.workloads = {"idle"} if args.idle_only else {w for w in args.workloads.split(",") if w}
    unknown = args.workloads - set(WORKLOADS)
    if unknown or not args.workloads:
        p.error(f"--workloads takes some of {','.join(WORKLOADS)} (got {','.join(sorted(unknown)) or 'none'})")
    if args.upstream_rtt_ms < 0:
        p.error("--upstream-rtt-ms must not be negative")
    if args.upstream_rtt_ms > 0:
        args.no_peer = True  # the peer's imapc would reach Dovecot without the relay
    args.idle_modes = [m for m in args.idle_modes.split(",") if m]
    if any(m not in ("plain", "tls") for m in args.idle_modes):
        p.error("--idle-modes takes plain and/or tls")
    if min(args.size_mib, args.repeat, args.sessions, args.idle_rounds, args.big_count, args.big_kib,
           args.small_count, args.small_kib, args.short_clients, args.short_messages, args.peer_sessions) < 1:
        p.error("counts, sizes and --repeat must be positive")
    if args.short_duration <= 0:
        p.error("--short-duration must be positive")
    if args.hold < 0 or args.sample <= 0:
        p.error("--hold must not be negative and --sample must be positive")
    return args


def raise_file_limit(args: argparse.Namespace) -> None:
    """RLIMIT_NOFILE for the runner and everything it starts (they inherit it): popbridge
    holds two descriptors per idle session, the client one. Raised as far as allowed (the
    hard limit, or beyond it with CAP_SYS_RESOURCE); a shortfall is reported up front."""
    needed = 2 * max(args.sessions, args.peer_sessions) + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if "idle" in args.workloads and hard < needed:
            print(f"warning: RLIMIT_NOFILE hard limit {hard} is below the ~{needed} descriptors "
                  f"{args.sessions} idle sessions need; raise it (ulimit -Hn, or run with CAP_SYS_RESOURCE)",
                  file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run_bench.py must run as root (Dovecot is started as root and drops privileges)", file=sys.stderr)
        return 2

    raise_file_limit(args)

    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the finally below stops everything.
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    # Every temporary directory (PKI, Dovecot's maildirs and sockets, gateway configs)
    # goes under a private root, so a cleanup of the integration tests' /tmp/popbridge-it-*
    # running meanwhile cannot pull files from under this run. Dovecot's unprivileged
    # processes must traverse it, hence 0755.
    root = tempfile.mkdtemp(prefix="pbbench-")
    os.chmod(root, 0o755)
    tempfile.tempdir = root
    bench = None
    try:
        bench = Bench(args)
        bench.run()
    except (BenchError, AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        # AssertionError/RuntimeError: the harness failed to start or stop a server.
        print(f"\nBENCHMARK FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        try:
            if bench is not None:
                bench.close()
        finally:
            tempfile.tempdir = None
            shutil.rmtree(root, ignore_errors=True)
    if bench.problems:
        print("PROBLEMS:\n" + "\n".join(f"  - {p}" for p in bench.problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
