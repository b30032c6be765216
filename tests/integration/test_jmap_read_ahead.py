# SPDX-License-Identifier: Apache-2.0
"""limits.read_ahead with a JMAP upstream: after RETR n-1 and n, the messages after n that
fit in the read-ahead budget are downloaded side by side, a few connections at once, so
the round trips overlap; their RETRs are answered from memory.

Against a real Cyrus over HTTPS: every message byte-exact against what Cyrus says over
IMAP, nothing marked \\Seen. Against the scripted server: the downloads run on several
connections at once, and a download cut short or of another size than listed is never
served from the read-ahead (the RETR fetches it again and says what is wrong)."""

from __future__ import annotations

import urllib.parse

from harness import messages
from harness.fake_jmap import Throttle
from harness.messages import as_retrieved
from harness.wait import wait_until
from test_jmap import QUICK, fill, jmap_overrides, login, make_fake  # noqa: F401 (fixture)
from test_operations import scrape, start_gateway
from test_read_ahead import read_ahead_counts

ONE_WORKER = {"workers": 1, "metrics": {"probe_interval": "1h"}}


def downloads(fake) -> list:
    with fake.lock:
        return [r for r in fake.requests if r.method == "GET" and "/download/" in r.path]


def test_cyrus_messages_read_ahead_arrive_byte_exact_and_unseen(cyrus, make_gateway):
    user = "alice"
    cyrus.clear(user)
    raws = [messages.simple(n) for n in range(1, 8)]
    for raw in raws:
        cyrus.append(user, raw)
    g, port = start_gateway(make_gateway, None,
                            jmap_overrides(cyrus.jmap_https_session_url, ONE_WORKER))
    with login(g, user, cyrus.password(user)) as c:
        uidls = {int(n): emailid for n, emailid in
                 (line.decode().split() for line in c.cmd("UIDL", multiline=True).body_lines())}
        by_number = {n: c.cmd(f"RETR {n}", multiline=True).body for n in range(1, len(raws) + 1)}
        assert c.quit().ok
    # RETR n is the message UIDL n names, byte for byte as Cyrus gives it over IMAP.
    imap = {info["emailid"]: uid for uid, info in cyrus.messages(user).items()}
    assert sorted(imap) == sorted(uidls.values())
    for n, body in by_number.items():
        assert body == as_retrieved(cyrus.fetch(user, imap[uidls[n]])), n
    assert sorted(by_number.values()) == sorted(as_retrieved(raw) for raw in raws)
    assert wait_until(lambda: read_ahead_counts(port) == {"used": 5, "unused": 0}, QUICK,
                      "the read-ahead counters", on_timeout=lambda: str(read_ahead_counts(port)))
    conn = cyrus.imap(user)
    try:
        conn.select("INBOX", readonly=True)
        typ, data = conn.uid("SEARCH", None, "SEEN")
        assert typ == "OK" and data == [b""], f"nothing \\Seen by reading ahead: {data}"
    finally:
        conn.logout()


def test_a_batch_downloads_on_several_connections_at_once(make_fake, make_gateway):
    fake = make_fake()
    raws = [messages.simple(n) for n in range(1, 11)]
    fill(fake, raws)
    g, port = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    with login(g) as c:
        assert [c.cmd(f"RETR {n}", multiline=True).body for n in range(1, 11)] == \
            [as_retrieved(raw) for raw in raws]
        assert c.quit().ok
    ahead = downloads(fake)[2:]
    assert len(downloads(fake)) == 10, "each message downloaded once"
    assert len({r.conn for r in ahead}) > 1, "side by side, not one after another"
    assert wait_until(lambda: read_ahead_counts(port) == {"used": 8, "unused": 0}, QUICK,
                      "the read-ahead counters", on_timeout=lambda: str(read_ahead_counts(port)))


def test_a_cut_or_missized_download_is_fetched_again_by_its_retr(make_fake, make_gateway):
    fake = make_fake()
    raws = [messages.simple(n) for n in range(1, 6)]
    ids = fill(fake, raws)
    fake.download_cut[ids[2]] = (10, 1)        # the read-ahead's download of 3 breaks off
    fake.size_lie[ids[3]] = len(raws[3]) + 3   # 4 is listed 3 octets larger than its blob
    g, port = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    with login(g) as c:
        for n in (1, 2, 3, 4, 5):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.body == as_retrieved(raws[n - 1]), n
            assert r.line == b"+OK %d octets" % len(raws[n - 1]), "the size it really has"
        assert c.quit().ok
    assert len(downloads(fake)) == 7, "3 and 4 again, by their RETRs"
    assert wait_until(lambda: read_ahead_counts(port) == {"used": 1, "unused": 0}, QUICK,
                      "the read-ahead counters", on_timeout=lambda: str(read_ahead_counts(port)))
    assert "size_mismatch" in g.log_text()


def test_a_batch_stops_starting_downloads_once_the_server_asks_to_back_off(make_fake, make_gateway):
    """A 503 to one download of the batch: those already running finish, none is started
    after it (the rest are fetched by their RETRs), and every RETR is still byte-exact.
    The other downloads of the first round are held until the gateway has counted the
    503, so that none of them can finish first and free a slot before it."""
    fake = make_fake()
    raws = [messages.simple(n) for n in range(1, 11)]
    ids = fill(fake, raws)
    blob = {fake.email(email_id).blob_id: n for n, email_id in enumerate(ids, 1)}
    third = urllib.parse.urlsplit(fake.download_url(fake.email(ids[2]).blob_id)).path
    third = third.rsplit("/", 1)[0] + "/"  # any file name
    fake.throttles.append(Throttle(third, status=503, retry_after=None, times=1))
    holds = [fake.hold_download(0, ids[n - 1]) for n in (4, 5, 6)]
    g, port = start_gateway(make_gateway, None, jmap_overrides(fake.url, ONE_WORKER))
    with login(g) as c:
        for n in (1, 2):
            assert c.cmd(f"RETR {n}", multiline=True).body == as_retrieved(raws[n - 1]), n
        wait_until(lambda: scrape(port).value("popbridge_upstream_errors_total",
                                              kind="throttled") == 1,
                   QUICK, "the gateway to count the 503")
        for hold in holds:
            assert hold.wait(QUICK), "the first round of the batch started"
            hold.release()
        for n in range(3, 11):
            assert c.cmd(f"RETR {n}", multiline=True).body == as_retrieved(raws[n - 1]), n
        assert c.quit().ok
    order = [blob[urllib.parse.unquote(r.path.split("/")[4])] for r in downloads(fake)]
    refused = order.index(3)
    again = order.index(3, refused + 1)  # by RETR 3, once the batch settled
    assert set(order[refused:again]) <= {3, 4, 5, 6}, \
        f"downloads started after the 503: {order[refused:again]} (all: {order})"
    assert sorted(order) == sorted(list(range(1, 11)) + [3])
