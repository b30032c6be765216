# SPDX-License-Identifier: Apache-2.0
"""upstream.on_delete: what a client's DELE does at QUIT (expunge, move, hide, keep), and
pop3.login_delay (RFC 2449 LOGIN-DELAY).

Against a real Dovecot: a move lands in the folder (created on first use through
TRYCREATE), a hide sets the keyword and later POP3 sessions no longer list the message
while IMAP still sees it, keep changes nothing. Against the scripted fake: a refused move
answers -ERR and removes nothing; without MOVE the messages are copied, then deleted.
"""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.fake_imap import Message
from test_upstream_quirks import PASSWORD, USER, bridge, login, make_fake  # noqa: F401 (fixtures)


@contextlib.contextmanager
def session(gateway, acct) -> Iterator[RawPop3]:
    c = RawPop3(gateway.pop3s_port, tls_context=gateway.pki.client_context())
    try:
        c.login(acct.name, acct.password)
        yield c
    finally:
        c.close()


def capa(gateway) -> list[str]:
    c = RawPop3(gateway.pop3s_port, tls_context=gateway.pki.client_context())
    try:
        r = c.cmd("CAPA", multiline=True)
        assert r.ok, r
        return r.body.decode().splitlines()
    finally:
        c.close()


def uidl_map(c: RawPop3) -> dict[int, str]:
    r = c.cmd("UIDL", multiline=True)
    assert r.ok, r
    return {int(n): u for n, u in (line.split() for line in r.body.decode().splitlines())}


def folder_bodies(dovecot, user: str, folder: str) -> list[bytes]:
    conn = dovecot.imap(user)
    try:
        typ, data = conn.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            return []
        typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        conn.logout()


@pytest.fixture
def five(dovecot, account):
    msgs = [messages.simple(i, body_lines=3) for i in range(1, 6)]
    return account, dovecot.append_many(account.name, msgs), msgs


def test_expunge_is_the_default_and_advertises_no_expire(gateway):
    assert not any(line.startswith("EXPIRE") for line in capa(gateway))
    assert not any(line.startswith("LOGIN-DELAY") for line in capa(gateway))


def test_move_creates_the_folder_and_moves_only_the_deleted(make_gateway, dovecot, five):
    acct, uids, msgs = five
    g = make_gateway(dovecot, {"upstream": {"on_delete": {"action": "move", "folder": "POP3 Deleted"}}})
    assert "EXPIRE NEVER" in capa(g)
    with session(g, acct) as c:
        assert c.cmd("DELE 2").ok and c.cmd("DELE 5").ok
        r = c.quit()
        assert r.ok and b"2 messages moved" in r.line, r
    assert dovecot.uids(acct.name) == [uids[0], uids[2], uids[3]]
    assert sorted(folder_bodies(dovecot, acct.name, "POP3 Deleted")) == sorted([msgs[1], msgs[4]])
    assert re.search(r"event=folder_created .*folder=\"POP3 Deleted\"", g.log_text())
    # Into the folder that now exists: no second CREATE.
    with session(g, acct) as c:
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    assert dovecot.uids(acct.name) == [uids[2], uids[3]]
    assert len(folder_bodies(dovecot, acct.name, "POP3 Deleted")) == 3
    assert g.log_text().count("event=folder_created") == 1


def test_hide_keeps_the_message_for_imap_and_leaves_it_out_of_pop3(make_gateway, dovecot, five):
    acct, uids, _ = five
    g = make_gateway(dovecot, {"upstream": {"on_delete": {"action": "hide", "keyword": "$POP3Deleted"}}})
    assert "EXPIRE NEVER" in capa(g)
    with session(g, acct) as c:
        before = uidl_map(c)
        assert c.cmd("DELE 3").ok
        r = c.quit()
        assert r.ok and b"1 messages hidden" in r.line, r
    assert dovecot.uids(acct.name) == uids  # nothing removed upstream
    assert "$POP3Deleted" in dovecot.flags(acct.name, uids[2])
    with session(g, acct) as c:
        after = uidl_map(c)
        assert c.cmd("STAT").line.startswith(b"+OK 4 ")
    # The others keep their UIDLs (a client downloads nothing again); 3 is gone.
    assert sorted(after.values()) == sorted(u for n, u in before.items() if n != 3)
    assert re.search(r"event=login .*hidden=1", g.log_text())


def test_keep_changes_nothing_upstream(make_gateway, dovecot, five):
    acct, uids, _ = five
    g = make_gateway(dovecot, {"upstream": {"on_delete": {"action": "keep"}}})
    with session(g, acct) as c:
        assert c.cmd("DELE 1").ok
        r = c.quit()
        assert r.ok and b"1 messages kept" in r.line, r
    assert dovecot.uids(acct.name) == uids
    assert not any("\\Deleted" in dovecot.flags(acct.name, uid) for uid in uids)


def three() -> list[Message]:
    return [Message(uid, messages.simple(uid)) for uid in (1, 2, 3)]


def test_a_refused_move_answers_err_and_removes_nothing(make_fake, bridge):
    def refuse(session, cmd) -> bool:
        session.line(f"{cmd.tag} NO [OVERQUOTA] Quota exceeded")
        return True
    fake = make_fake(messages=three(), hooks={"UID MOVE": refuse},
                     capabilities=("IMAP4rev1", "AUTH=PLAIN", "UIDPLUS", "MOVE"))
    g = bridge(fake, {"upstream": {"on_delete": {"action": "move"}}})
    c = login(g)
    try:
        assert c.cmd("DELE 1").ok
        r = c.quit()
        assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
    finally:
        c.close()
    assert fake.uids() == [1, 2, 3]
    assert not any("\\Deleted" in fake.message(uid).flags for uid in (1, 2, 3))
    assert "UID EXPUNGE" not in fake.verbs() and "EXPUNGE" not in fake.verbs()


def test_without_move_the_messages_are_copied_then_deleted(make_fake, bridge):
    copied: list[str] = []

    def copy(session, cmd) -> bool:
        uid_set, _, folder = cmd.args.decode().partition(" ")
        if not copied and folder == '"POP3 Deleted"':
            copied.append("trycreate")
            session.line(f"{cmd.tag} NO [TRYCREATE] Mailbox does not exist")
            return True
        copied.append(uid_set)
        session.ok(cmd.tag, "Copy completed.")
        return True

    def create(session, cmd) -> bool:
        copied.append("create " + cmd.args.decode())
        session.ok(cmd.tag, "Create completed.")
        return True
    fake = make_fake(messages=three(), hooks={"UID COPY": copy, "CREATE": create})
    g = bridge(fake, {"upstream": {"on_delete": {"action": "move"}}})
    c = login(g)
    try:
        assert c.cmd("DELE 1").ok and c.cmd("DELE 3").ok
        r = c.quit()
        assert r.ok and b"2 messages moved" in r.line, r
    finally:
        c.close()
    assert copied == ["trycreate", 'create "POP3 Deleted"', "1,3"]
    assert fake.uids() == [2]
    verbs = fake.verbs()
    assert verbs.index("UID COPY") < verbs.index("UID STORE") < verbs.index("UID EXPUNGE")


def test_a_failed_copy_removes_nothing(make_fake, bridge):
    def refuse(session, cmd) -> bool:
        session.line(f"{cmd.tag} NO [OVERQUOTA] Quota exceeded")
        return True
    fake = make_fake(messages=three(), hooks={"UID COPY": refuse})
    g = bridge(fake, {"upstream": {"on_delete": {"action": "move"}}})
    c = login(g)
    try:
        assert c.cmd("DELE 2").ok
        assert c.quit().line.startswith(b"-ERR [SYS/TEMP]")
    finally:
        c.close()
    assert fake.uids() == [1, 2, 3]
    assert "UID STORE" not in fake.verbs()


def test_login_delay_is_advertised_and_enforced_per_user(make_gateway, dovecot, account):
    other = dovecot.add_user()
    g = make_gateway(dovecot, {"pop3": {"login_delay": "1h"}})
    assert "LOGIN-DELAY 3600" in capa(g)
    with session(g, account) as c:
        assert c.quit().ok
    c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context())
    try:
        assert c.cmd(f"USER {account.name}").ok
        r = c.cmd(f"PASS {account.password}")
        assert r.line.startswith(b"-ERR [LOGIN-DELAY]"), r
        # Said after good credentials only: a wrong password still gets [AUTH].
        assert c.cmd(f"USER {account.name}").ok
        assert c.cmd("PASS wrong").line.startswith(b"-ERR [AUTH]")
    finally:
        c.close()
    with session(g, other) as c:  # another user is not held back
        assert c.quit().ok
