# SPDX-License-Identifier: Apache-2.0
"""Runs a Courier-IMAP instance (authdaemond plus its couriertcpd listeners) in a private
mount namespace where the instance's own files stand in for Courier's compiled-in paths.

    unshare --mount --propagation private -- python3 courier_ns.py PLAN.json

Courier's auth library reaches authdaemond through /run/courier/authdaemon/socket, and
authdaemond and its userdb module read /etc/courier/authdaemonrc and
/etc/courier/userdb.dat: paths compiled into the binaries, with no option to move them.
Inside the namespace this bind-mounts the instance's directories over them (PLAN's
"mounts", [source, target] pairs), so the instance never sees the system's /etc/courier
nor meets a system authdaemond. When a target directory is missing (/run/courier is made
by systemd-tmpfiles at boot, which a container may not run), a tmpfs goes over its
nearest existing parent in this namespace only and the rest of the path is made in it.
Nothing is mounted or created in the host's namespace: the script refuses to run in its
parent's mount namespace.

PLAN (written by harness/courier.py) lists the programs: "authdaemond" is started first
and awaited until its "socket" exists, then every entry of "services" (the couriertcpd
listeners). Each is {"argv": [...], "env": {...}, "log": PATH} and gets SIGTERM when this
process dies (PR_SET_PDEATHSIG; couriertcpd stays root, so the setting holds).

This process stays as their parent. SIGTERM or SIGINT is passed on to each of them
(couriertcpd puts itself in a process group of its own with setpgrp() and signals that
group, its sessions, on SIGTERM); when all have exited, this process exits 0. If one of
them exits by itself, the others are stopped and this process exits 1, so the harness
sees a dead instance rather than a half one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

# Run as a script: its directory (harness/) is sys.path[0].
from wait import DeadlineExceeded, wait_until

_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 5.0  # seconds from SIGTERM to SIGKILL for the programs started here
SOCKET_TIMEOUT = 10.0  # seconds for authdaemond to create its socket


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mount_point(source: str, target: str) -> None:
    """Makes sure `target` exists to mount `source` on. A missing directory is created only
    on a tmpfs mounted (in this namespace) over its nearest existing parent; a missing
    file is an error."""
    if os.path.exists(target):
        return
    if not os.path.isdir(source):
        sys.exit(f"courier_ns.py: no {target} to mount {source} on")
    parent = os.path.dirname(target)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if parent == "/":
        sys.exit(f"courier_ns.py: refusing to mount a tmpfs over / for {target}")
    _mount("-t", "tmpfs", "-o", "mode=755,size=1m", "popbridge-test-courier", parent)
    os.makedirs(target, mode=0o755)


def _pdeathsig() -> None:
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _start(program: dict) -> subprocess.Popen:
    log = open(program["log"], "ab", buffering=0)
    try:
        return subprocess.Popen(program["argv"], env=program["env"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, close_fds=True, preexec_fn=_pdeathsig)
    finally:
        log.close()


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.exit("usage: courier_ns.py PLAN.json")
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        sys.exit("courier_ns.py: not in a private mount namespace (run it under unshare -m)")
    with open(argv[1]) as f:
        plan = json.load(f)

    def stop(signum, frame) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    os.umask(0o022)  # Debian's IMAP_UMASK
    children: list[subprocess.Popen] = []
    try:
        _mount("--make-rprivate", "/")
        for source, target in plan["mounts"]:
            _mount_point(source, target)
            _mount("--bind", source, target)
        authdaemond = _start(plan["authdaemond"])
        children.append(authdaemond)
        try:
            wait_until(lambda: os.path.exists(plan["socket"]) or authdaemond.poll() is not None,
                       SOCKET_TIMEOUT, f"authdaemond to create {plan['socket']}")
        except DeadlineExceeded as e:
            print(f"courier_ns.py: {e}", file=sys.stderr, flush=True)
            _stop(children)
            return 1
        if authdaemond.returncode is not None:
            print(f"courier_ns.py: authdaemond exited with status {authdaemond.returncode}",
                  file=sys.stderr, flush=True)
            return 1
        for service in plan["services"]:
            children.append(_start(service))
        pid, status = os.wait()  # the first of them to exit, by itself
        name = next((" ".join(c.args[:1]) for c in children if c.pid == pid), str(pid))
        print(f"courier_ns.py: {name} exited (status {os.waitstatus_to_exitcode(status)}); stopping the rest",
              file=sys.stderr, flush=True)
        for child in children:
            if child.pid == pid:
                child.returncode = os.waitstatus_to_exitcode(status)
        _stop(children)
        return 1
    except _Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop(children)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
