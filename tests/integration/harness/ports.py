# SPDX-License-Identifier: Apache-2.0
"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port that was free on `host` a moment ago.

    Binds port 0, reads the port the kernel chose and closes the socket. Another
    process may take the port before the caller binds it; that small race is
    accepted (the kernel hands out ephemeral ports round-robin, so a just-freed
    port is rarely reused at once).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Returns `count` distinct free ports (all sockets are held until all are chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
