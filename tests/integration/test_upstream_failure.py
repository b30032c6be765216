# SPDX-License-Identifier: Apache-2.0
"""The upstream fails: unreachable, stopped, untrusted, or killed mid-RETR.

These tests use private Dovecot instances (make_dovecot) since they stop or kill them.
"""

from __future__ import annotations

import re

import pytest

from harness import messages
from harness.certs import make_pki
from harness.clients import RawPop3, TERMINATOR
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until


def first_error_of_login(port: int, ctx, user: str, password: str):
    """Connects over implicit TLS and logs in with USER/PASS; returns the first
    -ERR reply (the greeting, USER or PASS), failing the test if all succeed."""
    with RawPop3(port, tls_context=ctx) as c:
        if c.greeting.err:
            return c.greeting
        for cmd in (f"USER {user}", f"PASS {password}"):
            r = c.cmd(cmd)
            if r.err:
                return r
    pytest.fail("login succeeded although the upstream is unusable")


def assert_login_works(port: int, ctx, user: str, password: str, expect_messages: int) -> None:
    with RawPop3(port, tls_context=ctx) as c:
        c.login(user, password)
        r = c.cmd("STAT")
        assert r.ok and r.line.split()[1] == b"%d" % expect_messages, r
        assert c.quit().ok


def test_upstream_port_closed(make_gateway, ctx):
    g = make_gateway(("127.0.0.1", free_port()))
    r = first_error_of_login(g.pop3s_port, ctx, "alice", "alice-secret-1")
    assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
    # The gateway itself stays up and answers the next client.
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert c.cmd("CAPA", multiline=True).ok


def test_upstream_stopped_then_restarted(make_dovecot, make_gateway, ctx):
    d = make_dovecot()
    d.append("alice", messages.simple(1))
    g = make_gateway(d)
    assert_login_works(g.pop3s_port, ctx, "alice", "alice-secret-1", 1)
    d.stop()
    r = first_error_of_login(g.pop3s_port, ctx, "alice", "alice-secret-1")
    assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
    d.start()
    assert_login_works(g.pop3s_port, ctx, "alice", "alice-secret-1", 1)


@pytest.mark.parametrize("problem", ["untrusted CA", "wrong server name"])
def test_upstream_certificate_is_verified(make_dovecot, make_gateway, ctx, problem):
    d = make_dovecot()
    other = make_pki()
    try:
        override = ({"upstream": {"ca_file": other.ca}} if problem == "untrusted CA"
                    else {"upstream": {"server_name": "mail.example.invalid"}})
        g = make_gateway(d, override, upstream_tls="implicit")
        r = first_error_of_login(g.pop3s_port, ctx, "alice", "alice-secret-1")
        assert r.line.startswith(b"-ERR [SYS/"), f"{problem}: {r}"
        assert not r.line.startswith(b"-ERR [AUTH]"), "not a credentials problem"
        # Counted and logged as a TLS failure, not as a peer that closed.
        wait_until(lambda: re.search(r"upstream_failed.*kind=tls", g.log_text()), 10 * TIME_FACTOR,
                   "an upstream_failed kind=tls line", on_timeout=g.diagnostics)
    finally:
        other.cleanup()
    # The credentials never reached Dovecot.
    assert "user=<alice>" not in d.log_text()


@pytest.mark.slow
def test_upstream_killed_mid_retr(make_dovecot, make_gateway, ctx):
    """Data-integrity rule 1: if the upstream dies mid-message, the client's
    connection closes WITHOUT the terminating CRLF.CRLF, so no client stores a
    truncated message as complete."""
    d = make_dovecot()
    # Bigger than everything the kernel and the gateway can buffer between
    # Dovecot and a client that has stopped reading (see the report/README).
    big = messages.big_message(40 * 1024 * 1024, seed="killed-mid-retr")
    d.append("alice", big)
    wire = messages.stuffed(big)
    g = make_gateway(d)
    c = RawPop3(g.pop3s_port, tls_context=ctx, rcvbuf=64 * 1024, timeout=60)
    try:
        c.login("alice", "alice-secret-1")
        c.send_line("RETR 1")
        status = c.read_line()
        assert status.startswith(b"+OK"), status
        head = c.read_exactly(256 * 1024)
        assert head == wire[: len(head)], "the body starts correctly"
        d.kill()  # SIGKILL to every Dovecot process: the IMAP connection dies mid-literal
        rest = c.read_until_eof(timeout=60)
    finally:
        c.close()
    received = head + rest
    assert not received.endswith(TERMINATOR), "a truncated message was terminated as if complete"
    assert len(received) < len(wire), (
        "the whole message arrived: Dovecot had sent it all before the kill; make the message bigger")
    # The gateway survived and reports the upstream as temporarily unavailable.
    r = first_error_of_login(g.pop3s_port, ctx, "alice", "alice-secret-1")
    assert r.line.startswith(b"-ERR [SYS/TEMP]"), r


def test_every_address_of_a_name_is_tried(dovecot, account, make_gateway, ctx, popbridge_bin):
    """A name with several addresses (imap.gmail.com, outlook.office365.com have many):
    when the first refuses, the next is tried, as nginx and curl do. Here the name
    resolves to ::1 first (nothing listens there) and then 127.0.0.1 (Dovecot), through a
    hosts file bind-mounted for the gateway alone (a private mount namespace)."""
    import os
    import shutil
    import subprocess
    from harness import tempdirs
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    workdir = tempdirs.make("hosts")
    try:
        hosts = os.path.join(workdir, "hosts")
        with open(hosts, "w") as f:
            f.write("::1 multi.popbridge.test\n127.0.0.1 multi.popbridge.test\n")
        probe = subprocess.run(["unshare", "-m", "/bin/sh", "-c",
                                f"mount --bind {hosts} /etc/hosts && getent ahosts multi.popbridge.test"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode != 0 or not probe.stdout.startswith("::1"):
            pytest.skip(f"no private mount namespace here: {probe.stderr.strip()}")
        wrapper = os.path.join(workdir, "popbridge")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\n"
                    "exec unshare -m /bin/sh -c 'mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"' "
                    f"popbridge-hosts {hosts} {popbridge_bin} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        msg = messages.simple(41)
        dovecot.append(account.name, msg)
        g = make_gateway(dovecot, {"upstream": {"address": f"multi.popbridge.test:{dovecot.imap_port}"}},
                         binary=wrapper)
        with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
            c.login(account.name, account.password)
            assert c.cmd("STAT").line.startswith(b"+OK 1 ")
            assert c.quit().ok
        assert "upstream_address_failed" in g.log_text()
    finally:
        tempdirs.remove(workdir)
