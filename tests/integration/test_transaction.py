# SPDX-License-Identifier: Apache-2.0
"""TRANSACTION and UPDATE: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT
mapped onto IMAP, checked byte-exact against what was APPENDed upstream."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator

import pytest

from harness import messages
from harness.clients import RawPop3, pop3_ssl
from harness.messages import as_retrieved, dovecot_uidl, expected_top

TRICKY = messages.tricky_messages()
TRICKY_NAMES = list(TRICKY)


@contextlib.contextmanager
def session(gateway, ctx, acct, listener: str = "pop3s") -> Iterator[RawPop3]:
    """A logged-in raw POP3 session (implicit TLS, or STLS on the plain listener)."""
    if listener == "pop3s":
        c = RawPop3(gateway.pop3s_port, tls_context=ctx)
    else:
        c = RawPop3(gateway.pop3_port)
        assert c.cmd("STLS").ok
        c.starttls(ctx)
    try:
        c.login(acct.name, acct.password)
        yield c
    finally:
        c.close()


@pytest.fixture
def tricky(dovecot, account):
    """An account holding the tricky messages in TRICKY order; returns (account, [(uid, name, bytes)])."""
    out = []
    for name in TRICKY_NAMES:
        uid = dovecot.append(account.name, TRICKY[name])
        out.append((uid, name, TRICKY[name]))
    return account, out


@pytest.fixture
def five(dovecot, account):
    """An account with five small messages; returns (account, [uid], [bytes])."""
    msgs = [messages.simple(i, body_lines=6) for i in range(1, 6)]
    uids = dovecot.append_many(account.name, msgs)
    return account, uids, msgs


def parse_scan_list(reply) -> dict[int, int]:
    out = {}
    for line in reply.body_lines():
        n, size = line.split()
        out[int(n)] = int(size)
    return out


def parse_uidl_list(reply) -> dict[int, str]:
    out = {}
    for line in reply.body_lines():
        n, uidl = line.split()
        out[int(n)] = uidl.decode()
    return out


# ------------------------------------------------------------- STAT / LIST

def test_stat_and_list(gateway, ctx, dovecot, tricky):
    acct, msgs = tricky
    sizes = dovecot.sizes(acct.name)
    with session(gateway, ctx, acct) as c:
        r = c.cmd("STAT")
        assert r.line == b"+OK %d %d" % (len(msgs), sum(sizes.values())), r
        r = c.cmd("LIST", multiline=True)
        assert r.ok, r
        assert parse_scan_list(r) == {n: sizes[uid] for n, (uid, _, _) in enumerate(msgs, 1)}
        for n, (uid, _, _) in enumerate(msgs, 1):
            r = c.cmd(f"LIST {n}")
            assert r.line == b"+OK %d %d" % (n, sizes[uid]), r
        assert c.quit().ok


def test_list_size_equals_retr_octets(gateway, ctx, tricky):
    acct, msgs = tricky
    with session(gateway, ctx, acct) as c:
        listing = parse_scan_list(c.cmd("LIST", multiline=True))
        for n, (_, name, msg) in enumerate(msgs, 1):
            if not msg.endswith(b"\r\n"):
                continue  # the server adds a CRLF before the terminator
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.ok, r
            assert len(r.body) == listing[n], f"{name}: LIST says {listing[n]}, RETR gave {len(r.body)}"


# ------------------------------------------------------------------ RETR

@pytest.mark.parametrize("listener", ["pop3s", "pop3"])
def test_retr_byte_exact(gateway, ctx, dovecot, tricky, listener):
    acct, msgs = tricky
    upstream = dovecot.fetch_all(acct.name)
    with session(gateway, ctx, acct, listener) as c:
        for n, (uid, name, msg) in enumerate(msgs, 1):
            assert upstream[uid] == msg  # the harness's own premise
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.ok, f"RETR {n} ({name}): {r}"
            assert r.body == as_retrieved(msg), f"RETR {n} ({name}) differs from the APPENDed message"
        assert c.quit().ok
    # RETR uses BODY.PEEK[] by default (mark_seen: false).
    assert all("\\Seen" not in dovecot.flags(acct.name, uid) for uid, _, _ in msgs)


def test_retr_raw_stuffing(gateway, ctx, tricky):
    """The bytes on the wire: every line starting with "." gets one more, the
    terminator comes right after the (CRLF-completed) last line."""
    acct, msgs = tricky
    with session(gateway, ctx, acct) as c:
        for n, (_, name, msg) in enumerate(msgs, 1):
            r = c.cmd(f"RETR {n}", multiline=True)
            body_raw = r.raw[len(r.line) + 2:]
            lines = as_retrieved(msg)[:-2].split(b"\r\n") if msg else []
            stuffed = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
            assert body_raw == stuffed + b".\r\n", f"{name}: wrong stuffing on the wire"


@pytest.mark.slow
def test_retr_20mib(gateway, ctx, dovecot, account):
    big = messages.big_message(20 * 1024 * 1024, seed="retr-20mib")
    dovecot.append(account.name, big)
    with session(gateway, ctx, account) as c:
        r = c.cmd("LIST 1")
        assert r.line == b"+OK 1 %d" % len(big), r
        r = c.cmd("RETR 1", multiline=True, timeout=120)
        assert r.ok, r
        assert len(r.body) == len(big)
        assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(big).hexdigest()
        assert c.cmd("NOOP").ok, "the session goes on after a big RETR"
        assert c.quit().ok


def test_retr_with_poplib(gateway, ctx, five):
    """poplib (a real client library) reads the same messages."""
    acct, _, msgs = five
    conn = pop3_ssl(gateway.pop3s_port, ctx)
    try:
        conn.user(acct.name)
        conn.pass_(acct.password)
        assert conn.stat() == (len(msgs), sum(len(m) for m in msgs))
        for n, msg in enumerate(msgs, 1):
            _, lines, octets = conn.retr(n)
            assert b"\r\n".join(lines) + b"\r\n" == msg
    finally:
        conn.quit()


# ------------------------------------------------------------------- TOP

@pytest.mark.parametrize("lines", [0, 3])
def test_top_exact(gateway, ctx, tricky, lines):
    acct, msgs = tricky
    with session(gateway, ctx, acct) as c:
        for n, (_, name, msg) in enumerate(msgs, 1):
            r = c.cmd(f"TOP {n} {lines}", multiline=True)
            assert r.ok, f"TOP {n} {lines} ({name}): {r}"
            assert r.body == expected_top(msg, lines), f"TOP {n} {lines} ({name})"


def test_top_more_lines_than_body(gateway, ctx, five):
    acct, _, msgs = five
    with session(gateway, ctx, acct) as c:
        r = c.cmd("TOP 1 1000", multiline=True)
        assert r.ok and r.body == msgs[0]


# ------------------------------------------------------------------ UIDL

def test_uidl_dovecot_format_and_stable(gateway, ctx, dovecot, five):
    acct, uids, _ = five
    validity = dovecot.uidvalidity(acct.name)
    expected = {n: dovecot_uidl(uid, validity) for n, uid in enumerate(uids, 1)}
    seen = []
    for _ in range(2):
        with session(gateway, ctx, acct) as c:
            listing = parse_uidl_list(c.cmd("UIDL", multiline=True))
            single = {}
            for n in expected:
                r = c.cmd(f"UIDL {n}")
                assert r.ok, r
                parts = r.line.split()
                assert parts[1] == b"%d" % n
                single[n] = parts[2].decode()
            assert listing == single
            assert c.quit().ok
        seen.append(listing)
    assert seen[0] == seen[1], "UIDL must be stable across sessions"
    assert seen[0] == expected, "UIDL must be Dovecot's %08X(uid)%08X(uidvalidity)"


# ------------------------------------------------------------ DELE / RSET

def test_dele_quit_removes_exactly_those(gateway, ctx, dovecot, five):
    acct, uids, _ = five
    with session(gateway, ctx, acct) as c:
        assert c.cmd("DELE 2").ok
        assert c.cmd("DELE 4").ok
        r = c.quit()
        assert r.ok, f"QUIT: {r}"
    # +OK to QUIT comes only after the upstream confirmed the expunge.
    assert dovecot.uids(acct.name) == [uids[0], uids[2], uids[4]]


def test_dele_then_dropped_connection_removes_nothing(gateway, ctx, dovecot, five):
    acct, uids, _ = five
    ended = dovecot.settled_session_ends(acct.name)
    c = RawPop3(gateway.pop3s_port, tls_context=ctx)
    c.login(acct.name, acct.password)
    assert c.cmd("DELE 1").ok
    assert c.cmd("DELE 3").ok
    c.close()  # no QUIT
    # Wait until the gateway's upstream session is over, then look.
    dovecot.wait_session_ends(acct.name, ended + 1)
    assert dovecot.uids(acct.name) == uids
    for uid in uids:
        assert "\\Deleted" not in dovecot.flags(acct.name, uid), "nothing may change upstream before QUIT"


def test_dele_then_abort_removes_nothing(gateway, ctx, dovecot, five):
    acct, uids, _ = five
    ended = dovecot.settled_session_ends(acct.name)
    c = RawPop3(gateway.pop3s_port, tls_context=ctx)
    c.login(acct.name, acct.password)
    assert c.cmd("DELE 5").ok
    c.send(b"QUI")  # half a command, then a TCP reset
    c.abort()
    dovecot.wait_session_ends(acct.name, ended + 1)
    assert dovecot.uids(acct.name) == uids


def test_dele_rset_quit_removes_nothing(gateway, ctx, dovecot, five):
    acct, uids, msgs = five
    with session(gateway, ctx, acct) as c:
        assert c.cmd("DELE 1").ok
        assert c.cmd("DELE 5").ok
        r = c.cmd("RSET")
        assert r.ok, r
        assert c.cmd("STAT").line == b"+OK 5 %d" % sum(len(m) for m in msgs), "RSET unmarks"
        assert c.quit().ok
    assert dovecot.uids(acct.name) == uids


def test_deleted_message_is_hidden(gateway, ctx, dovecot, five):
    acct, uids, msgs = five
    with session(gateway, ctx, acct) as c:
        assert c.cmd("DELE 2").ok
        r = c.cmd("STAT")
        assert r.line == b"+OK 4 %d" % (sum(len(m) for m in msgs) - len(msgs[1])), r
        listing = parse_scan_list(c.cmd("LIST", multiline=True))
        assert sorted(listing) == [1, 3, 4, 5], "numbers don't shift; 2 is just not listed"
        assert 2 not in parse_uidl_list(c.cmd("UIDL", multiline=True))
        for cmd in ("LIST 2", "UIDL 2", "RETR 2", "TOP 2 0", "DELE 2"):
            r = c.cmd(cmd)  # a -ERR is single-line, so no multiline read here
            assert r.err, f"{cmd} on a deleted message: {r}"
        r = c.cmd("RETR 3", multiline=True)
        assert r.ok and r.body == msgs[2]
        assert c.cmd("RSET").ok
        assert c.quit().ok
    assert dovecot.uids(acct.name) == uids


def test_new_mail_appears_in_next_session(gateway, ctx, dovecot, five):
    """The snapshot is fixed for the session (RFC 1939 §4)."""
    acct, uids, msgs = five
    with session(gateway, ctx, acct) as c:
        before = c.cmd("STAT").line
        extra = messages.simple(99)
        dovecot.append(acct.name, extra)
        assert c.cmd("STAT").line == before
        assert c.cmd("LIST 6").err
        assert c.quit().ok
    with session(gateway, ctx, acct) as c:
        assert c.cmd("STAT").line == b"+OK 6 %d" % (sum(len(m) for m in msgs) + len(extra))
        assert c.cmd("RETR 6", multiline=True).body == extra


# ------------------------------------------------------------ NOOP / QUIT

def test_noop_and_case_insensitive_commands(gateway, ctx, five):
    acct, _, msgs = five
    with session(gateway, ctx, acct) as c:
        assert c.cmd("NOOP").ok
        assert c.cmd("noop").ok
        assert c.cmd("stat").line == b"+OK 5 %d" % sum(len(m) for m in msgs)
        assert c.cmd("Retr 1", multiline=True).body == msgs[0]
        r = c.quit()
        assert r.ok
        assert c.read_until_eof(timeout=10) == b"", "QUIT closes the connection"


# ----------------------------------------------------------- wrong state

PRE_LOGIN_ONLY_TRANSACTION = ["STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "RSET", "NOOP"]


@pytest.mark.parametrize("listener", ["pop3s", "pop3"])
def test_transaction_commands_before_login(gateway, ctx, five, listener):
    acct, _, _ = five
    kwargs = {"tls_context": ctx} if listener == "pop3s" else {}
    with RawPop3(gateway.port(listener), **kwargs) as c:
        for cmd in PRE_LOGIN_ONLY_TRANSACTION:
            r = c.cmd(cmd)
            assert r.err, f"{cmd} before login: {r}"
        assert c.cmd("CAPA", multiline=True).ok, "the session goes on"
        assert c.quit().ok


def test_authorization_commands_after_login(gateway, ctx, five):
    acct, _, msgs = five
    with session(gateway, ctx, acct) as c:
        for cmd in (f"USER {acct.name}", f"PASS {acct.password}", "STLS", "AUTH PLAIN", "AUTH LOGIN"):
            r = c.cmd(cmd)
            assert r.err, f"{cmd} in TRANSACTION state: {r}"
        assert c.cmd("STAT").line == b"+OK 5 %d" % sum(len(m) for m in msgs)
        assert c.quit().ok


# ------------------------------------------------------------- malformed

MALFORMED = [
    "RETR x", "RETR", "RETR 0", "RETR -1", "RETR 6", "RETR 1 2", "RETR 99999999999999999999",
    "TOP 1", "TOP 1 x", "TOP x 1", "TOP 1 -1", "TOP 0 0",
    "LIST 0", "LIST x", "LIST 6", "UIDL 0", "UIDL 6", "DELE 0", "DELE x", "DELE 6",
    "FOO", "XYZZY 1 2 3", "",
    "X" * 298,               # a 300-octet line with CRLF
    "LIST " + "1" * 295,     # 300 octets with CRLF, a valid verb
]


def test_malformed_commands(gateway, ctx, five):
    acct, _, msgs = five
    with session(gateway, ctx, acct) as c:
        for cmd in MALFORMED:
            r = c.cmd(cmd)
            assert r.err, f"{cmd[:40]!r} ({len(cmd) + 2} octets): {r}"
            r = c.cmd("STAT")
            assert r.line == b"+OK 5 %d" % sum(len(m) for m in msgs), f"session broken after {cmd[:40]!r}: {r}"
        r = c.cmd("RETR 1", multiline=True)
        assert r.ok and r.body == msgs[0]
        assert c.quit().ok


def test_malformed_before_login(gateway, ctx, five):
    acct, _, _ = five
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        for cmd in ("USER", "FOO", "X" * 298, "PASS"):
            assert c.cmd(cmd).err, cmd[:40]
        c.login(acct.name, acct.password)
        assert c.cmd("STAT").ok
