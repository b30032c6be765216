# SPDX-License-Identifier: Apache-2.0
"""Runs a daemon that logs only through syslog(3) with its log going to a file.

    unshare --mount --propagation private -- python3 syslog_ns.py NSDIR LOGFILE -- CMD ARG...

Some daemons (Cyrus IMAP) log only to /dev/log, which a test machine may lack (or
which is the system's journal). Run inside a private mount namespace (unshare -m),
this gives the namespace its own tmpfs /dev: the few device nodes a daemon needs are
symlinks into a recursive bind of the real /dev at NSDIR/realdev, and /dev/log is a
datagram socket that this process reads, appending each message as a line to LOGFILE.
Nothing is mounted in the host's namespace: the script refuses to run in its parent's
mount namespace.

It forks CMD (in the same process group) and stays as its parent: SIGTERM or SIGINT is
passed on to CMD, and when CMD exits, this process drains the socket and exits with
CMD's status (128+N for a signal N), so the log holds the daemon's shutdown messages too.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def private_dev(nsdir: str) -> socket.socket:
    """Replaces /dev (in this namespace only) and returns the bound /dev/log socket."""
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        sys.exit("syslog_ns.py: not in a private mount namespace (run it under unshare -m)")
    realdev = os.path.join(nsdir, "realdev")
    os.makedirs(realdev, exist_ok=True)
    _mount("--make-rprivate", "/")
    _mount("--rbind", "/dev", realdev)
    _mount("-t", "tmpfs", "-o", "mode=755,size=1m", "popbridge-test-dev", "/dev")
    for name in DEV_NODES:
        os.symlink(os.path.join(realdev, name), f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")
    for n, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{n}", f"/dev/{name}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    os.chmod("/dev/log", 0o666)  # the daemon's processes run as nobody
    return sock


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[3] != "--":
        sys.exit("usage: syslog_ns.py NSDIR LOGFILE -- CMD [ARG...]")
    nsdir, log_path, cmd = argv[1], argv[2], argv[4:]
    sock = private_dev(nsdir)
    out = open(log_path, "ab", buffering=0)

    def write(data: bytes) -> None:
        data = re.sub(rb"^<\d+>", b"", data).rstrip(b"\0\n")  # the priority prefix
        out.write(time.strftime("%H:%M:%S ").encode() + data + b"\n")

    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            sock.close()
            out.close()
            # If this process is SIGKILLed, CMD still gets SIGTERM (until it changes
            # its uid, which clears the setting; the harness then kills the group).
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    def forward(signum, frame) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # SIGCHLD (CMD exited) wakes the select() through this pipe.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            break
        ready, _, _ = select.select([sock, wake_r], [], [])
        if sock in ready:
            write(sock.recv(65536))
        if wake_r in ready:
            os.read(wake_r, 512)
    sock.setblocking(False)
    while True:  # what the daemon's last processes sent
        try:
            write(sock.recv(65536))
        except BlockingIOError:
            break
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
