# SPDX-License-Identifier: Apache-2.0
"""JMAP polls against a distant server: the time a POP3 client waits for a poll (connect,
TLS, USER/PASS, STAT, UIDL, QUIT; with --retr also RETR of every message, in order), and
popbridge's CPU per poll, with a real Cyrus 3.6 serving JMAP over HTTPS behind
delay_relay.py (each round trip --rtt-ms longer). Give --binary more than once to compare
builds, or --compare-read-ahead to run each with limits.read_ahead 0 and with its
default: the targets take turns, round after round, so the machine's load hits them
alike; the first is the reference of the ratios. Prints medians (min-max over the
rounds); no target.

    /usr/bin/python3 tests/bench/jmap_poll_bench.py [--polls 30] [--rtt-ms 20] \\
        [--binary build/popbridge] [--binary /tmp/other/popbridge]
    /usr/bin/python3 tests/bench/jmap_poll_bench.py --retr --compare-read-ahead --polls 10
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from harness import messages  # noqa: E402
from harness.certs import make_pki  # noqa: E402
from harness.clients import RawPop3  # noqa: E402
from harness.cyrus import Cyrus, install_problem  # noqa: E402
from harness.gateway import Gateway  # noqa: E402

USER, PASSWORD = "alice", "alice-jmap-bench-1"


def cpu_ns(pid: int) -> int:
    """Nanoseconds pid's threads have run, from schedstat (finer than /proc/PID/stat)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def start_relay(delay_ms: float, target_port: int) -> tuple[subprocess.Popen, int]:
    relay = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "bench", "delay_relay.py"),
                              "--delay-ms", str(delay_ms), "--to", f"127.0.0.1:{target_port}"],
                             stdout=subprocess.PIPE, text=True)
    port = 0
    for line in relay.stdout:
        if line.startswith("relay "):
            port = int(line.split()[1])
        elif line.strip() == "ready":
            return relay, port
    raise RuntimeError("delay_relay.py did not start")


def poll(port: int, ctx, expect: int, retr: bool) -> float:
    started = time.monotonic()
    with RawPop3(port, tls_context=ctx, timeout=30) as c:
        c.login(USER, PASSWORD)
        stat = c.cmd("STAT").line
        assert stat.startswith(b"+OK %d " % expect), stat
        assert len(c.cmd("UIDL", multiline=True).body_lines()) == expect
        for n in range(1, expect + 1) if retr else ():
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.ok and r.body.startswith(b"From: "), r.line
        assert c.quit().ok
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--polls", type=int, default=30, help="polls per binary and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=20, help="round trip added to the upstream")
    parser.add_argument("--messages", type=int, default=20, help="messages in the mailbox")
    parser.add_argument("--binary", action="append", help="popbridge (default build/popbridge)")
    parser.add_argument("--retr", action="store_true", help="each poll also RETRs every message")
    parser.add_argument("--compare-read-ahead", action="store_true",
                        help="run each binary with limits.read_ahead 0 and with its default")
    args = parser.parse_args()
    targets = []  # (label, binary, extra overrides)
    for binary in args.binary or [os.path.join(REPO, "build", "popbridge")]:
        if args.compare_read_ahead:
            targets.append((f"{binary}, read_ahead 0", binary, {"limits": {"read_ahead": 0}}))
        targets.append((f"{binary}" + (", read_ahead default" if args.compare_read_ahead else ""),
                        binary, {}))
    problem = install_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    pki = make_pki()
    ctx = pki.client_context()
    latencies = {label: [] for label, _, _ in targets}  # per round: the median poll
    cpu = {label: [] for label, _, _ in targets}        # per round: ms per poll
    with Cyrus(pki, {USER: PASSWORD}) as cyrus:
        for n in range(args.messages):
            cyrus.append(USER, messages.simple(n))
        relay, relay_port = start_relay(args.rtt_ms / 2, cyrus.https_port)
        url = f"https://127.0.0.1:{relay_port}/.well-known/jmap"
        overrides = {"workers": 1, "logging": {"level": "warn"},
                     "upstream": {"protocol": "jmap", "url": url, "address": None, "tls": None,
                                  "server_name": None}}
        try:
            for _ in range(args.rounds):
                for label, binary, extra in targets:
                    with Gateway(pki, None, {**overrides, **extra}, binary=binary) as g:
                        # untimed: the probe settles, the worker learns the mailbox
                        poll(g.pop3s_port, ctx, args.messages, args.retr)
                        before = cpu_ns(g.proc.pid)
                        times = [poll(g.pop3s_port, ctx, args.messages, args.retr)
                                 for _ in range(args.polls)]
                        cpu[label].append((cpu_ns(g.proc.pid) - before) / 1e6 / args.polls)
                        latencies[label].append(statistics.median(times) * 1000)
        finally:
            relay.terminate()
            relay.wait(10)
    pki.cleanup()
    what = "STAT, UIDL, RETR" if args.retr else "STAT, UIDL"
    print(f"JMAP polls ({what} of {args.messages} messages) to Cyrus over HTTPS, "
          f"+{args.rtt_ms:g} ms round trips; {args.polls} polls x {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.2f}")
    reference = statistics.median(latencies[targets[0][0]])
    for label, _, _ in targets:
        lat, ms = latencies[label], cpu[label]
        print(f"  {label}\n    poll p50 {statistics.median(lat):7.1f} ms ({min(lat):.1f}-{max(lat):.1f})"
              f"  {reference / statistics.median(lat):5.2f}x the first"
              f"   popbridge CPU {statistics.median(ms):.3f} ms/poll ({min(ms):.3f}-{max(ms):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
