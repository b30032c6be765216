# SPDX-License-Identifier: Apache-2.0
"""CPU time, memory and process counts of popbridge, Dovecot's process groups and the
benchmark's own children, read from /proc (and getrusage)."""

from __future__ import annotations

import os
import resource
import time
from typing import Optional

from bench_lib.constants import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, field: str) -> int:
    """VmRSS, VmHWM, ... of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def _stat_fields(pid: int) -> Optional[list[bytes]]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()


def _own_stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after the command name (which may hold spaces); fields[11] and [12]
    are utime and stime (stat(5) fields 14 and 15), in clock ticks."""
    fields = _stat_fields(pid)
    if fields is None:
        raise BenchError(f"process {pid} is gone")
    return fields


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/PID/stat."""
    fields = _own_stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_user_seconds(pid: int) -> float:
    """User-space CPU time of a process (all its threads), from /proc/PID/stat (counted in
    10 ms clock ticks). On loopback the kernel charges a receiver for the sender's transmit
    work too (an ACK that opens the window sends the peer's queued data in the receiver's
    context), so system time is partly the peers' cost; user time is the gateway's alone."""
    return int(_own_stat_fields(pid)[11]) / CLK_TCK


def proc_cpu_seconds_ns(pid: int) -> float:
    """CPU time of a process's live threads with nanosecond resolution: the sum of the first
    field of /proc/PID/task/*/schedstat (time on a CPU). /proc/PID/stat counts in clock
    ticks (10 ms), too coarse for a row that costs the gateway tens of milliseconds.
    popbridge's threads live as long as the process, so nothing exits uncounted; falls
    back to /proc/PID/stat where schedstat is missing."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return proc_cpu_seconds(pid)
    return total / 1e9 if total else proc_cpu_seconds(pid)


def _group_members(leader: int, min_fields: int):
    """(pid, stat fields) of every process whose process group is `leader`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and len(fields) >= min_fields and int(fields[2]) == leader:
            yield int(entry), fields


def group_cpu_seconds(leader: int) -> float:
    """CPU time a process group has used so far, exited processes included.

    Dovecot's master (the group leader, `dovecot -F`) forks its auth, login and imap/pop3
    processes and reaps them when they exit, so the kernel adds an exited child's
    utime+stime (and its own reaped children's) to the master's cutime+cstime. The sum is
    therefore: the leader's utime+stime+cutime+cstime, plus utime+stime+cutime+cstime of
    every other process of the group still alive or not yet reaped (zombies keep their
    times). A child that exits between the two reads is missed or counted twice; that is
    one process's last few milliseconds, far below what a row measures."""
    # fields[11..14]: utime stime cutime cstime (stat(5) fields 14-17)
    return sum(sum(int(x) for x in fields[11:15]) for _, fields in _group_members(leader, 15)) / CLK_TCK


def group_pss_kib(leader: int) -> int:
    """Sum of Pss (proportional set size: shared pages split between their users) over a
    process group, from /proc/PID/smaps_rollup; summing RSS would count the shared
    libraries of every Dovecot process again and again."""
    total = 0
    for pid, _ in _group_members(leader, 3):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def wait_sessions_gone(leader: int, comm: bytes, timeout: float = 60) -> int:
    """Waits until no process of the group is named `comm` (Dovecot's per-session imap or
    pop3 processes exit shortly after their client's LOGOUT/QUIT, not at once), so a memory
    baseline does not include the previous round's sessions. Returns how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        left = 0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat_fields(int(entry))
                if fields is not None and len(fields) >= 3 and fields[0] != b"Z" and int(fields[2]) == leader:
                    try:
                        with open(f"/proc/{entry}/comm", "rb") as f:
                            left += f.read().strip() == comm
                    except OSError:
                        pass
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def group_size(leader: int) -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and len(fields) >= 3 and fields[0] != b"Z" and int(fields[2]) == leader:
                n += 1
    return n


def children_cpu_seconds() -> float:
    """CPU time of waited-for children: the delta around one client run is that client's
    (Dovecot and the gateway are reaped only at the end)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
