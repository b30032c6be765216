# SPDX-License-Identifier: Apache-2.0
"""The POP3 client-facing cases of the IMAP suite, against a real Cyrus 3.6 over JMAP.

test_pipelining, test_capa_stls, test_transaction, test_limits and test_curl run only
against Dovecot IMAP. With `upstream.protocol: jmap` the gateway builds the maildrop from
Email/query + Email/get, streams RETR/TOP from blob downloads and deletes with Email/set:
a different code path behind the same POP3 front end. These tests put a real Cyrus
(JMAP over HTTPS, certificate verified; harness/cyrus.py) behind the gateway and drive it
with real clients (the byte-exact RawPop3, poplib, curl), checking what they see against
what Cyrus says over IMAP (EMAILID, RFC822.SIZE, BODY[]): pipelining, STLS, the
TRANSACTION commands and their errors, UIDL stability, the line limit, a big message,
and the UPDATE state.

One difference from the IMAP backend is Cyrus's and documented where it matters: POP3
numbers JMAP messages oldest first by receivedAt (the IMAP internal date, one-second
resolution), and Cyrus orders messages with the same receivedAt in an order of its own,
not arrival (UID) order. The mailboxes here are therefore APPENDed with distinct internal
dates, one minute apart, so message n is the n-th APPENDed one; one test covers equal
dates (the numbering is Cyrus's, but stable, and UIDL n always names RETR n's message).

Every test takes a fresh Cyrus user, so no test depends on another's mail.
"""

from __future__ import annotations

import dataclasses
import imaplib
import re
import time

import pytest

from harness import messages
from harness.clients import (RawPop3, curl_pop3_stls, curl_pop3s, parse_capa, pop3_ssl,
                             pop3_stls)
from harness.gateway import Gateway
from harness.messages import as_retrieved, expected_top
from harness.wait import TIME_FACTOR, wait_until
from test_jmap import jmap_overrides

QUICK = 10.0 * TIME_FACTOR
TRICKY = messages.tricky_messages()
# Five distinct messages (Cyrus stores identical ones as one Email): dot-stuffing and a
# last line without CRLF among them.
FIVE = [messages.simple(1, body_lines=6), TRICKY["dots"], messages.simple(3, body_lines=6),
        TRICKY["no_final_crlf"], messages.simple(5, body_lines=6)]
ALWAYS = ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "IMPLEMENTATION")


@dataclasses.dataclass
class Mailbox:
    """A fresh Cyrus user whose INBOX holds `msgs`; message n (1-based) is msgs[n-1],
    with IMAP UID uids[n-1] and EMAILID (= JMAP Email id = expected UIDL) ids[n-1]."""
    user: str
    password: str
    msgs: list[bytes]
    uids: list[int]
    ids: list[str]

    def size(self, n: int) -> int:
        return len(self.msgs[n - 1])

    @property
    def total(self) -> int:
        return sum(map(len, self.msgs))


def append_dated(cyrus, user: str, msgs, start: float, step: float = 60.0) -> list[int]:
    """APPENDs `msgs` over one IMAP connection with internal dates start, start+step, ...
    (JMAP receivedAt), and returns their UIDs. The messages use CRLF only, so imaplib's
    line-end normalisation leaves them byte-identical."""
    conn = cyrus.imap(user)
    try:
        uids = []
        for i, raw in enumerate(msgs):
            typ, data = conn.append("INBOX", None, imaplib.Time2Internaldate(start + i * step), raw)
            m = re.search(rb"\[APPENDUID \d+ (\d+)\]", data[0] or b"")
            assert typ == "OK" and m, f"APPEND: {typ} {data}"
            uids.append(int(m.group(1)))
        return uids
    finally:
        conn.logout()


def fill(cyrus, msgs, start: float = None) -> Mailbox:
    acct = cyrus.add_user()
    start = time.time() - 24 * 3600 if start is None else start
    uids = append_dated(cyrus, acct.name, msgs, start)
    info = cyrus.messages(acct.name)
    assert sorted(info) == uids
    for uid, raw in zip(uids, msgs):
        assert info[uid]["size"] == len(raw), "Cyrus stores the message as APPENDed"
    return Mailbox(acct.name, acct.password, list(msgs), uids, [info[u]["emailid"] for u in uids])


def upstream_ids(cyrus, user: str) -> list[str]:
    """The EMAILIDs left in the INBOX, in UID order (Cyrus over IMAP)."""
    return [info["emailid"] for _, info in sorted(cyrus.messages(user).items())]


def login(g: Gateway, mb: Mailbox, listener: str = "pop3s") -> RawPop3:
    if listener == "pop3s":
        c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15)
    else:
        c = RawPop3(g.pop3_port, timeout=15)
    try:
        if listener != "pop3s":
            assert c.cmd("STLS").ok
            c.starttls(g.pki.client_context())
        c.login(mb.user, mb.password)
    except BaseException:
        c.close()
        raise
    return c


def pairs(reply) -> dict[int, str]:
    assert reply.ok, reply
    return {int(n): v.decode() for n, v in (line.split() for line in reply.body_lines())}


MULTILINE_VERBS = {"RETR", "TOP", "CAPA"}


def is_multiline(cmd: str) -> bool:
    """Whether a +OK answer to `cmd` carries a body: RETR, TOP, CAPA, and LIST/UIDL
    without an argument."""
    words = cmd.split()
    verb = words[0].upper() if words else ""
    return verb in MULTILINE_VERBS or (verb in ("LIST", "UIDL") and len(words) == 1)


@pytest.fixture(scope="module")
def jgw(pki, cyrus, popbridge_bin):
    """The gateway in front of Cyrus's JMAP over HTTPS (default config otherwise:
    pop3s with implicit TLS, pop3 with STLS, allow_plaintext: false)."""
    g = Gateway(pki, None, jmap_overrides(cyrus.jmap_https_session_url), binary=popbridge_bin)
    g.start()
    yield g
    g.close()


@pytest.fixture
def five(cyrus) -> Mailbox:
    return fill(cyrus, FIVE)


# ------------------------------------------------------------ CAPA / STLS

def check_post_tls(capa: dict[str, list[str]]) -> None:
    for cap in ALWAYS + ("USER",):
        assert cap in capa, f"{cap} missing from {capa}"
    assert {"PLAIN", "LOGIN"} <= {m.upper() for m in capa.get("SASL", [])}, capa
    assert "STLS" not in capa, "no STLS once TLS is active (RFC 2595 §4)"


def test_capa_stls_then_login_and_retr(jgw, cyrus, five, ctx):
    with RawPop3(jgw.pop3_port, timeout=15) as c:
        before = parse_capa(c.capa())
        for cap in ALWAYS + ("STLS",):
            assert cap in before, f"{cap} missing before STLS: {before}"
        assert "USER" not in before, "no USER in clear text with allow_plaintext: false"
        assert c.cmd(f"USER {five.user}").err, "no login in clear text"
        assert c.cmd("STLS").ok
        c.starttls(ctx)
        check_post_tls(parse_capa(c.capa()))
        assert c.cmd("STLS").err, "a second STLS"
        c.login(five.user, five.password)
        check_post_tls(parse_capa(c.capa()))  # RFC 2449 §5: the same in TRANSACTION
        assert c.cmd("STAT").line == b"+OK 5 %d" % five.total
        for n in (1, 2, 4):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.line == b"+OK %d octets" % five.size(n)
            assert r.body == as_retrieved(five.msgs[n - 1]), f"RETR {n} over STLS"
        assert c.quit().ok
        assert c.read_until_eof(timeout=QUICK) == b""
    with RawPop3(jgw.pop3s_port, tls_context=ctx, timeout=15) as c:
        check_post_tls(parse_capa(c.capa()))
    assert upstream_ids(cyrus, five.user) == five.ids, "reading changes nothing"


def test_poplib_stls_and_pop3s(jgw, five, ctx):
    """poplib over STLS and over implicit TLS: the same listing, UIDLs and messages."""
    seen = []
    for conn in (pop3_stls(jgw.pop3_port, ctx), pop3_ssl(jgw.pop3s_port, ctx)):
        try:
            caps = conn.capa()
            assert "PIPELINING" in caps and "STLS" not in caps
            conn.user(five.user)
            conn.pass_(five.password)
            assert conn.stat() == (5, five.total)
            _, uidls, _ = conn.uidl()
            _, listing, _ = conn.list()
            bodies = [b"\r\n".join(conn.retr(n)[1]) + b"\r\n" for n in range(1, 6)]
            seen.append((uidls, listing, bodies))
        finally:
            conn.quit()
    assert seen[0] == seen[1]
    uidls, listing, bodies = seen[0]
    assert uidls == [b"%d %s" % (n, i.encode()) for n, i in enumerate(five.ids, 1)]
    assert listing == [b"%d %d" % (n, len(m)) for n, m in enumerate(five.msgs, 1)]
    assert bodies == [as_retrieved(m) for m in five.msgs]


# ------------------------------------------------------------ PIPELINING

# Every TRANSACTION command, errors included, with a DELE in the middle that changes
# what later commands see, and a RSET at the end (so QUIT deletes nothing).
BURST = ["STAT", "LIST", "UIDL", "LIST 2", "UIDL 3", "RETR 1", "TOP 2 0", "TOP 4 3", "NOOP",
         "RETR 2", "DELE 3", "STAT", "LIST", "UIDL", "LIST 3", "RETR 3", "TOP 3 0", "DELE 3",
         "DELE 5", "STAT", "RSET", "STAT", "RETR 3", "RETR 5", "LIST 9", "UIDL x", "FOO", "LAST",
         "TOP 1 1", "RETR 4", "UIDL", "LIST", "NOOP", "DELE 1", "RSET"]


def test_pipelined_burst_equals_one_at_a_time(jgw, cyrus, five):
    assert len(BURST) == 35
    # One at a time: each command waits for its reply; checked against the mailbox.
    with login(jgw, five) as c:
        assert "PIPELINING" in c.capa()
        single = [c.cmd(cmd, multiline=is_multiline(cmd)) for cmd in BURST]
        assert c.quit().ok
    by = dict(zip(range(len(BURST)), single))
    assert by[0].line == b"+OK 5 %d" % five.total
    assert pairs(by[2]) == dict(enumerate(five.ids, 1))
    assert by[5].body == as_retrieved(five.msgs[0])
    assert by[6].body == expected_top(five.msgs[1], 0)
    assert by[7].body == expected_top(five.msgs[3], 3)
    assert by[11].line == b"+OK 4 %d" % (five.total - five.size(3))
    assert sorted(pairs(by[12])) == [1, 2, 4, 5]
    assert [r.err for r in single[14:18]] == [True] * 4, "LIST/RETR/TOP/DELE of a DELE'd message"
    assert by[21].line == b"+OK 5 %d" % five.total, "RSET undeletes"
    assert by[22].body == as_retrieved(five.msgs[2])
    assert all(r.err for r in single[24:28]), "LIST 9, UIDL x, FOO, LAST"
    assert sum(r.err for r in single) == 8, [r.line for r in single]
    # The same bytes in ONE write: the replies come in order, byte for byte the same.
    with login(jgw, five) as c:
        c.send(b"".join(cmd.encode() + b"\r\n" for cmd in BURST))
        burst = [c.read_reply(multiline=is_multiline(cmd)) for cmd in BURST]
        assert c.buffered == b"", "nothing beyond the expected replies"
        assert c.quit().ok
    for i, (cmd, one, many) in enumerate(zip(BURST, single, burst)):
        assert many.raw == one.raw, f"reply {i + 1} ({cmd!r}) differs when pipelined"
    assert upstream_ids(cyrus, five.user) == five.ids, "RSET before QUIT: nothing deleted"


def test_pipelined_login_dele_and_quit(jgw, cyrus, five):
    """USER, PASS, commands and QUIT in one write: the commands run after the JMAP login
    (session resource, Mailbox/get, Email/query), QUIT's Email/set deletes message 2."""
    with RawPop3(jgw.pop3s_port, tls_context=jgw.pki.client_context(), timeout=15) as c:
        c.send(f"USER {five.user}\r\nPASS {five.password}\r\nSTAT\r\nUIDL 2\r\nRETR 5\r\n"
               f"DELE 2\r\nQUIT\r\n".encode())
        assert c.read_reply().ok, "USER"
        assert c.read_reply().ok, "PASS"
        assert c.read_reply().line == b"+OK 5 %d" % five.total
        assert c.read_reply().line == b"+OK 2 %s" % five.ids[1].encode()
        assert c.read_reply(multiline=True).body == as_retrieved(five.msgs[4])
        assert c.read_reply().ok, "DELE 2"
        assert c.read_reply().ok, "QUIT"
        assert c.read_until_eof(timeout=QUICK) == b""
    assert upstream_ids(cyrus, five.user) == five.ids[:1] + five.ids[2:]


# ------------------------------------------------------ TRANSACTION semantics

OK, ERR = "+OK", "-ERR"
BAD = ["LIST 0", "LIST 6", "LIST x", "LIST -1", "LIST 1 2", "UIDL 0", "UIDL 6", "UIDL x",
       "RETR 0", "RETR 6", "RETR x", "RETR", "RETR 99999999999999999999", "TOP 1", "TOP 1 x",
       "TOP 0 0", "TOP 6 0", "TOP x 0", "DELE 0", "DELE 6", "DELE x", "DELE",
       "LAST", "FOO", "XTND XLST", "APOP carol 0123456789abcdef0123456789abcdef", "USER x",
       "PASS x", "STLS", "AUTH PLAIN", ""]


def transaction_script(mb: Mailbox) -> list[tuple[str, object]]:
    """(command, expected): OK/ERR for the status alone, bytes for the exact status line,
    a dict for a LIST/UIDL listing, ("body", bytes) for a RETR/TOP body."""
    s, ids, total = mb.size, mb.ids, mb.total
    return [
        ("LIST 1", b"+OK 1 %d" % s(1)), ("LIST 5", b"+OK 5 %d" % s(5)),
        ("UIDL 1", b"+OK 1 " + ids[0].encode()), ("UIDL 5", b"+OK 5 " + ids[4].encode()),
        *[(cmd, ERR) for cmd in BAD],
        ("DELE 2", OK), ("DELE 2", ERR), ("RETR 2", ERR), ("TOP 2 0", ERR), ("LIST 2", ERR),
        ("UIDL 2", ERR),
        ("STAT", b"+OK 4 %d" % (total - s(2))),
        ("LIST", {n: str(s(n)) for n in (1, 3, 4, 5)}),
        ("UIDL", {n: ids[n - 1] for n in (1, 3, 4, 5)}),
        ("RETR 3", ("body", as_retrieved(mb.msgs[2]))),
        ("DELE 5", OK), ("STAT", b"+OK 3 %d" % (total - s(2) - s(5))),
        ("RSET", OK), ("STAT", b"+OK 5 %d" % total),
        ("LIST 2", b"+OK 2 %d" % s(2)), ("RETR 2", ("body", as_retrieved(mb.msgs[1]))),
        ("TOP 5 2", ("body", expected_top(mb.msgs[4], 2))),
        ("DELE 2", OK), ("RSET", OK),
    ]


def test_transaction_commands_and_errors(jgw, cyrus, five):
    """Each step's reply checked; after every -ERR the session goes on (NOOP, and the
    next step). RSET at the end: QUIT deletes nothing."""
    with login(jgw, five) as c:
        for cmd, want in transaction_script(five):
            r = c.cmd(cmd, multiline=is_multiline(cmd))
            where = f"{cmd[:40]!r}: {r}"
            if want == ERR:
                assert r.err and r.body is None, where
                assert c.cmd("NOOP").ok, f"the session is broken after {where}"
            elif want == OK:
                assert r.ok and r.body is None, where
            elif isinstance(want, bytes):
                assert r.line == want, where
            elif isinstance(want, dict):
                assert pairs(r) == want, where
            else:
                assert r.ok and r.body == want[1], where
            assert c.buffered == b"", f"unexpected bytes after {where}"
        assert c.quit().ok
    assert upstream_ids(cyrus, five.user) == five.ids


# ------------------------------------------------------------------ UIDL

def uidl_and_singles(c: RawPop3) -> dict[int, str]:
    listing = pairs(c.cmd("UIDL", multiline=True))
    for n, uidl in listing.items():
        assert c.cmd(f"UIDL {n}").line == b"+OK %d %s" % (n, uidl.encode())
    return listing


def test_uidl_is_the_emailid_stable_and_new_mail_comes_last(jgw, cyrus, five):
    expected = dict(enumerate(five.ids, 1))
    for _ in range(2):
        with login(jgw, five) as c:
            assert uidl_and_singles(c) == expected, "UIDL n = Cyrus's EMAILID of message n"
            assert c.quit().ok
    extra = messages.simple(99)
    [uid] = append_dated(cyrus, five.user, [extra], time.time())  # later than the five
    new_id = cyrus.emailid(five.user, uid)
    assert new_id not in five.ids
    with login(jgw, five) as c:
        assert uidl_and_singles(c) == {**expected, 6: new_id}, "earlier numbers unchanged"
        assert c.cmd("STAT").line == b"+OK 6 %d" % (five.total + len(extra))
        assert pairs(c.cmd("LIST", multiline=True)) == {
            n: str(len(m)) for n, m in enumerate(five.msgs + [extra], 1)}
        assert c.cmd("RETR 6", multiline=True).body == extra
        assert c.quit().ok


def test_uidl_with_equal_received_at(jgw, cyrus):
    """Six messages with the SAME internal date: JMAP's receivedAt ties, and Cyrus breaks
    ties in an order of its own, not UID order (so numbering can differ from the IMAP
    backend's, which is UID order; RFC 1939 fixes numbers only within a session). What
    must hold: the same numbering in every session, and UIDL n, LIST n and RETR n all
    about the same message."""
    msgs = [messages.simple(200 + n) for n in range(6)]
    acct = cyrus.add_user()
    uids = append_dated(cyrus, acct.name, msgs, time.time() - 3600, step=0)
    info = cyrus.messages(acct.name)
    by_id = {info[uid]["emailid"]: raw for uid, raw in zip(uids, msgs)}
    mb = Mailbox(acct.name, acct.password, msgs, uids, list(by_id))
    seen = []
    for _ in range(2):
        with login(jgw, mb) as c:
            uidls = uidl_and_singles(c)
            assert sorted(uidls.values()) == sorted(by_id)
            for n, emailid in uidls.items():
                assert c.cmd(f"LIST {n}").line == b"+OK %d %d" % (n, len(by_id[emailid]))
                assert c.cmd(f"RETR {n}", multiline=True).body == by_id[emailid], f"RETR {n}"
            assert c.quit().ok
        seen.append(uidls)
    assert seen[0] == seen[1], "the numbering must not change between sessions"


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize("state", ["authorization", "transaction"])
def test_overlong_line_is_refused_and_closed(jgw, cyrus, five, state):
    """As in test_limits: a line past the 16 KiB limit gets "-ERR line too long" at once,
    then the connection closes, and a DELE before it deletes nothing."""
    ended = jgw.log_text().count("reason=protocol_error")
    c = RawPop3(jgw.pop3s_port, tls_context=jgw.pki.client_context(), timeout=QUICK)
    try:
        if state == "transaction":
            c.login(five.user, five.password)
            assert c.cmd("DELE 1").ok
        c.send(b"NOOP " + b"x" * (20 * 1024))
        assert c.read_line(timeout=QUICK) == b"-ERR line too long"
        assert c.read_until_eof(timeout=QUICK) == b""
    finally:
        c.close()
    wait_until(lambda: jgw.log_text().count("reason=protocol_error") > ended, QUICK,
               "the session end to be logged as a protocol error")
    assert upstream_ids(cyrus, five.user) == five.ids, "a refused session deletes nothing"


def test_big_message_with_poplib(jgw, cyrus):
    """A 700 KiB message (several blob-download reads, a "." line every 97 lines) through
    poplib: byte-identical to Cyrus's IMAP BODY[], LIST size = RFC822.SIZE."""
    big = messages.big_message(700 * 1024, seed="jmap-pop3-cases")
    mb = fill(cyrus, [messages.simple(7), big])
    body = cyrus.fetch(mb.user, mb.uids[1])
    assert body == big
    conn = pop3_ssl(jgw.pop3s_port, jgw.pki.client_context())
    try:
        conn.user(mb.user)
        conn.pass_(mb.password)
        assert conn.list(2) == b"+OK 2 %d" % cyrus.messages(mb.user)[mb.uids[1]]["size"]
        assert conn.uidl(2) == b"+OK 2 " + mb.ids[1].encode()
        _, lines, octets = conn.retr(2)
        assert b"\r\n".join(lines) + b"\r\n" == body
        assert octets >= len(body), "poplib counts octets with the stuffing and line ends"
        _, top, _ = conn.top(2, 0)
        assert b"\r\n".join(top) + b"\r\n" == expected_top(big, 0)
        assert conn.noop().startswith(b"+OK"), "the session goes on after the big RETR"
    finally:
        conn.quit()
    # Pipelined behind the streamed download: the commands after it wait their turn.
    with login(jgw, mb) as c:
        c.send(b"RETR 2\r\nSTAT\r\nTOP 2 0\r\nRETR 1\r\n")
        assert c.read_reply(multiline=True).body == body
        assert c.read_reply().line == b"+OK 2 %d" % mb.total
        assert c.read_reply(multiline=True).body == expected_top(big, 0)
        assert c.read_reply(multiline=True).body == mb.msgs[0]
        assert c.quit().ok


# ------------------------------------------------------------------ curl

def test_curl_list_retrieve_top(jgw, five, pki):
    want = b"".join(b"%d %d\r\n" % (n, len(m)) for n, m in enumerate(five.msgs, 1))
    p = curl_pop3s(jgw.pop3s_port, "", five.user, five.password, pki.ca)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == want
    for n, msg in enumerate(five.msgs, 1):
        p = curl_pop3s(jgw.pop3s_port, str(n), five.user, five.password, pki.ca)
        assert p.returncode == 0, p.stderr.decode()
        assert p.stdout == as_retrieved(msg), f"message {n}"
    p = curl_pop3_stls(jgw.pop3_port, "2", five.user, five.password, pki.ca)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == as_retrieved(five.msgs[1]), "pop3:// with --ssl-reqd (STLS)"
    # A custom command with a multi-line answer (curl's -X for POP3).
    p = curl_pop3s(jgw.pop3s_port, "", five.user, five.password, pki.ca, "-X", "TOP 4 1")
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == expected_top(five.msgs[3], 1)


def test_curl_dele(jgw, cyrus, five, pki):
    """curl -X DELE on message 3 (with -I: DELE has no multi-line answer), then curl's
    QUIT: exactly that message is gone from Cyrus. (curl's -Q quote commands are FTP and
    SFTP only; for POP3, -X is the way to send DELE.)"""
    p = curl_pop3s(jgw.pop3s_port, "3", five.user, five.password, pki.ca, "-X", "DELE", "-I")
    assert p.returncode == 0, p.stderr.decode()
    assert upstream_ids(cyrus, five.user) == five.ids[:2] + five.ids[3:]
    p = curl_pop3s(jgw.pop3s_port, "", five.user, five.password, pki.ca)
    assert p.stdout == b"".join(b"%d %d\r\n" % (n, len(m)) for n, m in
                                enumerate(five.msgs[:2] + five.msgs[3:], 1)), "renumbered"


# ---------------------------------------------------------------- UPDATE

@pytest.mark.parametrize("end", ["quit", "close", "abort", "half-quit"])
def test_update_only_at_quit(make_gateway, cyrus, five, end):
    """DELE 1, DELE 4 (and a DELE 2 undone by RSET); then QUIT removes exactly messages 1
    and 4, while a connection closed, reset, or cut in the middle of "QUIT" removes
    nothing. A private gateway, so its log's session_end is this session's."""
    g = make_gateway(None, jmap_overrides(cyrus.jmap_https_session_url))
    c = login(g, five)
    try:
        for cmd in ("DELE 2", "RSET", "DELE 1", "DELE 4"):
            assert c.cmd(cmd).ok, cmd
        assert c.cmd("STAT").line == b"+OK 3 %d" % (five.total - five.size(1) - five.size(4))
        if end == "quit":
            assert c.quit().ok, "+OK only once Email/set destroyed them"
            assert c.read_until_eof(timeout=QUICK) == b""
        elif end == "close":
            c.close()
        elif end == "abort":
            c.abort()
        else:
            c.send(b"QUI")
            c.abort()
    finally:
        c.close()
    # The harness's start-up probes end too, without a user: wait for this session's end.
    wait_until(lambda: any("event=session_end" in line and " user=" in line
                           for line in g.log_text().splitlines()),
               QUICK, "the session to end", on_timeout=g.diagnostics)
    left = five.ids[1:3] + five.ids[4:] if end == "quit" else five.ids
    assert upstream_ids(cyrus, five.user) == left
    with login(g, five) as c:
        assert uidl_and_singles(c) == dict(enumerate(left, 1))
        assert c.quit().ok
