# SPDX-License-Identifier: Apache-2.0
"""The UPDATE state under faults: once QUIT starts changing the mailbox, popbridge
finishes it or rolls it back, whatever the client or the upstream connection does.

A message is never left flagged \\Deleted without being expunged: any other IMAP client's
EXPUNGE (Thunderbird's compact, Dovecot's autoexpunge) would later remove mail whose
deletion the POP3 client never saw confirmed. QUIT marks its deletions with the keyword
$PopbridgePending too, so what a cut connection leaves behind is restored by the user's
next session.
"""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.fake_imap import Message
from harness.wait import TIME_FACTOR, wait_until

from test_upstream_quirks import (PASSWORD, USER, bridge, login, make_fake,  # noqa: F401 (fixtures)
                                  three_messages, wait_upstream_closed)

QUICK = 10.0 * TIME_FACTOR
PENDING = "$PopbridgePending"


# ------------------------------------------------------------------ real Dovecot

def test_client_reset_right_after_quit_still_expunges(dovecot, account, gateway):
    """QUIT then an immediate RST: the UPDATE runs to its end (expunged and confirmed),
    instead of stopping between STORE and EXPUNGE."""
    user = account.name
    uids = dovecot.append_many(user, [messages.simple(n) for n in range(1, 5)])
    c = RawPop3(gateway.pop3s_port, tls_context=gateway.pki.client_context(), timeout=15)
    c.login(user, account.password)
    for n in (1, 3):
        assert c.cmd(f"DELE {n}").ok
    c.send_line("QUIT")
    c.abort()

    wait_until(lambda: dovecot.uids(user) == [uids[1], uids[3]], QUICK,
               "the deleted messages to be expunged although the client left",
               on_timeout=lambda: f"uids {dovecot.uids(user)}; log:\n{gateway.log_text()[-2000:]}")
    for uid in dovecot.uids(user):
        assert "\\Deleted" not in dovecot.flags(user, uid)
    wait_until(lambda: "client_closed_during_update" in gateway.log_text(), QUICK,
               "the gateway to log the client that left during UPDATE")


def test_next_session_restores_what_an_unfinished_update_left(dovecot, account, gateway):
    """Residue of a cut UPDATE (\\Deleted plus our keyword) is taken back at the next
    login; a \\Deleted set by an IMAP user (without the keyword) is not ours to touch."""
    user = account.name
    kept, residue, theirs = dovecot.append_many(user, [messages.simple(n) for n in range(1, 4)])
    conn = dovecot.imap(user)
    try:
        conn.select("INBOX")
        assert conn.uid("STORE", str(residue), "+FLAGS.SILENT", f"(\\Deleted {PENDING})")[0] == "OK"
        assert conn.uid("STORE", str(theirs), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    finally:
        conn.logout()

    with RawPop3(gateway.pop3s_port, tls_context=gateway.pki.client_context(), timeout=15) as c:
        c.login(user, account.password)
        r = c.cmd("UIDL", multiline=True)
        assert len(r.body_lines()) == 3, r
        assert c.quit().ok

    assert "\\Deleted" not in dovecot.flags(user, residue)
    assert PENDING.lower() not in {f.lower() for f in dovecot.flags(user, residue)}
    assert "\\Deleted" in dovecot.flags(user, theirs), "another client's \\Deleted stays"
    assert "\\Deleted" not in dovecot.flags(user, kept)
    wait_until(lambda: "deletions_rolled_back" in gateway.log_text(), QUICK,
               "the rollback to be logged")


# ------------------------------------------------------------------ a cut at every point

def cut(session, cmd):
    """Closes the upstream connection without answering the command."""
    session.close()
    return True


def apply_then_cut(session, cmd):
    """Carries the command out, then closes before the tagged reply reaches the gateway."""
    session.default_silently(cmd)
    session.close()
    return True


@pytest.mark.parametrize("point", ["before_store", "after_store", "before_expunge",
                                   "after_expunge"])
def test_upstream_cut_at_every_point_of_update(make_fake, bridge, point):
    """Whatever point of the UPDATE the upstream connection is cut at, the client never
    hears +OK unless the expunge was confirmed, and no message stays \\Deleted once the
    user logs in again."""
    hooks = {}
    if point == "before_store":
        hooks["UID STORE"] = lambda s, c: b"+FLAGS" in c.args and cut(s, c)
    elif point == "after_store":
        hooks["UID STORE"] = lambda s, c: b"+FLAGS" in c.args and apply_then_cut(s, c)
    elif point == "before_expunge":
        hooks["UID EXPUNGE"] = cut
    else:
        hooks["UID EXPUNGE"] = apply_then_cut
    fake = make_fake(messages=three_messages(), hooks=hooks, permanent_flags="\\Deleted \\Seen \\*")
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("DELE 2").ok
        assert c.cmd("DELE 3").ok
        c.send_line("QUIT")
        tail = c.read_until_eof(timeout=QUICK)
    assert not tail.startswith(b"+OK"), f"+OK although the expunge was not confirmed: {tail!r}"
    assert tail.startswith(b"-ERR [SYS/TEMP]"), tail
    wait_upstream_closed(fake)

    if point == "after_expunge":
        assert fake.uids() == [1], "the expunge happened, only its confirmation was lost"
    else:
        left_marked = [m.uid for m in fake.messages if "\\Deleted" in m.flags]
        if point == "after_store" or point == "before_expunge":
            assert left_marked == [2, 3], "the cut left residue: the case the keyword is for"
            assert all(PENDING in m.flags for m in fake.messages if m.uid in (2, 3))

    # The next session restores whatever is left marked, before it lists anything.
    fake.hooks.clear()
    with login(g) as c:
        r = c.cmd("STAT")
        assert r.ok
        expected = 1 if point == "after_expunge" else 3
        assert r.line.startswith(b"+OK %d " % expected), r
        assert c.quit().ok
    assert all("\\Deleted" not in m.flags and PENDING not in m.flags for m in fake.messages), \
        [(m.uid, m.flags) for m in fake.messages]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_without_keywords_the_update_uses_deleted_alone(make_fake, bridge, pipelining):
    """A mailbox that keeps no new keywords (PERMANENTFLAGS without \\*) gets today's
    STORE of \\Deleted alone. One command at a time, the snapshot asks for no FLAGS; a
    snapshot FETCH pipelined with SELECT leaves before PERMANENTFLAGS is known, so it
    asks for them."""
    fake = make_fake(messages=three_messages(), permanent_flags="\\Deleted \\Seen")
    g = bridge(fake, {"upstream": {"pipelining": pipelining}})
    with login(g) as c:
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    wait_upstream_closed(fake)
    assert [s.args for s in fake.received("UID STORE")] == [b"1 +FLAGS.SILENT (\\Deleted)"]
    snapshot_asks_flags = [b"FLAGS" in f.args for f in fake.received("UID FETCH") if b"1:*" in f.args]
    assert snapshot_asks_flags == [pipelining]
    assert fake.uids() == [2, 3]


def test_keyword_listed_in_permanentflags_is_used(make_fake, bridge):
    fake = make_fake(messages=[Message(1, messages.simple(1))],
                     permanent_flags=f"\\Deleted \\Seen {PENDING}")
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    wait_upstream_closed(fake)
    assert [s.args for s in fake.received("UID STORE")] == \
        [b"1 +FLAGS.SILENT (\\Deleted %s)" % PENDING.encode()]
    assert fake.uids() == []
