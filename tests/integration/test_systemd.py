# SPDX-License-Identifier: Apache-2.0
"""systemd integration, without systemd: the test plays the service manager.

popbridge runs under `Type=notify` (deploy/systemd/popbridge.service). Here the test
binds the datagram socket systemd would, passes it in NOTIFY_SOCKET with a watchdog
period in WATCHDOG_USEC, and reads what the real binary reports: READY=1 once every
listener accepts, RELOADING=1 then READY=1 around a SIGHUP (taken or rejected),
WATCHDOG=1 pings, and STOPPING=1 when SIGTERM starts the drain.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Optional

import pytest

from harness import tempdirs
from harness.gateway import HOST
from harness.ports import free_port
from harness.wait import TIME_FACTOR, port_accepts, wait_until
from test_operations import wait_event

QUICK = 10.0 * TIME_FACTOR


class NotifySocket:
    """The service manager's end of sd_notify(3): one datagram per notification."""

    def __init__(self) -> None:
        self.dir = tempdirs.make("notify")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait_for(self, key: str, count: int = 1, after: int = 0) -> list[dict[str, str]]:
        """The messages (from index `after`) that carry key, once there are count."""
        def found() -> Optional[list[dict[str, str]]]:
            hits = [m for m in self.drain()[after:] if key in m]
            return hits if len(hits) >= count else None
        return wait_until(found, QUICK, f"{count} notification(s) with {key} (got {self.messages})")

    def close(self) -> None:
        self.sock.close()
        tempdirs.remove(self.dir)


def nowhere() -> tuple[str, int]:
    # No upstream is needed to start, reload and stop; a port with nothing behind it.
    return (HOST, free_port())


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_readiness_reload_watchdog_and_stop_are_reported(make_gateway, notify):
    g = make_gateway(nowhere(), env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    ready = notify.wait_for("READY")
    # READY=1 comes after the listeners are open, and says where they are.
    assert ready[0]["READY"] == "1"
    assert all(port_accepts(HOST, port) for port in g.ports.values())
    for name, port in g.ports.items():
        assert f"{name}={HOST}:{port}" in ready[0]["STATUS"]
    assert not any("STOPPING" in m or "RELOADING" in m for m in notify.messages)
    wait_event(g, "watchdog", interval_ms="200")

    # A 400 ms watchdog period: pinged every 200 ms by the main loop.
    notify.wait_for("WATCHDOG", count=3)

    # A reload: RELOADING=1 (with the monotonic time systemd 253 matches), then READY=1.
    before = len(notify.drain())
    g.proc.send_signal(signal.SIGHUP)
    wait_event(g, "reloaded", trigger="SIGHUP")
    reloading = notify.wait_for("RELOADING", after=before)
    assert int(reloading[0]["MONOTONIC_USEC"]) > 0
    after_reload = [m for m in notify.wait_for("READY", after=before)]
    assert after_reload, notify.messages
    order = [("RELOADING" in m, "READY" in m) for m in notify.messages[before:]
             if "RELOADING" in m or "READY" in m]
    assert order == [(True, False), (False, True)], notify.messages[before:]

    # A rejected reload leaves the old configuration serving: READY=1 again, not a hang
    # in "reloading" (systemctl reload would wait for it).
    with open(g.config_path, "a") as f:
        f.write("limits: {max_connections: -1}\n")
    before = len(notify.drain())
    g.proc.send_signal(signal.SIGHUP)
    wait_event(g, "reload_rejected", trigger="SIGHUP")
    notify.wait_for("RELOADING", after=before)
    notify.wait_for("READY", after=before)

    # SIGTERM: STOPPING=1 as the drain begins, then a clean exit.
    g.proc.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING")
    assert stopping[0]["STOPPING"] == "1"
    assert "draining" in stopping[0]["STATUS"]
    wait_until(lambda: not g.running, QUICK, "popbridge to exit after SIGTERM")
    assert g.proc.returncode == 0


def test_no_watchdog_pings_when_the_watchdog_is_for_another_process(make_gateway, notify):
    # systemd sets WATCHDOG_PID; a child that inherits the environment must not ping.
    g = make_gateway(nowhere(), env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "100000",
                                "WATCHDOG_PID": str(os.getpid())})
    notify.wait_for("READY")
    wait_event(g, "started")
    # Ten periods' worth of main-loop turns, observed through a reload round trip.
    for _ in range(3):
        before = len(notify.drain())
        g.proc.send_signal(signal.SIGHUP)
        notify.wait_for("READY", after=before)
    assert not any("WATCHDOG" in m for m in notify.drain()), notify.messages
    assert "event=watchdog" not in g.log_text()
