#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""popbridge benchmark: RETR throughput against a direct IMAP fetch, and memory per idle session.

Starts a private Dovecot and popbridge (with the integration-test harness), stores one
big message, then runs tests/bench/pop3_bench_client:

  * `imap-fetch` straight to Dovecot and `retr` through the gateway, both plain and TLS
    on the client side, and prints MB/s with the ratio gateway/direct. The direct fetch
    is the reference measured in the same run on the same machine, so the ratio means
    something where an absolute figure would not.
  * `idle-sessions`: COUNT authenticated POP3 sessions held open on a fresh gateway;
    popbridge's VmRSS before and with them gives KiB per idle session.

The client checks the bytes (length and SHA-256 of the unstuffed message) once per
run; a mismatch is reported and makes the exit status 1, as does a gateway crash,
stall or unclean exit. Only loopback is used. Every process started here is stopped
by PID (its process group) on the way out, errors and Ctrl-C/SIGTERM included.

Run as root (Dovecot switches users itself): /usr/bin/python3 tests/bench/run_bench.py
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import platform
import resource
import select
import shutil
import signal
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

HOST = "127.0.0.1"
USER = "bench"
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


def children_cpu_seconds() -> float:
    """CPU time of waited-for children: the delta around one client run is that client's
    (Dovecot and the gateway are reaped only at the end)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------ configuration

def dovecot_limits(sessions: int) -> str:
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
# One imap process per session (Dovecot's default, client_limit = 1).
service imap {{
  process_limit = {sessions + 100}
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

    def run_client(self, label: str, argv: list[str], gw: Optional[Gateway] = None) -> Result:
        cmd = [self.client] + argv + ["--user", USER, "--pass", PASSWORD, "--ca", self.pki.ca]
        cpu0 = children_cpu_seconds()
        gw_cpu0 = proc_cpu_seconds(gw.proc.pid) if gw else None
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
        if proc.returncode != 0:
            raise BenchError(f"{label}: client failed ({proc.returncode}): {err.strip()}"
                             + (f"\n{gw.diagnostics(40)}" if gw else "")
                             + (f"\n{self.dovecot.diagnostics(20)}" if self.dovecot else ""))
        lines = [l for l in out.splitlines() if l.startswith("mode=")]
        if not lines:
            raise BenchError(f"{label}: no result line in client output:\n{out}\n{err}")
        return Result(label, parse_fields(lines[-1]), children_cpu_seconds() - cpu0, gw_cpu)

    def check_bytes(self, result: Result, size: int, sha256: str) -> None:
        got_size = int(result.fields["message_octets"])
        got_sha = result.fields["sha256"]
        if got_size != size or got_sha != sha256:
            self.problems.append(f"WRONG BYTES via {result.label}: {got_size} octets sha256 {got_sha}, "
                                 f"expected {size} octets sha256 {sha256}")

    # -- the benchmark
    def run(self) -> None:
        a = self.args
        size = a.size_mib * 1024 * 1024
        self.pki = make_pki()
        self.dovecot = Dovecot(self.pki, {USER: PASSWORD}, extra_config=dovecot_limits(a.sessions))
        self.dovecot.start()
        warnings = check_dovecot_config(self.dovecot)
        if warnings:
            print(f"doveconf says:\n{warnings}\n")

        if a.idle_only:
            self.print_header(size)
            for mode in a.idle_modes:
                self.idle_sessions(mode)
            return

        message = messages.big_message(size, seed="popbridge-bench")
        sha256 = hashlib.sha256(message).hexdigest()
        uid = self.dovecot.append(USER, message)
        del message

        self.print_header(size)

        # ---- throughput
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

        # ---- idle sessions: a fresh gateway per client-side mode, for a clean baseline
        for mode in a.idle_modes:
            self.idle_sessions(mode)

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
        # Round 1 gives the figure (a fresh process). Later rounds show whether memory keeps
        # growing with every batch of sessions (a leak) or is reused (allocator caching).
        for round_no in range(1, a.idle_rounds + 1):
            login_s, rss_with, fds_with = self.hold_sessions(gw, mode, round_no)
            rss_after, fds_after = self.after_quit(gw, fds_before, f"round {round_no} ({mode})")
            print(f"  round {round_no}: {a.sessions} sessions logged in (USER/PASS + STAT) in {login_s:.2f} s; "
                  f"VmRSS with them {rss_with} KiB ({fds_with} descriptors), "
                  f"after QUIT {rss_after} KiB ({fds_after} descriptors)")
            if per_session is None:
                per_session = (rss_with - rss_before) / a.sessions
        self.stop_gateway(gw, f"popbridge after the idle sessions ({mode})")
        print(f"  => {per_session:.1f} KiB per idle session (round 1: VmRSS with sessions - at start, "
              f"/ {a.sessions})\n")
        sys.stdout.flush()

    def hold_sessions(self, gw: Gateway, mode: str, round_no: int) -> tuple[float, int, int]:
        """Opens the sessions, measures popbridge while they idle, QUITs them.
        Returns (login seconds, VmRSS KiB, descriptors) measured with the sessions open."""
        a = self.args
        pid = gw.proc.pid
        port = gw.port("pop3s" if mode == "tls" else "pop3")
        cmd = [self.client, "idle-sessions", "--pop3", f"{HOST}:{port}", "--count", str(a.sessions),
               "--parallel", str(a.parallel), "--user", USER, "--pass", PASSWORD, "--ca", self.pki.ca,
               "--timeout", str(a.read_timeout)] + (["--tls"] if mode == "tls" else [])
        stderr_path = os.path.join(self.workdir, f"idle-{mode}-{round_no}.stderr")
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, preexec_fn=procs.die_with_parent(signal.SIGKILL))
        self.clients.append(proc)

        def client_failure(why: str) -> BenchError:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            with open(stderr_path) as f:
                err = f.read().strip()
            return BenchError(f"idle sessions ({mode}, round {round_no}): {why}\nclient: {err}\n"
                              f"{gw.diagnostics(60)}\n{self.dovecot.diagnostics(20)}")

        try:
            ready = self.read_line(proc, a.client_timeout)
            if ready is None or not ready.startswith("ready"):
                raise client_failure(f"no 'ready' from the client (got {ready!r})")
            self.gateway_alive(gw, f"{a.sessions} idle sessions")
            rss_with = proc_status_kib(pid, "VmRSS")
            fds_with = len(os.listdir(f"/proc/{pid}/fd"))
            login_s = float(parse_fields(ready)["seconds"])
            if a.hold > 0:
                self.soak(gw, proc, a.sessions)
            proc.stdin.close()  # the client QUITs every session
            quit_line = self.read_line(proc, a.client_timeout)
            if proc.wait(a.client_timeout) != 0:
                raise client_failure(f"QUIT failed ({quit_line})")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            self.clients.remove(proc)
        self.gateway_alive(gw, "QUIT of the idle sessions")
        return login_s, rss_with, fds_with

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
    def print_header(self, size: int) -> None:
        a = self.args
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                text=True).stdout.strip() or "?"
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"popbridge benchmark  ({version or 'popbridge'}, tree {commit})")
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"  host: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, load average {load} "
              f"(other load skews the figures; the ratios less so); Dovecot upstream on loopback")
        if a.idle_only:
            print(f"  idle sessions only; upstream tls={a.upstream_tls}; popbridge log level {a.log_level}\n")
        else:
            print(f"  message: {size} octets ({a.size_mib} MiB); {a.repeat} timed retrievals per row after one "
                  f"checked, untimed one; upstream tls={a.upstream_tls}; popbridge log level {a.log_level}\n")
        sys.stdout.flush()

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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=20, help="message size in MiB (default 20)")
    p.add_argument("--repeat", type=int, default=5, help="timed retrievals per row (default 5)")
    p.add_argument("--sessions", type=int, default=1000, help="idle sessions (default 1000)")
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
    p.add_argument("--quick", action="store_true", help="smoke run: 2 MiB x 3, 50 sessions")
    p.add_argument("--hold", type=float, default=0,
                   help="soak: keep the idle sessions open this many seconds, sampling popbridge")
    p.add_argument("--sample", type=float, default=10, help="soak: seconds between samples (default 10)")
    p.add_argument("--idle-only", action="store_true", help="skip the RETR throughput rows")
    args = p.parse_args(argv)
    if args.quick:
        args.size_mib, args.repeat, args.sessions = 2, 3, 50
    args.idle_modes = [m for m in args.idle_modes.split(",") if m]
    if any(m not in ("plain", "tls") for m in args.idle_modes):
        p.error("--idle-modes takes plain and/or tls")
    if args.size_mib < 1 or args.repeat < 1 or args.sessions < 1 or args.idle_rounds < 1:
        p.error("--size-mib, --repeat, --sessions and --idle-rounds must be positive")
    if args.hold < 0 or args.sample <= 0:
        p.error("--hold must not be negative and --sample must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run_bench.py must run as root (Dovecot is started as root and drops privileges)", file=sys.stderr)
        return 2

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
