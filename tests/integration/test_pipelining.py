# SPDX-License-Identifier: Apache-2.0
"""PIPELINING (RFC 2449 §6.6): many commands in one write, replies in order."""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.messages import as_retrieved, dovecot_uidl


@pytest.fixture
def mailbox(dovecot, account):
    msgs = messages.demo_messages() + [messages.tricky_messages()["dots"]]
    uids = dovecot.append_many(account.name, msgs)
    return account, uids, msgs


def build_batch(n_msgs: int, count: int = 50) -> list[str]:
    kinds = ["LIST", "UIDL", "RETR", "NOOP", "STAT"]
    cmds = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        n = (i * 7) % n_msgs + 1  # visits every message in a scrambled order
        cmds.append(f"{kind} {n}" if kind in ("LIST", "UIDL", "RETR") else kind)
    return cmds


def test_fifty_commands_in_one_write(gateway, ctx, dovecot, mailbox):
    acct, uids, msgs = mailbox
    validity = dovecot.uidvalidity(acct.name)
    total = sum(len(m) for m in msgs)
    cmds = build_batch(len(msgs))
    assert len(cmds) == 50

    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        assert "PIPELINING" in c.capa()
        c.login(acct.name, acct.password)
        c.send(b"".join(cmd.encode() + b"\r\n" for cmd in cmds))  # ONE write
        for i, cmd in enumerate(cmds):
            verb = cmd.split()[0]
            r = c.read_reply(multiline=(verb == "RETR"), timeout=30)
            where = f"reply {i + 1} of 50, to {cmd!r}"
            assert r.ok, f"{where}: {r}"
            if verb == "LIST":
                n = int(cmd.split()[1])
                assert r.line == b"+OK %d %d" % (n, len(msgs[n - 1])), where
            elif verb == "UIDL":
                n = int(cmd.split()[1])
                assert r.line == b"+OK %d %s" % (n, dovecot_uidl(uids[n - 1], validity).encode()), where
            elif verb == "RETR":
                n = int(cmd.split()[1])
                assert r.body == as_retrieved(msgs[n - 1]), where
            elif verb == "STAT":
                assert r.line == b"+OK %d %d" % (len(msgs), total), where
            else:
                assert r.body is None, where
        assert c.buffered == b"", "no reply beyond the 50 expected"
        assert c.quit().ok


def test_pipelined_login_and_commands(gateway, ctx, mailbox):
    """USER, PASS and commands after them in one write: the commands after PASS
    must run after the (asynchronous, upstream) login completed."""
    acct, _, msgs = mailbox
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        c.send(f"USER {acct.name}\r\nPASS {acct.password}\r\nSTAT\r\nRETR 1\r\nQUIT\r\n".encode())
        assert c.read_reply().ok
        assert c.read_reply().ok, "PASS"
        assert c.read_reply().line == b"+OK %d %d" % (len(msgs), sum(len(m) for m in msgs))
        assert c.read_reply(multiline=True).body == as_retrieved(msgs[0])
        assert c.read_reply().ok, "QUIT"
        assert c.read_until_eof(timeout=10) == b""
