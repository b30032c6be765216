# SPDX-License-Identifier: Apache-2.0
"""retr-one: one big message, RETR through popbridge vs UID FETCH straight from the
upstream, plain and TLS, and popbridge's peak memory meanwhile."""

from __future__ import annotations

import sys

from harness.gateway import Gateway

from bench_lib.constants import HOST
from bench_lib.procstats import proc_status_kib
from bench_lib.server_config import gateway_overrides


class RetrOneWorkload:
    """Mixed into Bench (bench.py), whose servers, clients, run_client and add_row it uses."""

    # -- the single big message, plain and TLS (backpressure: VmHWM must not follow the size)
    def retr_one(self) -> None:
        a = self.args
        size, sha256, uid = self.one
        gw = Gateway(self.pki, self.upstream(a.upstream_tls), gateway_overrides(a.sessions, a.log_level, login_reuse=a.login_reuse),
                     upstream_tls=a.upstream_tls, listeners=(("pop3", "none"), ("pop3s", "implicit")),
                     binary=self.binary)
        self.gateways.append(gw)
        gw.start()
        pid = gw.proc.pid
        rss_start = proc_status_kib(pid, "VmRSS")
        common = ["--repeat", str(a.repeat), "--timeout", str(a.read_timeout)]
        pairs = [
            ("plain", self.run_client("direct IMAP", ["imap-fetch", "--imap", self.imap_address(False),
                                                      "--uid", str(uid)] + common),
             self.run_client("gateway POP3", ["retr", "--pop3", f"{HOST}:{gw.port('pop3')}",
                                              "--message", "1"] + common, gw)),
            ("TLS", self.run_client("direct IMAPS", ["imap-fetch", "--tls", "--imap", self.imap_address(True),
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
