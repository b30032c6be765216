# SPDX-License-Identifier: Apache-2.0
"""Waiting on conditions with deadlines.

Tests never sleep for a fixed time to "let something happen": they poll a
condition until it holds or a deadline passes, and a missed deadline is a
failure with a message saying what was awaited.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

# Deadlines that depend on the gateway's speed are multiplied by this; a
# sanitizer build (POPBRIDGE_SANITIZED=1, see scripts/test) runs several times slower.
TIME_FACTOR = 4.0 if os.environ.get("POPBRIDGE_SANITIZED") == "1" else 1.0


class DeadlineExceeded(AssertionError):
    """A condition did not hold before its deadline (an AssertionError, so pytest shows it as a failure)."""


def wait_until(
    condition: Callable[[], Optional[T]],
    timeout: float,
    what: str,
    interval: float = 0.02,
    on_timeout: Optional[Callable[[], str]] = None,
) -> T:
    """Polls `condition` until it returns a truthy value, which is returned.

    Raises DeadlineExceeded naming `what` after `timeout` seconds; `on_timeout`
    may add context (e.g. a log tail) to the message. The poll interval grows
    from `interval` up to 0.2 s so long waits don't spin.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = condition()
        if result:
            return result
        now = time.monotonic()
        if now >= deadline:
            extra = ""
            if on_timeout is not None:
                try:
                    extra = "\n" + on_timeout()
                except Exception as e:  # the context is best effort
                    extra = f"\n(could not collect context: {e!r})"
            raise DeadlineExceeded(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, 0.2)


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port can be established right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_refuses(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when nothing accepts connections on host:port any more."""
    return not port_accepts(host, port, timeout)
