# SPDX-License-Identifier: Apache-2.0
"""Self-test of the Cyrus harness (harness/cyrus.py): a real Cyrus IMAP 3.6 with JMAP.

Guards what JMAP tests will rest on: passwords are really checked over IMAP and over
HTTP Basic auth, the JMAP session resource is what RFC 8620 says, a message APPENDed
over IMAP (8-bit header octets, CRLF) is the same Email over JMAP with the same octets
as its blob and its size, its IMAP EMAILID is its JMAP id, Email/set destroy removes
it, JMAP works over HTTPS too (the test PKI's certificate, verified), and stopping or
killing an instance leaves no process behind.
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import procs
from harness.certs import make_pki
from harness.cyrus import JMAP_CORE, JMAP_MAIL, Cyrus
from harness.wait import port_refuses

# 8-bit octets in headers (UTF-8 and a lone Latin-1 byte), CRLF line ends
MESSAGE_8BIT = (b"From: J\xc3\xa9r\xc3\xb4me <jerome@example.org>\r\n"
                b"To: alice@example.org\r\n"
                b"Subject: caf\xe9 \xc3\xa0 la cr\xc3\xa8me\r\n"
                b"Message-ID: <harness-cyrus-1@example.org>\r\n"
                b"\r\n"
                b"first line\r\n"
                b".dot line\r\n"
                b"last line\r\n")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _get(url: str, authorization: str | None, body: bytes | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """A plain urllib GET, or a JSON POST when body is given (following redirects, as
    clients do); https URLs are verified with `context`."""
    req = urllib.request.Request(url, data=body)
    if authorization is not None:
        req.add_header("Authorization", authorization)  # kept on a redirect (unlike unredirected headers)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers.items()), e.read()


# ----------------------------------------------------------------------- IMAP

def test_imap_login_checks_the_password(cyrus):
    conn = imaplib.IMAP4(cyrus.host, cyrus.imap_port, timeout=10)
    try:
        assert "STARTTLS" in conn.capabilities
        conn.starttls(cyrus.client_context())
        assert ("DNS", "localhost") in conn.sock.getpeercert()["subjectAltName"]
        with pytest.raises(imaplib.IMAP4.error):  # Cyrus: a bare NO, no [AUTHENTICATIONFAILED]
            conn.login("alice", "wrong-password")
        conn.login("alice", cyrus.password("alice"))
        typ, data = conn.capability()
        caps = data[0].decode().upper().split()
        for cap in ("UIDPLUS", "OBJECTID", "LITERAL+", "ID"):
            assert cap in caps, cap
    finally:
        conn.shutdown()
    with pytest.raises(imaplib.IMAP4.error):
        cyrus.imap("bob", password="alice-secret-1")
    with pytest.raises(imaplib.IMAP4.error):
        cyrus.imap("alice", tls="none", password="")
    for tls in ("none", "implicit"):
        cyrus.imap("bob", tls=tls).logout()


def test_imaps_certificate_is_really_verified(cyrus):
    other = make_pki()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            imaplib.IMAP4_SSL(cyrus.host, cyrus.imaps_port, ssl_context=other.client_context(), timeout=10)
    finally:
        other.cleanup()


# ----------------------------------------------------------------------- JMAP

def test_jmap_session_resource_with_basic_auth(cyrus):
    url = cyrus.jmap_session_url
    assert url == f"http://127.0.0.1:{cyrus.http_port}/.well-known/jmap"
    status, headers, body = _get(url, _basic("alice", cyrus.password("alice")))
    assert status == 200, body[:300]
    assert headers["Content-Type"].startswith("application/json")
    session = json.loads(body)
    assert session["username"] == "alice"
    assert JMAP_MAIL in session["capabilities"] and JMAP_CORE in session["capabilities"]
    assert session["capabilities"][JMAP_CORE]["maxObjectsInGet"] >= 1
    assert session["apiUrl"]
    for var in ("{accountId}", "{blobId}", "{name}", "{type}"):
        assert var in session["downloadUrl"], var
    account = session["primaryAccounts"][JMAP_MAIL]
    assert JMAP_MAIL in session["accounts"][account]["accountCapabilities"]
    assert cyrus.jmap_session("alice") == session

    for authorization in (None, _basic("alice", "wrong-password"), _basic("bob", cyrus.password("alice"))):
        status, headers, _ = _get(url, authorization)
        assert status == 401, authorization
        assert headers["WWW-Authenticate"].startswith("Basic ")


def test_appended_8bit_message_is_a_jmap_email_with_the_same_octets(cyrus):
    acct = cyrus.add_user()
    uid = cyrus.append(acct.name, MESSAGE_8BIT)
    assert cyrus.fetch(acct.name, uid) == MESSAGE_8BIT, "munge8bit: 0 keeps 8-bit header octets"
    listed = cyrus.messages(acct.name)
    assert list(listed) == [uid] and listed[uid]["size"] == len(MESSAGE_8BIT)
    email_id = cyrus.emailid(acct.name, uid)

    session = cyrus.jmap_session(acct.name)
    account = cyrus.account_id(acct.name, session)
    (_, inbox, _), = cyrus.jmap(acct.name, [
        ["Mailbox/query", {"accountId": account, "filter": {"role": "inbox"}}, "m"]], session=session)
    assert len(inbox["ids"]) == 1
    query, get = cyrus.jmap(acct.name, [
        ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox["ids"][0]}}, "q"],
        ["Email/get", {"accountId": account, "properties": ["id", "blobId", "size", "mailboxIds"],
                       "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"],
    ], session=session)
    assert query[1]["ids"] == [email_id], "Cyrus's IMAP EMAILID is the JMAP Email id"
    (email,) = get[1]["list"]
    assert email["size"] == len(MESSAGE_8BIT)
    assert email["mailboxIds"] == {inbox["ids"][0]: True}
    assert cyrus.download(acct.name, email["blobId"], session=session) == MESSAGE_8BIT

    (_, result, _), = cyrus.jmap(acct.name, [
        ["Email/set", {"accountId": account, "destroy": [email_id]}, "d"]], session=session)
    assert result["destroyed"] == [email_id]
    (_, query, _), = cyrus.jmap(acct.name, [
        ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox["ids"][0]}}, "q"]],
        session=session)
    assert query["ids"] == []
    assert cyrus.messages(acct.name) == {}


def test_jmap_over_https_with_the_test_pki(pki, cyrus):
    url = cyrus.jmap_https_session_url
    assert url == f"https://127.0.0.1:{cyrus.https_port}/.well-known/jmap", "127.0.0.1 is a SAN of pki.cert"
    assert cyrus.https_port not in (cyrus.http_port, cyrus.imap_port, cyrus.imaps_port)
    ctx = ssl.create_default_context(cafile=pki.ca)  # trusts only the test CA
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    acct = cyrus.add_user()
    auth = _basic(acct.name, acct.password)
    uid = cyrus.append(acct.name, MESSAGE_8BIT)
    email_id = cyrus.emailid(acct.name, uid)

    status, headers, body = _get(url, auth, context=ctx)  # 301 to /jmap, followed
    assert status == 200, body[:300]
    assert headers["Content-Type"].startswith("application/json")
    session = json.loads(body)
    assert session["username"] == acct.name
    assert JMAP_CORE in session["capabilities"] and JMAP_MAIL in session["capabilities"]
    account = session["primaryAccounts"][JMAP_MAIL]
    assert JMAP_MAIL in session["accounts"][account]["accountCapabilities"]
    assert session["apiUrl"].startswith("/"), "relative: resolved against the HTTPS URL"

    api = urllib.parse.urljoin(url, session["apiUrl"])
    assert api.startswith(cyrus.https_base_url + "/")
    request = {"using": [JMAP_CORE, JMAP_MAIL], "methodCalls": [
        ["Email/get", {"accountId": account, "ids": [email_id], "properties": ["blobId", "size"]}, "g"]]}
    status, _, body = _get(api, auth, json.dumps(request).encode(), context=ctx)
    assert status == 200, body[:300]
    (name, result, _), = json.loads(body)["methodResponses"]
    assert name == "Email/get", result
    (email,) = result["list"]
    assert email["size"] == len(MESSAGE_8BIT)

    download = session["downloadUrl"]
    for var, value in (("accountId", account), ("blobId", email["blobId"]),
                       ("name", "message.eml"), ("type", "message/rfc822")):
        download = download.replace("{" + var + "}", urllib.parse.quote(value, safe=""))
    download = urllib.parse.urljoin(url, download)
    assert download.startswith(cyrus.https_base_url + "/")
    status, _, body = _get(download, auth, context=ctx)
    assert status == 200, body[:300]
    assert body == MESSAGE_8BIT
    assert cyrus.http(acct.name, download)[2] == MESSAGE_8BIT, "the helper speaks HTTPS too"

    status, headers, _ = _get(url, _basic(acct.name, "wrong-password"), context=ctx)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    other = make_pki()
    try:
        with pytest.raises(urllib.error.URLError) as e:
            _get(url, auth, context=ssl.create_default_context(cafile=other.ca))
        assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    finally:
        other.cleanup()


# ------------------------------------------------------------------ lifecycle

def test_stop_kill_restart_leave_nothing(pki, cyrus):
    c = Cyrus(pki, {"dave": "dave-secret-4"})
    try:
        c.start()
        assert set(c.ports).isdisjoint(cyrus.ports), "each instance has its own ports"
        uid = c.append("dave", MESSAGE_8BIT)
        pgid = c.proc.pid
        assert len(procs.group_members(pgid)) >= 3, "syslog_ns.py, master and its services share the group"
        c.kill()
        assert procs.group_members(pgid) == []
        assert all(port_refuses(c.host, p) for p in c.ports)
        c.start()
        assert c.fetch("dave", uid) == MESSAGE_8BIT, "mail survives a restart"
        assert "popbridge-cyrus/imap" in c.log_text(), "syslog reaches the instance's log"
        pgid = c.proc.pid
        c.stop()
        assert procs.group_members(pgid) == []
        directory = c.dir
    finally:
        c.close()
    assert not os.path.exists(directory)
    assert cyrus.messages("alice") is not None, "the module's instance is untouched"
