# SPDX-License-Identifier: Apache-2.0
"""One run of pop3_bench_client: what it printed (the key=value result line) and the CPU
time the client and the servers used meanwhile."""

from __future__ import annotations

import dataclasses
from typing import Optional


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
