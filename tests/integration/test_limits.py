# SPDX-License-Identifier: Apache-2.0
"""Resource limits: max_connections, idle_timeout, client backpressure (bounded
memory for a client that stops reading), and upstream.command_timeout.

Nothing here sleeps to synchronise: every wait polls a condition with a deadline.
(The keep-alive test paces its NOOPs with short sleeps; that is the client's
behaviour under test, not a wait for the gateway.)
"""

from __future__ import annotations

import hashlib
import math
import os
import ssl
import time

import pytest

from harness import messages
from harness.clients import ConnectionClosed, RawPop3, TERMINATOR
from harness.fake_imap import FakeImap, Message
from harness.wait import TIME_FACTOR, wait_until

QUICK = 10.0 * TIME_FACTOR


# ------------------------------------------------------------ helpers

def greeting_or_none(port: int, ctx=None):
    """Connects and reads the first line; returns (client, line), or (None, None)
    when the server closes the connection (during the TLS handshake included)
    before a line. A server that neither answers nor closes within the deadline
    fails the test (TimeoutError)."""
    try:
        c = RawPop3(port, tls_context=ctx, timeout=5, read_greeting=False)
    except TimeoutError:
        raise
    except (OSError, ssl.SSLError):
        return None, None
    try:
        return c, c.read_line()
    except ConnectionClosed:
        c.close()
        return None, None
    except BaseException:
        c.close()
        raise


def accepted_session(port: int, ctx=None) -> RawPop3:
    """A connection the gateway accepted as a session (its greeting is +OK),
    retried until the deadline: connections the gateway is still tearing down
    count against max_connections for a moment."""
    def attempt():
        c, line = greeting_or_none(port, ctx)
        if c is not None and line.startswith(b"+OK"):
            return c
        if c is not None:
            c.close()
        return None

    return wait_until(attempt, QUICK, f"a +OK greeting on port {port}")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp_queues(pid: int, remote_port: int = None, local_port: int = None) -> list[tuple[int, int]]:
    """(tx_queue, rx_queue) of the established TCP sockets of `pid` with the given
    remote or local port, from /proc/<pid>/net/tcp (the kernel's Send-Q/Recv-Q)."""
    inodes = socket_inodes(pid)
    found = []
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], int(fields[9])
            if state != "01" or inode not in inodes:
                continue
            if remote_port is not None and int(remote.split(":")[1], 16) != remote_port:
                continue
            if local_port is not None and int(local.split(":")[1], 16) != local_port:
                continue
            tx, rx = queues.split(":")
            found.append((int(tx, 16), int(rx, 16)))
    return found


# ------------------------------------------------------- max_connections

def test_max_connections(dovecot, account, make_gateway, ctx):
    g = make_gateway(dovecot, {"limits": {"max_connections": 2}})
    a = accepted_session(g.pop3_port)
    b = accepted_session(g.pop3s_port, ctx)
    try:
        # A third connection, on the plain (STLS) listener: refused in so many words.
        c, line = greeting_or_none(g.pop3_port)
        assert c is not None, "the refusal must be said before the connection closes"
        with c:
            assert line.startswith(b"-ERR [SYS/TEMP]"), line
            assert c.wait_eof(timeout=QUICK) == b"", "nothing after the refusal, then EOF"
        # On the implicit-TLS listener the refusal can't be read: the connection just closes.
        c, line = greeting_or_none(g.pop3s_port, ctx)
        assert c is None, f"a third session was accepted on pop3s: {line!r}"
        # The two sessions are unaffected: one logs in and works.
        b.login(account.name, account.password)
        assert b.cmd("STAT").ok
        # Once one of them is gone, a new connection is accepted again (poll with a deadline).
        a.close()
        d = accepted_session(g.pop3_port)
        with d:
            assert d.cmd("STLS").ok
            d.starttls(ctx)
            d.login(account.name, account.password)
            assert d.cmd("STAT").ok
            assert d.quit().ok
        assert b.quit().ok
    finally:
        a.close()
        b.close()
    assert "event=connection_refused" in g.log_text()


# ----------------------------------------------------------- idle_timeout

def test_idle_timeout_autologout_does_not_expunge(dovecot, account, make_gateway, ctx):
    """RFC 1939 §3: the autologout timer closes the session WITHOUT entering UPDATE,
    so a DELE'd message stays."""
    uids = dovecot.append_many(account.name, [messages.simple(n) for n in (1, 2, 3)])
    g = make_gateway(dovecot, {"limits": {"idle_timeout": "1s"}})
    ended = dovecot.settled_session_ends(account.name)
    c = RawPop3(g.pop3s_port, tls_context=ctx, timeout=10)
    unauthenticated = RawPop3(g.pop3s_port, tls_context=ctx, timeout=10)
    try:
        c.login(account.name, account.password)
        assert c.cmd("DELE 1").ok
        last_activity = time.monotonic()
        line = c.read_line(timeout=5)
        idle = time.monotonic() - last_activity
        assert line.startswith(b"-ERR"), line
        assert idle >= 0.8, f"closed after {idle:.2f}s of idleness, before the 1s timeout"
        assert c.wait_eof(timeout=5) == b""
        # A connection that never logged in is timed out too.
        line = unauthenticated.read_line(timeout=5)
        assert line.startswith(b"-ERR"), line
        assert unauthenticated.wait_eof(timeout=5) == b""
    finally:
        c.close()
        unauthenticated.close()
    dovecot.wait_session_ends(account.name, ended + 1)
    assert dovecot.uids(account.name) == uids, "an autologout must not expunge"
    assert "\\Deleted" not in dovecot.flags(account.name, uids[0]), "nothing may change upstream"
    assert "event=session_end" in g.log_text() and "reason=timeout" in g.log_text()


def test_activity_keeps_session_alive(dovecot, account, make_gateway, ctx):
    dovecot.append(account.name, messages.simple(1))
    g = make_gateway(dovecot, {"limits": {"idle_timeout": "1s"}})
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=10) as c:
        c.login(account.name, account.password)
        start = time.monotonic()
        count = 0
        while time.monotonic() - start < 2.0:
            r = c.cmd("NOOP", timeout=5)
            assert r.ok, f"NOOP {count} after {time.monotonic() - start:.2f}s: {r}"
            count += 1
            time.sleep(0.3)  # pacing: the client is active every ~0.3 s
        assert count >= 5
        assert c.cmd("STAT").line.startswith(b"+OK 1 "), "still logged in after 2 s > idle_timeout"
        assert c.quit().ok


def test_stalled_reader_mid_message_times_out(dovecot, account, make_gateway, ctx):
    """A client that stops reading in the middle of a RETR makes no progress, which is
    idleness too: the session is closed after idle_timeout, without the terminator and
    without a status line in the middle of the message."""
    big = messages.big_message(20 * 1024 * 1024, seed="stalled-reader")
    dovecot.append(account.name, big)
    g = make_gateway(dovecot, {"limits": {"idle_timeout": "2s"}})
    c = RawPop3(g.pop3s_port, tls_context=ctx, rcvbuf=64 * 1024, timeout=30)
    try:
        c.login(account.name, account.password)
        c.send_line("RETR 1")
        started = time.monotonic()
        wait_until(lambda: "reason=timeout" in g.log_text(), 20 * TIME_FACTOR,
                   "the stalled session to time out", on_timeout=g.log_text)
        assert time.monotonic() - started >= 1.5, "timed out before idle_timeout"
        received = c.read_until_eof(30 * TIME_FACTOR)
        assert received.startswith(b"+OK"), received[:80]
        assert len(received) < len(big), "the whole message arrived: the client was not stalled"
        assert not received.endswith(TERMINATOR), "a truncated message must not end with the terminator"
        assert b"-ERR" not in received[-200:], "no status line inside the message"
    finally:
        c.close()


# ------------------------------------------------ backpressure / bounded memory

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("POPBRIDGE_SANITIZED") == "1",
                    reason="AddressSanitizer keeps freed memory in quarantine, so RSS says nothing "
                           "about buffering; the release build runs this check")
def test_slow_reader_bounded_memory(dovecot, account, make_gateway, ctx):
    """A client that sends RETR for a 40 MiB message and then does not read: the
    gateway stops reading the upstream (the watermarks, 256 KiB by default) instead
    of buffering the message, then delivers it byte-exact once the client reads."""
    big = messages.big_message(40 * 1024 * 1024, seed="slow-reader")
    dovecot.append(account.name, big)
    g = make_gateway(dovecot)
    pid = g.proc.pid
    c = RawPop3(g.pop3s_port, tls_context=ctx, rcvbuf=64 * 1024, timeout=60)
    try:
        c.login(account.name, account.password)
        assert c.cmd("STAT").ok
        before = rss_kib(pid)
        c.send_line("RETR 1")

        history: list[tuple[int, int, int]] = []

        def stalled():
            """Nothing moves any more: the gateway's RSS, the bytes it has not read from
            Dovecot (Recv-Q) and the bytes queued towards the client (Send-Q) are the
            same in 10 samples in a row, with bytes queued towards the client."""
            up = tcp_queues(pid, remote_port=dovecot.imap_port)
            assert len(up) == 1, f"expected one upstream connection, found {up}"
            down = tcp_queues(pid, local_port=g.pop3s_port)
            assert len(down) == 1, f"expected one client connection, found {down}"
            history.append((rss_kib(pid), up[0][1], down[0][0]))
            last = history[-10:]
            return len(last) == 10 and all(s == last[0] for s in last) and last[0][2] > 0

        wait_until(stalled, 30 * TIME_FACTOR, "the transfer to the slow client to stall",
                   interval=0.05, on_timeout=lambda: f"samples (RSS KiB, upstream Recv-Q, client Send-Q): {history[-10:]}")
        rss, upstream_unread, _ = history[-1]
        growth_kib = rss - before
        assert growth_kib < 16 * 1024, (
            f"gateway RSS grew by {growth_kib} KiB (from {before} KiB) while the client did not read: "
            f"it buffers the message instead of applying backpressure")
        assert upstream_unread > 0, "the gateway must stop reading the upstream while the client is slow"
        assert len(c.buffered) == 0, "the client really did not read"
        r = c.read_reply(multiline=True, timeout=120)
    finally:
        c.close()
    assert r.ok, r
    assert r.raw.endswith(TERMINATOR)
    assert len(r.body) == len(big)
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big).hexdigest()
    del r


# ------------------------------------------------- upstream.command_timeout

@pytest.fixture
def silent_fetch_upstream():
    """A fake IMAP server that never answers UID FETCH ... BODY.PEEK[] (RETR)."""
    def fetch(session, cmd):
        return b"BODY" in cmd.args.upper()  # True: swallowed, no reply ever

    fake = FakeImap(users={"dave": "dave-secret-4"},
                    messages=[Message(1, messages.simple(1)), Message(2, messages.simple(2))],
                    hooks={"UID FETCH": fetch}).start()
    yield fake
    fake.close()
    assert not fake.errors, fake.errors


def test_upstream_command_timeout(silent_fetch_upstream, make_gateway, ctx):
    fake = silent_fetch_upstream
    g = make_gateway(fake.address, {"upstream": {"command_timeout": "1s"}}, upstream_tls="none")
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=10) as c:
        c.login("dave", "dave-secret-4")
        assert c.cmd("STAT").line.startswith(b"+OK 2 ")
        c.send_line("RETR 1")
        sent = time.monotonic()
        try:
            line = c.read_line(timeout=5)
        except ConnectionClosed:
            line = b""
        waited = time.monotonic() - sent
        rest = c.read_until_eof(timeout=5)
    assert not line.startswith(b"+OK"), f"RETR answered +OK without a message: {line!r}"
    assert line == b"" or line.startswith(b"-ERR [SYS/TEMP]"), line
    assert TERMINATOR not in rest and rest == b"", f"nothing after the error: {rest!r}"
    assert waited >= 0.8, f"gave up after {waited:.2f}s, before the 1s command timeout"
    last = fake.received()[-1]
    assert last.verb == "UID FETCH" and last.args == b"1 (BODY.PEEK[])", last.text
    assert "event=upstream_failed kind=timeout" in g.log_text(), g.diagnostics()


def _retr_from_slow_server(make_gateway, ctx, message, fetch, timeout, tls=None):
    """RETR 1 of `message` through a gateway whose upstream, a scripted server (implicit
    TLS with the server context `tls`), answers UID FETCH with the hook `fetch`: the client
    gets the whole message and the gateway logs no upstream failure. Returns the gateway."""
    fake = FakeImap(users={"dave": "dave-secret-4"}, messages=[Message(1, message)],
                    hooks={"UID FETCH": fetch}, tls=tls).start()
    try:
        g = make_gateway(fake.address, {"upstream": {"command_timeout": f"{timeout}s"}},
                         upstream_tls="implicit" if tls is not None else "none")
        with RawPop3(g.pop3s_port, tls_context=ctx, timeout=QUICK) as c:
            c.login("dave", "dave-secret-4")
            r = c.cmd("RETR 1", multiline=True, timeout=QUICK + 3 * timeout)
        assert r.ok, r
        assert r.body == messages.as_retrieved(message)
        assert "event=upstream_failed" not in g.log_text(), g.diagnostics()
    finally:
        fake.close()
    assert not fake.errors, fake.errors
    return g


def test_a_server_too_slow_for_a_large_read_is_read_as_it_comes(make_gateway, ctx):
    """A large message is read from the upstream in large reads: the gateway is woken only
    once 64 KiB are there. A server that then sends less than that within the command
    timeout is slow, not silent: the gateway reads what it has and goes on (a log line
    says so), and the client gets the whole message rather than a timeout."""
    big = messages.big_message(240 * 1024)
    # 16 KiB over two command timeouts: the large read is not there in time. After the
    # first timeout each piece counts, with three quarters of a timeout to spare.
    timeout = math.ceil(2 * TIME_FACTOR)
    trickle, pause = 2048, timeout / 4

    def fetch(session, cmd):
        if b"BODY" not in cmd.args.upper():
            return False
        response = session.fetch_response(session.server.message(1), cmd.args.decode())
        start = response.index(b"}\r\n") + 3
        first = start + 100 * 1024  # leaves 140 KiB to come: a large read is awaited
        session.send(response[:first])
        for offset in range(first, first + 8 * trickle, trickle):
            time.sleep(pause)  # pacing the server's output, not synchronisation
            session.send(response[offset:offset + trickle])
        session.send(response[first + 8 * trickle:])
        session.ok(cmd.tag)
        return True

    g = _retr_from_slow_server(make_gateway, ctx, big, fetch, timeout)
    assert "event=upstream_slow" in g.log_text(), g.diagnostics()


def test_a_tls_record_that_arrives_slowly_is_no_silence(make_gateway, pki, ctx):
    """Over TLS nothing is handed up until a record is whole, so a record that takes longer
    than the command timeout to arrive used to fail the message although its bytes kept
    coming. Bytes since the last timeout are progress; the client gets the whole message."""
    body = messages.big_message(30 * 1024)
    timeout = math.ceil(2 * TIME_FACTOR)
    last = 8 * 1024  # sealed in one record, sent in 8 pieces over 1.75 command timeouts

    def fetch(session, cmd):
        if b"BODY" not in cmd.args.upper():
            return False
        response = session.fetch_response(session.server.message(1), cmd.args.decode())
        session.send(response[:-last])
        session.send_sealed_in_pieces(response[-last:], pieces=8, pause=timeout / 4)
        session.ok(cmd.tag)
        return True

    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.cert, pki.key)
    _retr_from_slow_server(make_gateway, ctx, body, fetch, timeout, tls=server_tls)


@pytest.mark.parametrize("state", ["authorization", "transaction"])
def test_overlong_line_is_refused_at_once_and_closed(dovecot, account, gateway, state):
    """A line past the 16 KiB limit and no line end: -ERR as soon as the limit is passed
    (not after the idle timeout), then the connection closes; nothing is expunged. (20 KiB:
    small enough that the gateway has read all of it when it closes, so the kernel does
    not answer unread data with a reset that could swallow the -ERR.)"""
    uid = dovecot.append(account.name, messages.simple(1))
    c = RawPop3(gateway.pop3s_port, tls_context=gateway.pki.client_context(), timeout=QUICK)
    try:
        if state == "transaction":
            c.login(account.name, account.password)
            assert c.cmd("DELE 1").ok
        c.send(b"NOOP " + b"x" * (20 * 1024))
        line = c.read_line(timeout=QUICK)
        assert line == b"-ERR line too long", line
        assert c.read_until_eof(timeout=QUICK) == b""
    finally:
        c.close()
    assert dovecot.uids(account.name) == [uid], "a refused session deletes nothing"
    wait_until(lambda: "reason=protocol_error" in gateway.log_text(), QUICK,
               "the session end to be logged as a protocol error")
