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
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from harness import messages, procs, tempdirs  # noqa: E402
from harness.certs import make_pki  # noqa: E402
from harness.dovecot import Dovecot  # noqa: E402
from harness.gateway import Gateway, GatewayExitError  # noqa: E402
from harness.wait import wait_until  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_dovecot import IMAPC_FEATURES, PeerDovecot  # noqa: E402

HOST = "127.0.0.1"
USER = "bench"            # one big message (retr-one) and the idle sessions
BIG_USER = "benchbig"     # retr-big and cpu: --big-count messages of --big-kib
SMALL_USER = "benchsmall" # retr-small: --small-count messages of --small-kib
SHORT_USER = "short"      # short sessions: short1 .. shortN, --short-messages each
PASSWORD = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not produce a figure; the message says what went wrong."""


# ------------------------------------------------------------------- /proc readers

def proc_status_kib(pid: int, field: str) -> int:
    """VmRSS, VmHWM, ... of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rfind(b")") + 2:].split()  # comm may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def proc_cpu_seconds_ns(pid: int) -> float:
    """CPU time of a process's live threads with nanosecond resolution: the sum of the first
    field of /proc/PID/task/*/schedstat (time on a CPU). /proc/PID/stat counts in clock
    ticks (10 ms), too coarse for a row that costs the gateway tens of milliseconds.
    popbridge's threads live as long as the process, so nothing exits uncounted; falls
    back to /proc/PID/stat where schedstat is missing."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return proc_cpu_seconds(pid)
    return total / 1e9 if total else proc_cpu_seconds(pid)


def _stat_fields(pid: int) -> Optional[list[bytes]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def group_cpu_seconds(leader: int) -> float:
    """CPU time a process group has used so far, exited processes included.

    Dovecot's master (the group leader, `dovecot -F`) forks its auth, login and imap/pop3
    processes and reaps them when they exit, so the kernel adds an exited child's
    utime+stime (and its own reaped children's) to the master's cutime+cstime. The sum is
    therefore: the leader's utime+stime+cutime+cstime, plus utime+stime+cutime+cstime of
    every other process of the group still alive or not yet reaped (zombies keep their
    times). A child that exits between the two reads is missed or counted twice; that is
    one process's last few milliseconds, far below what a row measures."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or len(fields) < 15 or int(fields[2]) != leader:
            continue
        # fields[11..14]: utime stime cutime cstime (stat(5) fields 14-17)
        total += sum(int(x) for x in fields[11:15])
    return total / CLK_TCK


def group_pss_kib(leader: int) -> int:
    """Sum of Pss (proportional set size: shared pages split between their users) over a
    process group, from /proc/PID/smaps_rollup; summing RSS would count the shared
    libraries of every Dovecot process again and again."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or len(fields) < 3 or int(fields[2]) != leader:
            continue
        try:
            with open(f"/proc/{entry}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def wait_sessions_gone(leader: int, comm: bytes, timeout: float = 60) -> int:
    """Waits until no process of the group is named `comm` (Dovecot's per-session imap or
    pop3 processes exit shortly after their client's LOGOUT/QUIT, not at once), so a memory
    baseline does not include the previous round's sessions. Returns how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        left = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat_fields(int(entry))
                if fields is not None and len(fields) >= 3 and fields[0] != b"Z" and int(fields[2]) == leader:
                    try:
                        with open(f"/proc/{entry}/comm", "rb") as f:
                            left += f.read().strip() == comm
                    except OSError:
                        pass
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def group_size(leader: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and len(fields) >= 3 and fields[0] != b"Z" and int(fields[2]) == leader:
                n += 1
    return n


def children_cpu_seconds() -> float:
    """CPU time of waited-for children: the delta around one client run is that client's
    (Dovecot and the gateway are reaped only at the end)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------ configuration

def imap_client_limit(sessions: int, requested: int) -> int:
    """Sessions per upstream imap process: Dovecot's default 1 (a process per session) up to
    2000 sessions; beyond, 25 per process, so 10,000 sessions fit in memory (all run as
    one mail_uid, which client_limit > 1 requires)."""
    if requested > 0:
        return requested
    return 1 if sessions <= 2000 else 25


def dovecot_limits(sessions: int, client_limit: int = 1) -> str:
    """Dovecot settings for `sessions` concurrent IMAP sessions of one user from one IP.

    The defaults allow 10 connections per user and IP, 100 processes per service and
    1000 clients per process; and imap-login runs one process per connection.
    """
    processes = sessions + 200
    # doveconf wants auth's and anvil's client_limit to cover every login service's
    # process_limit (imap-login and imap-urlauth-login, both default_process_limit).
    clients = max(1000, 2 * processes + 100)
    return f"""
# run_bench.py: room for {sessions} sessions of one user from 127.0.0.1.
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 512M
protocol imap {{
  mail_max_userip_connections = {sessions + 100}
}}
# High-performance mode: a few login processes each serve many connections, instead of
# one process per connection (which default_process_limit would cap).
service imap-login {{
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
}}
# client_limit = 1: one imap process per session (Dovecot's default); more to fit 10,000.
service imap {{
  client_limit = {client_limit}
  process_limit = {(sessions + 100 + client_limit - 1) // client_limit + 10}
}}
"""


def check_dovecot_config(dovecot: Dovecot) -> str:
    """doveconf's warnings about the generated config (e.g. a limit too low for the load)."""
    proc = subprocess.run(["doveconf", "-c", dovecot.conf_path, "-n"], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"doveconf rejected the config:\n{proc.stderr}")
    return "\n".join(line for line in proc.stderr.splitlines() if line.strip())


def gateway_overrides(sessions: int, log_level: str, hold: float = 0) -> dict:
    # A soak holds sessions silent for longer than the 10-minute autologout.
    idle_timeout = f"{int(hold) + 600}s"
    return {
        "auth": {"allow_plaintext": True},
        "limits": {"max_connections": sessions + 100, "idle_timeout": idle_timeout},
        # The harness's 10 s suits tests; production's default is 60 s.
        "upstream": {"command_timeout": "60s"},
        "logging": {"level": log_level},
    }


# ----------------------------------------------------------------------- clients

@dataclasses.dataclass
class Result:
    label: str
    fields: dict
    client_cpu: float
    gateway_cpu: Optional[float] = None
    # CPU seconds each watched server (gateway, upstream, peer) used during the client run
    servers_cpu: dict = dataclasses.field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return float(self.fields["mb_per_s"])

    @property
    def best_mb_per_s(self) -> float:
        return float(self.fields["best_mb_per_s"])


def parse_fields(line: str) -> dict:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.problems: list[str] = []  # findings that make the exit status 1
        for path in (args.binary, args.client):
            if not os.access(path, os.X_OK):
                raise BenchError(f"{path} is missing or not executable (build it: cmake --build build)")
        self.workdir = tempdirs.make("bench")
        # Private copies: the lead may rebuild build/ while the benchmark runs.
        self.binary = self._copy(args.binary, "popbridge")
        self.client = self._copy(args.client, "pop3_bench_client")
        self.pki = None
        self.dovecot: Optional[Dovecot] = None
        self.peer: Optional[PeerDovecot] = None
        self.rows: list[dict] = []  # the final table (and --json)
        self.load_start = os.getloadavg()
        self.gateways: list[Gateway] = []
        self.clients: list[subprocess.Popen] = []

    def _copy(self, path: str, name: str) -> str:
        target = os.path.join(self.workdir, name)
        shutil.copy2(path, target)
        return target

    # -- teardown: by PID / process group, never by name
    def close(self) -> None:
        for proc in self.clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for gw in self.gateways:
            try:
                gw.close(check_exit=False)
            except Exception as e:  # keep tearing down
                print(f"warning: stopping popbridge: {e}", file=sys.stderr)
        if self.peer is not None:
            try:
                self.peer.close()
            except Exception as e:
                print(f"warning: stopping the peer dovecot: {e}", file=sys.stderr)
        if self.dovecot is not None:
            try:
                self.dovecot.close()
            except Exception as e:
                print(f"warning: stopping dovecot: {e}", file=sys.stderr)
        if self.pki is not None:
            self.pki.cleanup()
        tempdirs.remove(self.workdir)

    def stop_gateway(self, gw: Gateway, what: str) -> None:
        """Stops a gateway and records an unclean exit (crash, hang on SIGTERM) as a finding;
        shows its warnings and errors, which a clean benchmark run should not produce."""
        try:
            gw.stop(check_exit=True)
        except GatewayExitError as e:
            self.problems.append(f"{what}: {e}")
        finally:
            bad = [l for l in gw.log_text().splitlines()
                   if l.startswith(("level=warn", "level=error")) or '"level":"warn"' in l
                   or '"level":"error"' in l]
            if bad:
                print(f"  popbridge logged {len(bad)} warning/error lines ({what}); first ones:")
                for line in bad[:5]:
                    print(f"    {line[:300]}")
                print()
            gw.close(check_exit=False)
            self.gateways.remove(gw)

    def gateway_alive(self, gw: Gateway, what: str) -> None:
        if not gw.running:
            raise BenchError(f"popbridge died during {what} (status {gw.proc.returncode if gw.proc else '?'})\n"
                             f"{gw.diagnostics(80)}")

    def cpu_snapshot(self, gw: Optional[Gateway]) -> dict:
        """CPU seconds so far of the gateway (one process, all threads), the upstream Dovecot
        and the peer (each a process group: see group_cpu_seconds)."""
        snap = {}
        if gw is not None and gw.running:
            snap["gateway"] = proc_cpu_seconds_ns(gw.proc.pid)
        if self.dovecot is not None and self.dovecot.running:
            snap["upstream"] = group_cpu_seconds(self.dovecot.proc.pid)
        if self.peer is not None and self.peer.running:
            snap["peer"] = group_cpu_seconds(self.peer.proc.pid)
        return snap

    def run_client(self, label: str, argv: list[str], gw: Optional[Gateway] = None,
                   user: str = USER) -> Result:
        cmd = [self.client] + argv + ["--user", user, "--pass", PASSWORD, "--ca", self.pki.ca]
        cpu0 = children_cpu_seconds()
        gw_cpu0 = proc_cpu_seconds(gw.proc.pid) if gw else None
        servers0 = self.cpu_snapshot(gw)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=procs.die_with_parent(signal.SIGKILL))
        self.clients.append(proc)
        try:
            out, err = proc.communicate(timeout=self.args.client_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise BenchError(f"{label}: client still running after {self.args.client_timeout}s\n{err}"
                             + (f"\n{gw.diagnostics(40)}" if gw else ""))
        finally:
            self.clients.remove(proc)
        gw_cpu = proc_cpu_seconds(gw.proc.pid) - gw_cpu0 if gw and gw.running else None
        servers1 = self.cpu_snapshot(gw)
        servers_cpu = {k: servers1[k] - v for k, v in servers0.items() if k in servers1}
        if proc.returncode != 0:
            raise BenchError(f"{label}: client failed ({proc.returncode}): {err.strip()}"
                             + (f"\n{gw.diagnostics(40)}" if gw else "")
                             + (f"\n{self.dovecot.diagnostics(20)}" if self.dovecot else "")
                             + (f"\n{self.peer.diagnostics(20)}" if self.peer else ""))
        lines = [l for l in out.splitlines() if l.startswith("mode=")]
        if not lines:
            raise BenchError(f"{label}: no result line in client output:\n{out}\n{err}")
        return Result(label, parse_fields(lines[-1]), children_cpu_seconds() - cpu0, gw_cpu, servers_cpu)

    def check_bytes(self, result: Result, size: int, sha256: str) -> None:
        got_size = int(result.fields["message_octets"])
        got_sha = result.fields["sha256"]
        if got_size != size or got_sha != sha256:
            self.problems.append(f"WRONG BYTES via {result.label}: {got_size} octets sha256 {got_sha}, "
                                 f"expected {size} octets sha256 {sha256}")

    # -- the benchmark
    def run(self) -> None:
        a = self.args
        w = a.workloads
        self.pki = make_pki()
        users = {USER: PASSWORD, BIG_USER: PASSWORD, SMALL_USER: PASSWORD}
        users.update({f"{SHORT_USER}{i}": PASSWORD for i in range(1, a.short_clients + 1)})
        upstream_sessions = max(a.sessions, a.peer_sessions, 2 * a.short_clients)
        self.client_limit = imap_client_limit(upstream_sessions, a.upstream_imap_client_limit)
        self.dovecot = Dovecot(self.pki, users,
                               extra_config=dovecot_limits(upstream_sessions, self.client_limit))
        self.dovecot.start()
        warnings = check_dovecot_config(self.dovecot)
        if warnings:
            print(f"doveconf says:\n{warnings}\n")
        if w & {"retr-big", "retr-small", "short", "idle"} and not a.no_peer:
            self.peer = PeerDovecot(self.pki, self.dovecot, sessions=max(a.peer_sessions, 2 * a.short_clients))
            self.peer.start()
        self.print_header()
        self.prepare_mailboxes()

        if "retr-one" in w:
            self.retr_one()
        if w & {"retr-big", "retr-small", "short", "cpu"}:
            gw = Gateway(self.pki, self.dovecot, gateway_overrides(a.sessions, a.log_level),
                         upstream_tls=a.upstream_tls, listeners=(("pop3", "none"), ("pop3s", "implicit")),
                         binary=self.binary)
            self.gateways.append(gw)
            gw.start()
            if "retr-big" in w:
                self.retr_big(gw)
            if "retr-small" in w:
                self.retr_small(gw)
            if "short" in w:
                self.short_sessions(gw)
            if "cpu" in w:
                self.cpu_per_gb(gw)
            self.gateway_alive(gw, "the workloads")
            self.stop_gateway(gw, "popbridge after the workloads")
        if "idle" in w:
            # A fresh gateway per client-side mode, for a clean baseline
            for mode in a.idle_modes:
                self.idle_sessions(mode)
            if self.peer is not None:
                self.peer_idle()
        self.print_table()

    # -- mailboxes: one user per workload, APPENDed over one IMAP connection each
    def append_messages(self, user: str, make, count: int) -> tuple[int, str]:
        """APPENDs make(i) for i < count to user's INBOX; returns (octets, SHA-256 of the
        concatenation), which is what a session retrieving messages 1..count must hash to."""
        conn = self.dovecot.imap(user, "none")
        sha = hashlib.sha256()
        octets = 0
        try:
            for i in range(count):
                m = make(i)
                typ, data = conn.append("INBOX", None, None, m)
                if typ != "OK":
                    raise BenchError(f"APPEND for {user} failed: {typ} {data}")
                sha.update(m)
                octets += len(m)
        finally:
            conn.logout()
        return octets, sha.hexdigest()

    def prepare_mailboxes(self) -> None:
        a, w = self.args, self.args.workloads
        t0 = time.monotonic()
        if "retr-one" in w:
            size = a.size_mib * 1024 * 1024
            message = messages.big_message(size, seed="popbridge-bench")
            self.one = (size, hashlib.sha256(message).hexdigest(), self.dovecot.append(USER, message))
            del message
        if w & {"retr-big", "cpu"}:
            self.big = self.append_messages(
                BIG_USER, lambda i: messages.big_message(a.big_kib * 1024, seed=f"big-{i}"), a.big_count)
        if "retr-small" in w:
            self.small = self.append_messages(
                SMALL_USER, lambda i: messages.big_message(a.small_kib * 1024, seed=f"small-{i}"), a.small_count)
        if "short" in w:
            short = [messages.big_message(a.small_kib * 1024, seed=f"short-{i}") for i in range(a.short_messages)]
            for i in range(1, a.short_clients + 1):
                self.short = self.append_messages(f"{SHORT_USER}{i}", lambda j: short[j], a.short_messages)
        print(f"  (mailboxes APPENDed in {time.monotonic() - t0:.1f} s)\n")
        sys.stdout.flush()

    # -- rows of the final table
    def add_row(self, workload: str, target: str, figure: str, values: list[float], note: str = "") -> dict:
        row = {"workload": workload, "target": target, "figure": figure, "values": values,
               "median": statistics.median(values) if values else None,
               "min": min(values) if values else None, "max": max(values) if values else None, "note": note}
        self.rows.append(row)
        return row

    def add_ratio(self, workload: str, name: str, num: Optional[dict], den: Optional[dict]) -> None:
        if num and den and num["median"] and den["median"]:
            self.rows.append({"workload": workload, "target": name, "figure": "ratio of medians", "values": [],
                              "median": num["median"] / den["median"], "min": None, "max": None, "note": ""})

    # -- many messages in one session, against the three targets
    def mailbox_targets(self, gw: Gateway, tls: bool) -> list[tuple[str, str, list[str], Optional[Gateway]]]:
        d = self.dovecot
        flag = ["--tls"] if tls else []
        targets = [("direct", "direct IMAP" + ("S" if tls else ""),
                    ["imap-fetch-many", "--imap", f"{d.host}:{d.imaps_port if tls else d.imap_port}"] + flag, None),
                   ("gateway", "gateway POP3" + ("S" if tls else ""),
                    ["retr-many", "--pop3", f"{HOST}:{gw.port('pop3s' if tls else 'pop3')}"] + flag, gw)]
        if self.peer is not None:
            p = self.peer
            targets.append(("peer", "peer Dovecot POP3" + ("S" if tls else "") + " (imapc)",
                            ["retr-many", "--pop3", f"{p.host}:{p.pop3s_port if tls else p.pop3_port}"] + flag,
                            None))
        return targets

    def mailbox_runs(self, targets, user: str, count: int, octets: int, sha256: str) -> dict:
        """For each target: one checked session (every message hashed, compared with what was
        APPENDed), then --repeat timed sessions, one client run each, the targets taking turns
        so a change in the machine's load hits them alike. Returns {key: [Result, ...]}."""
        a = self.args
        common = ["--messages", str(count), "--timeout", str(a.read_timeout)]
        for key, label, argv, gw in targets:
            r = self.run_client(f"{label} (check)", argv + common + ["--check", "--repeat", "0"], gw, user=user)
            got_octets, got_sha = int(r.fields["message_octets"]), r.fields["sha256"]
            if got_octets != octets or got_sha != sha256:
                self.problems.append(f"WRONG BYTES via {label}: {got_octets} octets sha256 {got_sha}, "
                                     f"expected {octets} octets sha256 {sha256}")
        results: dict = {key: [] for key, _, _, _ in targets}
        for _ in range(a.repeat):
            for key, label, argv, gw in targets:
                results[key].append(self.run_client(
                    label, argv + common + ["--repeat", "1", "--expect-octets", str(octets)], gw, user=user))
        return results

    def retr_big(self, gw: Gateway) -> None:
        a = self.args
        octets, sha = self.big
        wl = f"RETR {a.big_count} x {a.big_kib // 1024 if a.big_kib % 1024 == 0 else a.big_kib} " \
             f"{'MiB' if a.big_kib % 1024 == 0 else 'KiB'}, one session, plain"
        print(f"{wl}: {a.repeat} timed sessions per target (load average {os.getloadavg()[0]:.2f})")
        sys.stdout.flush()
        targets = self.mailbox_targets(gw, tls=False)
        res = self.mailbox_runs(targets, BIG_USER, a.big_count, octets, sha)
        rows = {}
        for key, label, _, _ in targets:
            rates = [octets / 1e6 / float(r.fields["seconds"]) for r in res[key]]
            rows[key] = self.add_row(wl, label, "MB/s", rates)
        self.add_ratio(wl, "gateway / direct IMAP", rows.get("gateway"), rows.get("direct"))
        self.add_ratio(wl, "gateway / peer", rows.get("gateway"), rows.get("peer"))
        self.add_row(wl, "gateway", "CPU s/GB relayed",
                     [r.servers_cpu.get("gateway", 0) / (octets / 1e9) for r in res["gateway"]],
                     "popbridge, /proc/PID/task/*/schedstat")
        if "peer" in res:
            self.add_row(wl, "peer", "CPU s/GB relayed",
                         [r.servers_cpu.get("peer", 0) / (octets / 1e9) for r in res["peer"]],
                         "peer Dovecot's processes")

    def retr_small(self, gw: Gateway) -> None:
        a = self.args
        octets, sha = self.small
        wl = f"RETR {a.small_count} x {a.small_kib} KiB, one session, TLS"
        print(f"{wl}: {a.repeat} timed sessions per target (load average {os.getloadavg()[0]:.2f})")
        sys.stdout.flush()
        targets = self.mailbox_targets(gw, tls=True)
        res = self.mailbox_runs(targets, SMALL_USER, a.small_count, octets, sha)
        rows = {}
        for key, label, _, _ in targets:
            rows[key] = self.add_row(wl, label, "messages/s",
                                     [a.small_count / float(r.fields["seconds"]) for r in res[key]],
                                     "direct: one command at a time" if key == "direct" else "")
        self.add_ratio(wl, "gateway / direct IMAPS", rows.get("gateway"), rows.get("direct"))
        self.add_ratio(wl, "gateway / peer", rows.get("gateway"), rows.get("peer"))

    def cpu_per_gb(self, gw_plain: Gateway) -> None:
        """Gateway CPU per GB relayed with both legs plain, and with both legs TLS (client
        POP3S, upstream --cpu-upstream-tls on its own gateway)."""
        a = self.args
        octets, sha = self.big
        wl = f"gateway CPU per GB relayed ({a.big_count} x {a.big_kib} KiB RETR)"
        print(f"{wl}: {a.repeat} timed sessions per leg mode (load average {os.getloadavg()[0]:.2f})")
        sys.stdout.flush()
        gw_tls = Gateway(self.pki, self.dovecot, gateway_overrides(a.sessions, a.log_level),
                         upstream_tls=a.cpu_upstream_tls, listeners=(("pop3s", "implicit"),), binary=self.binary)
        self.gateways.append(gw_tls)
        gw_tls.start()
        targets = [("plain", f"plain both legs (upstream {a.upstream_tls})",
                    ["retr-many", "--pop3", f"{HOST}:{gw_plain.port('pop3')}"], gw_plain),
                   ("tls", f"TLS both legs (client POP3S, upstream {a.cpu_upstream_tls})",
                    ["retr-many", "--tls", "--pop3", f"{HOST}:{gw_tls.port('pop3s')}"], gw_tls)]
        res = self.mailbox_runs(targets, BIG_USER, a.big_count, octets, sha)
        self.gateway_alive(gw_tls, "the TLS-both-legs runs")
        self.stop_gateway(gw_tls, "popbridge after the TLS-both-legs runs")
        for key, label, _, _ in targets:
            self.add_row(wl, label, "gateway CPU s/GB",
                         [r.servers_cpu.get("gateway", 0) / (octets / 1e9) for r in res[key]])
            self.add_row(wl, label, "MB/s", [octets / 1e6 / float(r.fields["seconds"]) for r in res[key]])

    # -- short sessions from concurrent clients
    def short_sessions(self, gw: Gateway) -> None:
        a = self.args
        octets, sha = self.short
        wl = (f"short sessions, {a.short_clients} clients x {a.short_duration:g} s "
              f"(login, STAT, UIDL, LIST, RETR {a.short_messages} x {a.small_kib} KiB, QUIT)")
        print(f"{wl}: {a.repeat} runs per target (load average {os.getloadavg()[0]:.2f})")
        sys.stdout.flush()
        d = self.dovecot
        common = ["--clients", str(a.short_clients), "--duration", str(a.short_duration),
                  "--messages", str(a.short_messages), "--users", str(a.short_clients),
                  "--expect-sha256", sha, "--timeout", str(a.read_timeout)]
        targets = [("direct", "direct IMAP", ["short-sessions", "--imap", f"{d.host}:{d.imap_port}"], None),
                   ("gateway", "gateway POP3", ["short-sessions", "--pop3", f"{HOST}:{gw.port('pop3')}"], gw)]
        if self.peer is not None:
            targets.append(("peer", "peer Dovecot POP3 (imapc)",
                            ["short-sessions", "--pop3", f"{self.peer.host}:{self.peer.pop3_port}"], None))
        res: dict = {key: [] for key, _, _, _ in targets}
        for _ in range(a.repeat):
            for key, label, argv, g in targets:
                # Let the previous run's processes exit and be reaped (Dovecot's imap, pop3
                # and auth connections), so their CPU lands in the right run.
                time.sleep(0.5)
                res[key].append(self.run_client(label, argv + common, g, user=SHORT_USER))
        rows = {}
        for key, label, _, _ in targets:
            rs = res[key]
            rows[key] = self.add_row(wl, label, "sessions/s", [float(r.fields["sessions_per_s"]) for r in rs],
                                     f"p50 latency {statistics.median(float(r.fields['p50_ms']) for r in rs):.1f} ms, "
                                     f"{sum(int(r.fields['sessions']) for r in rs)} sessions")
        self.add_ratio(wl, "gateway / direct IMAP", rows.get("gateway"), rows.get("direct"))
        self.add_ratio(wl, "gateway / peer", rows.get("gateway"), rows.get("peer"))

        def per_session(r: Result, who: str) -> float:
            return r.servers_cpu.get(who, 0) * 1000 / int(r.fields["sessions"])
        wl5 = "CPU per short session (same runs)"
        self.add_row(wl5, "gateway (popbridge)", "CPU ms/session", [per_session(r, "gateway") for r in res["gateway"]])
        self.add_row(wl5, "upstream Dovecot, serving the gateway", "CPU ms/session",
                     [per_session(r, "upstream") for r in res["gateway"]])
        self.add_row(wl5, "upstream Dovecot, serving direct IMAP", "CPU ms/session",
                     [per_session(r, "upstream") for r in res["direct"]])
        if "peer" in res:
            self.add_row(wl5, "peer Dovecot POP3 (imapc)", "CPU ms/session",
                         [per_session(r, "peer") for r in res["peer"]])
            self.add_row(wl5, "upstream Dovecot, serving the peer", "CPU ms/session",
                         [per_session(r, "upstream") for r in res["peer"]])
        self.add_row(wl5, "benchmark client, gateway runs", "CPU ms/session",
                     [r.client_cpu * 1000 / int(r.fields["sessions"]) for r in res["gateway"]],
                     "must stay small next to the servers")

    # -- the single big message, plain and TLS (backpressure: VmHWM must not follow the size)
    def retr_one(self) -> None:
        a = self.args
        size, sha256, uid = self.one
        gw = Gateway(self.pki, self.dovecot, gateway_overrides(a.sessions, a.log_level),
                     upstream_tls=a.upstream_tls, listeners=(("pop3", "none"), ("pop3s", "implicit")),
                     binary=self.binary)
        self.gateways.append(gw)
        gw.start()
        pid = gw.proc.pid
        rss_start = proc_status_kib(pid, "VmRSS")
        d = self.dovecot
        common = ["--repeat", str(a.repeat), "--timeout", str(a.read_timeout)]
        pairs = [
            ("plain", self.run_client("direct IMAP", ["imap-fetch", "--imap", f"{d.host}:{d.imap_port}",
                                                      "--uid", str(uid)] + common),
             self.run_client("gateway POP3", ["retr", "--pop3", f"{HOST}:{gw.port('pop3')}",
                                              "--message", "1"] + common, gw)),
            ("TLS", self.run_client("direct IMAPS", ["imap-fetch", "--tls", "--imap", f"{d.host}:{d.imaps_port}",
                                                     "--uid", str(uid)] + common),
             self.run_client("gateway POP3S", ["retr", "--tls", "--pop3", f"{HOST}:{gw.port('pop3s')}",
                                               "--message", "1"] + common, gw)),
        ]
        self.gateway_alive(gw, "the RETR runs")
        rss_end = proc_status_kib(pid, "VmRSS")
        hwm = proc_status_kib(pid, "VmHWM")
        self.stop_gateway(gw, "popbridge after the RETR runs")

        for _, direct, via in pairs:
            self.check_bytes(direct, size, sha256)
            self.check_bytes(via, size, sha256)
        self.print_throughput(pairs, size, rss_start, rss_end, hwm)
        wl = f"one {a.size_mib} MiB message, {a.repeat} RETRs in one session"
        for side, direct, via in pairs:
            dr = self.add_row(wl, f"direct IMAP ({side})", "MB/s", [direct.mb_per_s], "mean of the timed runs")
            gr = self.add_row(wl, f"gateway POP3 ({side})", "MB/s", [via.mb_per_s], "mean of the timed runs")
            self.add_ratio(wl, f"gateway / direct ({side})", gr, dr)
        self.add_row(wl, "gateway", "peak VmHWM KiB", [hwm])

    def idle_sessions(self, mode: str) -> None:
        a = self.args
        gw = Gateway(self.pki, self.dovecot, gateway_overrides(a.sessions, a.log_level, a.hold),
                     upstream_tls=a.upstream_tls, listeners=(("pop3", "none"), ("pop3s", "implicit")),
                     binary=self.binary)
        self.gateways.append(gw)
        gw.start()
        # Listening ports accept as soon as the first worker binds; "started" comes after
        # every worker has its sockets, so the baseline is the whole process's.
        wait_until(lambda: "event=started" in gw.log_text(), 20, "popbridge to log started")
        pid = gw.proc.pid
        rss_before = proc_status_kib(pid, "VmRSS")
        fds_before = len(os.listdir(f"/proc/{pid}/fd"))
        label = "POP3S (TLS)" if mode == "tls" else "POP3 (plain)"
        print(f"idle authenticated sessions, client side {label}, upstream tls={a.upstream_tls}:")
        print(f"  popbridge VmRSS at start: {rss_before} KiB, {fds_before} descriptors")
        per_session = None
        upstream_per_session = None
        # Round 1 gives the figure (a fresh process). Later rounds show whether memory keeps
        # growing with every batch of sessions (a leak) or is reused (allocator caching).
        for round_no in range(1, a.idle_rounds + 1):
            wait_sessions_gone(self.dovecot.proc.pid, b"imap")
            up_before = group_pss_kib(self.dovecot.proc.pid)
            login_s, rss_with, fds_with = self.hold_sessions(gw, mode, round_no)
            if upstream_per_session is None:
                upstream_per_session = (self.upstream_pss_with - up_before) / a.sessions
            rss_after, fds_after = self.after_quit(gw, fds_before, f"round {round_no} ({mode})")
            print(f"  round {round_no}: {a.sessions} sessions logged in (USER/PASS + STAT) in {login_s:.2f} s; "
                  f"VmRSS with them {rss_with} KiB ({fds_with} descriptors), "
                  f"after QUIT {rss_after} KiB ({fds_after} descriptors)")
            if per_session is None:
                per_session = (rss_with - rss_before) / a.sessions
        self.stop_gateway(gw, f"popbridge after the idle sessions ({mode})")
        print(f"  => {per_session:.1f} KiB per idle session (round 1: VmRSS with sessions - at start, "
              f"/ {a.sessions}); upstream Dovecot {upstream_per_session:.1f} KiB per session (Pss)\n")
        sys.stdout.flush()
        wl = f"memory per idle authenticated session, {a.sessions} sessions"
        self.add_row(wl, f"gateway ({label})", "KiB/session", [per_session], "VmRSS, round 1")
        self.add_row(wl, f"upstream Dovecot for the gateway ({label})", "KiB/session", [upstream_per_session],
                     f"Pss of its processes; imap client_limit {self.client_limit}")

    def peer_idle(self) -> None:
        """The peer holding --peer-sessions idle POP3S sessions: Pss of its processes (one
        pop3 process per session) and of the upstream's (one imapc connection per session)."""
        a = self.args
        n = a.peer_sessions
        peer_pid, up_pid = self.peer.proc.pid, self.dovecot.proc.pid
        wait_sessions_gone(up_pid, b"imap")
        wait_sessions_gone(peer_pid, b"pop3")
        peer0, up0 = group_pss_kib(peer_pid), group_pss_kib(up_pid)
        print(f"idle authenticated sessions, peer Dovecot POP3S (imapc), {n} sessions:")
        print(f"  peer Pss at start {peer0} KiB ({group_size(peer_pid)} processes), upstream {up0} KiB")
        measured = {}

        def measure() -> None:
            measured["peer"] = group_pss_kib(peer_pid)
            measured["up"] = group_pss_kib(up_pid)
            measured["procs"] = group_size(peer_pid)
            measured["up_procs"] = group_size(up_pid)

        login_s = self.hold(self.peer.host, self.peer.pop3s_port, "tls", n, "peer", measure,
                            lambda what: None if self.peer.running else
                            (_ for _ in ()).throw(BenchError(f"the peer died during {what}")))
        peer_per = (measured["peer"] - peer0) / n
        up_per = (measured["up"] - up0) / n
        print(f"  {n} sessions logged in (USER/PASS + STAT) in {login_s:.2f} s; peer Pss {measured['peer']} KiB "
              f"({measured['procs']} processes), upstream {measured['up']} KiB ({measured['up_procs']} processes)")
        print(f"  => peer {peer_per:.1f} KiB + upstream {up_per:.1f} KiB per idle session\n")
        sys.stdout.flush()
        wl = f"memory per idle authenticated session, peer at {n} sessions"
        self.add_row(wl, "peer Dovecot POP3S (imapc)", "KiB/session", [peer_per], "Pss of its processes")
        self.add_row(wl, "upstream Dovecot for the peer", "KiB/session", [up_per], "Pss of its processes")

    def hold_sessions(self, gw: Gateway, mode: str, round_no: int) -> tuple[float, int, int]:
        """Opens the sessions, measures popbridge while they idle, QUITs them.
        Returns (login seconds, VmRSS KiB, descriptors) measured with the sessions open."""
        a = self.args
        pid = gw.proc.pid
        port = gw.port("pop3s" if mode == "tls" else "pop3")
        measured = {}

        def measure() -> None:
            measured["rss"] = proc_status_kib(pid, "VmRSS")
            measured["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            measured["up"] = group_pss_kib(self.dovecot.proc.pid)
            if a.hold > 0:
                self.soak(gw, self._holding, a.sessions)

        login_s = self.hold(HOST, port, mode, a.sessions, f"{mode}, round {round_no}", measure,
                            lambda what: self.gateway_alive(gw, what), gw)
        self.upstream_pss_with = measured["up"]
        self.gateway_alive(gw, "QUIT of the idle sessions")
        return login_s, measured["rss"], measured["fds"]

    def hold(self, host: str, port: int, mode: str, count: int, what: str, measure, alive,
             gw: Optional[Gateway] = None) -> float:
        """Runs `idle-sessions`: `count` sessions log in and idle; measure() is called while
        they do; then the client QUITs them all (and fails if one was lost). Returns the
        login seconds."""
        a = self.args
        cmd = [self.client, "idle-sessions", "--pop3", f"{host}:{port}", "--count", str(count),
               "--parallel", str(a.parallel), "--user", USER, "--pass", PASSWORD, "--ca", self.pki.ca,
               "--timeout", str(a.read_timeout)] + (["--tls"] if mode == "tls" else [])
        stderr_path = os.path.join(self.workdir, f"idle-{what.replace(' ', '_').replace(',', '')}.stderr")
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, preexec_fn=procs.die_with_parent(signal.SIGKILL))
        self.clients.append(proc)
        self._holding = proc

        def client_failure(why: str) -> BenchError:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            with open(stderr_path) as f:
                err = f.read().strip()
            return BenchError(f"idle sessions ({what}): {why}\nclient: {err}\n"
                              + (f"{gw.diagnostics(60)}\n" if gw else "")
                              + (self.peer.diagnostics(20) + "\n" if self.peer and not gw else "")
                              + self.dovecot.diagnostics(20))

        try:
            ready = self.read_line(proc, a.client_timeout)
            if ready is None or not ready.startswith("ready"):
                raise client_failure(f"no 'ready' from the client (got {ready!r})")
            alive(f"{count} idle sessions")
            measure()
            login_s = float(parse_fields(ready)["seconds"])
            proc.stdin.close()  # the client QUITs every session
            quit_line = self.read_line(proc, a.client_timeout)
            if proc.wait(a.client_timeout) != 0:
                raise client_failure(f"QUIT failed ({quit_line})")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            self.clients.remove(proc)
        return login_s

    def soak(self, gw: Gateway, client: subprocess.Popen, sessions: int) -> None:
        """Holds the sessions for --hold seconds, sampling popbridge's VmRSS and descriptors
        every --sample seconds (a measurement cadence: nothing waits on these samples). The
        client QUITs every session afterwards and fails if any was lost meanwhile."""
        a = self.args
        pid = gw.proc.pid
        start = time.monotonic()
        samples: list[tuple[float, int, int]] = []
        print(f"  soak: {sessions} sessions held {a.hold:.0f} s, sampled every {a.sample:.0f} s")
        print(f"    {'t (s)':>7} {'VmRSS KiB':>10} {'fds':>7} {'load1':>6}")
        while True:
            elapsed = time.monotonic() - start
            self.gateway_alive(gw, f"soak at {elapsed:.0f} s")
            if client.poll() is not None:
                raise BenchError(f"soak: the client exited ({client.returncode}) after {elapsed:.0f} s")
            rss = proc_status_kib(pid, "VmRSS")
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            samples.append((elapsed, rss, fds))
            print(f"    {elapsed:7.0f} {rss:10d} {fds:7d} {os.getloadavg()[0]:6.2f}")
            sys.stdout.flush()
            if elapsed >= a.hold:
                break
            time.sleep(min(a.sample, a.hold - elapsed))
        rss_values = [s[1] for s in samples]
        fd_values = [s[2] for s in samples]
        print(f"  soak: VmRSS {min(rss_values)}-{max(rss_values)} KiB "
              f"(drift {rss_values[-1] - rss_values[0]:+d} KiB), descriptors {min(fd_values)}-{max(fd_values)}, "
              f"{len(samples)} samples")

    def after_quit(self, gw: Gateway, fds_before: int, what: str) -> tuple[int, int]:
        """Waits (up to 10 s) until popbridge is back to its descriptors at start, i.e. every
        client and upstream connection is closed; records it as a finding if not."""
        pid = gw.proc.pid
        deadline = time.monotonic() + 10
        # Two descriptors of slack: the upstream probe's short connection every 10 s, and
        # the TLS library's lazily opened random device. A leak is one per session or more.
        slack = 2
        while True:
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            if fds <= fds_before + slack or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if fds > fds_before + slack:
            self.problems.append(f"{what}: popbridge still holds {fds} descriptors 10 s after every session "
                                 f"QUIT ({fds_before} at start)")
        return proc_status_kib(pid, "VmRSS"), fds

    @staticmethod
    def read_line(proc: subprocess.Popen, timeout: float) -> Optional[str]:
        """One line of the client's stdout, or None at EOF; BenchError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"client printed nothing within {timeout}s")
            readable, _, _ = select.select([proc.stdout], [], [], remaining)
            if readable:
                line = proc.stdout.readline()
                return line.strip() if line else None

    # -- output
    def host_line(self) -> str:
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}"

    def print_header(self) -> None:
        a = self.args
        commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip() or "?"
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        self.version = (version.splitlines() or ["popbridge"])[0]
        self.commit = commit
        print(f"popbridge benchmark  ({self.version}, tree {commit})")
        load = " ".join(f"{x:.2f}" for x in self.load_start)
        print(f"  host: {self.host_line()}, load average at start {load} (other load skews the figures; "
              f"the ratios less so); everything on loopback")
        print(f"  workloads: {','.join(w for w in WORKLOADS if w in a.workloads)}; {a.repeat} repetitions per row "
              f"(median, min-max); gateway upstream tls={a.upstream_tls}; popbridge log level {a.log_level}")
        print(f"  upstream: Dovecot {dovecot_version()} (imap client_limit {self.client_limit}); peer: "
              + (f"Dovecot pop3 with mail_location = imapc: (imapc_features = {IMAPC_FEATURES}), "
                 f"passdb imap, to the upstream's plain IMAP port" if self.peer else "off") + "\n")
        sys.stdout.flush()

    def print_table(self) -> None:
        a = self.args
        load_end = os.getloadavg()
        fmt = lambda x: "" if x is None else (f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}")
        print(f"\nRESULTS  ({self.version}, tree {getattr(self, 'commit', '?')}; {self.host_line()})")
        print(f"  load average at start {' '.join(f'{x:.2f}' for x in self.load_start)}, "
              f"at end {' '.join(f'{x:.2f}' for x in load_end)}; {a.repeat} repetitions: median (min-max)")
        last = None
        for r in self.rows:
            if r["workload"] != last:
                print(f"\n  {r['workload']}")
                last = r["workload"]
            if r["figure"] == "ratio of medians":
                print(f"    {r['target']:<58} {'ratio':<18} {r['median']:>9.2f}x")
                continue
            spread = f"({fmt(r['min'])}-{fmt(r['max'])})" if len(r["values"]) > 1 else ""
            note = f"  {r['note']}" if r["note"] else ""
            print(f"    {r['target']:<58} {r['figure']:<18} {fmt(r['median']):>9} {spread:<17}{note}")
        print()
        sys.stdout.flush()
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"version": self.version, "tree": getattr(self, "commit", "?"), "host": self.host_line(),
                           "load_start": self.load_start, "load_end": load_end, "repeat": a.repeat,
                           "args": {k: v for k, v in vars(a).items() if k != "workloads"},
                           "workloads": sorted(a.workloads), "rows": self.rows,
                           "problems": self.problems}, f, indent=1)

    def print_throughput(self, pairs, size: int, rss_start: int, rss_end: int, hwm: int) -> None:
        print("RETR throughput (MB = 10^6 octets of message, timed runs only):")
        print(f"  {'path':<26}{'MB/s':>9}{'best MB/s':>11}{'gw/direct':>11}{'popbridge CPU s':>17}"
              f"{'client CPU s':>14}")
        for side, direct, via in pairs:
            for r in (direct, via):
                ratio = f"{r.mb_per_s / direct.mb_per_s:.2f}" if r is via and direct.mb_per_s else ""
                gw_cpu = f"{r.gateway_cpu:.2f}" if r.gateway_cpu is not None else ""
                print(f"  {r.label + ' (' + side + ')':<26}{r.mb_per_s:>9.1f}{r.best_mb_per_s:>11.1f}"
                      f"{ratio:>11}{gw_cpu:>17}{r.client_cpu:>14.2f}")
        retrieved = sum(int(via.fields["octets"]) + int(via.fields["message_octets"]) for _, _, via in pairs)
        cpu = sum(via.gateway_cpu or 0 for _, _, via in pairs)
        if cpu and retrieved:
            print(f"  popbridge CPU per GB through it (plain and TLS rows, checked run included): "
                  f"{cpu / (retrieved / 1e9):.2f} s/GB")
        print(f"  popbridge VmRSS: {rss_start} KiB at start, {rss_end} KiB after the runs, "
              f"peak (VmHWM) {hwm} KiB for a {size // (1024 * 1024)} MiB message\n")
        sys.stdout.flush()


def dovecot_version() -> str:
    try:
        return subprocess.run(["dovecot", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


WORKLOADS = ("retr-one", "retr-big", "cpu", "retr-small", "short", "idle")


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
    p.add_argument("--short-clients", type=int, default=64, help="short: concurrent clients, one user each (default 64)")
    p.add_argument("--short-duration", type=float, default=8,
                   help="short: seconds each run starts new sessions for (default 8)")
    p.add_argument("--short-messages", type=int, default=20, help="short: messages RETRieved per session (default 20)")
    p.add_argument("--cpu-upstream-tls", choices=("implicit", "starttls"), default="implicit",
                   help="cpu: upstream TLS of the TLS-both-legs gateway (default implicit)")
    p.add_argument("--sessions", type=int, default=1000, help="idle: sessions on the gateway (default 1000)")
    p.add_argument("--peer-sessions", type=int, default=250,
                   help="idle: sessions on the peer (default 250: one pop3 process per session there, and one "
                        "upstream imap process each)")
    p.add_argument("--upstream-imap-client-limit", type=int, default=0,
                   help="the upstream's service imap client_limit (default: 1 up to 2000 sessions, else 25)")
    p.add_argument("--no-peer", action="store_true", help="leave out Dovecot's POP3 (the peer)")
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
