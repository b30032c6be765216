# SPDX-License-Identifier: Apache-2.0
"""Logins: USER/PASS, AUTH PLAIN (initial response and empty challenge), AUTH LOGIN,
cancel, bare AUTH, failures (RFC 1939, 3206, 5034, 8314 §4.1).

Failure tests end with a good login: Dovecot delays logins from an address after
a failed one until a login succeeds (see harness/dovecot.py), and a good login
also shows that the failure left the session usable.
"""

from __future__ import annotations

import base64

import pytest

from harness import messages
from harness.clients import RawPop3


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user: str, password: str, authzid: str = "") -> str:
    """The base64 SASL PLAIN response: authzid NUL authcid NUL password."""
    return b64("\0".join([authzid, user, password]))


@pytest.fixture
def mailbox(dovecot, account):
    """An account with two messages, so STAT proves which mailbox we reached."""
    msgs = [messages.simple(1), messages.simple(2)]
    dovecot.append_many(account.name, msgs)
    return account, msgs


def stat_matches(c: RawPop3, msgs: list[bytes]) -> None:
    r = c.cmd("STAT")
    assert r.line == b"+OK %d %d" % (len(msgs), sum(len(m) for m in msgs)), f"STAT: {r}"


@pytest.fixture
def client(gateway, ctx):
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        yield c


# ------------------------------------------------------------- successes

def test_user_pass(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd(f"USER {acct.name}")
    assert r.ok, r
    r = client.cmd(f"PASS {acct.password}")
    assert r.ok, r
    stat_matches(client, msgs)
    assert client.quit().ok


def test_user_pass_over_stls(gateway, ctx, mailbox):
    acct, msgs = mailbox
    with RawPop3(gateway.pop3_port) as c:
        assert c.cmd("STLS").ok
        c.starttls(ctx)
        c.login(acct.name, acct.password)
        stat_matches(c, msgs)
        assert c.quit().ok


def test_auth_plain_initial_response(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd(f"AUTH PLAIN {plain(acct.name, acct.password)}")
    assert r.ok, r
    stat_matches(client, msgs)


def test_auth_plain_empty_challenge(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd("AUTH PLAIN")
    assert r.line in (b"+ ", b"+"), f"RFC 5034: an empty challenge '+ ' is expected, got {r.line!r}"
    r = client.cmd(plain(acct.name, acct.password))
    assert r.ok, r
    stat_matches(client, msgs)


def test_auth_plain_authzid_equal_to_authcid(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd(f"AUTH PLAIN {plain(acct.name, acct.password, authzid=acct.name)}")
    assert r.ok, r
    stat_matches(client, msgs)


def test_auth_login(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd("AUTH LOGIN")
    assert r.line.startswith(b"+"), f"AUTH LOGIN challenge: {r}"
    r = client.cmd(b64(acct.name))
    assert r.line.startswith(b"+"), f"AUTH LOGIN password challenge: {r}"
    r = client.cmd(b64(acct.password))
    assert r.ok, r
    stat_matches(client, msgs)


def test_bare_auth_lists_mechanisms(client):
    r = client.cmd("AUTH", multiline=True)
    assert r.ok, r
    mechs = {l.strip().upper() for l in r.body_lines()}
    assert {b"PLAIN", b"LOGIN"} <= mechs, mechs


def test_auth_after_login_refused(client, mailbox):
    acct, msgs = mailbox
    client.login(acct.name, acct.password)
    r = client.cmd(f"AUTH PLAIN {plain(acct.name, acct.password)}")
    assert r.err, f"RFC 5034: AUTH after a successful login must fail: {r}"
    stat_matches(client, msgs)


# ----------------------------------------------------------- cancel, bad input

def test_auth_plain_cancel(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd("AUTH PLAIN")
    assert r.line.startswith(b"+"), r
    r = client.cmd("*")
    assert r.err, f"RFC 5034: '*' cancels with -ERR: {r}"
    assert client.cmd("STAT").err, "not logged in"
    r = client.cmd(f"AUTH PLAIN {plain(acct.name, acct.password)}")
    assert r.ok, f"a cancelled AUTH is as if it never happened: {r}"
    stat_matches(client, msgs)


def test_auth_login_cancel_at_password(client, mailbox):
    acct, msgs = mailbox
    assert client.cmd("AUTH LOGIN").line.startswith(b"+")
    assert client.cmd(b64(acct.name)).line.startswith(b"+")
    r = client.cmd("*")
    assert r.err, r
    client.login(acct.name, acct.password)
    stat_matches(client, msgs)


@pytest.mark.parametrize("bad", ["!!!!", "AGFsaWNl=AA", "a"])
def test_auth_plain_invalid_base64(client, mailbox, bad):
    acct, msgs = mailbox
    r = client.cmd(f"AUTH PLAIN {bad}")
    assert r.err, f"RFC 5034: invalid base64 must be rejected: {r}"
    client.login(acct.name, acct.password)
    stat_matches(client, msgs)


def test_auth_unknown_mechanism(client, mailbox):
    acct, msgs = mailbox
    r = client.cmd("AUTH X-NOSUCH")
    assert r.err, r
    client.login(acct.name, acct.password)
    stat_matches(client, msgs)


def test_pass_without_user(client, mailbox):
    acct, msgs = mailbox
    assert client.cmd(f"PASS {acct.password}").err
    client.login(acct.name, acct.password)
    stat_matches(client, msgs)


# ---------------------------------------------------------------- failures

def test_wrong_password_and_unknown_user_look_the_same(gateway, ctx, mailbox):
    """-ERR [AUTH] (RFC 3206 / AUTH-RESP-CODE) and, per RFC 8314 §4.1, the same
    denial for an unknown user as for a wrong password."""
    acct, msgs = mailbox
    replies = {}
    for label, user, password in [("wrong password", acct.name, "not-the-password"),
                                  ("unknown user", "nosuchuser", "whatever-1")]:
        with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
            u = c.cmd(f"USER {user}")
            p = c.cmd(f"PASS {password}")
            replies[label] = (u.line, p.line)
            assert p.line.startswith(b"-ERR [AUTH]"), f"{label}: {p}"
            assert c.cmd("STAT").err, "not logged in"
            c.login(acct.name, acct.password)  # a failure doesn't spoil the session
            stat_matches(c, msgs)
    assert replies["wrong password"] == replies["unknown user"], replies


def test_auth_plain_failures_look_the_same(gateway, ctx, mailbox):
    acct, msgs = mailbox
    replies = {}
    for label, user, password in [("wrong password", acct.name, "not-the-password"),
                                  ("unknown user", "nosuchuser", "whatever-1")]:
        with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
            r = c.cmd(f"AUTH PLAIN {plain(user, password)}")
            replies[label] = r.line
            assert r.line.startswith(b"-ERR [AUTH]"), f"{label}: {r}"
            r = c.cmd(f"AUTH PLAIN {plain(acct.name, acct.password)}")
            assert r.ok, r
            stat_matches(c, msgs)
    assert replies["wrong password"] == replies["unknown user"], replies


def test_auth_login_wrong_password(client, mailbox):
    acct, msgs = mailbox
    assert client.cmd("AUTH LOGIN").line.startswith(b"+")
    assert client.cmd(b64(acct.name)).line.startswith(b"+")
    r = client.cmd(b64("not-the-password"))
    assert r.line.startswith(b"-ERR [AUTH]"), r
    client.login(acct.name, acct.password)
    stat_matches(client, msgs)


def test_max_attempts_closes_connection(gateway, ctx, mailbox):
    """auth.max_attempts: 3 -> the third failed login closes the connection."""
    acct, msgs = mailbox
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        for i in range(3):
            c.cmd(f"USER {acct.name}")
            r = c.cmd(f"PASS wrong-{i}")
            assert r.line.startswith(b"-ERR [AUTH]"), f"attempt {i + 1}: {r}"
        assert c.read_until_eof(timeout=15) == b"", "the connection must close after max_attempts failures"
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        c.login(acct.name, acct.password)
        stat_matches(c, msgs)


def test_credentials_never_logged(gateway, ctx, mailbox):
    """Debug logging is on; still no password (nor the SASL blob carrying it) may appear."""
    acct, msgs = mailbox
    blob = plain(acct.name, acct.password)
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        c.cmd(f"USER {acct.name}")
        c.cmd("PASS wrong-password-that-must-not-be-logged")
        c.login(acct.name, acct.password)
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        assert c.cmd(f"AUTH PLAIN {blob}").ok
        assert c.quit().ok
    log = gateway.log_text()
    assert log, "the gateway logs at debug level; an empty log means the log path is wrong"
    for secret in (acct.password, "wrong-password-that-must-not-be-logged", blob, b64(acct.password)):
        assert secret not in log, f"{secret!r} appears in the gateway log"
