# SPDX-License-Identifier: Apache-2.0
"""Self-test of harness/fake_jmap.py: it must behave like a JMAP server (RFC 8620,
RFC 8621) before gateway tests rely on it, and each fault knob must do what its
docstring says. Plain urllib/http.client clients, no gateway, no fixed sleeps.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness.fake_jmap import CORE, MAIL, FakeJmap, Response, Throttle

USER, PASSWORD = "alice", "alice-secret-1"
TOKEN = "tok-alice-123"
USING = [CORE, MAIL]


def msg(n: int, body: str = "hello") -> bytes:
    return (f"From: Sender {n} <s{n}@example.org>\r\nTo: alice@example.org\r\n"
            f"Subject: message {n}\r\nMessage-ID: <m{n}@example.org>\r\n"
            f"Date: Mon, 01 Jan 2024 10:00:0{n % 10} +0200\r\n\r\n{body} {n}\r\n").encode()


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def jmap():
    with FakeJmap(users={USER: PASSWORD}, tokens={TOKEN: USER}) as server:
        yield server
        assert server.errors == []


def fetch_url(url: str, method: str = "GET", body: bytes = None, headers: dict = None,
         auth: str = basic()) -> tuple:
    """(status, headers, body) via urllib (follows redirects); HTTP errors are returned."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if auth:
        req.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def post_api(server: FakeJmap, request, auth: str = basic(), ctype: str = "application/json") -> tuple:
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    return fetch_url(server.api_url, "POST", body, {"Content-Type": ctype}, auth)


def api(server: FakeJmap, *calls, using=USING) -> list:
    status, headers, body = post_api(server, {"using": using, "methodCalls": [list(c) for c in calls]})
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    out = json.loads(body)
    assert out["sessionState"] == server.session_state
    return out["methodResponses"]


def one(server: FakeJmap, name: str, args: dict) -> list:
    [resp] = api(server, [name, args, "c0"])
    return resp


def session(server: FakeJmap) -> dict:
    status, _, body = fetch_url(server.url)
    assert status == 200
    return json.loads(body)


# ------------------------------------------------------------------ session

def test_session_object(jmap):
    s = session(jmap)
    core = s["capabilities"][CORE]
    for key in ("maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest", "maxConcurrentRequests",
                "maxCallsInRequest", "maxObjectsInGet", "maxObjectsInSet", "collationAlgorithms"):
        assert key in core
    assert core["maxObjectsInGet"] == 500
    assert s["capabilities"][MAIL] == {}
    assert list(s["accounts"]) == ["u1234"]
    assert MAIL in s["accounts"]["u1234"]["accountCapabilities"]
    assert s["primaryAccounts"] == {MAIL: "u1234"}
    assert s["username"] == USER
    base = f"http://127.0.0.1:{jmap.port}"
    assert s["apiUrl"] == base + "/jmap/api/"
    assert s["downloadUrl"] == base + "/jmap/download/{accountId}/{blobId}/{name}?accept={type}"
    assert s["uploadUrl"].startswith(base) and s["eventSourceUrl"].startswith(base)
    assert s["state"] == jmap.session_state
    assert jmap.url == base + "/.well-known/jmap"
    status, _, body = fetch_url(jmap.session_url)
    assert status == 200 and json.loads(body) == s


def test_session_limits_are_configurable():
    with FakeJmap(users={USER: PASSWORD}, account_id="acc9", max_objects_in_get=7) as server:
        s = session(server)
        assert s["capabilities"][CORE]["maxObjectsInGet"] == 7
        assert s["primaryAccounts"][MAIL] == "acc9"


@pytest.mark.parametrize("status", [301, 307])
def test_well_known_redirect(status):
    with FakeJmap(users={USER: PASSWORD}, well_known_redirect=status) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/.well-known/jmap")
        r = conn.getresponse()
        r.read()
        assert r.status == status
        assert r.getheader("Location") == server.session_url
        conn.close()
        # urllib follows it, keeping the Authorization header
        assert session(server)["username"] == USER
        assert [r.path for r in server.requests][-2:] == ["/.well-known/jmap", "/jmap/session"]


# ----------------------------------------------------------- authentication

@pytest.mark.parametrize("auth", [None, basic(USER, "wrong"), basic("mallory", PASSWORD),
                                  "Bearer nope", "Basic !!!notbase64"])
def test_bad_credentials_get_401_everywhere(jmap, auth):
    eid = jmap.add_message(msg(1))
    blob = jmap.email(eid).blob_id
    for url, method, body in [(jmap.url, "GET", None), (jmap.api_url, "POST", b"{}"),
                              (jmap.download_url(blob), "GET", None)]:
        status, headers, _ = fetch_url(url, method, body, {"Content-Type": "application/json"}, auth)
        assert status == 401, url
        assert headers["WWW-Authenticate"] == 'Basic realm="jmap"'


def test_bearer_token(jmap):
    status, _, body = fetch_url(jmap.url, auth="Bearer " + TOKEN)
    assert status == 200 and json.loads(body)["username"] == USER
    assert jmap.requests[-1].user == USER


# ------------------------------------------------------------------ Mailbox

def test_mailbox_get_and_query(jmap):
    resp = one(jmap, "Mailbox/get", {"accountId": "u1234", "ids": None})
    assert resp[0] == "Mailbox/get" and resp[2] == "c0"
    boxes = {m["role"]: m for m in resp[1]["list"]}
    assert {"inbox", "archive", "trash"} <= set(boxes)
    assert boxes["inbox"]["id"] == jmap.mailbox_id("INBOX")
    assert boxes["archive"]["name"] == "Archive"

    jmap.add_message(msg(1))
    resp = api(jmap,
               ["Mailbox/query", {"accountId": "u1234", "filter": {"role": "inbox"}}, "q"],
               ["Mailbox/get", {"accountId": "u1234", "properties": ["name", "role", "totalEmails"],
                                "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}}, "g"])
    assert resp[0][1]["ids"] == [jmap.mailbox_id("inbox")]
    assert resp[1][1]["list"] == [{"id": jmap.mailbox_id("inbox"), "name": "Inbox", "role": "inbox",
                                   "totalEmails": 1}]
    resp = one(jmap, "Mailbox/query", {"accountId": "u1234", "filter": {"name": "arch"}})
    assert resp[1]["ids"] == [jmap.mailbox_id("Archive")]
    resp = one(jmap, "Mailbox/get", {"accountId": "u1234", "ids": ["nope"]})
    assert resp[1]["list"] == [] and resp[1]["notFound"] == ["nope"]


# -------------------------------------------------------------------- Email

def test_email_query_get_with_result_references(jmap):
    inbox = jmap.mailbox_id("INBOX")
    ids = [jmap.add_message(msg(n), received_at=f"2024-01-0{n}T00:00:00Z") for n in (2, 1, 3)]
    other = jmap.add_message(msg(9), mailbox="Archive")
    resp = api(jmap,
               ["Email/query", {"accountId": "u1234", "filter": {"inMailbox": inbox},
                                "sort": [{"property": "receivedAt", "isAscending": False}],
                                "calculateTotal": True}, "q"],
               ["Email/get", {"accountId": "u1234",
                              "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                              "properties": ["id", "blobId", "size", "receivedAt", "mailboxIds",
                                             "keywords", "subject", "from", "messageId"]}, "g"],
               ["Email/get", {"accountId": "u1234", "properties": ["threadId"],
                              "#ids": {"resultOf": "g", "name": "Email/get", "path": "/list/*/id"}}, "g2"])
    (qn, q, qc), (gn, g, gc), (g2n, g2, _) = resp
    assert (qn, qc, gn, gc, g2n) == ("Email/query", "q", "Email/get", "g", "Email/get")
    assert q["ids"] == [ids[2], ids[0], ids[1]]      # newest first: Jan 3, Jan 2, Jan 1
    assert q["total"] == 3 and q["position"] == 0 and q["canCalculateChanges"] is False
    assert q["queryState"] == jmap.state and "limit" not in q
    assert other not in q["ids"]
    assert g["state"] == jmap.state and g["notFound"] == []
    first = g["list"][0]
    raw = msg(3)
    assert first["id"] == ids[2] and first["size"] == len(raw)
    assert first["blobId"].startswith("G") and first["id"].startswith("M")
    assert first["receivedAt"] == "2024-01-03T00:00:00Z"
    assert first["mailboxIds"] == {inbox: True} and first["keywords"] == {}
    assert first["subject"] == "message 3"
    assert first["from"] == [{"name": "Sender 3", "email": "s3@example.org"}]
    assert first["messageId"] == ["m3@example.org"]
    assert [x["id"] for x in g2["list"]] == q["ids"] and all(x["threadId"] for x in g2["list"])
    assert jmap.api_calls("Email/query")[0][1]["filter"] == {"inMailbox": inbox}


def test_email_get_defaults_duplicates_and_headers(jmap):
    eid = jmap.add_message(msg(4), keywords=["$Seen"])
    resp = one(jmap, "Email/get", {"accountId": "u1234", "ids": [eid, "Mmissing", eid]})
    [obj] = resp[1]["list"]
    assert resp[1]["notFound"] == ["Mmissing"]
    assert obj["keywords"] == {"$seen": True}
    assert obj["sentAt"] == "2024-01-01T10:00:04+02:00"
    assert obj["preview"] == "hello 4"
    assert obj["hasAttachment"] is False
    resp = one(jmap, "Email/get", {"accountId": "u1234", "ids": [eid],
                                   "properties": ["header:Subject", "header:To:asAddresses",
                                                  "header:X-None:all"]})
    [obj] = resp[1]["list"]
    assert obj == {"id": eid, "header:Subject": " message 4",
                   "header:To:asAddresses": [{"name": None, "email": "alice@example.org"}],
                   "header:X-None:all": []}
    resp = one(jmap, "Email/get", {"accountId": "u1234", "ids": None, "properties": ["size"]})
    assert resp[1]["list"] == [{"id": eid, "size": len(msg(4))}]


def test_email_query_window_and_limit_cap():
    with FakeJmap(users={USER: PASSWORD}, max_query_limit=2) as server:
        ids = [server.add_message(msg(n)) for n in range(5)]

        def query(**kw):
            return one(server, "Email/query", dict({"accountId": "u1234"}, **kw))[1]

        r = query(limit=10, calculateTotal=True)
        assert r["ids"] == ids[:2] and r["limit"] == 2 and r["total"] == 5
        r = query()                        # no limit: the server's cap applies and is reported
        assert r["ids"] == ids[:2] and r["limit"] == 2 and "total" not in r
        r = query(position=1, limit=1)
        assert r["ids"] == [ids[1]] and r["position"] == 1 and "limit" not in r
        r = query(position=-2, limit=2)
        assert r["ids"] == ids[3:] and r["position"] == 3
        r = query(position=9, limit=2)
        assert r["ids"] == []
        r = query(anchor=ids[2], anchorOffset=1, limit=2)
        assert r["ids"] == ids[3:5] and r["position"] == 3
        r = query(sort=[{"property": "size", "isAscending": True}], limit=1)
        assert r["ids"] == [ids[0]]
        assert one(server, "Email/query", {"accountId": "u1234", "anchor": "x"})[1]["type"] == "anchorNotFound"


def test_email_set_update_and_destroy(jmap):
    inbox, archive = jmap.mailbox_id("INBOX"), jmap.mailbox_id("Archive")
    a, b = jmap.add_message(msg(1)), jmap.add_message(msg(2))
    state = jmap.state
    resp = one(jmap, "Email/set", {"accountId": "u1234", "update": {
        a: {"keywords/$seen": True, f"mailboxIds/{archive}": True, f"mailboxIds/{inbox}": None},
        "Mnope": {"keywords/$seen": True},
        b: {f"mailboxIds/{inbox}": None},           # would leave it in no mailbox
    }})
    r = resp[1]
    assert r["oldState"] == state and r["newState"] != state and r["newState"] == jmap.state
    assert r["updated"] == {a: None}
    assert r["notUpdated"]["Mnope"]["type"] == "notFound"
    assert r["notUpdated"][b]["type"] == "invalidProperties"
    assert jmap.email(a).mailbox_ids == {archive} and jmap.email(a).keywords == {"$seen"}
    assert [e.id for e in jmap.messages("INBOX")] == [b]
    assert [e.id for e in jmap.messages("Archive")] == [a]

    blob = jmap.email(b).blob_id
    resp = one(jmap, "Email/set", {"accountId": "u1234", "destroy": [b, "Mnope"]})
    r = resp[1]
    assert r["destroyed"] == [b] and r["notDestroyed"] == {"Mnope": {"type": "notFound"}}
    assert jmap.messages("INBOX") == []
    assert fetch_url(jmap.download_url(blob))[0] == 404
    resp = one(jmap, "Email/set", {"accountId": "u1234", "ifInState": "stale", "destroy": [a]})
    assert resp == ["error", {"type": "stateMismatch"}, "c0"]


# ------------------------------------------------------------------- errors

def test_request_level_errors(jmap):
    cases = [
        (b"{not json", "application/json", "notJSON"),
        (json.dumps({"using": USING, "methodCalls": []}).encode(), "text/plain", "notJSON"),
        (b'{"using": "x"}', "application/json", "notRequest"),
        (json.dumps({"using": [CORE, "urn:example:nope"], "methodCalls": []}).encode(),
         "application/json", "unknownCapability"),
        (json.dumps({"using": USING, "methodCalls": [["Core/echo", {}, str(i)] for i in range(17)]}).encode(),
         "application/json", "limit"),
    ]
    for body, ctype, kind in cases:
        status, headers, out = post_api(jmap, body, ctype=ctype)
        assert status == 400, kind
        assert headers["Content-Type"] == "application/problem+json"
        problem = json.loads(out)
        assert problem["type"] == "urn:ietf:params:jmap:error:" + kind and problem["status"] == 400
    assert json.loads(out)["limit"] == "maxCallsInRequest"


def test_method_level_errors():
    with FakeJmap(users={USER: PASSWORD}, max_objects_in_get=3) as server:
        resp = api(server,
                   ["Nope/get", {"accountId": "u1234"}, "a"],
                   ["Email/get", {"ids": []}, "b"],
                   ["Email/get", {"accountId": "other", "ids": []}, "c"],
                   ["Email/get", {"accountId": "u1234", "ids": ["1", "2", "3", "4"]}, "d"],
                   ["Email/get", {"accountId": "u1234", "ids": [], "properties": ["bogus"]}, "e"],
                   ["Email/get", {"accountId": "u1234", "ids": [],
                                  "#ids": {"resultOf": "a", "name": "Nope/get", "path": "/ids"}}, "f"],
                   ["Email/get", {"accountId": "u1234",
                                  "#ids": {"resultOf": "zz", "name": "Email/query", "path": "/ids"}}, "g"],
                   ["Email/query", {"accountId": "u1234", "filter": {"text": "x"}}, "h"],
                   ["Email/query", {"accountId": "u1234", "sort": [{"property": "subject"}]}, "i"],
                   ["Core/echo", {"hello": True}, "j"],
                   ["Email/changes", {"accountId": "u1234", "sinceState": "1"}, "k"])
        types = {r[2]: (r[0], r[1].get("type")) for r in resp}
        assert types == {
            "a": ("error", "unknownMethod"), "b": ("error", "invalidArguments"),
            "c": ("error", "accountNotFound"), "d": ("error", "requestTooLarge"),
            "e": ("error", "invalidArguments"), "f": ("error", "invalidArguments"),
            "g": ("error", "invalidResultReference"), "h": ("error", "unsupportedFilter"),
            "i": ("error", "unsupportedSort"), "j": ("Core/echo", None),
            "k": ("error", "cannotCalculateChanges"),
        }
        # a method whose capability is not in `using` is unknown
        [resp] = api(server, ["Email/get", {"accountId": "u1234", "ids": []}, "x"], using=[CORE])
        assert resp[1]["type"] == "unknownMethod"
        # a reference to a call whose answer was an error fails
        resp = api(server, ["Email/get", {"accountId": "bad", "ids": []}, "r"],
                   ["Email/get", {"accountId": "u1234",
                                  "#ids": {"resultOf": "r", "name": "Email/get", "path": "/list/*/id"}}, "s"])
        assert resp[1][1]["type"] == "invalidResultReference"


# --------------------------------------------------------- downloads, HTTP

def test_download(jmap):
    raw = msg(7, "x" * 1000)
    eid = jmap.add_message(raw)
    blob = jmap.email(eid).blob_id
    template = session(jmap)["downloadUrl"]
    url = (template.replace("{accountId}", "u1234").replace("{blobId}", blob)
           .replace("{name}", "m.eml").replace("{type}", urllib.parse.quote("message/rfc822", safe="")))
    status, headers, body = fetch_url(url)
    assert status == 200 and body == raw
    assert headers["Content-Type"] == "message/rfc822"
    assert headers["Content-Length"] == str(len(raw))
    assert fetch_url(jmap.download_url("Gunknown"))[0] == 404
    assert fetch_url(url.replace("/u1234/", "/other/"))[0] == 404
    assert jmap.requests[-3].finished.wait(5) and jmap.requests[-3].sent == len(raw)


def test_keep_alive_and_recorded_requests(jmap):
    eid = jmap.add_message(msg(1))
    conn = http.client.HTTPConnection("127.0.0.1", jmap.port, timeout=5)
    auth = {"Authorization": basic()}
    conn.request("GET", "/.well-known/jmap", headers=auth)
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Length")
    r.read()
    body = {"using": USING, "methodCalls": [["Email/get", {"accountId": "u1234", "ids": [eid]}, "0"]]}
    conn.request("POST", "/jmap/api/", json.dumps(body), dict(auth, **{"Content-Type": "application/json"}))
    r = conn.getresponse()
    r.read()
    conn.request("GET", jmap.download_url(jmap.email(eid).blob_id)[len(jmap.base_url):], headers=auth)
    r = conn.getresponse()
    assert r.read() == msg(1)
    conn.request("GET", "/nothing", headers=auth)
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.close()
    assert jmap.connections == 1
    assert [r.conn for r in jmap.requests] == [1, 1, 1, 1]
    method, path, headers, parsed = jmap.requests[1]
    assert (method, path, parsed) == ("POST", "/jmap/api/", body)
    assert headers["content-type"] == "application/json"
    assert jmap.requests[1].calls == ["Email/get"] and jmap.requests[1].status == 200
    assert jmap.requests[0].body == b""


def test_upload(jmap):
    status, _, body = fetch_url(jmap.base_url + "/jmap/upload/u1234/", "POST", b"blob!",
                           {"Content-Type": "text/plain"})
    assert status == 201
    out = json.loads(body)
    assert out["size"] == 5 and out["type"] == "text/plain"
    assert fetch_url(jmap.download_url(out["blobId"]))[2] == b"blob!"


def test_stop_closes_idle_keep_alive_connections():
    server = FakeJmap(users={USER: PASSWORD}).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/.well-known/jmap", headers={"Authorization": basic()})
    conn.getresponse().read()
    server.stop()     # raises if a handler thread stays
    conn.close()


def test_concurrent_clients(jmap):
    ids = [jmap.add_message(msg(n)) for n in range(4)]
    results, failures = [], []

    def worker():
        try:
            for _ in range(5):
                r = one(jmap, "Email/get", {"accountId": "u1234", "ids": ids, "properties": ["size"]})
                results.append(len(r[1]["list"]))
        except Exception as e:  # surfaced below
            failures.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == [] and results == [4] * 30


# ------------------------------------------------------------- fault knobs

def test_fault_download_cut(jmap):
    raw = msg(1, "y" * 5000)
    eid = jmap.add_message(raw)
    jmap.download_cut[eid] = (100, 1)   # only the next download is cut
    url = jmap.download_url(jmap.email(eid).blob_id)[len(jmap.base_url):]
    conn = http.client.HTTPConnection("127.0.0.1", jmap.port, timeout=5)
    conn.request("GET", url, headers={"Authorization": basic()})
    r = conn.getresponse()
    assert r.getheader("Content-Length") == str(len(raw))
    with pytest.raises(http.client.IncompleteRead) as info:
        r.read()
    assert info.value.partial == raw[:100]
    conn.close()
    assert jmap.requests[-1].sent == 100
    assert fetch_url(jmap.base_url + url)[2] == raw      # the second one is whole
    jmap.download_cut["*"] = 0
    status, headers, _ = fetch_url(jmap.base_url + "/.well-known/jmap")
    assert status == 200   # only downloads are affected
    with pytest.raises(http.client.IncompleteRead):
        fetch_url(jmap.base_url + url)


def test_fault_size_lie(jmap):
    eid = jmap.add_message(msg(1))
    jmap.size_lie[eid] = 12345
    r = one(jmap, "Email/get", {"accountId": "u1234", "ids": [eid], "properties": ["size"]})
    assert r[1]["list"][0]["size"] == 12345
    assert len(fetch_url(jmap.download_url(jmap.email(eid).blob_id))[2]) == len(msg(1))


def test_fault_destroy_fail(jmap):
    a, b = jmap.add_message(msg(1)), jmap.add_message(msg(2))
    jmap.destroy_fail = {a}
    r = one(jmap, "Email/set", {"accountId": "u1234", "destroy": [a, b]})[1]
    assert r["destroyed"] == [b] and r["notDestroyed"] == {a: {"type": "serverFail"}}
    jmap.destroy_fail = "*"
    r = one(jmap, "Email/set", {"accountId": "u1234", "destroy": [a]})[1]
    assert r["destroyed"] is None and r["notDestroyed"] == {a: {"type": "serverFail"}}
    assert r["oldState"] == r["newState"]
    assert [e.id for e in jmap.messages()] == [a]
    jmap.update_fail = {a}
    r = one(jmap, "Email/set", {"accountId": "u1234", "update": {a: {"keywords/$seen": True}}})[1]
    assert r["notUpdated"] == {a: {"type": "serverFail"}} and jmap.email(a).keywords == set()


def test_fault_unauthorized_from(jmap):
    jmap.unauthorized_from = 3
    assert fetch_url(jmap.url)[0] == 200
    assert one(jmap, "Core/echo", {"x": 1})[1] == {"x": 1}
    status, headers, _ = fetch_url(jmap.url)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="jmap"'
    assert post_api(jmap, {"using": USING, "methodCalls": []})[0] == 401
    assert [r.status for r in jmap.requests] == [200, 200, 401, 401]


def test_fault_throttle(jmap):
    eid = jmap.add_message(msg(1))
    url = jmap.download_url(jmap.email(eid).blob_id)
    t = Throttle("/jmap/download/", status=503, retry_after=2, times=1)
    jmap.throttles.append(t)
    status, headers, _ = fetch_url(url)
    assert status == 503 and headers["Retry-After"] == "2"
    assert fetch_url(url)[0] == 200 and t.hits == 1

    jmap.throttles = [Throttle("Email/get", status=429, retry_after=5)]
    status, headers, _ = post_api(jmap, {"using": USING, "methodCalls": [
        ["Email/query", {"accountId": "u1234"}, "q"], ["Email/get", {"accountId": "u1234", "ids": []}, "g"]]})
    assert status == 429 and headers["Retry-After"] == "5"
    assert one(jmap, "Email/query", {"accountId": "u1234"})[1]["ids"] == [eid]


def test_fault_hold_and_slow_download(jmap):
    raw = msg(1, "z" * 3000)
    eid = jmap.add_message(raw)
    hold = jmap.hold_download(after=1000, match=eid)
    conn = http.client.HTTPConnection("127.0.0.1", jmap.port, timeout=5)
    conn.request("GET", jmap.download_url(jmap.email(eid).blob_id)[len(jmap.base_url):],
                 headers={"Authorization": basic()})
    r = conn.getresponse()
    assert r.read(1000) == raw[:1000]
    assert hold.wait(5) and hold.request.progress == 1000 and hold.request.sent is None
    hold.release()
    assert r.read() == raw[1000:]
    assert jmap.requests[-1].finished.wait(5)   # the server may still be after its last write

    chunks = []
    jmap.download_chunk = 512
    jmap.download_pause = lambda blob, sent: chunks.append((blob, sent))
    conn.request("GET", jmap.download_url(jmap.email(eid).blob_id)[len(jmap.base_url):],
                 headers={"Authorization": basic()})
    assert conn.getresponse().read() == raw
    conn.close()
    assert [s for _, s in chunks] == list(range(512, len(raw), 512)) + [len(raw)]
    assert {b for b, _ in chunks} == {jmap.email(eid).blob_id}


def test_a_client_that_hangs_up_mid_download(jmap):
    raw = b"Subject: big\r\n\r\n" + b"b" * (1 << 20)
    eid = jmap.add_message(raw)
    hold = jmap.hold_download(after=1000)
    conn = http.client.HTTPConnection("127.0.0.1", jmap.port, timeout=5)
    conn.request("GET", jmap.download_url(jmap.email(eid).blob_id)[len(jmap.base_url):],
                 headers={"Authorization": basic()})
    r = conn.getresponse()
    assert r.read(1000) == raw[:1000]
    assert hold.wait(5)
    conn.close()                       # like a POP3 TOP: stop reading, hang up
    hold.release()
    download = hold.request
    assert download.finished.wait(5)
    assert download.sent is not None and 1000 <= download.sent < len(raw)


def test_stop_frees_a_held_download():
    server = FakeJmap(users={USER: PASSWORD}).start()
    eid = server.add_message(msg(1))
    hold = server.hold_download(after=0)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", server.download_url(server.email(eid).blob_id)[len(server.base_url):],
                 headers={"Authorization": basic()})
    r = conn.getresponse()
    assert hold.wait(5)
    server.stop()
    conn.close()
    assert r.status == 200


def test_hooks(jmap):
    seen = []

    def before_api(request):
        seen.append(request)
        calls = [c[0] for c in request["methodCalls"]]
        if "Core/echo" in calls:
            return {"methodResponses": [["Core/echo", {"hooked": True}, "0"]], "sessionState": "zz"}
        if "Email/set" in calls:
            return Response(500, b"boom", {"Content-Type": "text/plain"})
        if "Email/get" in calls:
            return Response(drop=True)
        return None

    jmap.before_api = before_api
    out = post_api(jmap, {"using": USING, "methodCalls": [["Core/echo", {}, "0"]]})
    assert json.loads(out[2])["sessionState"] == "zz"
    status, headers, body = post_api(jmap, {"using": USING, "methodCalls": [["Email/set", {}, "0"]]})
    assert (status, body, headers["Content-Type"]) == (500, b"boom", "text/plain")
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        post_api(jmap, {"using": USING, "methodCalls": [["Email/get", {}, "0"]]})
    assert jmap.requests[-1].status is None
    assert one(jmap, "Email/query", {"accountId": "u1234"})[1]["ids"] == []
    assert len(seen) == 4

    jmap.before_api = None
    jmap.method_hooks["Email/query"] = lambda args, call_id: [["Email/query", {"ids": ["Mfake"]}, call_id]]
    resp = api(jmap, ["Email/query", {"accountId": "u1234"}, "q"],
               ["Email/get", {"accountId": "u1234", "properties": ["id"],
                              "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"])
    assert resp[0][1] == {"ids": ["Mfake"]} and resp[1][1]["notFound"] == ["Mfake"]

    jmap.before_request = lambda req: Response(418, {"teapot": True}) if req.path == "/jmap/session" else None
    status, _, body = fetch_url(jmap.session_url)
    assert status == 418 and json.loads(body) == {"teapot": True}
