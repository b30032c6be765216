# SPDX-License-Identifier: Apache-2.0
"""A real Courier-IMAP 5.0 (harness/courier.py) as popbridge's upstream.

Courier is the upstream unlike Dovecot that POP3 gateways meet in the wild: its LOGIN and
AUTHENTICATE answers carry no capabilities (so popbridge asks CAPABILITY after login, and
pipelines it), it lacks LITERAL+, ID, CONDSTORE, OBJECTID and MOVE, sends no UIDNEXT,
adds a final CRLF to a message stored without one, and answers a bad password, after a
5-second pause of its own, with a bare NO.

The first tests check the harness and pin those traits down on the raw IMAP exchange, so a
later Courier (or a harness change) that loses them shows here rather than as a puzzling
gateway failure. The others drive the real popbridge binary against Courier: a whole POP3
session (STAT, UIDL, LIST, RETR of every message in order, octet for octet what Courier
itself returns, with the batch read-ahead serving messages 3 and on; no \\Seen unless
mark_seen; DELE and QUIT remove exactly that message, through UID EXPUNGE, which needs the
UIDPLUS learnt after login), with upstream pipelining on and off and over each of Courier's
three ways in (STARTTLS, IMAPS, plain LOGIN); a message another client expunged (Courier
serves a placeholder for it: popbridge must answer -ERR); and a wrong password (-ERR [AUTH]).
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import poplib
import re
import socket
import ssl
import urllib.request

import pytest

from harness import messages
from harness.certs import make_pki
from harness.clients import RawPop3, pop3_ssl
from harness.courier import Courier
from harness.ports import free_port
from harness.wait import TIME_FACTOR, port_refuses, wait_until

QUICK = 10.0 * TIME_FACTOR

# Extensions popbridge uses where offered and Courier does not offer.
NOT_OFFERED = ("LITERAL+", "ID", "CONDSTORE", "OBJECTID", "MOVE", "SASL-IR")


# ------------------------------------------------------------ raw IMAP client

class RawImap:
    """A line-level IMAP client that keeps every line the server sent, for assertions on
    the exchange itself (imaplib hides where a capability list came from)."""

    def __init__(self, courier: Courier, tls: str = "starttls"):
        port = courier.imaps_port if tls == "implicit" else courier.imap_port
        self.sock = socket.create_connection((courier.host, port), timeout=15 * TIME_FACTOR)
        if tls == "implicit":
            self.sock = courier.client_context().wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()
        self.tags = 0
        if tls == "starttls":
            lines = self.command(b"STARTTLS")
            assert lines[-1].startswith(b"OK "), lines
            self.file.close()
            self.sock = courier.client_context().wrap_socket(self.sock, server_hostname="localhost")
            self.file = self.sock.makefile("rb")

    def command(self, *parts: bytes) -> list[bytes]:
        """Sends one command (parts joined with a space) and returns every line up to its
        tagged answer, CRLF removed; the tagged line is last, without its tag."""
        self.tags += 1
        self.sock.sendall(b" ".join((b"t%d" % self.tags,) + parts) + b"\r\n")
        return self.answer()

    def answer(self, data: bytes | None = None) -> list[bytes]:
        """Sends `data` (a line for a continuation request) if given, then reads as
        command() does."""
        if data is not None:
            self.sock.sendall(data + b"\r\n")
        tag = b"t%d" % self.tags
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise AssertionError(f"connection closed before the answer to {tag!r}; got {lines!r}")
            line = line.rstrip(b"\r\n")
            if line.startswith(tag + b" "):
                return lines + [line[len(tag) + 1:]]
            if line.startswith(b"+"):
                return lines + [line]  # a continuation request: the caller goes on
            lines.append(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def capabilities(lines: list[bytes]) -> set[str]:
    """The capabilities of every untagged CAPABILITY line and [CAPABILITY ...] code."""
    found = set()
    for line in lines:
        for m in re.finditer(rb"(?:^\* CAPABILITY|\[CAPABILITY) ([^\]\r\n]*)", line):
            found |= set(m.group(1).decode().upper().split())
    return found


# ------------------------------------------------------------ messages

def session_messages(tag: str) -> list[bytes]:
    """Eight small messages (all of 3-8 fit in one read-ahead of the default 64 KiB): lines
    that start with a dot, 8-bit and control octets in header and body, 998-octet lines,
    a message without a final CRLF (Courier adds it) and one whose last line is "."."""
    tricky = messages.tricky_messages()
    head = b"X-Courier-Test: " + tag.encode() + b"\r\n"
    eight_bit_header = (b"From: J\xc3\xa9r\xc3\xb4me <jerome@example.org>\r\n"
                        b"Subject: caf\xe9 \xc3\xa0 la cr\xc3\xa8me\r\n")
    return [head + m for m in (
        messages.simple(1),
        tricky["dots"],
        eight_bit_header + tricky["eight_bit"],
        tricky["long_lines"],
        tricky["no_final_crlf"],
        messages.simple(2, body_lines=40),
        tricky["no_final_crlf_dot"],
        tricky["empty_body"],
    )]


# ------------------------------------------------------------ gateway helpers

def read_ahead_counts(port: int) -> dict[str, float]:
    """popbridge_read_ahead_total by result, from the admin endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^popbridge_read_ahead_total\{result="(\w+)"\} (\S+)$', text, re.M)}


def courier_upstream(courier: Courier, tls: str) -> tuple[str, int]:
    """Courier's address for popbridge's upstream.tls `tls` (implicit: the IMAPS port)."""
    return courier.host, courier.imaps_port if tls == "implicit" else courier.imap_port


def _alive(pid: int) -> bool:
    """True while `pid` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[:1] != [b"Z"]


def _group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return -1


# ====================================================================== harness

def test_login_answer_carries_no_capabilities(courier):
    """A right password logs in, with a bare "OK LOGIN Ok.": no [CAPABILITY ...] code and
    no untagged CAPABILITY. That is why popbridge asks CAPABILITY after login; UIDPLUS
    comes with that answer, and the extensions in NOT_OFFERED never do."""
    c = RawImap(courier, tls="starttls")
    try:
        assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ") and b"Courier-IMAP" in c.greeting
        before = capabilities(c.command(b"CAPABILITY"))
        assert "AUTH=PLAIN" in before, "offered once TLS is on: popbridge then uses AUTHENTICATE PLAIN"
        lines = c.command(b"LOGIN", b"alice", b'"' + courier.password("alice").encode() + b'"')
        assert lines == [b"OK LOGIN Ok."], lines
        after = c.command(b"CAPABILITY")
        assert after[-1].startswith(b"OK"), after
        caps = capabilities(after)
        assert {"IMAP4REV1", "UIDPLUS"} <= caps, caps
        assert not caps & set(NOT_OFFERED), f"Courier now offers {sorted(caps & set(NOT_OFFERED))}"
        select = c.command(b"SELECT", b"INBOX")
        assert select[-1].startswith(b"OK [READ-WRITE]"), select
        assert any(b"[UIDVALIDITY " in line for line in select), select
        assert not any(b"UIDNEXT" in line for line in select), f"Courier sends UIDNEXT now: {select}"
        c.command(b"LOGOUT")
    finally:
        c.close()

    # What popbridge really sends over TLS: AUTHENTICATE PLAIN (no SASL-IR, so a
    # continuation first). Its answer carries no capabilities either.
    for tls in ("starttls", "implicit"):
        c = RawImap(courier, tls=tls)
        try:
            assert c.command(b"AUTHENTICATE", b"PLAIN") == [b"+ "]
            lines = c.answer(base64.b64encode(b"\0bob\0" + courier.password("bob").encode()))
            assert lines == [b"OK LOGIN Ok."], (tls, lines)
        finally:
            c.close()


def test_imaps_certificate_is_the_test_pki(pki, courier):
    conn = courier.imap("alice", tls="implicit")
    try:
        assert ("DNS", "localhost") in conn.sock.getpeercert()["subjectAltName"]
    finally:
        conn.logout()
    other = make_pki()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            socket_ = socket.create_connection((courier.host, courier.imaps_port), timeout=10)
            with other.client_context().wrap_socket(socket_, server_hostname="localhost"):
                pass
    finally:
        other.cleanup()


def test_append_keeps_the_octets_and_adds_a_final_crlf(courier):
    acct = courier.add_user()
    msgs = session_messages("append")
    uids = courier.append_many(acct.name, msgs)
    assert uids == sorted(uids) and len(set(uids)) == len(msgs)
    stored = courier.mailbox(acct.name).messages
    assert sorted(stored) == uids
    for uid, sent in zip(uids, msgs):
        assert stored[uid].body == messages.as_retrieved(sent), f"UID {uid}: only a final CRLF is added"
        assert stored[uid].size == len(stored[uid].body), f"UID {uid}: RFC822.SIZE is the size of BODY[]"
        assert stored[uid].flags == set(), f"UID {uid}: BODY.PEEK sets no \\Seen"


def test_stop_start_kill_leave_nothing(pki, courier):
    c = Courier(pki, {"dave": "dave-secret-4"})
    try:
        c.start()
        assert set(c.ports).isdisjoint(courier.ports), "each instance has its own ports"
        uid = c.append("dave", b"Subject: survives\r\n\r\nbody\r\n")
        held = c.imap("dave")  # a session in progress: imapd outside the supervisor's group
        pids = c.processes()
        assert len(pids) >= 5, "supervisor, authdaemond (and workers), two couriertcpd, imapd"
        assert len({_group(p) for p in pids}) >= 3, "couriertcpd leaves the supervisor's group"
        c.kill()
        assert not any(_alive(p) for p in pids), "kill() leaves no process of the instance"
        assert all(port_refuses(c.host, p) for p in c.ports)
        held.shutdown()
        c.start()
        assert c.fetch("dave", uid) == b"Subject: survives\r\n\r\nbody\r\n", "mail survives a restart"
        held = c.imap("dave")
        pids = c.processes()
        c.stop()
        held.shutdown()
        assert not any(_alive(p) for p in pids), "stop() leaves no process of the instance"
        assert "LOGIN, user=dave" in c.log_text("imap.log"), "imapd's log reaches the instance's log"
        directory = c.dir
    finally:
        c.close()
    assert not os.path.exists(directory)
    assert courier.uids("alice") is not None, "the module's instance is untouched"


# ====================================================================== popbridge

@pytest.mark.parametrize("tls, pipelining, mark_seen", [
    ("starttls", True, False),
    ("starttls", False, False),
    ("implicit", True, False),
    ("none", True, False),  # no AUTH=PLAIN before TLS: LOGIN, whose answer is the bare "OK LOGIN Ok."
    ("starttls", True, True),
], ids=["starttls-pipelined", "starttls-one-at-a-time", "imaps-pipelined", "plain-login-pipelined",
        "starttls-mark-seen"])
def test_pop3_session_through_popbridge(courier, make_gateway, ctx, tls, pipelining, mark_seen):
    """The whole session. QUIT's UID EXPUNGE needs UIDPLUS, which popbridge knows only from
    the CAPABILITY it sends after login (a login answer without capabilities drops the
    pre-login list), pipelined with SELECT unless pipelining is off."""
    acct = courier.add_user()
    msgs = session_messages(f"{tls}-{pipelining}")
    uids = courier.append_many(acct.name, msgs)
    before = courier.mailbox(acct.name)
    assert sorted(before.messages) == uids
    stored = {uid: m.body for uid, m in before.messages.items()}  # Courier's own octets: what RETR must give
    sizes = {uid: m.size for uid, m in before.messages.items()}

    metrics_port = free_port()
    g = make_gateway(courier_upstream(courier, tls),
                     {"upstream": {"pipelining": pipelining, "mark_seen": mark_seen},
                      "metrics": {"address": f"127.0.0.1:{metrics_port}"}},
                     upstream_tls=tls)
    deleted = 4
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(acct.name, acct.password)
        r = c.cmd("STAT")
        assert r.line == b"+OK %d %d" % (len(msgs), sum(sizes.values())), r
        r = c.cmd("UIDL", multiline=True)
        assert r.ok, r
        assert r.body_lines() == [b"%d %s" % (n, messages.dovecot_uidl(uid, before.uidvalidity).encode())
                                  for n, uid in enumerate(uids, 1)]
        r = c.cmd("LIST", multiline=True)
        assert r.body_lines() == [b"%d %d" % (n, sizes[uid]) for n, uid in enumerate(uids, 1)]
        for n, uid in enumerate(uids, 1):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.line.startswith(b"+OK %d octets" % len(stored[uid])), (n, r)
            assert r.body == stored[uid], f"RETR {n} (UID {uid}) differs from Courier's BODY[]"
            assert r.raw == r.line + b"\r\n" + messages.stuffed(stored[uid]) + b".\r\n", \
                f"RETR {n}: dot-stuffing on the wire"
        assert c.cmd(f"DELE {deleted}").ok
        r = c.cmd("STAT")
        assert r.line == b"+OK %d %d" % (len(msgs) - 1, sum(sizes.values()) - sizes[uids[deleted - 1]]), r
        assert c.quit().ok

    after = courier.mailbox(acct.name)
    assert sorted(after.messages) == [u for n, u in enumerate(uids, 1) if n != deleted], \
        f"exactly message {deleted} is gone"
    assert after.uidvalidity == before.uidvalidity
    for uid, m in after.messages.items():
        assert m.body == stored[uid], f"UID {uid} is untouched"
        want = {"\\Seen"} if mark_seen else set()  # every message left was retrieved
        assert m.flags == want, f"UID {uid} has flags {sorted(m.flags)}, mark_seen {mark_seen}"
    # RETR 1 and 2 on demand; then 3-8 (together far below limits.read_ahead) in one
    # UID FETCH, each RETR after that answered from it. With mark_seen no read-ahead (its
    # fetch would set \Seen on a message the client may never ask for).
    expected = {"used": 0 if mark_seen else len(msgs) - 2, "unused": 0}
    assert wait_until(lambda: read_ahead_counts(metrics_port) == expected, QUICK,
                      "the read-ahead counters", on_timeout=lambda: str(read_ahead_counts(metrics_port)))
    assert f"LOGIN, user={acct.name}" in courier.log_text("imaps.log" if tls == "implicit" else "imap.log")


def test_a_message_another_client_expunged_is_an_err_not_courier_placeholder(courier, make_gateway, ctx):
    """Courier answers a FETCH of a message another session expunged, which this session
    has not been told of yet, with a small "message unavailable" text instead. popbridge
    sees the size differ from the listed one, learns of the EXPUNGE with a NOOP, and
    answers -ERR instead of passing the placeholder off as the message."""
    acct = courier.add_user()
    msgs = [messages.simple(n) for n in (1, 2, 3)]
    uids = courier.append_many(acct.name, msgs)
    stored = courier.fetch_all(acct.name)
    g = make_gateway(courier_upstream(courier, "starttls"))
    watcher = courier.imap(acct.name)  # a session that has seen UID 2 and is not told it went
    try:
        assert watcher.select("INBOX", readonly=True)[0] == "OK"
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            c.login(acct.name, acct.password)  # the snapshot lists UID 2
            other = courier.imap(acct.name)
            try:
                other.select("INBOX")
                other.uid("STORE", str(uids[1]), "+FLAGS.SILENT", r"(\Deleted)")
                assert other.expunge()[0] == "OK"
            finally:
                other.logout()
            typ, data = watcher.uid("FETCH", str(uids[1]), "(BODY.PEEK[])")
            placeholder = data[0][1] if typ == "OK" and data and isinstance(data[0], tuple) else None
            assert placeholder is not None and len(placeholder) != len(stored[uids[1]]), \
                f"Courier no longer serves a placeholder: {typ} {data!r}"
            r = c.cmd("RETR 2", multiline=True)
            assert r.line == b"-ERR message was removed from the mailbox", r
            for n in (1, 3):
                assert c.cmd(f"RETR {n}", multiline=True).body == stored[uids[n - 1]], f"RETR {n}"
            assert c.quit().ok
    finally:
        watcher.logout()
    assert courier.uids(acct.name) == [uids[0], uids[2]]


def test_wrong_password_is_a_bare_no_upstream_and_err_auth_through_popbridge(courier, make_gateway, ctx):
    """Courier pauses 5 s before each NO (compiled in), so the direct check and the one
    through popbridge run side by side."""
    g = make_gateway(courier_upstream(courier, "starttls"))

    def direct() -> list[bytes]:
        c = RawImap(courier, tls="starttls")
        try:
            wrong = c.command(b"LOGIN", b"alice", b'"not-the-password"')
            right = c.command(b"LOGIN", b"alice", b'"' + courier.password("alice").encode() + b'"')
            assert right == [b"OK LOGIN Ok."], "the same connection may try again"
            return wrong
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        upstream = pool.submit(direct)
        p = pop3_ssl(g.pop3s_port, ctx)
        try:
            p.user("bob")
            with pytest.raises(poplib.error_proto) as e:
                p.pass_("not-the-password")
            assert e.value.args[0].startswith(b"-ERR [AUTH] "), e.value.args[0]
            p.user("bob")  # a failed PASS ends the USER (RFC 1939)
            assert p.pass_(courier.password("bob")).startswith(b"+OK")
            assert p.stat()[0] == 0
            p.quit()
        finally:
            p.close()
        wrong = upstream.result(timeout=30 * TIME_FACTOR)
    assert wrong == [b"NO Login failed."], "a bare NO: no [AUTHENTICATIONFAILED] or other code"
    log = courier.log_text("imap.log")
    assert "LOGIN FAILED, user=alice" in log, "the direct LOGIN"
    assert "LOGIN FAILED, method=PLAIN" in log, "popbridge's AUTHENTICATE PLAIN (Courier logs no user for it)"
