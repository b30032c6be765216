# SPDX-License-Identifier: Apache-2.0
"""Identity through HTTP services: the nginx-style auth hook (auth.mode http) and
OAuth2 upstream logins (upstream.login.mode oauth2).

auth.mode http: the gateway asks a local hook (harness.auth_servers.AuthHook) with
GET + Auth-* headers; the answer logs the user in (Auth-Status: OK), possibly routed to
another IMAP server (Auth-Server/Auth-Port), with other upstream credentials
(Auth-User/Auth-Pass) or another mailbox (X-Popbridge-Mailbox); an error Auth-Status is
"-ERR [AUTH]" (after Auth-Wait seconds); a hook that fails, is slow or can't be reached
is "-ERR [SYS/TEMP]" and never a login.

upstream.login.mode oauth2: the gateway gets access tokens from a local HTTPS token
endpoint (grant_type=refresh_token) and logs in to Dovecot with XOAUTH2 or OAUTHBEARER;
Dovecot's oauth2 passdb checks them at an introspection endpoint sharing the token
server's store. Tokens are cached until shortly before they expire.

Also: HTTPS certificates of both services are verified against their ca_file, and idle
keep-alive connections to them must not hold up a SIGTERM shutdown. The harness's
servers answer "Connection: close" unless a test asks for keep-alive.
"""

from __future__ import annotations

import base64
import concurrent.futures
import itertools
import os
import signal
import time
import urllib.parse
import urllib.request

import pytest

from harness import messages, tempdirs
from harness.auth_servers import (AuthHook, HookUser, OAuth2Server, Response, TokenStore,
                                  crypt_hash, dovecot_identity_config, write_file)
from harness.clients import RawPop3, user_pass
from harness.egress_proxy import EgressProxy
from harness.dovecot import Dovecot
from harness.messages import as_retrieved
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until

HOST = "127.0.0.1"
QUICK = 10.0 * TIME_FACTOR
AUTH_FAILED = b"-ERR [AUTH] Authentication failed."

_n = itertools.count(1)


# ===================================================================== helpers

def log_since(d: Dovecot, start: int) -> str:
    return d.log_text()[start:]


def wait_dovecot_login(d: Dovecot, start: int, user: str) -> str:
    def found():
        for line in log_since(d, start).splitlines():
            if f"Login: user=<{user}>" in line:
                return line
        return None
    return wait_until(found, QUICK, f"Dovecot to log the login of {user}", on_timeout=d.diagnostics)


def hook_overrides(hook: AuthHook | str, timeout: str = "2s", **auth) -> dict:
    url = hook if isinstance(hook, str) else hook.url("/auth")
    return {"auth": {"mode": "http", "http": {"url": url, "timeout": timeout}, "max_attempts": 10, **auth}}


# ==================================================================== fixtures

@pytest.fixture(scope="module")
def files():
    d = tempdirs.make("identity-http")
    os.chmod(d, 0o755)
    yield d
    tempdirs.remove(d)


@pytest.fixture(scope="module")
def store():
    return TokenStore()


@pytest.fixture(scope="module")
def introspection(store):
    """Plain-HTTP introspection for Dovecot's oauth2 passdb."""
    with OAuth2Server(store) as s:
        yield s
    assert not s.errors, s.errors


@pytest.fixture(scope="module")
def dove_a(pki, files, introspection):
    extra = dovecot_identity_config(os.path.join(files), introspection_url=introspection.url("/introspect"))
    with Dovecot(pki, {}, extra_config=extra) as d:
        yield d


@pytest.fixture(scope="module")
def dove_b(pki):
    with Dovecot(pki, {}) as d:
        yield d


# ============================================================ the auth hook

def test_hook_routes_and_substitutes(dove_a, dove_b, make_gateway, ctx):
    ua = dove_a.add_user()          # exists only on A
    ub = dove_b.add_user()          # exists only on B
    ud = dove_b.add_user()          # no Auth-Server: the configured upstream (B)
    target = dove_a.add_user()      # reached by "scanner" with substituted credentials
    mails = {}
    for d, acct in ((dove_a, ua), (dove_b, ub), (dove_b, ud), (dove_a, target)):
        mails[acct.name] = messages.simple(next(_n))
        d.append(acct.name, mails[acct.name])
    hook = AuthHook({
        ua.name: HookUser(ua.password, server=HOST, port=dove_a.imap_port),
        ub.name: HookUser(ub.password, server=HOST, port=dove_b.imap_port),
        ud.name: HookUser(ud.password),
        "scanner": HookUser("scanner-pop-pw", server=HOST, port=dove_a.imap_port,
                            upstream_user=target.name, upstream_pass=target.password),
    })
    with hook:
        g = make_gateway(dove_b, hook_overrides(hook))
        start_a, start_b = dove_a.log_mark(ua.name, target.name), dove_b.log_mark(ub.name, ud.name)
        for user, password, sees in ((ua.name, ua.password, ua.name), (ub.name, ub.password, ub.name),
                                     (ud.name, ud.password, ud.name), ("scanner", "scanner-pop-pw", target.name)):
            with RawPop3(g.pop3s_port, tls_context=ctx) as c:
                r = user_pass(c, user, password)
                assert r.ok, f"{user}: {r}"
                assert c.cmd("RETR 1", multiline=True).body == as_retrieved(mails[sees]), user
                assert c.quit().ok
        wait_dovecot_login(dove_a, start_a, ua.name)
        wait_dovecot_login(dove_a, start_a, target.name)
        wait_dovecot_login(dove_b, start_b, ub.name)
        wait_dovecot_login(dove_b, start_b, ud.name)
        assert "user=<scanner>" not in log_since(dove_a, start_a) + log_since(dove_b, start_b)
        for secret in (target.password, ua.password, ub.password, "scanner-pop-pw"):
            assert secret not in g.log_text()

        # What the hook was asked (nginx auth_http headers).
        req = next(r for r in hook.requests if r.header("Auth-User") == ua.name)
        assert req.method == "GET", req
        assert req.header("Auth-Method") == "plain"
        assert req.header("Auth-Pass") == ua.password
        assert req.header("Auth-Protocol") == "pop3"
        assert req.header("Auth-Login-Attempt") == "1"
        assert req.header("Client-IP") == HOST
        assert req.header("Client-Host"), req.headers
        assert not hook.errors, hook.errors


def test_hook_login_attempt_counter_and_sasl(dove_b, make_gateway, ctx):
    acct = dove_b.add_user()
    hook = AuthHook({acct.name: HookUser(acct.password)})
    with hook:
        g = make_gateway(dove_b, hook_overrides(hook))
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            r = user_pass(c, acct.name, "wrong-password")
            assert r.line.startswith(b"-ERR [AUTH]"), r
            assert r.line == b"-ERR [AUTH] Invalid login or password", r  # the hook's text, as nginx
            r = c.auth_plain(acct.name, acct.password)
            assert r.ok, r
            assert c.quit().ok
        attempts = [(r.header("Auth-Login-Attempt"), r.header("Auth-Pass"), r.header("Auth-Method"))
                    for r in hook.requests]
        assert attempts == [("1", "wrong-password", "plain"), ("2", acct.password, "plain")], attempts


def test_hook_mailbox_override(dove_b, make_gateway, ctx):
    acct = dove_b.add_user()
    inbox_msg, archive_msg = messages.simple(next(_n)), messages.simple(next(_n))
    dove_b.append(acct.name, inbox_msg)
    dove_b.create_mailbox(acct.name, "Archive", archive_msg)
    with AuthHook({acct.name: HookUser(acct.password, mailbox="Archive")}) as hook:
        g = make_gateway(dove_b, hook_overrides(hook))
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, acct.password).ok
            assert c.cmd("RETR 1", multiline=True).body == as_retrieved(archive_msg)
            assert c.quit().ok


def test_hook_escapes_user_and_password_like_nginx(dove_b, make_gateway, ctx):
    """nginx URL-escapes Auth-User and Auth-Pass (at least " ", "%" and control
    characters), so hooks written for it URL-decode them. A password containing "%41"
    and a space must reach such a hook unchanged after decoding (else "a%41b" would
    be checked as "aAb")."""
    acct = dove_b.add_user()
    tricky = "pa ss%41wo%rd"
    hook = AuthHook({acct.name: HookUser(tricky, upstream_user=acct.name, upstream_pass=acct.password)})
    with hook:
        g = make_gateway(dove_b, hook_overrides(hook))
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            r = c.auth_plain(acct.name, tricky)
            raw = [q.header("Auth-Pass") for q in hook.requests]
            assert r.ok, f"{r}; the hook received Auth-Pass {raw!r}"
            assert c.quit().ok
        sent = hook.requests[0].header("Auth-Pass")
        assert " " not in sent and urllib.parse.unquote(sent) == tricky, sent


def _hook_500(request):
    return Response(500, body=b"backend exploded\n")


def _hook_slow(request):
    return Response(200, {"Auth-Status": "OK"}, delay=5.0)


def _hook_no_status(request):
    return Response(200, {})


@pytest.mark.parametrize("failure", ["status-500", "slow", "refused", "no-auth-status"])
def test_hook_unavailable_is_sys_temp(failure, dove_b, make_gateway, ctx):
    acct = dove_b.add_user()
    hook = None
    if failure == "refused":
        url = f"http://{HOST}:{free_port()}/auth"  # nothing listens there
    else:
        hook = AuthHook(respond={"status-500": _hook_500, "slow": _hook_slow,
                                 "no-auth-status": _hook_no_status}[failure])
        url = hook.url("/auth")
    try:
        g = make_gateway(dove_b, hook_overrides(url, timeout="500ms", failure_delay="1s"))
        start = len(dove_b.log_text())
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            t = time.monotonic()
            r = user_pass(c, acct.name, acct.password)
            took = time.monotonic() - t
            if failure == "no-auth-status":
                assert r.err and not r.ok, r  # a malformed answer is never a login
            else:
                assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
            # No faster than a wrong password (auth.failure_delay), so clients retrying at
            # once do not hammer a hook that is down.
            assert took >= 0.95, f"a failed hook answered after {took:.2f}s, before auth.failure_delay 1s"
            if failure == "slow":
                assert took < 3.5 * TIME_FACTOR, f"auth.http.timeout 500ms + 1s delay, answered after {took:.2f}s"
            assert c.quit().ok
        assert "Login: user=" not in log_since(dove_b, start)
        if hook is not None:
            assert hook.requests, "the hook was never asked"  # asked before the answer
    finally:
        if hook is not None:
            hook.close()


def test_hook_route_tls(dove_a, dove_b, make_gateway, ctx):
    """The configured upstream is reached over implicit TLS; the hook routes users to
    another server's plain port (auth.http.route_tls: none, as nginx's mail proxy
    speaks to its backends), its STARTTLS port and its implicit-TLS port (the hook's
    X-Popbridge-Upstream-TLS). Without route_tls, a route inherits upstream.tls."""
    plain, starttls, implicit = dove_a.add_user(), dove_a.add_user(), dove_a.add_user()
    mails = {}
    for acct in (plain, starttls, implicit):
        mails[acct.name] = messages.simple(next(_n))
        dove_a.append(acct.name, mails[acct.name])
    hook = AuthHook({
        plain.name: HookUser(plain.password, server=HOST, port=dove_a.imap_port),
        starttls.name: HookUser(starttls.password, server=HOST, port=dove_a.imap_port, upstream_tls="starttls"),
        implicit.name: HookUser(implicit.password, server=HOST, port=dove_a.imaps_port, upstream_tls="implicit"),
    })
    with hook:
        overrides = hook_overrides(hook)
        overrides["auth"]["http"]["route_tls"] = "none"
        g = make_gateway(dove_b, overrides, upstream_tls="implicit")
        for acct, secured in ((plain, "secured"), (starttls, "TLS"), (implicit, "TLS")):
            start = dove_a.log_mark(acct.name)  # its APPEND's login is before it
            with RawPop3(g.pop3s_port, tls_context=ctx) as c:
                r = user_pass(c, acct.name, acct.password)
                assert r.ok, f"{acct.name}: {r}"
                assert c.cmd("RETR 1", multiline=True).body == as_retrieved(mails[acct.name])
                assert c.quit().ok
            line = wait_dovecot_login(dove_a, start, acct.name)
            # Dovecot says "secured" for a plain login from loopback, "TLS" over TLS.
            assert f", {secured}," in line, f"{acct.name}: {line}"

        # Inherited (implicit TLS) towards a plain port: the handshake fails, never a login.
        inherit = make_gateway(dove_b, hook_overrides(hook), upstream_tls="implicit")
        with RawPop3(inherit.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, plain.name, plain.password).line.startswith(b"-ERR [SYS/TEMP]")
        assert not hook.errors, hook.errors


def test_hook_failure_text_reaches_the_client(dove_b, make_gateway, ctx):
    """As nginx does, the hook's Auth-Status text is the client's error text."""
    acct = dove_b.add_user()
    with AuthHook({acct.name: HookUser(acct.password)}) as hook:
        hook.failure_text = "Account locked, call the helpdesk on 1234"
        g = make_gateway(dove_b, hook_overrides(hook))
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            r = user_pass(c, acct.name, "wrong")
            assert r.line == b"-ERR [AUTH] Account locked, call the helpdesk on 1234", r
            assert c.quit().ok


def test_hook_auth_wait(dove_b, make_gateway, ctx):
    acct = dove_b.add_user()
    with AuthHook({acct.name: HookUser(acct.password)}, wait=1) as hook:
        g = make_gateway(dove_b, hook_overrides(hook))
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            t = time.monotonic()
            r = user_pass(c, acct.name, "wrong")
            took = time.monotonic() - t
            assert r.line.startswith(b"-ERR [AUTH]"), r
            assert took >= 0.98, f"Auth-Wait: 1 answered after {took:.2f}s"
            assert len(hook.requests) == 1
            assert user_pass(c, acct.name, acct.password).ok  # a good login needs no wait
            assert c.quit().ok


# ===================================================================== OAuth2

CLIENT_ID = "popbridge-test"
CLIENT_SECRET = "client-secret-Zq81"


def oauth2_overrides(pki, files, token_server, mechanism, users, refresh, **oauth2) -> dict:
    """users: {pop3 user: password} for auth.users_file; refresh: {pop3 user: refresh token}."""
    uf = write_file(os.path.join(files, f"users-{next(_n)}"),
                    [f"{u}:{crypt_hash(p, 'sha512')}" for u, p in users.items()])
    rt = write_file(os.path.join(files, f"refresh-{next(_n)}"), [f"{u}:{t}" for u, t in refresh.items()])
    secret = write_file(os.path.join(files, f"client-secret-{next(_n)}"), [CLIENT_SECRET])
    settings = {"token_url": token_server.url("/token"), "grant": "refresh_token", "client_id": CLIENT_ID,
                "client_secret_file": secret, "refresh_tokens_file": rt, "mechanism": mechanism,
                "ca_file": pki.ca, **oauth2}
    return {"auth": {"mode": "users_file", "users_file": uf, "max_attempts": 10},
            "upstream": {"login": {"mode": "oauth2", "oauth2": settings}}}


def oauth2_gateway(make_gateway, pki, files, upstream, token_server, mechanism, users, refresh, env=None,
                   **oauth2):
    return make_gateway(upstream, oauth2_overrides(pki, files, token_server, mechanism, users, refresh, **oauth2),
                        env=env)


@pytest.fixture
def token_server(pki, store):
    """An HTTPS token endpoint (the harness CA's certificate) sharing the store with
    Dovecot's introspection endpoint."""
    with store.lock:
        store.clients = {CLIENT_ID: CLIENT_SECRET}
    s = OAuth2Server(store, pki=pki, expires_in=3600)
    yield s
    s.close()
    assert not s.errors, s.errors


def _secrets_absent(g, token_server, refresh_tokens) -> None:
    log = g.log_text()
    for _, token in token_server.issued:
        assert token not in log, "an access token is in the gateway log"
    for rt in refresh_tokens:
        assert rt not in log, "a refresh token is in the gateway log"
    assert CLIENT_SECRET not in log


def _check_token_request(req, refresh_token: str) -> None:
    form = req.form
    assert req.method == "POST"
    assert form.get("grant_type") == "refresh_token", form
    assert form.get("refresh_token") == refresh_token, form
    auth = req.header("Authorization") or ""
    if auth.lower().startswith("basic "):
        cid, _, csec = base64.b64decode(auth[6:]).decode().partition(":")
        assert (urllib.parse.unquote(cid), urllib.parse.unquote(csec)) == (CLIENT_ID, CLIENT_SECRET)
    else:
        assert form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET, form


@pytest.mark.parametrize("mechanism", ["xoauth2", "oauthbearer"])
def test_oauth2_upstream_login_and_cache(mechanism, dove_a, store, token_server, make_gateway, pki, files, ctx):
    a1, a2 = dove_a.add_user(), dove_a.add_user()
    msg = messages.simple(next(_n))
    dove_a.append(a1.name, msg)
    rt1, rt2 = f"rt-{next(_n)}-{os.urandom(8).hex()}", f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.refresh.update({rt1: a1.name, rt2: a2.name})
    g = oauth2_gateway(make_gateway, pki, files, dove_a, token_server, mechanism,
                       {a1.name: "pop-pw-1", a2.name: "pop-pw-2"}, {a1.name: rt1, a2.name: rt2})
    start = dove_a.log_mark(a1.name)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = user_pass(c, a1.name, "pop-pw-1")
        assert r.ok, r
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    line = wait_dovecot_login(dove_a, start, a1.name)
    assert f"method={mechanism.upper()}" in line, line
    reqs = token_server.token_requests()
    assert len(reqs) == 1, reqs
    _check_token_request(reqs[0], rt1)

    # Within the token's lifetime: no new token request.
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, a1.name, "pop-pw-1").ok
        assert c.quit().ok
    assert len(token_server.token_requests()) == 1
    # Another user has a token of their own.
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, a2.name, "pop-pw-2").ok
        assert c.quit().ok
    reqs = token_server.token_requests()
    assert len(reqs) == 2, reqs
    _check_token_request(reqs[1], rt2)
    # A wrong client password never costs a token request.
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, a1.name, "wrong").line == AUTH_FAILED
    assert len(token_server.token_requests()) == 2
    _secrets_absent(g, token_server, [rt1, rt2])


def test_oauth2_token_fetched_once_across_workers(dove_a, store, token_server, make_gateway, pki, files, ctx):
    """16 sessions of one user at once, on two worker loops, while the token endpoint
    takes its time: one token request for the process, not one per worker (which would
    also race a rotating refresh token), and every session logs in."""
    acct = dove_a.add_user()
    rt = f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.refresh[rt] = acct.name
    token_server.token_delay = 0.5
    overrides = oauth2_overrides(pki, files, token_server, "xoauth2", {acct.name: "pop-pw"}, {acct.name: rt})
    overrides["workers"] = 2
    g = make_gateway(dove_a, overrides)

    def session(_):
        with RawPop3(g.pop3s_port, tls_context=ctx, timeout=30) as c:
            r = user_pass(c, acct.name, "pop-pw")
            assert c.quit().ok
            return r.line

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        lines = list(pool.map(session, range(16)))
    assert all(line.startswith(b"+OK") for line in lines), lines
    reqs = token_server.token_requests()
    assert len(reqs) == 1, f"{len(reqs)} token requests for one user"
    _check_token_request(reqs[0], rt)


def test_oauth2_token_refreshed_after_expiry(dove_a, store, pki, files, make_gateway, ctx):
    acct = dove_a.add_user()
    rt = f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.clients = {CLIENT_ID: CLIENT_SECRET}
        store.refresh[rt] = acct.name
    with OAuth2Server(store, pki=pki, expires_in=2) as ts:
        g = oauth2_gateway(make_gateway, pki, files, dove_a, ts, "xoauth2",
                           {acct.name: "pop-pw"}, {acct.name: rt})
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, "pop-pw").ok
            assert c.quit().ok
        assert len(ts.token_requests()) == 1
        first = ts.issued[0][1]
        # Wait (deadline) until the identity provider itself treats the token as expired.
        wait_until(lambda: store.lookup(first) is None, 5, "the first access token to expire")
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            r = user_pass(c, acct.name, "pop-pw")
            assert r.ok, f"after expiry the gateway must fetch a new token: {r}"
            assert c.quit().ok
        assert len(ts.token_requests()) == 2
        _secrets_absent(g, ts, [rt])


def test_oauth2_invalid_refresh_token(dove_a, store, token_server, make_gateway, pki, files, ctx):
    """The endpoint answers 400 invalid_grant: the client's credentials were good, the
    gateway's own grant is not: -ERR [SYS/PERM] (the gateway's credentials, as for a
    refused master login); nobody is logged in upstream. A user without a refresh token
    line gets the same."""
    acct, other = dove_a.add_user(), dove_a.add_user()
    revoked = f"rt-revoked-{os.urandom(8).hex()}"  # the store never knew it
    g = oauth2_gateway(make_gateway, pki, files, dove_a, token_server, "xoauth2",
                       {acct.name: "pop-pw", other.name: "pop-pw-o"}, {acct.name: revoked})
    start = len(dove_a.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = user_pass(c, acct.name, "pop-pw")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        r = user_pass(c, other.name, "pop-pw-o")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        assert c.quit().ok
    reqs = token_server.token_requests()
    assert len(reqs) == 1, reqs  # only the user with a refresh token caused a request
    assert "Login: user=" not in log_since(dove_a, start)
    _secrets_absent(g, token_server, [revoked])


def test_oauth2_rejected_token_is_not_reused(dove_a, store, token_server, make_gateway, pki, files, ctx):
    """The identity provider revokes an access token before it expires; Dovecot then
    refuses it. The gateway must not keep offering the cached, refused token until its
    expiry: at the latest the next login fetches a new one and works."""
    acct = dove_a.add_user()
    rt = f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.refresh[rt] = acct.name
    g = oauth2_gateway(make_gateway, pki, files, dove_a, token_server, "xoauth2", {acct.name: "pop-pw"}, {acct.name: rt})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, acct.name, "pop-pw").ok
        assert c.quit().ok
    assert len(token_server.token_requests()) == 1
    with store.lock:
        store.access.pop(token_server.issued[-1][1])  # revoked at the identity provider
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        second = user_pass(c, acct.name, "pop-pw")  # ideally OK already (one retry with a new token)
        assert second.ok or second.line.startswith(b"-ERR [SYS/"), second
        if second.ok:
            assert c.quit().ok
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        third = user_pass(c, acct.name, "pop-pw")
        assert third.ok, (f"the refused token is still used: 2nd login {second}, 3rd {third}, "
                          f"{len(token_server.token_requests())} token request(s)")
        assert c.quit().ok
    assert len(token_server.token_requests()) == 2


def test_oauth2_token_endpoint_unreachable_is_sys_temp(dove_a, pki, files, make_gateway, ctx):
    acct = dove_a.add_user()

    class Dead:
        def url(self, path):
            return f"https://{HOST}:{free_port()}{path}"
    g = oauth2_gateway(make_gateway, pki, files, dove_a, Dead(), "xoauth2",
                       {acct.name: "pop-pw"}, {acct.name: "rt-whatever"})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = user_pass(c, acct.name, "pop-pw")
        assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
        assert c.quit().ok


# ====================================================== metrics of the HTTP services

def metric_values(port: int) -> dict[str, float]:
    """{'name{labels}': value} of one scrape of /metrics."""
    body = urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_hook_and_token_endpoint_metrics(dove_a, store, token_server, make_gateway, pki, files, ctx):
    """Requests to the hook and the token endpoint are counted by result with their
    latency, and token lookups by cache hit or miss."""
    acct = dove_a.add_user()
    rt = f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.refresh[rt] = acct.name
    port = free_port()
    overrides = oauth2_overrides(pki, files, token_server, "xoauth2", {acct.name: "pop-pw"}, {acct.name: rt})
    overrides["metrics"] = {"address": f"{HOST}:{port}"}
    g = make_gateway(dove_a, overrides)
    for _ in range(2):
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, "pop-pw").ok
            assert c.quit().ok
    m = metric_values(port)
    assert m['popbridge_oauth2_token_requests_total{result="ok"}'] == 1, m
    assert m['popbridge_oauth2_token_requests_total{result="error"}'] == 0
    assert m["popbridge_oauth2_token_duration_seconds_count"] == 1
    assert m['popbridge_oauth2_token_cache_total{result="miss"}'] == 1
    assert m['popbridge_oauth2_token_cache_total{result="hit"}'] == 1

    answers = iter([Response(200, {"Auth-Status": "OK"}), Response(500, body=b"down\n")])
    with AuthHook(respond=lambda request: next(answers)) as hook:
        hport = free_port()
        hooked = make_gateway(dove_a, {**hook_overrides(hook, failure_delay="0s"),
                                       "metrics": {"address": f"{HOST}:{hport}"}})
        with RawPop3(hooked.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, acct.password).ok
            assert c.quit().ok
        with RawPop3(hooked.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, acct.password).line.startswith(b"-ERR [SYS/TEMP]")
        m = metric_values(hport)
        assert m['popbridge_auth_hook_requests_total{result="ok"}'] == 1, m
        assert m['popbridge_auth_hook_requests_total{result="error"}'] == 1, m
        assert m["popbridge_auth_hook_duration_seconds_count"] == 2


# ====================================================== egress proxy

def test_token_endpoint_and_hook_through_an_egress_proxy(dove_a, store, token_server, make_gateway, pki,
                                                         files, ctx):
    """HTTPS_PROXY carries the token request through a CONNECT tunnel (TLS end to end
    with the endpoint), HTTP_PROXY the hook's in absolute form; NO_PROXY sends them
    direct; a proxy that refuses CONNECT is never a login."""
    acct = dove_a.add_user()
    rt = f"rt-{next(_n)}-{os.urandom(8).hex()}"
    with store.lock:
        store.refresh[rt] = acct.name
    token_url = urllib.parse.urlsplit(token_server.url("/token"))
    with EgressProxy() as proxy:
        env = {"HTTPS_PROXY": proxy.url, "http_proxy": proxy.url, "NO_PROXY": "localhost,.example.org"}
        g = oauth2_gateway(make_gateway, pki, files, dove_a, token_server, "xoauth2",
                           {acct.name: "pop-pw"}, {acct.name: rt}, env=env)
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, "pop-pw").ok
            assert c.quit().ok
        assert proxy.request_lines() == [f"CONNECT {token_url.hostname}:{token_url.port}"]
        assert len(token_server.token_requests()) == 1
        assert not proxy.errors, proxy.errors

        with AuthHook({acct.name: HookUser(acct.password)}) as hook:
            hooked = make_gateway(dove_a, hook_overrides(hook), env={"HTTP_PROXY": proxy.url})
            with RawPop3(hooked.pop3s_port, tls_context=ctx) as c:
                assert user_pass(c, acct.name, acct.password).ok
                assert c.quit().ok
            assert proxy.request_lines()[1:] == [f"GET {hook.url('/auth')}"]
            assert len(hook.requests) == 1

            direct = make_gateway(dove_a, hook_overrides(hook),
                                  env={"HTTP_PROXY": proxy.url, "NO_PROXY": f"example.org, {HOST}"})
            with RawPop3(direct.pop3s_port, tls_context=ctx) as c:
                assert user_pass(c, acct.name, acct.password).ok
                assert c.quit().ok
            assert len(proxy.request_lines()) == 2, "NO_PROXY lists the hook's host"
            assert len(hook.requests) == 2

    with EgressProxy(refuse_connect=True) as refusing:
        token_server.expires_in = 1  # not from the cache
        g = oauth2_gateway(make_gateway, pki, files, dove_a, token_server, "xoauth2",
                           {acct.name: "pop-pw"}, {acct.name: rt}, env={"HTTPS_PROXY": refusing.url})
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            assert user_pass(c, acct.name, "pop-pw").line.startswith(b"-ERR [SYS/TEMP]")
        assert "proxy refused CONNECT" in g.log_text(), g.log_text()[-2000:]
        assert refusing.request_lines() == [f"CONNECT {token_url.hostname}:{token_url.port}"]


# ====================================================== HTTPS and connections

@pytest.mark.parametrize("service", ["hook", "token-endpoint"])
def test_untrusted_certificate_is_never_a_login(service, dove_a, store, make_gateway, pki, files, ctx):
    """The hook and the token endpoint are HTTPS with a certificate the configured
    ca_file does not trust: no request is made, no login, -ERR [SYS/TEMP]."""
    from harness.certs import make_pki
    other = make_pki()  # a CA the servers' certificate does not chain to
    acct = dove_a.add_user()
    try:
        if service == "hook":
            server = AuthHook({acct.name: HookUser(acct.password)}, pki=pki)
            g = make_gateway(dove_a, {"auth": {"mode": "http", "max_attempts": 10,
                                               "http": {"url": server.url("/auth"), "ca_file": other.ca}}})
        else:
            rt = f"rt-{os.urandom(8).hex()}"
            with store.lock:
                store.clients = {CLIENT_ID: CLIENT_SECRET}
                store.refresh[rt] = acct.name
            server = OAuth2Server(store, pki=pki)
            g = oauth2_gateway(make_gateway, pki, files, dove_a, server, "xoauth2",
                               {acct.name: "pop-pw"}, {acct.name: rt}, ca_file=other.ca)
        with server:
            start = len(dove_a.log_text())
            with RawPop3(g.pop3s_port, tls_context=ctx) as c:
                r = user_pass(c, acct.name, acct.password if service == "hook" else "pop-pw")
                assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
                assert c.quit().ok
            assert not server.requests, "a request went to a server whose certificate is not trusted"
            assert "Login: user=" not in log_since(dove_a, start)
    finally:
        other.cleanup()


def test_idle_http_connections_do_not_delay_shutdown(dove_a, store, make_gateway, pki, files, ctx):
    """Hook and token endpoint keep connections alive (HTTP/1.1 default): the gateway
    may park them for reuse, but SIGTERM with no session open must still exit promptly,
    not when the parked connections' idle timeout runs out."""
    acct = dove_a.add_user()
    rt = f"rt-{os.urandom(8).hex()}"
    with store.lock:
        store.clients = {CLIENT_ID: CLIENT_SECRET}
        store.refresh[rt] = acct.name
    with AuthHook({acct.name: HookUser("pop-pw")}, keep_alive=True) as hook, \
            OAuth2Server(store, pki=pki, keep_alive=True) as ts:
        over = oauth2_overrides(pki, files, ts, "xoauth2", {}, {acct.name: rt})
        over["auth"] = {"mode": "http", "http": {"url": hook.url("/auth")}, "max_attempts": 10}
        g = make_gateway(dove_a, over)
        for _ in range(2):
            with RawPop3(g.pop3s_port, tls_context=ctx) as c:
                r = user_pass(c, acct.name, "pop-pw")
                assert r.ok, r
                assert c.quit().ok
        assert len(hook.requests) == 2 and len(ts.token_requests()) == 1
        wait_until(lambda: "event=session_end" in g.log_text().rsplit("event=login", 1)[-1], QUICK,
                   "the last session to end")
        t = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        try:
            g.proc.wait(5 * TIME_FACTOR)
        except Exception:
            tail = "\n".join(g.log_text().splitlines()[-6:])
            g.kill()
            pytest.fail(f"popbridge still running {time.monotonic() - t:.1f}s after SIGTERM with no "
                        f"session open (idle keep-alive HTTP connections hold a worker loop?)\n{tail}")
        assert g.proc.returncode == 0
