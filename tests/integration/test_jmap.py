# SPDX-License-Identifier: Apache-2.0
"""upstream.protocol: jmap: POP3 clients served from a JMAP mail server (RFC 8620/8621).

The first tests put a real Cyrus IMAP 3.6 (its httpd serving JMAP over HTTPS, the
certificate verified; harness/cyrus.py) behind the gateway and compare what POP3 clients see with what Cyrus itself says over
IMAP (EMAILID, RFC822.SIZE, the octets). The rest use the scripted JMAP server
(harness/fake_jmap.py) for what a healthy server never does: downloads cut mid-blob,
Email/set refusing ids, credentials revoked after login, 503 with Retry-After, sizes
that lie, and paging with a small maxObjectsInGet.
"""

from __future__ import annotations

import base64
import os

import pytest

from harness import messages
from harness.clients import RawPop3, curl_pop3s
from harness.fake_jmap import SESSION_PATHS, FakeJmap, Throttle
from harness.gateway import deep_merge
from harness.messages import as_retrieved, expected_top
from harness.wait import TIME_FACTOR, wait_until

USER, PASSWORD = "carol", "carol-secret-3"
QUICK = 10.0 * TIME_FACTOR


def jmap_overrides(url: str, extra=None) -> dict:
    """The upstream section for a JMAP server: the url instead of address and tls."""
    upstream = {"protocol": "jmap", "url": url, "address": None, "tls": None,
                "server_name": None}
    return deep_merge({"upstream": upstream}, extra or {})


def login(g, user: str = USER, password: str = PASSWORD) -> RawPop3:
    c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15)
    try:
        c.login(user, password)
    except BaseException:
        c.close()
        raise
    return c


def uidl_map(c: RawPop3) -> dict[int, str]:
    r = c.cmd("UIDL", multiline=True)
    assert r.ok, r
    return {int(n): uidl for n, uidl in (line.decode().split() for line in r.body_lines())}


def list_map(c: RawPop3) -> dict[int, int]:
    r = c.cmd("LIST", multiline=True)
    assert r.ok, r
    return {int(n): int(size) for n, size in (line.split() for line in r.body_lines())}


# ------------------------------------------------------------------ Cyrus

CYRUS_MESSAGES = [
    messages.simple(1),
    # 8-bit header octets, a line starting with "." (stuffed on the wire), no final CRLF
    b"From: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n"
    b"Message-ID: <cyrus-2@example.org>\r\n\r\n.hidden line\r\n..two dots\r\nlast",
    messages.big_message(300 * 1024, seed="cyrus"),
]


@pytest.fixture(scope="module")
def cyrus_gateway(pki, cyrus, popbridge_bin):
    from harness.gateway import Gateway
    g = Gateway(pki, None, jmap_overrides(cyrus.jmap_https_session_url), binary=popbridge_bin)
    g.start()
    yield g
    g.close()


def test_cyrus_listing_and_octets_match_what_cyrus_says_over_imap(cyrus, cyrus_gateway):
    user = "alice"
    cyrus.clear(user)
    for raw in CYRUS_MESSAGES:
        cyrus.append(user, raw)
    # Cyrus's own view: the Email id (IMAP EMAILID) and RFC822.SIZE of every message.
    imap_view = {info["emailid"]: info["size"] for info in cyrus.messages(user).values()}
    with login(cyrus_gateway, user, cyrus.password(user)) as c:
        uidls = uidl_map(c)
        sizes = list_map(c)
        assert sorted(uidls.values()) == sorted(imap_view), "the UIDL is the Email id"
        assert {uidls[n]: sizes[n] for n in uidls} == imap_view
        assert c.cmd("STAT").line == b"+OK %d %d" % (len(CYRUS_MESSAGES),
                                                      sum(map(len, CYRUS_MESSAGES)))
        by_id = {info["emailid"]: uid for uid, info in cyrus.messages(user).items()}
        for n, emailid in uidls.items():
            raw = cyrus.fetch(user, by_id[emailid])
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.line == b"+OK %d octets" % len(raw)
            assert r.body == as_retrieved(raw), f"message {n} differs"
            top = c.cmd(f"TOP {n} 1", multiline=True)
            assert top.body == expected_top(raw, 1)
        assert c.quit().ok
    # Nothing was deleted and nothing marked \Seen by reading.
    assert len(cyrus.messages(user)) == len(CYRUS_MESSAGES)


def test_cyrus_dele_removes_the_message_at_quit(cyrus, cyrus_gateway):
    user = "bob"
    cyrus.clear(user)
    for raw in CYRUS_MESSAGES[:2]:
        cyrus.append(user, raw)
    with login(cyrus_gateway, user, cyrus.password(user)) as c:
        uidls = uidl_map(c)
        assert c.cmd("DELE 1").ok
        assert len(cyrus.messages(user)) == 2, "nothing happens before QUIT"
        assert c.quit().ok
    left = [info["emailid"] for info in cyrus.messages(user).values()]
    assert left == [uidls[2]]


def test_cyrus_move_makes_the_folder_and_moves_the_message(cyrus, make_gateway):
    user = "bob"
    cyrus.clear(user)
    for raw in CYRUS_MESSAGES[:2]:
        cyrus.append(user, raw)
    g = make_gateway(None, jmap_overrides(cyrus.jmap_https_session_url, {
        "upstream": {"on_delete": {"action": "move", "folder": "POP3 Deleted"}}}))
    with login(g, user, cyrus.password(user)) as c:
        uidls = uidl_map(c)
        assert c.cmd("DELE 1").ok
        r = c.quit()
        assert r.ok, [line for line in open(g.log_path, errors="replace") if "update" in line
                      or "folder" in line]
    [[_, mailboxes, _]] = cyrus.jmap(user, [["Mailbox/get", {"accountId": user, "ids": None}, "m"]])
    [folder] = [m["id"] for m in mailboxes["list"] if m["name"] == "POP3 Deleted"]
    [[_, moved, _]] = cyrus.jmap(user, [["Email/query", {"accountId": user,
                                                          "filter": {"inMailbox": folder}}, "q"]])
    assert moved["ids"] == [uidls[1]], "the message is in the folder, under the same id"
    assert [info["emailid"] for info in cyrus.messages(user).values()] == [uidls[2]]
    with login(g, user, cyrus.password(user)) as c:  # the folder exists now: no second create
        assert c.cmd("DELE 1").ok
        r = c.quit()
        assert r.ok, open(g.log_path, errors="replace").read()[-3000:]
    assert cyrus.messages(user) == {}
    assert open(g.log_path, errors="replace").read().count("folder_created") == 1


def test_readyz_probes_the_session_resource(cyrus, cyrus_gateway, make_gateway):
    import urllib.error
    import urllib.request
    from harness.ports import free_ports
    [port] = free_ports(1, "127.0.0.1")
    g = make_gateway(None, jmap_overrides(cyrus.jmap_https_session_url,
                                          {"metrics": {"address": f"127.0.0.1:{port}"}}))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_until(ready, QUICK, "/readyz to report the JMAP upstream reachable")
    assert "upstream_reachable" in open(g.log_path, errors="replace").read()


def test_cyrus_curl_and_a_wrong_password(cyrus, cyrus_gateway, pki):
    user = "alice"
    cyrus.clear(user)
    cyrus.append(user, CYRUS_MESSAGES[0])
    p = curl_pop3s(cyrus_gateway.pop3s_port, "1", user, cyrus.password(user), pki.ca)
    assert p.returncode == 0, p.stderr
    assert p.stdout == as_retrieved(CYRUS_MESSAGES[0])
    with RawPop3(cyrus_gateway.pop3s_port, tls_context=pki.client_context(), timeout=15) as c:
        assert c.cmd(f"USER {user}").ok
        assert c.cmd("PASS not-the-password").line.startswith(b"-ERR [AUTH] ")


# ------------------------------------------------------------------ scripted server

@pytest.fixture
def make_fake():
    made: list[FakeJmap] = []

    def make(**kwargs) -> FakeJmap:
        kwargs.setdefault("users", {USER: PASSWORD})
        fake = FakeJmap(**kwargs)
        fake.start()
        made.append(fake)
        return fake

    yield make
    errors = []
    for fake in made:
        fake.stop()
        errors += fake.errors
    assert not errors, errors


@pytest.fixture
def bridge(make_gateway):
    def make(fake: FakeJmap, extra=None):
        return make_gateway(None, jmap_overrides(fake.url, extra))
    return make


def fill(fake: FakeJmap, bodies) -> list[str]:
    return [fake.add_message(raw) for raw in bodies]


def test_snapshot_pages_and_the_session_redirect(make_fake, bridge):
    fake = make_fake(max_objects_in_get=2, well_known_redirect=301)
    bodies = list(messages.tricky_messages().values())[:5]
    ids = fill(fake, bodies)
    g = bridge(fake)
    with login(g) as c:
        assert uidl_map(c) == {n + 1: email_id for n, email_id in enumerate(ids)}
        assert list_map(c) == {n + 1: len(raw) for n, raw in enumerate(bodies)}
        for n, raw in enumerate(bodies, 1):
            assert c.cmd(f"RETR {n}", multiline=True).body == as_retrieved(raw)
        assert c.quit().ok
    queries = fake.api_calls("Email/query")
    assert [q[1]["position"] for q in queries] == [0, 2, 4], "pages of maxObjectsInGet"
    assert all(q[1]["sort"] == [{"property": "receivedAt", "isAscending": True}] for q in queries)
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    # The readiness probe asks for the session resource without credentials; every
    # request of the session carries the client's.
    sessions = [r for r in fake.requests if not (r.method == "GET" and r.path in SESSION_PATHS
                                                 and r.header("authorization") is None)]
    assert {r.header("authorization") for r in sessions} == {expected}
    assert not fake.api_calls("Email/set"), "nothing deleted"


def test_dele_destroys_only_at_quit_and_only_what_was_deleted(make_fake, bridge):
    fake = make_fake()
    ids = fill(fake, [messages.simple(n) for n in (1, 2, 3)])
    g = bridge(fake)
    # A client that goes away without QUIT deletes nothing.
    c = login(g)
    assert c.cmd("DELE 2").ok
    c.abort()
    with login(g) as c:
        assert c.cmd("STAT").line.startswith(b"+OK 3 ")
        assert c.cmd("DELE 1").ok and c.cmd("DELE 3").ok
        assert c.cmd("RSET").ok and c.cmd("DELE 1").ok and c.cmd("DELE 3").ok
        assert c.quit().ok
    [call] = fake.api_calls("Email/set")
    assert call[1]["destroy"] == [ids[0], ids[2]]
    assert [e.id for e in fake.messages()] == [ids[1]]


def test_a_refused_destroy_fails_quit(make_fake, bridge):
    fake = make_fake()
    ids = fill(fake, [messages.simple(n) for n in (1, 2)])
    fake.destroy_fail = {ids[1]}
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("DELE 1").ok and c.cmd("DELE 2").ok
        r = c.quit()
        assert r.err, r
    assert ids[1] in [e.id for e in fake.messages()]


def test_a_download_cut_mid_blob_leaves_the_client_without_a_terminator(make_fake, bridge):
    fake = make_fake()
    big = messages.big_message(200 * 1024)
    [email_id] = fill(fake, [big])
    fake.download_cut = {email_id: 50_000}
    g = bridge(fake)
    c = login(g)
    with c:
        c.send_line("RETR 1")
        first = c.read_line()
        assert first.startswith(b"+OK")
        rest = c.read_until_eof()
        assert 0 < len(rest) < len(big)
        assert not rest.endswith(b"\r\n.\r\n"), "an incomplete message must not look complete"
    assert [e.id for e in fake.messages()] == [email_id]


def test_login_refusals_map_to_pop3_codes(make_fake, bridge, ctx):
    fake = make_fake()
    fill(fake, [messages.simple(1)])
    g = bridge(fake)
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd("PASS wrong").line.startswith(b"-ERR [AUTH] ")
    fake.throttles = [Throttle("Email/query", status=503, retry_after=60, times=1)]
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [SYS/TEMP] ")
    wait_until(lambda: "retry after 60" in g.log_text() and "upstream_held_back" in g.log_text(),
               QUICK, "the gateway to log the server's Retry-After and hold logins back")
    # Until then the server is not asked at all, whichever worker takes the next logins.
    # (That the hold ends is the unit tests' business: upstream_hold_off_test.cc.)
    asked = len(fake.requests)
    for _ in range(3):
        with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
            assert c.cmd(f"USER {USER}").ok
            assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [SYS/TEMP] ")
    assert len(fake.requests) == asked, "a held-back login must not reach the server"
    assert g.log_text().count("held back: the server asked to wait") == 3


def test_a_session_resource_redirect_to_another_origin_is_refused(make_fake, bridge, ctx):
    """The credentials travel with every request: only to the origin the operator named."""
    fake = make_fake(well_known_redirect=301)
    fill(fake, [messages.simple(1)])
    assert fake.session_url.startswith("http://127.0.0.1:")
    g = bridge(fake, {"upstream": {"url": fake.url.replace("127.0.0.1", "localhost")}})
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [SYS/PERM] ")
    wait_until(lambda: "redirects to another origin" in g.log_text(), QUICK,
               "the gateway to log the refused redirect")
    assert not [r for r in fake.requests if r.path != "/.well-known/jmap"
                and r.header("authorization") is not None], "credentials followed the redirect"


def test_credentials_revoked_after_login(make_fake, bridge):
    fake = make_fake()
    fill(fake, [messages.simple(1)])
    g = bridge(fake)
    with login(g) as c:
        fake.unauthorized_from = len(fake.requests) + 1
        r = c.cmd("RETR 1")
        assert r.err, r
        assert not c.buffered, "no octet of the message"


def test_top_stops_the_download_and_sizes_are_checked(make_fake, bridge):
    fake = make_fake()
    big = messages.big_message(16 * 1024 * 1024)
    small = messages.simple(2)
    big_id, small_id = fill(fake, [big, small])
    fake.size_lie = {small_id: len(small) + 10}
    g = bridge(fake)
    with login(g) as c:
        assert list_map(c)[2] == len(small) + 10
        top = c.cmd("TOP 1 2", multiline=True)
        assert top.body == expected_top(big, 2)
        # Served as it really is, with its real size.
        r = c.cmd("RETR 2", multiline=True)
        assert r.line == b"+OK %d octets" % len(small)
        assert r.body == as_retrieved(small)
        assert c.quit().ok
    [download] = [r for r in fake.requests if r.path.startswith("/jmap/download/") and big_id in r.path]
    wait_until(lambda: download.sent is not None, QUICK, "the download to end")
    assert download.sent < len(big), "TOP read the whole message"


@pytest.mark.skipif(os.environ.get("POPBRIDGE_SANITIZED") == "1",
                    reason="AddressSanitizer's quarantine keeps freed buffers: memory says nothing")
def test_a_big_message_streams_without_being_held_whole(make_fake, bridge):
    fake = make_fake()
    big = messages.big_message(48 * 1024 * 1024)
    fill(fake, [big])
    g = bridge(fake)

    def peak_kib() -> int:
        with open(f"/proc/{g.proc.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    with login(g) as c:
        before = peak_kib()
        r = c.cmd("RETR 1", multiline=True, timeout=60 * TIME_FACTOR)
        assert r.body == as_retrieved(big)
        grown = peak_kib() - before
        print(f"peak memory grew by {grown} KiB relaying a 48 MiB message")
        assert grown < 16 * 1024, f"the gateway's peak memory grew by {grown} KiB for a 48 MiB message"
        assert c.quit().ok


def test_hide_sets_the_keyword_and_the_next_session_leaves_it_out(make_fake, bridge):
    fake = make_fake()
    ids = fill(fake, [messages.simple(n) for n in (1, 2)])
    g = bridge(fake, {"upstream": {"on_delete": {"action": "hide"}}})
    with login(g) as c:
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    [call] = fake.api_calls("Email/set")
    assert call[1]["update"] == {ids[0]: {"keywords/$POP3Deleted": True}}
    assert len(fake.messages()) == 2, "hidden, not removed"
    with login(g) as c:
        assert uidl_map(c) == {1: ids[1]}
