# SPDX-License-Identifier: Apache-2.0
"""Process groups: finding, signalling and reaping every process of a started program.

Programs under test are started with start_new_session=True, so each is the
leader of its own process group and every child it forks (Dovecot's auth,
login, imap, log, anvil... processes) stays in that group. Stopping signals the
group and waits, with a deadline, until no process of it is left.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from typing import Callable, Optional

# Every process group the harness started, for the end-of-run leak check.
started: list[subprocess.Popen] = []


def register(proc: subprocess.Popen) -> subprocess.Popen:
    started.append(proc)
    return proc


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the test process dies, so a test
    run that is killed (CI timeout, SIGKILL) doesn't leave servers running.
    SIGTERM lets Dovecot's master stop its children and the gateway drain."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def group_members(pgid: int) -> list[int]:
    """PIDs of live (non-zombie) processes whose process group is `pgid`, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Format: pid (comm) state ppid pgrp ...; comm may contain spaces or ')'.
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) < 3:
            continue
        state, pgrp = rest[0], int(rest[2])
        if pgrp == pgid and state != b"Z":
            pids.append(int(entry))
    return pids


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def stop_group(proc: subprocess.Popen, term_timeout: float = 10.0, kill_timeout: float = 5.0,
               sig: int = signal.SIGTERM) -> Optional[int]:
    """Sends `sig` to the leader, waits up to term_timeout for the whole group to go,
    then SIGKILLs the group and waits up to kill_timeout. Returns the leader's exit
    status. Raises RuntimeError if processes survive SIGKILL."""
    pgid = proc.pid
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    if not _wait_group_gone(proc, term_timeout):
        signal_group(pgid, signal.SIGKILL)
        if not _wait_group_gone(proc, kill_timeout):
            raise RuntimeError(f"processes of group {pgid} survived SIGKILL: {group_members(pgid)}")
    return proc.returncode


def kill_group(proc: subprocess.Popen, timeout: float = 5.0) -> Optional[int]:
    """SIGKILLs every process of the group at once and waits until all are gone."""
    signal_group(proc.pid, signal.SIGKILL)
    if not _wait_group_gone(proc, timeout):
        raise RuntimeError(f"processes of group {proc.pid} survived SIGKILL: {group_members(proc.pid)}")
    return proc.returncode


def _wait_group_gone(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        proc.poll()  # reaps the leader so it doesn't linger as a zombie
        if proc.returncode is not None and not group_members(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
