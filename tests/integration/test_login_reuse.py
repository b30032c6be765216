# SPDX-License-Identifier: Apache-2.0
"""upstream.login_reuse: a user's logged-in upstream connection is kept after the
session, and the same user's next session with the same password starts at SELECT.

Against a real Dovecot, counting its own "Login: user=<...>" lines: the next poll
logs in nowhere, yet sees mail that arrived in between and commits its deletions; a
wrong password never gets the kept connection; an upstream restart empties the pool.
Against the scripted server: a kept connection that breaks as it is taken, or halfway
through the snapshot, is replaced by a fresh login, invisibly to the client; when that
fresh login is refused, the client gets the refusal's own answer. Master logins with
reuse are in test_identity.py (its Dovecot has a master passdb).
"""

from __future__ import annotations

import poplib

import pytest

from harness import messages
from harness.fake_imap import FakeImap, Message
from harness.messages import as_retrieved, dovecot_uidl
from harness.wait import TIME_FACTOR, wait_until
from test_operations import log_events, scrape, start_gateway
from test_upstream_quirks import PASSWORD, USER, make_fake  # noqa: F401,F811 (fixture)

QUICK = 10.0 * TIME_FACTOR
# One worker: each worker keeps its own connections, and the kernel picks the worker of
# each new session (SO_REUSEPORT), so with two a poll finds its connection half the time.
REUSE = {"upstream": {"login_reuse": {"idle": "60s", "max": 8}}, "workers": 1}


def logins(dovecot, user: str) -> int:
    """The user's upstream logins so far, every earlier one in the log (see Dovecot.fence)."""
    dovecot.fence(user)
    return dovecot.logins(user)


def logins_since(dovecot, user: str, before: int) -> int:
    return logins(dovecot, user) - before


def parked(port: int) -> float:
    return scrape(port).value("popbridge_upstream_connections_parked")


def reused(port: int) -> float:
    return scrape(port).value("popbridge_upstream_logins_reused_total")


def wait_parked(port: int, count: int) -> None:
    wait_until(lambda: parked(port) == count, QUICK, f"{count} parked upstream connection(s)")


def pop3s(g, ctx) -> poplib.POP3_SSL:
    return poplib.POP3_SSL("127.0.0.1", g.pop3s_port, context=ctx, timeout=15 * TIME_FACTOR)


def poll(g, ctx, user: str, password: str) -> int:
    """Login, STAT, QUIT; the number of messages."""
    client = pop3s(g, ctx)
    client.user(user)
    client.pass_(password)
    count = client.stat()[0]
    client.quit()
    return count


def test_next_poll_skips_the_upstream_login(make_gateway, dovecot, account, ctx):
    msgs = [messages.simple(i) for i in (1, 2)]
    uids = dovecot.append_many(account.name, msgs)
    validity = dovecot.uidvalidity(account.name)
    g, port = start_gateway(make_gateway, dovecot, REUSE)

    before = logins(dovecot, account.name)
    client = pop3s(g, ctx)
    client.user(account.name)
    client.pass_(account.password)
    first_uidls = client.uidl()[1]
    client.quit()
    wait_parked(port, 1)
    assert logins_since(dovecot, account.name, before) == 1

    new = messages.simple(3, body_lines=12)  # mail arrives between the polls
    uids.append(dovecot.append(account.name, new))
    msgs.append(new)
    before = logins(dovecot, account.name)

    client = pop3s(g, ctx)
    client.user(account.name)
    client.pass_(account.password)
    count, octets = client.stat()
    assert (count, octets) == (3, sum(len(as_retrieved(m)) for m in msgs))
    uidls = client.uidl()[1]
    assert uidls[:2] == first_uidls
    assert uidls == [b"%d %s" % (n + 1, dovecot_uidl(uid, validity).encode())
                     for n, uid in enumerate(uids)]
    lines = client.retr(3)[1]
    assert b"\r\n".join(lines) + b"\r\n" == as_retrieved(new)
    client.dele(1)
    client.quit()

    assert reused(port) == 1
    assert logins_since(dovecot, account.name, before) == 0, "the second poll logged in upstream"
    assert dovecot.uids(account.name) == uids[1:], "QUIT expunged message 1 over the kept connection"
    wait_parked(port, 1)


def test_another_password_never_gets_the_kept_connection(make_gateway, dovecot, account, ctx):
    dovecot.append(account.name, messages.simple(1))
    g, port = start_gateway(make_gateway, dovecot, REUSE)
    poll(g, ctx, account.name, account.password)
    wait_parked(port, 1)

    client = pop3s(g, ctx)
    client.user(account.name)
    try:
        client.pass_(account.password + "-wrong")
        raise AssertionError("a wrong password logged in")
    except poplib.error_proto as refused:
        assert b"[AUTH]" in refused.args[0]
    finally:
        client.close()
    assert reused(port) == 0
    assert parked(port) == 1, "the kept connection is still there for the right password"

    before = logins(dovecot, account.name)
    assert poll(g, ctx, account.name, account.password) == 1
    assert reused(port) == 1
    assert logins_since(dovecot, account.name, before) == 0


def test_upstream_restart_empties_the_pool(make_gateway, dovecot, account, ctx):
    dovecot.append(account.name, messages.simple(1))
    g, port = start_gateway(make_gateway, dovecot, REUSE)
    poll(g, ctx, account.name, account.password)
    wait_parked(port, 1)

    dovecot.stop()
    wait_parked(port, 0)  # the kept connection's end was noticed while it waited
    dovecot.start()
    before = logins(dovecot, account.name)
    assert poll(g, ctx, account.name, account.password) == 1
    assert logins_since(dovecot, account.name, before) == 1
    assert reused(port) == 0


def test_a_kept_connection_that_breaks_as_it_is_taken_is_replaced(make_fake, make_gateway, ctx):
    selects: list[int] = []  # the connection each SELECT came on

    def select(session, command):
        selects.append(session.number)
        if len(selects) == 2:
            session.close()  # the server drops it just as the second session SELECTs
            return True
        return False

    fake: FakeImap = make_fake(messages=[Message(1, messages.simple(1))], hooks={"SELECT": select})
    g, port = start_gateway(make_gateway, fake.address, REUSE, upstream_tls="none")
    for _ in range(2):
        client = poplib.POP3_SSL("127.0.0.1", g.pop3s_port, context=ctx, timeout=15 * TIME_FACTOR)
        client.user(USER)
        client.pass_(PASSWORD)
        assert client.stat()[0] == 1
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == as_retrieved(messages.simple(1))
        client.quit()
        wait_parked(port, 1)
    first = selects[0]
    assert selects[:2] == [first, first], "the second session took the first one's connection"
    assert len(selects) == 3 and selects[2] > first, "then logged in on a new one"
    logged_in_on = sorted(c.conn for c in fake.received("LOGIN") + fake.received("AUTHENTICATE"))
    assert logged_in_on == [first, selects[2]]
    assert len(log_events(g, "reused_upstream_lost")) == 1
    assert not log_events(g, "select_failed"), "the replaced connection is not reported as an error"


def test_kept_connections_are_logged_out_when_idle_or_crowded_out(make_gateway, dovecot, account, ctx):
    other = dovecot.add_user()
    g, port = start_gateway(make_gateway, dovecot,
                            {"upstream": {"login_reuse": {"idle": "2s", "max": 1}}, "workers": 1})
    poll(g, ctx, account.name, account.password)
    wait_parked(port, 1)
    poll(g, ctx, other.name, other.password)  # max 1: the first user's connection makes room
    dovecot.wait_session_ends(account.name, 1)
    assert parked(port) == 1
    wait_parked(port, 0)  # and the second one is logged out after 2 s idle
    dovecot.wait_session_ends(other.name, 1)
    assert reused(port) == 0


def test_a_connection_is_not_handed_on_past_its_max_age(make_gateway, dovecot, account, ctx):
    """However often the user polls, the upstream checks the password again after
    max_age: a kept connection leaves the pool by then."""
    dovecot.append(account.name, messages.simple(1))
    g, port = start_gateway(make_gateway, dovecot,
                            {"upstream": {"login_reuse": {"idle": "60s", "max_age": "1s"}}, "workers": 1})
    poll(g, ctx, account.name, account.password)
    wait_parked(port, 1)
    wait_parked(port, 0)  # long before idle's 60 s
    dovecot.wait_session_ends(account.name, 2)  # the APPEND's session, then the kept one
    before = logins(dovecot, account.name)
    assert poll(g, ctx, account.name, account.password) == 1
    assert logins_since(dovecot, account.name, before) == 1
    assert reused(port) == 0


def test_a_reused_login_leaves_the_token_mechanisms_offered(make_fake, make_gateway, ctx):
    """A reused session never saw the login mechanisms (they are announced before login);
    it must not report them as missing, or CAPA would stop offering XOAUTH2 to everyone."""
    fake = make_fake(capabilities=["IMAP4rev1", "AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER",
                                   "SASL-IR", "UIDPLUS"], messages=[Message(1, messages.simple(1))])
    g, port = start_gateway(make_gateway, fake.address, REUSE, upstream_tls="none")
    for _ in range(2):
        assert poll(g, ctx, USER, PASSWORD) == 1
        wait_parked(port, 1)
    assert reused(port) == 1
    client = pop3s(g, ctx)
    sasl = client.capa()["SASL"]
    client.quit()
    assert "XOAUTH2" in sasl and "OAUTHBEARER" in sasl, sasl


def test_a_kept_connection_that_breaks_during_the_snapshot_is_replaced(make_fake, make_gateway, ctx):
    """The upstream drops a kept connection after SELECT, halfway through the snapshot's
    FETCH: the session logs in afresh, and the half-read snapshot leaves no trace (the
    message is listed once, with its size and UIDL)."""
    snapshots: list[int] = []  # the connection each snapshot FETCH came on

    def fetch(session, command):
        if not command.args.startswith(b"1:*"):
            return False
        snapshots.append(session.number)
        if len(snapshots) == 2:
            # One whole FETCH response, so the store has begun its snapshot, then no more.
            items = command.args.decode("latin-1")[len("1:* "):]
            session.send(session.fetch_response(session.server.messages[0], items))
            session.close()
            return True
        return False

    fake = make_fake(messages=[Message(1, messages.simple(1))], hooks={"UID FETCH": fetch})
    g, port = start_gateway(make_gateway, fake.address, REUSE, upstream_tls="none")
    answers = []
    for _ in range(2):
        client = pop3s(g, ctx)
        client.user(USER)
        client.pass_(PASSWORD)
        answers.append((client.stat(), client.list()[1], client.uidl()[1]))
        assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == as_retrieved(messages.simple(1))
        client.quit()
        wait_parked(port, 1)
    assert answers[0] == answers[1], answers
    assert answers[1][0][0] == 1 and len(answers[1][1]) == 1, answers
    first = snapshots[0]
    assert snapshots[:2] == [first, first] and len(snapshots) == 3 and snapshots[2] > first, snapshots
    assert len(log_events(g, "reused_upstream_lost")) == 1


@pytest.mark.parametrize("refusal, answer", [
    ("NO [AUTHENTICATIONFAILED] Authentication failed.", b"-ERR [AUTH]"),
    ("NO [UNAVAILABLE] Temporary failure.", b"-ERR [SYS/TEMP]"),
])
def test_a_fresh_login_that_fails_after_a_broken_kept_connection(make_fake, make_gateway, ctx,
                                                                  refusal, answer):
    """The kept connection breaks as it is taken, and the login that replaces it is
    refused: the client gets the refusal's own answer at PASS, as if nothing had been
    kept, nothing stays parked, and the next poll logs in afresh."""
    selects: list[int] = []
    logins_seen: list[int] = []

    def select(session, command):
        selects.append(session.number)
        if len(selects) == 2:
            session.close()
            return True
        return False

    def login(session, command):
        logins_seen.append(session.number)
        if len(logins_seen) == 2:
            session.line(f"{command.tag} {refusal}")
            return True
        return False

    fake = make_fake(messages=[Message(1, messages.simple(1))],
                     hooks={"SELECT": select, "LOGIN": login, "AUTHENTICATE": login})
    g, port = start_gateway(make_gateway, fake.address, REUSE, upstream_tls="none")
    assert poll(g, ctx, USER, PASSWORD) == 1
    wait_parked(port, 1)
    client = pop3s(g, ctx)
    client.user(USER)
    with pytest.raises(poplib.error_proto) as refused:
        client.pass_(PASSWORD)
    assert refused.value.args[0].startswith(answer), refused.value
    client.quit()
    assert parked(port) == 0 and reused(port) == 1
    assert len(log_events(g, "reused_upstream_lost")) == 1
    assert poll(g, ctx, USER, PASSWORD) == 1
    assert len(logins_seen) == 3 and len(set(logins_seen)) == 3, logins_seen
