# SPDX-License-Identifier: Apache-2.0
"""The lifecycle the tests' private mail servers (Dovecot, Cyrus) share.

A subclass starts its server as one process group (self.proc, its stderr in
self._stderr), listens on self.ports at self.host, keeps its files in self.dir (from
tempdirs), and names itself in SERVER_NAME; stopping is by process group, and done
only once every port refuses connections again.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from . import procs, tempdirs
from .wait import port_refuses, wait_until


class UpstreamProcess:
    SERVER_NAME = "the server"
    STOP_TIMEOUT = 5.0

    # Users: a subclass checks a name and password with _check_user (what its server
    # accepts) and keeps them in self._users.
    def _take_users(self, users: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        self._users: dict[str, str] = {}
        for name, password in (users.items() if isinstance(users, Mapping) else users):
            self._check_user(name, password)
            self._users[name] = password

    def password(self, name: str) -> str:
        return self._users[name]

    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the instance and removes its directory."""
        try:
            self._reap(kill=False)
        finally:
            if self.dir is not None:
                tempdirs.remove(self.dir)
                self.dir = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self, kill: bool) -> None:
        if self.proc is None:
            return
        try:
            if kill:
                procs.kill_group(self.proc)
            else:
                procs.stop_group(self.proc, term_timeout=self.STOP_TIMEOUT)
        finally:
            self._stderr.close()
        wait_until(lambda: all(port_refuses(self.host, p) for p in self.ports), 5.0,
                   f"{self.SERVER_NAME}'s ports to close")
        self.proc = None
