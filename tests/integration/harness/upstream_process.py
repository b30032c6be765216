# SPDX-License-Identifier: Apache-2.0
"""The lifecycle the tests' private mail servers (Dovecot, Cyrus, Courier) share.

A subclass starts its server as one process group (self.proc, its stderr in
self._stderr), listens on self.ports at self.host, keeps its files in self.dir (from
tempdirs), and names itself in SERVER_NAME; stopping is by process group, and done
only once every port refuses connections again.
"""

from __future__ import annotations

import itertools
import os
from typing import Callable, Iterable, Mapping, Self

from . import procs, tempdirs
from .wait import port_accepts, port_refuses, wait_until


_user_counter = itertools.count(1)


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

    def _new_user(self, name: str | None, password: str | None) -> tuple[str, str]:
        """add_user()'s name and password: fresh ones unless given, checked, not taken yet."""
        n = next(_user_counter)
        name = name or f"user{n}x{os.getpid()}"
        password = password or f"{name}-secret-{n}"
        self._check_user(name, password)
        if name in self._users:
            raise ValueError(f"user {name} exists")
        return name, password

    def password(self, name: str) -> str:
        return self._users[name]

    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    def _await_listening(self, name: str, also_ready: Callable[[], bool] = lambda: True) -> None:
        """Waits until every port accepts connections (and also_ready() holds); the server
        exiting first, or the deadline, stops what was started and raises with its logs."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {self.proc.returncode} during "
                                   f"start-up\n{self.diagnostics()}")
            return also_ready() and all(port_accepts(self.host, p) for p in self.ports)

        try:
            wait_until(ready, self.START_TIMEOUT, f"{name} to listen on {self.host}:"
                       f"{', :'.join(str(p) for p in self.ports)}", on_timeout=self.diagnostics)
        except BaseException:
            self._reap(kill=True)
            raise

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
