# SPDX-License-Identifier: Apache-2.0
"""idle: memory per idle authenticated session, of popbridge (VmRSS, per client-side
mode, on a fresh gateway) and of the peer (Pss of its processes), with the upstream's
share; --hold turns it into a soak."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Optional

from harness import procs
from harness.gateway import Gateway
from harness.wait import wait_until

from bench_lib.client import parse_fields
from bench_lib.constants import HOST, PASSWORD, USER, BenchError
from bench_lib.procstats import group_pss_kib, group_size, proc_status_kib, wait_sessions_gone
from bench_lib.server_config import gateway_overrides


class IdleWorkloads:
    """Mixed into Bench (bench.py), whose servers, clients, run_client and add_row it uses."""

    def idle_sessions(self, mode: str) -> None:
        a = self.args
        gw = Gateway(self.pki, self.upstream(a.upstream_tls), gateway_overrides(a.sessions, a.log_level, a.hold, a.login_reuse),
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
