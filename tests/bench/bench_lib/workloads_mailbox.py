# SPDX-License-Identifier: Apache-2.0
"""Many messages in one session against the three targets (direct IMAP, gateway, peer):
retr-big (MB/s), retr-small (messages/s), and cpu (gateway CPU per GB relayed)."""

from __future__ import annotations

import os
import sys
from typing import Optional

from harness.gateway import Gateway

from bench_lib.constants import BIG_USER, HOST, SMALL_USER
from bench_lib.server_config import gateway_overrides


class MailboxWorkloads:
    """Mixed into Bench (bench.py), whose servers, clients, run_client and add_row it uses."""

    # -- many messages in one session, against the three targets
    def mailbox_targets(self, gw: Gateway, tls: bool) -> list[tuple[str, str, list[str], Optional[Gateway]]]:
        flag = ["--tls"] if tls else []
        targets = [("direct", "direct IMAP" + ("S" if tls else ""),
                    ["imap-fetch-many", "--imap", self.imap_address(tls)] + flag, None),
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
        gw_tls = Gateway(self.pki, self.upstream(a.cpu_upstream_tls), gateway_overrides(a.sessions, a.log_level, login_reuse=a.login_reuse),
                         upstream_tls=a.cpu_upstream_tls, listeners=(("pop3s", "implicit"),), binary=self.binary)
        self.gateways.append(gw_tls)
        gw_tls.start()
        targets = [("plain", f"plain both legs (upstream {a.upstream_tls})",
                    ["retr-many", "--pop3", f"{HOST}:{gw_plain.port('pop3')}"], gw_plain),
                   ("tls", f"TLS both legs (client POP3S, upstream {a.cpu_upstream_tls})",
                    ["retr-many", "--tls", "--pop3", f"{HOST}:{gw_tls.port('pop3s')}"], gw_tls)]
        # The floors: the direct IMAP client through relays that only read and write the
        # same bytes between the same kinds of sockets, in large reads (the TLS one decrypts
        # and seals too, with one write per batch of records, as the gateway).
        for tls in (False, True):
            kind = "tls" if tls else "plain"
            port = self.start_byte_relay(kind, tls=tls, large_reads=True)
            targets.append((f"relay {kind}", f"byte relay, {'TLS both legs' if tls else 'plain both legs'}",
                            ["imap-fetch-many", "--imap", f"{HOST}:{port}"] + (["--tls"] if tls else []), None))
        res = self.mailbox_runs(targets, BIG_USER, a.big_count, octets, sha)
        self.stop_byte_relays()
        self.gateway_alive(gw_tls, "the TLS-both-legs runs")
        self.stop_gateway(gw_tls, "popbridge after the TLS-both-legs runs")
        per_gb: dict = {}
        for key, label, _, _ in targets[:2]:
            per_gb[key] = self.add_row(wl, label, "gateway CPU s/GB",
                                       [r.servers_cpu.get("gateway", 0) / (octets / 1e9) for r in res[key]])
            self.add_row(wl, label, "user-space s/GB",
                         [r.servers_cpu.get("gateway_user", 0) / (octets / 1e9) for r in res[key]],
                         "10 ms ticks; the rest is the kernel's")
            self.add_row(wl, label, "MB/s", [octets / 1e6 / float(r.fields["seconds"]) for r in res[key]])
        for key, label, _, _ in targets[2:]:
            relay_row = self.add_row(wl, label, "relay CPU s/GB",
                                     [r.servers_cpu.get(key, 0) / (octets / 1e9) for r in res[key]],
                                     "reference: " + ("decrypt, seal, " if key == "relay tls" else "")
                                     + "read and write only")
            self.add_row(wl, label, "MB/s", [octets / 1e6 / float(r.fields["seconds"]) for r in res[key]])
            leg = key.split()[1]
            if leg == "plain" and a.upstream_tls != "none":
                continue  # the "plain" gateway's upstream leg is TLS: no like for like
            self.add_ratio(wl, f"gateway / byte relay, {'TLS both legs' if leg == 'tls' else 'plain'} (CPU per GB)",
                           per_gb[leg], relay_row)
