# SPDX-License-Identifier: Apache-2.0
"""What the benchmark prints: the header, the rows of the final table (median and
min-max of each row's repetitions, ratios of medians), the table itself and --json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from typing import Optional

from peer_dovecot import IMAPC_FEATURES

from bench_lib import REPO
from bench_lib.constants import WORKLOADS
from bench_lib.server_config import dovecot_version


class Report:
    """Mixed into Bench (bench.py): its args, rows, problems, load_start and servers."""

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
              f"the ratios less so); everything on loopback"
              + (f", the upstream behind a relay adding {a.upstream_rtt_ms:g} ms per round trip"
                 if a.upstream_rtt_ms > 0 else ""))
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
        if a.login_reuse not in ("0", "0s"):
            print(f"  the gateway keeps logged-in upstream connections (upstream.login_reuse.idle {a.login_reuse})")
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
