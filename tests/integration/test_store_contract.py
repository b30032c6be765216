# SPDX-License-Identifier: Apache-2.0
"""The mail-store contract, run once against each backend with its scripted server.

ARCHITECTURE.md's data-integrity rules hold whatever the upstream speaks: the same POP3
dialogue goes through the gateway to a scripted IMAP server (harness/fake_imap.py) and a
scripted JMAP server (harness/fake_jmap.py), each told to fail in the same ways:

  - the listing and the octets are the server's, dot-stuffed on the wire and nothing else;
  - a message cut off mid-transfer reaches the client without the terminating "." (so no
    client stores it as complete), and deletes nothing;
  - nothing is removed unless the client QUITs and the server confirmed it; a client that
    leaves without QUIT removes nothing;
  - a removal the server refuses is -ERR at QUIT and leaves the messages there.
"""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3, TERMINATOR
from harness.fake_imap import FakeImap, Message
from harness.fake_jmap import FakeJmap
from harness.gateway import deep_merge
from harness.messages import expected_top, stuffed
from harness.wait import TIME_FACTOR

USER, PASSWORD = "carol", "carol-secret-3"
QUICK = 10.0 * TIME_FACTOR

BODIES = [messages.simple(1), *list(messages.tricky_messages().values())[:3],
          messages.big_message(256 * 1024)]


class ImapBackend:
    """A scripted IMAP server; faults through its command hooks."""

    def __init__(self, bodies: list[bytes]):
        self.cut_after: int | None = None
        self.refuse_commit = False
        self.fake = FakeImap(users={USER: PASSWORD},
                             messages=[Message(n, raw) for n, raw in enumerate(bodies, 1)],
                             hooks={"UID FETCH": self._fetch, "UID STORE": self._store})
        self.fake.start()

    def gateway(self, make_gateway):
        return make_gateway(self.fake.address, None, upstream_tls="none")

    def _fetch(self, session, cmd) -> bool:
        if self.cut_after is None or b"BODY" not in cmd.args.upper():
            return False
        uid = int(cmd.args.split()[0])
        body = self.fake.message(uid).body
        session.send(b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (self.fake.sequence(uid), uid, len(body))
                     + body[:self.cut_after])
        session.close()
        return True

    def _store(self, session, cmd) -> bool:
        if self.refuse_commit and b"+FLAGS" in cmd.args:
            session.line(f"{cmd.tag} NO [SERVERBUG] refused")
            return True
        return False

    def count(self) -> int:
        return len(self.fake.uids())

    def close(self) -> list:
        self.fake.close()
        return self.fake.errors


class JmapBackend:
    """A scripted JMAP server; faults through its knobs."""

    def __init__(self, bodies: list[bytes]):
        self.fake = FakeJmap(users={USER: PASSWORD})
        self.fake.start()
        for raw in bodies:
            self.fake.add_message(raw)

    def gateway(self, make_gateway):
        upstream = {"protocol": "jmap", "url": self.fake.url, "address": None, "tls": None,
                    "server_name": None}
        return make_gateway(None, deep_merge({"upstream": upstream}, {}))

    @property
    def cut_after(self):
        return self.fake.download_cut.get("*")

    @cut_after.setter
    def cut_after(self, octets: int) -> None:
        self.fake.download_cut = {"*": octets}

    @property
    def refuse_commit(self) -> bool:
        return self.fake.destroy_fail == "*"

    @refuse_commit.setter
    def refuse_commit(self, refuse: bool) -> None:
        self.fake.destroy_fail = "*" if refuse else set()

    def count(self) -> int:
        return len(self.fake.messages())

    def close(self) -> list:
        self.fake.stop()
        return self.fake.errors


@pytest.fixture(params=["imap", "jmap"])
def store(request):
    backend = (ImapBackend if request.param == "imap" else JmapBackend)(BODIES)
    yield backend
    errors = backend.close()
    assert not errors, errors


def login(g) -> RawPop3:
    c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15)
    try:
        c.login(USER, PASSWORD)
    except BaseException:
        c.close()
        raise
    return c


def test_listing_and_octets_are_the_servers(store, make_gateway):
    g = store.gateway(make_gateway)
    with login(g) as c:
        assert c.cmd("STAT").line == b"+OK %d %d" % (len(BODIES), sum(map(len, BODIES)))
        sizes = [int(line.split()[1]) for line in c.cmd("LIST", multiline=True).body_lines()]
        assert sizes == [len(raw) for raw in BODIES]
        uidls = [line.split()[1] for line in c.cmd("UIDL", multiline=True).body_lines()]
        assert len(set(uidls)) == len(BODIES), "UIDLs are unique"
        for n, raw in enumerate(BODIES, 1):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.line == b"+OK %d octets" % len(raw)
            assert r.raw == b"+OK %d octets\r\n" % len(raw) + stuffed(raw) + b".\r\n", f"message {n}"
            assert c.cmd(f"TOP {n} 2", multiline=True).body == expected_top(raw, 2)
        assert c.quit().ok
    assert store.count() == len(BODIES)


def test_a_message_cut_off_is_never_terminated_and_deletes_nothing(store, make_gateway):
    g = store.gateway(make_gateway)
    big = len(BODIES)
    with login(g) as c:
        assert c.cmd("DELE 1").ok
        store.cut_after = 100_000
        c.send_line(f"RETR {big}")
        assert c.read_line().startswith(b"+OK")
        received = c.read_until_eof(timeout=QUICK)
    assert not received.endswith(TERMINATOR) and not received.endswith(b".\r\n")
    assert stuffed(BODIES[-1]).startswith(received), "a prefix of the message, nothing else"
    assert 0 < len(received) < len(BODIES[-1])
    assert store.count() == len(BODIES), "the session failed: its DELE is not applied"


def test_only_a_confirmed_quit_removes_and_only_what_was_deleted(store, make_gateway):
    g = store.gateway(make_gateway)
    c = login(g)
    assert c.cmd("DELE 1").ok
    c.abort()
    with login(g) as c:
        assert c.cmd("STAT").line.startswith(b"+OK %d " % len(BODIES)), "the abandoned DELE"
        assert c.cmd("DELE 2").ok and c.cmd("DELE 4").ok
        assert c.quit().ok
    assert store.count() == len(BODIES) - 2
    with login(g) as c:
        sizes = [int(line.split()[1]) for line in c.cmd("LIST", multiline=True).body_lines()]
        assert sizes == [len(BODIES[0]), len(BODIES[2]), len(BODIES[4])]


def test_a_refused_removal_is_an_error_at_quit_and_removes_nothing(store, make_gateway):
    g = store.gateway(make_gateway)
    store.refuse_commit = True
    with login(g) as c:
        assert c.cmd("DELE 1").ok and c.cmd("DELE 3").ok
        r = c.quit()
        assert r.err, r
    assert store.count() == len(BODIES)
