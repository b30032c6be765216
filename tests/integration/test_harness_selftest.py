# SPDX-License-Identifier: Apache-2.0
"""Self-test of the harness: Dovecot, certificates and the raw client, without popbridge.

These run before the gateway exists and guard the assumptions the gateway tests
rest on: Dovecot returns APPENDed messages byte-exact (tricky and 20 MiB ones
too), its TLS certificate verifies against the test CA, its UIDs/UIDVALIDITY
and sizes are what the expectations use, failed logins don't escalate delays,
and stopping or killing it leaves no process behind.
"""

from __future__ import annotations

import hashlib
import imaplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from harness import clients, messages, procs
from harness.certs import make_pki
from harness.dovecot import Dovecot
from harness.gateway import deep_merge, to_yaml
from harness.ports import free_port
from harness.wait import port_refuses


# --------------------------------------------------------------- certificates

def test_certificate_chain_verifies(pki):
    out = subprocess.run(["openssl", "verify", "-CAfile", pki.ca, pki.cert], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    text = subprocess.run(["openssl", "x509", "-in", pki.cert, "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    with open(pki.cert) as f:
        assert f.read().count("BEGIN CERTIFICATE") == 2  # leaf + CA


# ----------------------------------------------------------------- Dovecot

def test_dovecot_roundtrip_starttls_and_implicit_tls(dovecot):
    acct = dovecot.add_user()
    tricky = messages.tricky_messages()
    sent: dict[int, bytes] = {}
    for i, (name, msg) in enumerate(tricky.items()):
        tls = "implicit" if i % 2 else "starttls"
        uid = dovecot.append(acct.name, msg, tls=tls)
        sent[uid] = msg
    assert sorted(sent) == list(range(1, len(tricky) + 1)), "UIDs are assigned 1, 2, 3... in APPEND order"
    assert dovecot.uids(acct.name) == sorted(sent)
    assert dovecot.fetch_all(acct.name) == sent, "Dovecot must return APPENDed bytes exactly"
    assert dovecot.sizes(acct.name) == {uid: len(m) for uid, m in sent.items()}, \
        "RFC822.SIZE must equal the octet count"
    assert "\\Seen" not in dovecot.flags(acct.name, 1), "fetch_all must not set \\Seen"
    assert dovecot.uidvalidity(acct.name) > 0


def test_dovecot_capabilities_and_certificate(dovecot, pki):
    conn = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    try:
        assert "STARTTLS" in conn.capabilities
        conn.starttls(pki.client_context())
        cert = conn.sock.getpeercert()
        assert ("DNS", "localhost") in cert["subjectAltName"]
        for cap in ("SASL-IR", "ID", "IMAP4REV1", "LITERAL+"):
            assert cap in conn.capabilities, cap
        acct = dovecot.account("alice")
        conn.login(acct.name, acct.password)
        typ, data = conn.capability()  # imaplib doesn't refresh its list after LOGIN
        caps = data[0].decode().upper().split()
        for cap in ("UIDPLUS", "LITERAL+", "ID", "IMAP4REV1"):
            assert cap in caps, cap
    finally:
        conn.shutdown()


def test_dovecot_certificate_is_really_verified(dovecot):
    """A client trusting another CA must fail: proves the helpers verify."""
    other = make_pki()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=other.client_context(), timeout=10)
    finally:
        other.cleanup()


def test_dovecot_big_message_roundtrip(dovecot):
    acct = dovecot.add_user()
    big = messages.big_message(20 * 1024 * 1024)
    assert messages.big_message(20 * 1024 * 1024) == big, "generation is deterministic"
    uid = dovecot.append(acct.name, big)
    got = dovecot.fetch(acct.name, uid)
    assert len(got) == len(big)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(big).hexdigest()
    assert dovecot.sizes(acct.name)[uid] == len(big)


def test_failed_logins_do_not_escalate(dovecot):
    """auth_failure_delay=0 and no anvil auth penalty: each failure is answered
    within Dovecot's 0.5 s failure check interval, and later logins aren't delayed."""
    durations = []
    for user, password in [("alice", "wrong"), ("nosuchuser", "x"), ("alice", "wrong"), ("bob", "wrong")]:
        conn = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
        t = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            conn.login(user, password)
        durations.append(time.monotonic() - t)
        conn.shutdown()
    assert max(durations) < 1.5, durations
    t = time.monotonic()
    assert dovecot.uids("alice") is not None
    assert time.monotonic() - t < 1.5


def test_add_user_while_running(dovecot):
    acct = dovecot.add_user()
    assert dovecot.uids(acct.name) == []
    uid = dovecot.append(acct.name, messages.simple(1))
    assert dovecot.uids(acct.name) == [uid]
    dovecot.clear(acct.name)
    assert dovecot.uids(acct.name) == []
    dovecot.clear(acct.name)  # on an empty mailbox too


def test_session_end_is_logged(dovecot):
    acct = dovecot.add_user()
    before = dovecot.session_ends(acct.name)
    conn = dovecot.imap(acct.name)
    conn.select("INBOX")
    conn.shutdown()  # no LOGOUT: the connection just drops
    dovecot.wait_session_ends(acct.name, before + 1)


def test_fence_login_is_not_counted(dovecot):
    acct = dovecot.add_user()
    dovecot.fence(acct.name)
    before = dovecot.logins(acct.name)
    dovecot.append(acct.name, messages.simple(1))  # one login from 127.0.0.1
    dovecot.fence(acct.name)
    assert dovecot.logins(acct.name) == before + 1
    assert dovecot.log_text().count(f"Login: user=<{acct.name}>") == before + 3


def test_require_tls(pki):
    with Dovecot(pki, {"carol": "carol-secret-3"}, require_tls=True) as d:
        assert d.host == "127.0.0.2"
        conn = imaplib.IMAP4(d.host, d.imap_port, timeout=10)
        try:
            assert "LOGINDISABLED" in conn.capabilities
            with pytest.raises(imaplib.IMAP4.error):
                conn.login("carol", "carol-secret-3")
        finally:
            conn.shutdown()
        uid = d.append("carol", messages.simple(7), tls="starttls")
        assert d.uids("carol") == [uid]
        with pytest.raises(imaplib.IMAP4.error):
            d.imap("carol", tls="none")


def test_kill_restart_stop_leave_nothing(pki):
    d = Dovecot(pki, {"dave": "dave-secret-4"})
    try:
        d.start()
        uid = d.append("dave", messages.simple(1))
        pgid = d.proc.pid
        assert len(procs.group_members(pgid)) >= 3, "master plus its children share the process group"
        conn = d.imap("dave")
        conn.select("INBOX")
        d.kill()
        assert procs.group_members(pgid) == []
        assert port_refuses(d.host, d.imap_port) and port_refuses(d.host, d.imaps_port)
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            conn.noop()  # the IMAP connection died with the server
        d.start()
        assert d.uids("dave") == [uid], "mail survives a restart"
        d.restart()
        assert d.fetch("dave", uid) == messages.simple(1)
        pgid = d.proc.pid
        d.stop()
        assert procs.group_members(pgid) == []
        directory = d.dir
    finally:
        d.close()
    import os
    assert not os.path.exists(directory)


# ---------------------------------------------------------- harness helpers

def test_dot_unstuff_and_expectations():
    assert clients.dot_unstuff(b"a\r\n..\r\n...b\r\n.c\r\n") == b"a\r\n.\r\n..b\r\nc\r\n"
    msg = messages.tricky_messages()["no_final_crlf"]
    assert messages.as_retrieved(msg) == msg + b"\r\n"
    header, _ = messages.split_header(msg)
    assert messages.expected_top(msg, 0) == header
    assert messages.expected_top(msg, 1) == header + b"first line\r\n"
    assert messages.expected_top(msg, 3) == msg + b"\r\n"
    assert messages.expected_top(msg, 100) == msg + b"\r\n"
    assert messages.dovecot_uidl(26, 1700000000) == "0000001a6553f100"
    assert len(messages.big_message(1000)) == 1000


def test_yaml_writer():
    cfg = deep_merge({"a": {"b": 1, "c": "x"}, "l": [1]}, {"a": {"c": "y", "d": True}, "l": None})
    assert cfg == {"a": {"b": 1, "c": "y", "d": True}}
    text = to_yaml({"listeners": [{"name": "p", "address": "127.0.0.1:1", "tls": "none"}],
                    "auth": {"allow_plaintext": False, "failure_delay": "200ms"}})
    assert text == ('listeners:\n  - name: "p"\n    address: "127.0.0.1:1"\n    tls: "none"\n'
                    'auth:\n  allow_plaintext: false\n  failure_delay: "200ms"')


def _serve_once(chunks: list[bytes], port_holder: list, ready: threading.Event) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port_holder.append(srv.getsockname()[1])
    ready.set()
    conn, _ = srv.accept()
    with conn, srv:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for c in chunks:
            conn.sendall(c)
            time.sleep(0.01)  # a fake server splitting its output; not synchronisation


def test_raw_client_reassembles_split_replies():
    body = b"line\r\n..dot\r\n.\r\n" [:-3]  # "line", ".dot" stuffed
    stream = (b"+OK hi\r\n" + b"+OK 2 octets\r\n" + b"line\r\n..dot\r\n.\r\n"
              + b"+OK empty\r\n.\r\n" + b"-ERR no\r\n" + b"+OK x\r\n\r\n.\r\n")
    # Split at awkward places: inside CRLF, inside the terminator, one byte at a time.
    chunks = [stream[i:i + 1] for i in range(0, 40)] + [stream[40:47], stream[47:]]
    holder: list[int] = []
    ready = threading.Event()
    t = threading.Thread(target=_serve_once, args=(chunks, holder, ready), daemon=True)
    t.start()
    assert ready.wait(5)
    c = clients.RawPop3(holder[0], timeout=5)
    assert c.greeting.line == b"+OK hi"
    r = c.read_reply(multiline=True)
    assert r.ok and r.body == b"line\r\n.dot\r\n", r.body
    assert r.raw == b"+OK 2 octets\r\nline\r\n..dot\r\n.\r\n"
    r = c.read_reply(multiline=True)
    assert r.ok and r.body == b""
    r = c.read_reply(multiline=True)
    assert r.err and r.body is None
    r = c.read_reply(multiline=True)
    assert r.body == b"\r\n"
    assert c.read_until_eof(timeout=5) == b""
    c.close()
    t.join(5)
    del body


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
