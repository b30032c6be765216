# SPDX-License-Identifier: Apache-2.0
"""What a worker keeps for JMAP between POP3 sessions (JmapWorkerCache).

Connections: a client polling every few minutes would otherwise pay a TCP and a TLS
handshake upstream on every poll. Nothing of a user stays on a kept connection: every
request carries its own Authorization, so the tests alternate users over one connection
and check that each sees only their own mail, against a real Cyrus over HTTPS (the
connection identified by its local port, read from the gateway's own sockets) and
against the scripted server (which numbers its connections). A connection the server
closed while parked is replaced without the client noticing, and an egress proxy
(HTTP_PROXY) carries the requests.

Known mailboxes: the same user's next open is one request (Mailbox/get, Email/query and
Email/get) instead of the session resource, its redirect and Mailbox/get. Every request
still authenticates, so a password changed upstream is refused at once; a mailbox made
again under the same name, or an API that moved, sends the open back to the start.
"""

from __future__ import annotations

import os

from harness import messages
from harness.egress_proxy import EgressProxy
from harness.clients import RawPop3
from harness.messages import as_retrieved
from harness.tcp_table import ESTABLISHED, LOOPBACK, tcp_sockets
from harness.fake_jmap import SESSION_PATHS, Response
from test_jmap import PASSWORD, USER, fill, jmap_overrides, login, make_fake  # noqa: F401 (fixture)
from test_operations import scrape, start_gateway

OTHER, OTHER_PASSWORD = "dave", "dave-secret-4"
# One worker, so that every session meets the same kept connections; the readiness probe
# (a connection and a request of its own) only at start, so that it never lands mid-test.
ONE_WORKER = {"workers": 1, "metrics": {"probe_interval": "1h"}}


def established_to(pid: int, port: int) -> set[int]:
    """The local ports of pid's ESTABLISHED IPv4 TCP connections to 127.0.0.1:port."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return {s.local_port for s in tcp_sockets()
            if s.state == ESTABLISHED and s.inode in inodes
            and (s.remote_host, s.remote_port) == (LOOPBACK, port)}


def retr_all(c) -> list[bytes]:
    count = int(c.cmd("STAT").line.split()[1])
    return [c.cmd(f"RETR {n}", multiline=True).body for n in range(1, count + 1)]


def test_users_take_turns_on_one_kept_connection_to_cyrus(cyrus, make_gateway):
    """Alice, bob, alice, bob, each a session of its own: one TLS connection to Cyrus's
    JMAP serves all four, and each user gets exactly their own messages."""
    mail = {"alice": [messages.simple(11), messages.simple(12)], "bob": [messages.simple(21)]}
    for user, raws in mail.items():
        cyrus.clear(user)
        for raw in raws:
            cyrus.append(user, raw)
    g, _ = start_gateway(make_gateway, None,
                         jmap_overrides(cyrus.jmap_https_session_url, ONE_WORKER))
    seen: list[set[int]] = []
    for user in ["alice", "bob", "alice", "bob"]:
        with login(g, user, cyrus.password(user)) as c:
            assert retr_all(c) == [as_retrieved(raw) for raw in mail[user]], user
            assert c.quit().ok
        # QUIT is answered once the last download ended: by then the connection is parked.
        seen.append(established_to(g.proc.pid, cyrus.https_port))
    assert len(seen[0]) == 1, seen
    assert all(ports == seen[0] for ports in seen), f"a new connection per session: {seen}"
    for user, raws in mail.items():
        assert len(cyrus.messages(user)) == len(raws), "nothing deleted"


def test_one_connection_for_every_session_and_user(make_fake, make_gateway):
    fake = make_fake(users={USER: PASSWORD, OTHER: OTHER_PASSWORD})
    raws = [messages.simple(1), messages.big_message(200 * 1024, seed="kept")]
    fill(fake, raws)
    g, _ = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    sessions = []
    for user, password in [(USER, PASSWORD), (OTHER, OTHER_PASSWORD), (USER, PASSWORD)]:
        first = len(fake.requests)
        with login(g, user, password) as c:
            assert retr_all(c) == [as_retrieved(raw) for raw in raws]
            assert c.quit().ok
        sessions.append((fake.auth_header(user), fake.requests[first:]))
    connections = {r.conn for _, requests in sessions for r in requests
                   if r.header("authorization")}
    assert len(connections) == 1, connections
    for expected, requests in sessions:
        assert {r.header("authorization") for r in requests
                if r.header("authorization")} == {expected}, "each request its own user's"


def test_a_kept_connection_the_server_closed_is_replaced(make_fake, make_gateway):
    fake = make_fake()
    raws = [messages.simple(1), messages.simple(2)]
    fill(fake, raws)
    g, _ = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    with login(g) as c:
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    before = fake.connections
    fake.drop_connections()  # as a server's keep-alive timeout does
    first = len(fake.requests)
    with login(g) as c:
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    assert {r.conn for r in fake.requests[first:]
            if r.header("authorization")} == {before + 1}, "one new connection"


def test_requests_go_through_the_egress_proxy(make_fake, make_gateway):
    """HTTP_PROXY carries a plain-HTTP JMAP upstream's requests in absolute form, one per
    connection through this proxy; with the server's host in NO_PROXY they go direct."""
    fake = make_fake()
    raws = [messages.simple(1)]
    fill(fake, raws)
    with EgressProxy() as proxy:
        g, _ = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER),
                             env={"HTTP_PROXY": proxy.url})
        with login(g) as c:
            assert retr_all(c) == [as_retrieved(raw) for raw in raws]
            assert c.quit().ok
        # Every request the server answered came through the proxy: the readiness
        # probe's, the session resource, the API calls and the download.
        through = sorted(f"{r.method} {fake.base_url}{r.path}" for r in fake.requests)
        assert sorted(proxy.request_lines()) == through
        assert any(line.startswith("POST ") for line in through), through
        assert not proxy.errors, proxy.errors

        direct, _ = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER),
                                  env={"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
        lines_before = len(proxy.request_lines())
        with login(direct) as c:
            assert retr_all(c) == [as_retrieved(raw) for raw in raws]
            assert c.quit().ok
        assert len(proxy.request_lines()) == lines_before, "NO_PROXY lists the server's host"


def session_requests(fake, first: int) -> list:
    """The requests after the first `first` that carried credentials (not the probe's)."""
    with fake.lock:
        return [r for r in fake.requests[first:] if r.header("authorization")]


def call_names(request) -> list[str]:
    return [c[0] for c in request.body["methodCalls"]]


def reused(port: int) -> float:
    return scrape(port).value("popbridge_upstream_logins_reused_total")


def learned(make_fake, make_gateway, raws, **fake_options):
    """A scripted server holding raws, and a one-worker gateway whose first session has
    learned where the mailbox is (the next open of USER is a recalled one)."""
    fake = make_fake(**fake_options)
    fill(fake, raws)
    g, port = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    with login(g) as c:
        assert c.quit().ok
    return fake, g, port


def test_the_same_users_next_open_is_one_request(make_fake, make_gateway):
    fake = make_fake(users={USER: PASSWORD, OTHER: OTHER_PASSWORD}, well_known_redirect=307)
    raws = [messages.simple(1), messages.simple(2)]
    ids = fill(fake, raws)
    g, port = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    first = len(fake.requests)
    with login(g) as c:
        assert c.quit().ok
    assert [r.method for r in session_requests(fake, first)] == ["GET", "GET", "POST", "POST"], \
        "the session resource, its redirect, Mailbox/get, the page"
    assert reused(port) == 0

    first = len(fake.requests)
    with login(g) as c:
        assert c.cmd("UIDL", multiline=True).body_lines() == [
            f"{n} {email_id}".encode() for n, email_id in enumerate(ids, 1)]
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    opening = [r for r in session_requests(fake, first) if r.method == "POST"]
    assert [r.method for r in session_requests(fake, first)][:1] == ["POST"], "no session resource"
    assert len(opening) == 1 and call_names(opening[0]) == ["Mailbox/get", "Email/query", "Email/get"]
    assert reused(port) == 1

    first = len(fake.requests)
    with login(g, OTHER, OTHER_PASSWORD) as c:
        assert c.quit().ok
    assert [r.path for r in session_requests(fake, first)][0] in SESSION_PATHS, "another user: afresh"
    assert reused(port) == 1


def test_remember_session_0s_opens_afresh_every_time(make_fake, make_gateway):
    """upstream.remember_session: 0s: each open reads the session resource and the mailbox
    again; the kept connections stay (one connection for every session)."""
    fake = make_fake()
    raws = [messages.simple(1)]
    fill(fake, raws)
    overrides = jmap_overrides(fake.url, {**ONE_WORKER, "upstream": {"remember_session": "0s"}})
    g, port = start_gateway(make_gateway, None, overrides)
    for _ in range(3):
        first = len(fake.requests)
        with login(g) as c:
            assert retr_all(c) == [as_retrieved(raw) for raw in raws]
            assert c.quit().ok
        opening = session_requests(fake, first)
        assert opening[0].method == "GET" and opening[0].path in SESSION_PATHS, "the session resource"
        posts = [call_names(r) for r in opening if r.method == "POST"]
        assert posts[0] == ["Mailbox/get"], posts
    assert reused(port) == 0
    with fake.lock:
        assert len({r.conn for r in fake.requests if r.header("authorization")}) == 1, "one kept connection"


def test_a_password_changed_upstream_is_refused_at_once(make_fake, make_gateway):
    fake, g, _ = learned(make_fake, make_gateway, [messages.simple(1)])
    fake.users[USER] = "changed-upstream-9"
    first = len(fake.requests)
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [AUTH] ")
    refused = session_requests(fake, first)
    assert [(r.method, r.status) for r in refused] == [("POST", 401)], "the recalled open, refused"
    with login(g, USER, "changed-upstream-9") as c:
        assert c.cmd("STAT").line.startswith(b"+OK 1 ")
        assert c.quit().ok
    first = len(fake.requests)
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [AUTH] ")
    assert [(r.method, r.status) for r in session_requests(fake, first)] == [("GET", 401)], \
        "the refused password's entry was forgotten: a whole open"


def test_a_mailbox_made_again_under_its_name_is_read_anew(make_fake, make_gateway):
    fake = make_fake()
    fake.add_mailbox("Work")
    old = fake.add_message(messages.simple(1), mailbox="Work")
    g, _ = start_gateway(make_gateway, None,
                         jmap_overrides(fake.url, {**ONE_WORKER, "upstream": {"mailbox": "Work"}}))
    with login(g) as c:
        assert c.cmd("UIDL", multiline=True).body_lines() == [f"1 {old}".encode()]
        assert c.quit().ok
    fake.rename_mailbox("Work", "Work (old)")
    fake.add_mailbox("Work")
    new = [fake.add_message(messages.simple(n), mailbox="Work") for n in (2, 3)]
    first = len(fake.requests)
    with login(g) as c:
        assert c.cmd("UIDL", multiline=True).body_lines() == [
            f"{n} {email_id}".encode() for n, email_id in enumerate(new, 1)]
        assert retr_all(c) == [as_retrieved(messages.simple(n)) for n in (2, 3)]
        assert c.quit().ok
    opening = [r for r in session_requests(fake, first) if r.method == "POST"]
    assert [call_names(r) for r in opening] == [["Mailbox/get", "Email/query", "Email/get"],
                                                ["Email/query", "Email/get"]], \
        "the recalled id no longer named Work: the page read again with the new one"


def test_an_api_that_moved_sends_the_open_back_to_the_session_resource(make_fake, make_gateway):
    raws = [messages.simple(1)]
    fake, g, _ = learned(make_fake, make_gateway, raws)
    refused = []

    def moved_once(request):
        if request.method == "POST" and not refused:
            refused.append(request.number)
            return Response(status=404, body=b"no such API here\n",
                            headers={"Content-Type": "text/plain"})
        return None

    fake.before_request = moved_once
    first = len(fake.requests)
    with login(g) as c:
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    methods = [(r.method, r.status) for r in session_requests(fake, first)]
    assert methods[:3] == [("POST", 404), ("GET", 200), ("POST", 200)], methods


def test_a_changed_session_state_sends_the_open_back_to_the_session_resource(make_fake, make_gateway):
    """RFC 8620 section 3.4: every API answer carries the session's state; when it is not
    the state of the session resource remembered, the session resource is read again."""
    raws = [messages.simple(1)]
    fake, g, _ = learned(make_fake, make_gateway, raws)
    fake.session_state = "s2"
    first = len(fake.requests)
    with login(g) as c:
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    opening = [(r.method, r.path in SESSION_PATHS) for r in session_requests(fake, first)][:4]
    assert opening == [("POST", False), ("GET", True), ("POST", False), ("POST", False)], opening
    first = len(fake.requests)
    with login(g) as c:
        assert c.quit().ok
    assert [r.method for r in session_requests(fake, first)] == ["POST"], "the new state remembered"


def test_a_page_the_server_refuses_sends_the_open_back_to_the_start(make_fake, make_gateway):
    """A recalled open asks for a page of the remembered maxObjectsInGet; a server that
    refuses it now (requestTooLarge: a lower limit, say) gets a whole open, not an error."""
    raws = [messages.simple(1), messages.simple(2)]
    fake, g, _ = learned(make_fake, make_gateway, raws)
    refused = []

    def too_large_once(args, call_id):
        if refused:
            return None
        refused.append(call_id)
        return [["error", {"type": "requestTooLarge"}, call_id]]

    fake.method_hooks["Email/query"] = too_large_once
    first = len(fake.requests)
    with login(g) as c:
        assert retr_all(c) == [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    assert refused, "the hook answered"
    assert [r.method for r in session_requests(fake, first)][:2] == ["POST", "GET"]
