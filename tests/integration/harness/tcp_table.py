# SPDX-License-Identifier: Apache-2.0
"""The kernel's table of IPv4 TCP sockets (/proc/net/tcp), for tests that check what the
gateway's sockets are doing: listening, connected to whom, with which timer."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it
ESTABLISHED, LISTEN = "01", "0A"


@dataclass(frozen=True)
class TcpSocket:
    local_host: str  # hex, as the kernel writes it
    local_port: int
    remote_host: str
    remote_port: int
    state: str  # hex: ESTABLISHED, LISTEN, ...
    timer: str  # "tr:when": which timer runs, and the jiffies it has left
    inode: str


def _address(field: str) -> tuple[str, int]:
    host, port = field.split(":")
    return host, int(port, 16)


def tcp_sockets() -> list[TcpSocket]:
    with open("/proc/net/tcp") as table:
        next(table)  # the heading
        rows = [line.split() for line in table]
    return [TcpSocket(*_address(f[1]), *_address(f[2]), f[3], f[5], f[9]) for f in rows]
