# SPDX-License-Identifier: Apache-2.0
"""short and poll: concurrent clients making short sessions against the three targets:
sessions/s, latency, and CPU per session of each server. A poll is the short session of a
client that finds nothing new, the session a polling population makes most."""

from __future__ import annotations

import os
import statistics
import sys
import time

from harness.gateway import Gateway

from bench_lib.client import Result
from bench_lib.constants import HOST, SHORT_USER


class ShortSessionsWorkload:
    """Mixed into Bench (bench.py), whose servers, clients, run_client and add_row it uses."""

    # -- short sessions from concurrent clients
    def short_sessions(self, gw: Gateway, poll: bool = False) -> None:
        a = self.args
        octets, sha = self.short
        if poll:
            # Each session's hash is of nothing retrieved: compared between sessions only.
            kind, what, retrieve = "polls", f"nothing new of {a.short_messages} messages", ["--retrieve", "0"]
        else:
            kind, what, retrieve = ("short sessions", f"RETR {a.short_messages} x {a.small_kib} KiB",
                                    ["--expect-sha256", sha])
        wl = f"{kind}, {a.short_clients} clients x {a.short_duration:g} s (login, STAT, UIDL, LIST, {what}, QUIT)"
        print(f"{wl}: {a.repeat} runs per target (load average {os.getloadavg()[0]:.2f})")
        sys.stdout.flush()
        common = ["--clients", str(a.short_clients), "--duration", str(a.short_duration),
                  "--messages", str(a.short_messages), "--users", str(a.short_clients),
                  "--timeout", str(a.read_timeout)] + retrieve
        targets = [("direct", "direct IMAP", ["short-sessions", "--imap", self.imap_address(False)], None),
                   ("gateway", "gateway POP3", ["short-sessions", "--pop3", f"{HOST}:{gw.port('pop3')}"], gw)]
        if self.peer is not None:
            targets.append(("peer", "peer Dovecot POP3 (imapc)",
                            ["short-sessions", "--pop3", f"{self.peer.host}:{self.peer.pop3_port}"], None))
        # The floor for a process in the middle: the direct IMAP client's sessions through a
        # relay that only accepts, connects, reads and writes (see cpu_per_gb). The relay is
        # plain: with a TLS upstream leg the gateway has no like for like.
        if a.upstream_tls == "none":
            relay_port = self.start_byte_relay("plain")
            targets.append(("relay", "direct IMAP through the byte relay",
                            ["short-sessions", "--imap", f"{HOST}:{relay_port}"], None))
        res: dict = {key: [] for key, _, _, _ in targets}
        for _ in range(a.repeat):
            for key, label, argv, g in targets:
                # Let the previous run's processes exit and be reaped (Dovecot's imap, pop3
                # and auth connections), so their CPU lands in the right run.
                time.sleep(0.5)
                res[key].append(self.run_client(label, argv + common, g, user=SHORT_USER))
        self.stop_byte_relays()
        rows = {}
        for key, label, _, _ in targets:
            rs = res[key]
            rows[key] = self.add_row(wl, label, "sessions/s", [float(r.fields["sessions_per_s"]) for r in rs],
                                     f"p50 latency {statistics.median(float(r.fields['p50_ms']) for r in rs):.1f} ms, "
                                     f"{sum(int(r.fields['sessions']) for r in rs)} sessions")
        self.add_ratio(wl, "gateway / direct IMAP", rows.get("gateway"), rows.get("direct"))
        self.add_ratio(wl, "gateway / peer", rows.get("gateway"), rows.get("peer"))
        # Any process in the middle shares the cores with the upstream, the bottleneck here.
        self.add_ratio(wl, "byte relay / direct IMAP", rows.get("relay"), rows.get("direct"))
        self.add_ratio(wl, "gateway / byte relay", rows.get("gateway"), rows.get("relay"))

        def per_session(r: Result, who: str) -> float:
            return r.servers_cpu.get(who, 0) * 1000 / int(r.fields["sessions"])
        wl5 = f"CPU per {'poll' if poll else 'short session'} (same runs)"
        gateway_row = self.add_row(wl5, "gateway (popbridge)", "CPU ms/session",
                                   [per_session(r, "gateway") for r in res["gateway"]])
        if "relay" in res:
            relay_row = self.add_row(wl5, "byte relay, the direct IMAP client's sessions", "CPU ms/session",
                                     [per_session(r, "relay plain") for r in res["relay"]],
                                     "reference: accept, connect, read and write only")
            self.add_ratio(wl5, "gateway / byte relay (CPU per session)", gateway_row, relay_row)
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
