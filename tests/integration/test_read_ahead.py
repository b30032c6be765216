# SPDX-License-Identifier: Apache-2.0
"""limits.read_ahead: a client retrieving in order gets message n+1 fetched upstream while
it reads n, so its RETR n+1 is answered from memory.

Checked against the real Dovecot (the octets of every message, whether it came from a
read-ahead or not; \\Seen never set by a read-ahead) and against the scripted IMAP server,
which records when the fetch of n+1 was sent: before the client asked for it."""

from __future__ import annotations

import re
import urllib.request

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.fake_imap import FakeImap, Message
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until

QUICK = 10.0 * TIME_FACTOR


def read_ahead_counts(port: int) -> dict[str, float]:
    """popbridge_read_ahead_total by result, from the admin endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^popbridge_read_ahead_total\{result="(\w+)"\} (\S+)$', text, re.M)}


@pytest.fixture
def gateway_with_metrics(make_gateway):
    def make(upstream, overrides=None, **kwargs):
        port = free_port()
        overrides = {**(overrides or {}), "metrics": {"address": f"127.0.0.1:{port}"}}
        return make_gateway(upstream, overrides, **kwargs), port
    return make


def test_messages_read_ahead_arrive_byte_exact_and_unseen(dovecot, account, gateway_with_metrics, ctx):
    tricky = messages.tricky_messages()
    msgs = [messages.simple(1), tricky["dots"], tricky["no_final_crlf_dot"],
            messages.big_message(200 * 1024),  # above the 64 KiB default: fetched on demand
            tricky["long_lines"], tricky["eight_bit"], tricky["empty_body"]]
    uids = dovecot.append_many(account.name, msgs)
    g, port = gateway_with_metrics(dovecot)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        for n, msg in enumerate(msgs, 1):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.ok and r.body == messages.as_retrieved(msg), f"RETR {n}"
            assert r.line.startswith(b"+OK %d octets" % len(msg)), r.line
        assert c.quit().ok
    # Read ahead: 3 (after 1, 2; 4 is too large to join it), then 5, 6 and 7 in one batch
    # (after 4, fetched on demand).
    assert wait_until(lambda: read_ahead_counts(port) == {"used": 4, "unused": 0}, QUICK,
                      "the read-ahead counters", on_timeout=lambda: str(read_ahead_counts(port)))
    for uid in uids:
        assert "\\Seen" not in dovecot.flags(account.name, uid), f"UID {uid} was marked \\Seen"


@pytest.mark.parametrize("mark_seen", [False, True])
def test_a_read_ahead_never_asked_for_changes_nothing(dovecot, account, gateway_with_metrics, ctx,
                                                      mark_seen):
    msgs = [messages.simple(n) for n in (1, 2, 3)]
    uids = dovecot.append_many(account.name, msgs)
    g, port = gateway_with_metrics(dovecot, {"upstream": {"mark_seen": mark_seen}})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        assert c.cmd("RETR 1", multiline=True).body == msgs[0]
        assert c.cmd("RETR 2", multiline=True).body == msgs[1]
        assert c.cmd("DELE 2").ok
        assert c.quit().ok
    # With mark_seen a fetch would set \Seen: no read-ahead then.
    expected = {"used": 0, "unused": 0 if mark_seen else 1}
    assert wait_until(lambda: read_ahead_counts(port) == expected, QUICK, "the read-ahead counters",
                      on_timeout=lambda: str(read_ahead_counts(port)))
    assert dovecot.uids(account.name) == [uids[0], uids[2]], "QUIT removed exactly message 2"
    assert ("\\Seen" in dovecot.flags(account.name, uids[0])) == mark_seen
    assert "\\Seen" not in dovecot.flags(account.name, uids[2]), "message 3 was never retrieved"


def test_the_next_messages_are_fetched_in_one_command_before_the_client_asks(make_gateway, ctx):
    """After RETR 1 and 2 the gateway fetches 3, 4 and 5 (all within limits.read_ahead)
    in one UID FETCH, with BODY.PEEK: one upstream round trip for the three RETRs after."""
    bodies = [messages.simple(n) for n in (1, 2, 3, 4, 5)]
    fake = FakeImap(users={"carol": "carol-secret-3"},
                    messages=[Message(uid=10 + n, body=b) for n, b in enumerate(bodies)]).start()
    try:
        g = make_gateway(fake.address, upstream_tls="none")
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            c.login("carol", "carol-secret-3")

            def body_fetches() -> list[str]:
                return [cmd.text.strip().split(" ", 1)[1] for cmd in fake.received("UID FETCH")
                        if b"BODY" in cmd.args]

            assert c.cmd("RETR 1", multiline=True).body == bodies[0]
            assert c.cmd("RETR 2", multiline=True).body == bodies[1]
            wait_until(lambda: len(body_fetches()) == 3, QUICK, "the read-ahead of messages 3-5",
                       on_timeout=lambda: str(body_fetches()))
            assert body_fetches() == ["UID FETCH 10 (BODY.PEEK[])", "UID FETCH 11 (BODY.PEEK[])",
                                      "UID FETCH 12:14 (BODY.PEEK[])"]
            for n in (3, 4, 5):
                assert c.cmd(f"RETR {n}", multiline=True).body == bodies[n - 1]
            assert len(body_fetches()) == 3, "RETR 3-5 were answered from the read-ahead"
            assert c.quit().ok
    finally:
        fake.close()
    assert not fake.errors, fake.errors
