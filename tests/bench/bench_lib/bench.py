# SPDX-License-Identifier: Apache-2.0
"""Bench: the servers (upstream Dovecot, the peer, popbridge gateways) and the clients it
starts, the mailboxes each workload reads, and the order the workloads run in. The
workloads themselves, and the output, are mixed in from the workloads_* and report
modules; every process started here is stopped by PID (its process group) in close()."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from harness import messages, procs, tempdirs
from harness.certs import make_pki
from harness.dovecot import Dovecot
from harness.gateway import Gateway, GatewayExitError
from peer_dovecot import PeerDovecot

from bench_lib.client import Result, parse_fields
from bench_lib.constants import BIG_USER, HOST, PASSWORD, SHORT_USER, SMALL_USER, USER, BenchError
from bench_lib.procstats import (children_cpu_seconds, group_cpu_seconds, proc_cpu_seconds,
                                 proc_cpu_seconds_ns, proc_user_seconds)
from bench_lib.report import Report
from bench_lib.server_config import check_dovecot_config, dovecot_limits, gateway_overrides, imap_client_limit
from bench_lib.workloads_idle import IdleWorkloads
from bench_lib.workloads_mailbox import MailboxWorkloads
from bench_lib.workloads_retr_one import RetrOneWorkload
from bench_lib.workloads_short import ShortSessionsWorkload


class Bench(RetrOneWorkload, MailboxWorkloads, ShortSessionsWorkload, IdleWorkloads, Report):
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
        self.relay: Optional[subprocess.Popen] = None  # --upstream-rtt-ms
        self.byte_relays: dict[str, subprocess.Popen] = {}  # the floor references, by name
        self.relayed: dict[int, int] = {}  # Dovecot port -> the relay's port in front of it

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
        if self.relay is not None:
            procs.stop_group(self.relay)
        self.stop_byte_relays()
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

    # -- where the gateways and the direct IMAP client reach the upstream
    def start_relay(self) -> None:
        """--upstream-rtt-ms: a delay relay (delay_relay.py) in front of Dovecot's IMAP and
        IMAPS ports, which the gateways and the direct IMAP client then use alike."""
        d = self.dovecot
        script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "delay_relay.py")
        self.relay = subprocess.Popen(
            [sys.executable, script, "--delay-ms", str(self.args.upstream_rtt_ms / 2),
             "--to", f"{d.host}:{d.imap_port}", "--to", f"{d.host}:{d.imaps_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=procs.die_with_parent(signal.SIGKILL))
        for line in self.relay.stdout:
            if line.strip() == "ready":
                break
            port, target = line.split()[1], line.split()[3]
            self.relayed[int(target.rsplit(":", 1)[1])] = int(port)
        else:
            raise BenchError("the delay relay did not start")
        self.relay.stdout.close()

    def start_byte_relay(self, name: str, tls: bool = False, large_reads: bool = False) -> int:
        """A floor reference: pop3_bench_client's relay (read and write only, 64 KiB reads,
        one thread, epoll) in front of Dovecot's IMAP port, or with `tls` between a TLS
        client and Dovecot's IMAPS port (decrypt and seal as well); `large_reads` as the
        gateway reads a large message (see byte_relay.h). Its CPU is in
        cpu_snapshot() as "relay NAME". Returns its port."""
        argv = [self.client, "relay", "--to", self.imap_address(tls)]
        if tls:
            argv += ["--tls-certificate", self.pki.cert, "--tls-key", self.pki.key, "--tls-to"]
        if large_reads:
            argv.append("--large-reads")
        relay = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                 start_new_session=True, preexec_fn=procs.die_with_parent(signal.SIGKILL))
        self.byte_relays[name] = relay
        line = relay.stdout.readline().split()
        relay.stdout.close()
        if len(line) != 2 or line[0] != "relay":
            raise BenchError(f"the byte relay did not start: {line}")
        return int(line[1])

    def stop_byte_relays(self) -> None:
        for relay in self.byte_relays.values():
            procs.stop_group(relay)
        self.byte_relays.clear()

    def upstream(self, tls: str):
        """The upstream argument of Gateway(...) for upstream TLS mode `tls`."""
        if not self.relayed:
            return self.dovecot
        d = self.dovecot
        return HOST, self.relayed[d.imaps_port if tls == "implicit" else d.imap_port]

    def imap_address(self, implicit_tls: bool) -> str:
        """host:port for the direct IMAP client."""
        d = self.dovecot
        port = d.imaps_port if implicit_tls else d.imap_port
        return f"{HOST}:{self.relayed[port]}" if self.relayed else f"{d.host}:{port}"

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
            snap["gateway_user"] = proc_user_seconds(gw.proc.pid)
        for name, relay in self.byte_relays.items():
            if relay.poll() is None:
                snap["relay " + name] = proc_cpu_seconds_ns(relay.pid)
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
        if a.upstream_rtt_ms > 0:
            self.start_relay()
        if w & {"retr-big", "retr-small", "short", "poll", "idle"} and not a.no_peer:
            self.peer = PeerDovecot(self.pki, self.dovecot, sessions=max(a.peer_sessions, 2 * a.short_clients))
            self.peer.start()
        self.print_header()
        self.prepare_mailboxes()

        if "retr-one" in w:
            self.retr_one()
        if w & {"retr-big", "retr-small", "short", "poll", "cpu"}:
            gw = Gateway(self.pki, self.upstream(a.upstream_tls), gateway_overrides(a.sessions, a.log_level, login_reuse=a.login_reuse),
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
            if "poll" in w:
                self.short_sessions(gw, poll=True)
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
        if w & {"short", "poll"}:
            short = [messages.big_message(a.small_kib * 1024, seed=f"short-{i}") for i in range(a.short_messages)]
            for i in range(1, a.short_clients + 1):
                self.short = self.append_messages(f"{SHORT_USER}{i}", lambda j: short[j], a.short_messages)
        print(f"  (mailboxes APPENDed in {time.monotonic() - t0:.1f} s)\n")
        sys.stdout.flush()
