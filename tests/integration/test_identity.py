# SPDX-License-Identifier: Apache-2.0
"""Identity: who a client is and how the gateway logs in upstream.

  * auth.mode users_file with every hash kind ($6$, $2b$, $y$), upstream.login master
    (Dovecot master passdb, SASL PLAIN authzid) and mapped (credentials_file);
    the master password from a file or from the environment; config errors.
  * XOAUTH2 / OAUTHBEARER from clients passed through to Dovecot's oauth2 passdb
    (tokens checked by a local RFC 7662 introspection endpoint), one-line AUTH lines
    longer than 255 octets and the two-line form.
  * IMAP ID before login: Dovecot (login_trusted_networks) logs the client address the
    gateway learnt from a PROXY header; the fields, and when ID is not sent (fake IMAP).
  * Abuse protection: growing failure delays, max_attempts, exclusive_sessions, metrics.
  * users_file reload on SIGHUP.

The module's Dovecot has a master passdb and an oauth2 passdb; its users' passwords are
never given to POP3 clients, which log in with the passwords of the gateway's users_file.
Every wait has a deadline; servers are cleaned up by PID (harness).
"""

from __future__ import annotations

import base64
import http.client
import itertools
import os
import re
import signal
import time

import pytest

from harness import messages, tempdirs
from harness.auth_servers import (OAuth2Server, TokenStore, crypt_hash, dovecot_identity_config,
                                  make_token, write_file)
from harness.clients import RawPop3, connect_with_header, proxy_v1, user_pass
from harness.dovecot import Dovecot
from harness.fake_imap import FakeImap
from harness.gateway import Gateway, check_config
from harness.messages import as_retrieved
from harness.ports import free_port
from harness.wait import TIME_FACTOR, port_accepts, wait_until
from test_login_reuse import logins, logins_since, reused, wait_parked
from test_operations import start_gateway

HOST = "127.0.0.1"
QUICK = 10.0 * TIME_FACTOR
MASTER = ("popbridge-master", "master-secret-7")
AUTH_FAILED = b"-ERR [AUTH] Authentication failed."

_n = itertools.count(1)


# ===================================================================== helpers

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_events(g: Gateway, event: str) -> list[dict[str, str]]:
    out = []
    for line in g.log_text().splitlines():
        fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in _FIELD.findall(line)}
        if fields.get("event") == event:
            out.append(fields)
    return out


def wait_event(g: Gateway, event: str, count: int = 1) -> list[dict[str, str]]:
    return wait_until(lambda: (lambda e: e if len(e) >= count else None)(log_events(g, event)),
                      QUICK, f"{count} gateway log line(s) event={event}", on_timeout=g.diagnostics)


def metric(port: int, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when the series is absent)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def users_file(directory: str, entries: dict[str, tuple[str, str]]) -> str:
    """auth.users_file with {user: (password, hash kind)}."""
    return write_file(os.path.join(directory, f"users-{next(_n)}"),
                      [f"{u}:{crypt_hash(p, kind)}" for u, (p, kind) in entries.items()])


def secret_file(directory: str, secret: str) -> str:
    return write_file(os.path.join(directory, f"secret-{next(_n)}"), [secret])


def master_overrides(uf: str, password_file: str, **auth) -> dict:
    return {"auth": {"mode": "users_file", "users_file": uf, **auth},
            "upstream": {"login": {"mode": "master", "master_user": MASTER[0],
                                   "master_password_file": password_file}}}


def log_since(d: Dovecot, start: int) -> str:
    return d.log_text()[start:]


def wait_dovecot_login(d: Dovecot, start: int, user: str, what: str = "") -> str:
    """Waits for Dovecot's "Login: user=<user>" line after offset `start`; returns it."""
    def found():
        for line in log_since(d, start).splitlines():
            if f"Login: user=<{user}>" in line:
                return line
        return None
    return wait_until(found, QUICK, f"Dovecot to log the login of {user} {what}", on_timeout=d.diagnostics)


def b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def xoauth2(user: str, token: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


def oauthbearer(user: str, token: str, port: int) -> str:
    return b64(f"n,a={user},\x01host=localhost\x01port={port}\x01auth=Bearer {token}\x01\x01")


# ==================================================================== fixtures

@pytest.fixture(scope="module")
def files():
    """Gateway-side files (users_file, credentials, secrets) and Dovecot's extra passdb files."""
    d = tempdirs.make("identity")
    os.chmod(d, 0o755)  # Dovecot's auth process reads its passdb files from here
    yield d
    tempdirs.remove(d)


@pytest.fixture(scope="module")
def idp():
    """An RFC 7662 introspection endpoint (plain HTTP, for Dovecot's oauth2 passdb)."""
    with OAuth2Server(TokenStore()) as s:
        yield s


@pytest.fixture(scope="module")
def updove(pki, files, idp):
    """Dovecot with a master passdb, an oauth2 passdb and 127.0.0.0/8 trusted (IMAP ID)."""
    extra = dovecot_identity_config(files, master=MASTER, introspection_url=idp.url("/introspect"),
                                    trusted_networks="127.0.0.0/8")
    with Dovecot(pki, {}, extra_config=extra) as d:
        yield d
    assert not idp.errors, idp.errors


# ========================================================= users_file + master

@pytest.mark.parametrize("kind", ["sha512", "bcrypt", "yescrypt"])
def test_users_file_master_login(kind, updove, files, make_gateway, ctx):
    acct = updove.add_user()  # Dovecot's password for it is never given to the client
    msg = messages.simple(next(_n))
    updove.append(acct.name, msg)
    client_password = f"pop3-{kind}-Pw{next(_n)}"
    uf = users_file(files, {acct.name: (client_password, kind)})
    with open(uf) as f:
        assert f.read().split(":", 1)[1].startswith({"sha512": "$6$", "bcrypt": "$2b$", "yescrypt": "$y$"}[kind])
    g = make_gateway(updove, master_overrides(uf, secret_file(files, MASTER[1]), max_attempts=5))
    start = updove.log_mark(acct.name)  # the APPEND's login is before it

    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = user_pass(c, acct.name, client_password)
        assert r.ok, r
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    line = wait_dovecot_login(updove, start, acct.name)
    assert "method=PLAIN" in line, line
    wait_until(lambda: f"Master user logging in as {acct.name}" in log_since(updove, start), QUICK,
               "Dovecot's auth log to show the master login", on_timeout=updove.diagnostics)
    assert f"Login: user=<{MASTER[0]}>" not in log_since(updove, start)
    assert client_password not in g.log_text() and MASTER[1] not in g.log_text()

    # Failures: a wrong password, an unknown user and the user's real *upstream*
    # password (the users_file is the authority) all get the same answer, and none
    # reaches Dovecot.
    mark = len(updove.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        wrong = user_pass(c, acct.name, client_password + "x")
        unknown = user_pass(c, f"nobody{next(_n)}", client_password)
        upstream_pw = user_pass(c, acct.name, acct.password)
        assert wrong.line == unknown.line == upstream_pw.line == AUTH_FAILED, (wrong, unknown, upstream_pw)
        r = user_pass(c, acct.name, client_password)  # still usable after failures
        assert r.ok, r
        assert c.quit().ok
    wait_dovecot_login(updove, mark, acct.name, "after the failures")
    assert log_since(updove, mark).count("Login: user=") == 1, log_since(updove, mark)


def test_users_file_sasl_plain_and_login(updove, files, make_gateway, ctx):
    """The users_file check serves AUTH PLAIN and AUTH LOGIN too; tokens are not offered."""
    acct = updove.add_user()
    uf = users_file(files, {acct.name: ("plain-pw-1", "sha512")})
    g = make_gateway(updove, master_overrides(uf, secret_file(files, MASTER[1])))
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        capa = c.capa()
        sasl = next(l for l in capa if l.startswith("SASL"))
        assert "XOAUTH2" not in sasl and "OAUTHBEARER" not in sasl, capa
        r = c.cmd("AUTH XOAUTH2 " + xoauth2(acct.name, "whatever-token"))
        assert r.err and not r.text.startswith("-ERR [SYS"), r
        # Acting as another user (a PLAIN authzid) is the gateway's privilege, not a client's.
        r = c.auth_plain(acct.name, "plain-pw-1", authzid=f"other{next(_n)}")
        assert r.line == AUTH_FAILED, r
        r = c.auth_plain(acct.name, "plain-pw-1")
        assert r.ok, r
        assert c.quit().ok
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert c.cmd("AUTH LOGIN").line.startswith(b"+ ")
        assert c.cmd(b64(acct.name)).line.startswith(b"+ ")
        r = c.cmd(b64("plain-pw-1"))
        assert r.ok, r
        assert c.quit().ok


def test_master_password_from_env(updove, files, make_gateway, ctx, monkeypatch):
    acct = updove.add_user()
    msg = messages.simple(next(_n))
    updove.append(acct.name, msg)
    uf = users_file(files, {acct.name: ("env-pw-1", "sha512")})
    monkeypatch.setenv("POPBRIDGE_TEST_MASTER_PASSWORD", MASTER[1])
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf},
                              "upstream": {"login": {"mode": "master", "master_user": MASTER[0],
                                                     "master_password_env": "POPBRIDGE_TEST_MASTER_PASSWORD"}}})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, acct.name, "env-pw-1").ok
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    assert MASTER[1] not in g.log_text()


def test_master_login_refused_is_sys_perm(updove, files, make_gateway, ctx):
    """Good client credentials, but Dovecot refuses the gateway's own (wrong master
    password): -ERR [SYS/PERM], nobody logged in, no failure delay counted for the client."""
    acct = updove.add_user()
    uf = users_file(files, {acct.name: ("refused-pw", "sha512")})
    g = make_gateway(updove, master_overrides(uf, secret_file(files, "not-the-master-password")))
    start = len(updove.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = user_pass(c, acct.name, "refused-pw")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        assert c.quit().ok
    assert "Login: user=" not in log_since(updove, start)
    assert wait_event(g, "upstream_login_refused")
    assert "not-the-master-password" not in g.log_text()


def test_master_login_reuse_keeps_each_user_to_their_own_mailbox(updove, files, make_gateway, ctx):
    """upstream.login_reuse with one master password for every user: a kept connection
    acts for one user, and only that user's next session (after the users_file has
    checked its password again) takes it."""
    a, b = updove.add_user(), updove.add_user()
    mail = {a.name: messages.simple(next(_n)), b.name: messages.simple(next(_n))}
    for user, msg in mail.items():
        updove.append(user, msg)
    passwords = {a.name: "reuse-a-pw", b.name: "reuse-b-pw"}
    uf = users_file(files, {user: (pw, "sha512") for user, pw in passwords.items()})
    overrides = master_overrides(uf, secret_file(files, MASTER[1]))
    overrides["upstream"]["login_reuse"] = {"idle": "60s"}
    overrides["workers"] = 1  # each worker keeps its own connections
    overrides["auth"]["failure_delay"] = "100ms"  # the wrong passwords below
    g, port = start_gateway(make_gateway, updove, overrides)
    before = {user: logins(updove, user) for user in mail}
    for round_ in range(2):
        for user, msg in mail.items():
            with RawPop3(g.pop3s_port, tls_context=ctx) as c:
                if round_ == 1:
                    # A wrong password is refused by the users_file, kept connection or not.
                    assert user_pass(c, user, passwords[user] + "x").line == AUTH_FAILED
                assert user_pass(c, user, passwords[user]).ok
                assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
                assert c.quit().ok
            wait_parked(port, 1 if round_ == 0 and user == a.name else 2)
    assert reused(port) == 2
    for user in mail:
        assert logins_since(updove, user, before[user]) == 1, user


# ================================================================== mapped

def test_mapped_login(updove, files, make_gateway, ctx):
    target = updove.add_user()
    msg = messages.simple(next(_n))
    updove.append(target.name, msg)
    uf = users_file(files, {"scanner": ("scanner-pw", "sha512"), "orphan": ("orphan-pw", "bcrypt"),
                            "badmap": ("badmap-pw", "sha512")})
    creds = write_file(os.path.join(files, f"credentials-{next(_n)}"),
                       [f"scanner:{target.name}:{target.password}", f"badmap:{target.name}:wrong-upstream-pw"])
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf, "max_attempts": 10},
                              "upstream": {"login": {"mode": "mapped", "credentials_file": creds}}})
    start = updove.log_mark(target.name)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, "scanner", "scanner-pw").ok
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    line = wait_dovecot_login(updove, start, target.name)
    assert "Login: user=<scanner>" not in log_since(updove, start), line

    mark = len(updove.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        # A wrong password is [AUTH] whether or not a mapping exists (no account probing).
        assert user_pass(c, "orphan", "wrong").line == AUTH_FAILED
        assert user_pass(c, "scanner", "wrong").line == AUTH_FAILED
        # Good credentials without a mapping: permanent, not a credentials failure.
        r = user_pass(c, "orphan", "orphan-pw")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        # A mapping whose upstream password is wrong: the gateway's login was refused.
        r = user_pass(c, "badmap", "badmap-pw")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        assert c.quit().ok
    assert "Login: user=" not in log_since(updove, mark)
    assert target.password not in g.log_text()
    assert "wrong-upstream-pw" not in g.log_text()


# ============================================================== config errors

def _check(pki, overrides: dict, binary: str) -> tuple[int, str]:
    g = Gateway(pki, ("127.0.0.1", 143), overrides, binary=binary)
    try:
        return check_config(g.write_config(), binary)
    finally:
        g.close()


def test_config_errors(pki, files, popbridge_bin, monkeypatch):
    monkeypatch.delenv("POPBRIDGE_TEST_UNSET_SECRET", raising=False)
    pw = secret_file(files, "x")
    uf = users_file(files, {"u": ("p", "sha512")})
    creds = write_file(os.path.join(files, f"credentials-{next(_n)}"), ["u:v:w"])
    master = {"mode": "master", "master_user": "m", "master_password_file": pw}

    rc, out = _check(pki, {"upstream": {"login": master}}, popbridge_bin)
    assert rc != 0 and "upstream.login.mode" in out and "auth.mode" in out, out
    rc, out = _check(pki, {"upstream": {"login": {"mode": "mapped", "credentials_file": creds}}}, popbridge_bin)
    assert rc != 0 and "upstream.login.mode" in out, out
    rc, out = _check(pki, {"auth": {"mode": "users_file", "users_file": uf},
                           "upstream": {"login": {"mode": "master", "master_user": "m",
                                                  "master_password": "inline-secret"}}}, popbridge_bin)
    assert rc != 0 and "upstream.login.master_password" in out, out
    assert "master_password_file" in out or "master_password_env" in out, out
    rc, out = _check(pki, {"auth": {"mode": "users_file", "users_file": uf},
                           "upstream": {"login": {"mode": "master", "master_user": "m",
                                                  "master_password_env": "POPBRIDGE_TEST_UNSET_SECRET"}}},
                     popbridge_bin)
    assert rc != 0 and "POPBRIDGE_TEST_UNSET_SECRET" in out, out
    rc, out = _check(pki, {"auth": {"mode": "users_file"}}, popbridge_bin)
    assert rc != 0 and "users_file" in out, out
    # The control: the same settings done right pass.
    rc, out = _check(pki, {"auth": {"mode": "users_file", "users_file": uf},
                           "upstream": {"login": master}}, popbridge_bin)
    assert rc == 0, out
    assert "inline-secret" not in out


# ============================================== XOAUTH2 / OAUTHBEARER passthrough

@pytest.fixture(scope="module")
def token_gateway(pki, updove, popbridge_bin):
    g = Gateway(pki, updove, {"auth": {"max_attempts": 10}}, binary=popbridge_bin)
    g.start()
    yield g
    g.close()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("form", ["one-line", "two-line"])
def test_token_passthrough(mechanism, form, updove, idp, token_gateway, ctx):
    acct = updove.add_user()
    msg = messages.simple(next(_n))
    updove.append(acct.name, msg)
    token = idp.store.add_access(acct.name, make_token("client", 330))
    g = token_gateway
    response = (xoauth2(acct.name, token) if mechanism == "XOAUTH2"
                else oauthbearer(acct.name, token, g.pop3s_port))
    start = updove.log_mark(acct.name)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        sasl = next(l for l in c.capa() if l.startswith("SASL"))
        assert mechanism in sasl.split(), sasl
        if form == "one-line":
            line = f"AUTH {mechanism} {response}"
            assert len(line) + 2 > 255  # beyond RFC 2449's command line limit, on purpose
            r = c.cmd(line)
        else:
            r = c.cmd(f"AUTH {mechanism}")
            assert r.line == b"+ ", r
            r = c.cmd(response)
        assert r.ok, r
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    line = wait_dovecot_login(updove, start, acct.name)
    assert f"method={mechanism}" in line, line
    assert token not in g.log_text()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_token_passthrough_bad_token(mechanism, updove, idp, token_gateway, ctx):
    acct = updove.add_user()
    other = updove.add_user()
    other_token = idp.store.add_access(other.name, make_token("other", 300))
    good = idp.store.add_access(acct.name, make_token("good", 300))
    g = token_gateway
    enc = (lambda t: xoauth2(acct.name, t)) if mechanism == "XOAUTH2" else \
        (lambda t: oauthbearer(acct.name, t, g.pop3s_port))
    start = len(updove.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        r = c.cmd(f"AUTH {mechanism} " + enc(make_token("unknown", 300)))
        assert r.line == AUTH_FAILED, r
        r = c.cmd(f"AUTH {mechanism} " + enc(other_token))  # someone else's token
        assert r.line == AUTH_FAILED, r
        r = c.cmd(f"AUTH {mechanism} " + enc(good))  # the session still works
        assert r.ok, r
        assert c.quit().ok
    wait_dovecot_login(updove, start, acct.name)
    assert log_since(updove, start).count("Login: user=") == 1


# ==================================================================== IMAP ID

def test_imap_id_client_address_reaches_dovecot(updove, files, make_gateway, ctx):
    """Behind a PROXY-protocol balancer the client is 192.0.2.10; Dovecot (which trusts
    127.0.0.0/8) takes that address from the gateway's IMAP ID and logs it as rip."""
    acct = updove.add_user()
    pp_port = free_port()
    g = make_gateway(updove, {"listeners": [
        {"name": "pop3s", "address": f"{HOST}:{free_port()}", "tls": "implicit"},
        {"name": "balanced", "address": f"{HOST}:{pp_port}", "tls": "implicit", "proxy_protocol": True}]})
    start = len(updove.log_text())
    c = connect_with_header(pp_port, proxy_v1("192.0.2.10", "127.0.0.1", 40123, pp_port), ctx)
    with c:
        assert user_pass(c, acct.name, acct.password).ok
        assert c.quit().ok
    line = wait_dovecot_login(updove, start, acct.name)
    assert "rip=192.0.2.10" in line, line
    # And without a PROXY header the real peer address is what Dovecot sees.
    mark = len(updove.log_text())
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, acct.name, acct.password).ok
        assert c.quit().ok
    line = wait_dovecot_login(updove, mark, acct.name)
    assert "rip=127.0.0.1" in line, line


def _id_hook(session, cmd) -> bool:
    session.line('* ID ("name" "fake")')
    session.ok(cmd.tag, "ID completed.")
    return True


CAPS = ("IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS", "LITERAL+")


@pytest.mark.parametrize("case", ["offered", "send_id_false", "not_offered"])
def test_imap_id_fields(case, make_gateway, ctx):
    caps = CAPS + (("ID",) if case != "not_offered" else ())
    with FakeImap(users={"idu": "idpw"}, capabilities=caps, hooks={"ID": _id_hook}) as fake:
        over = {"upstream": {"send_id": False}} if case == "send_id_false" else {}
        g = make_gateway(fake.address, over, upstream_tls="none")
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            local_port = c.sock.getsockname()[1]
            assert user_pass(c, "idu", "idpw").ok
            assert c.quit().ok
        verbs = fake.verbs()
        assert not fake.errors, fake.errors
        ids = fake.received("ID")
        if case != "offered":
            assert not ids, verbs
            return
        assert len(ids) == 1, verbs
        assert verbs.index("ID") < verbs.index("AUTHENTICATE"), verbs
        args = ids[0].args.decode()
        pairs = dict(re.findall(r'"([^"]*)" "([^"]*)"', args))
        assert pairs.get("x-originating-ip") == "127.0.0.1", args
        assert pairs.get("x-originating-port") == str(local_port), args
        assert re.fullmatch(r"popbridge-\d+", pairs.get("x-session-ext-id", "")), args
        # The session id names the gateway's session, so the two logs can be joined.
        sid = pairs["x-session-ext-id"].split("-", 1)[1]
        assert any(e.get("session") == sid for e in log_events(g, "login")), g.log_text()[-2000:]


# ============================================================ abuse protection

def test_failure_delays_grow(updove, files, make_gateway, ctx):
    """failure_delay 200ms doubling up to 1s: ~0.2, 0.4, 0.8, 1.0 s; a new connection from
    the same address keeps the grown delay."""
    uf = users_file(files, {"victim": ("right-pw", "sha512")})
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf, "failure_delay": "200ms",
                                       "max_failure_delay": "1s", "max_attempts": 10},
                              "upstream": {"login": {"mode": "master", "master_user": MASTER[0],
                                                     "master_password_file": secret_file(files, MASTER[1])}}})
    took = []
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        for i in range(4):
            assert c.cmd("USER victim").ok
            t = time.monotonic()
            r = c.cmd(f"PASS wrong-{i}")
            took.append(time.monotonic() - t)
            assert r.line == AUTH_FAILED, r
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        # Another user name, same address: the address's record still counts.
        assert c.cmd("USER someoneelse").ok
        t = time.monotonic()
        assert c.cmd("PASS wrong").line == AUTH_FAILED
        took.append(time.monotonic() - t)
    expected = [0.2, 0.4, 0.8, 1.0, 1.0]
    slack = 0.5 * TIME_FACTOR
    for got, want in zip(took, expected):
        assert want - 0.02 <= got <= want + slack, f"failure delays {took}, expected about {expected}"


def test_max_attempts_closes_and_counts(updove, files, make_gateway, ctx):
    uf = users_file(files, {"victim2": ("right-pw", "sha512")})
    mport = free_port()
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf, "failure_delay": "100ms",
                                       "max_failure_delay": "200ms", "max_attempts": 2},
                              "upstream": {"login": {"mode": "master", "master_user": MASTER[0],
                                                     "master_password_file": secret_file(files, MASTER[1])}},
                              "metrics": {"address": f"{HOST}:{mport}"}})
    wait_until(lambda: port_accepts(HOST, mport), QUICK, "the admin endpoint")
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, "victim2", "bad1").line == AUTH_FAILED
        assert user_pass(c, "victim2", "bad2").line == AUTH_FAILED
        rest = c.read_until_eof(timeout=5)  # closed after the second failure's reply
        assert rest == b"", rest
    # AUTH PLAIN failures count under their own mechanism.
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert c.auth_plain("victim2", "bad3").line == AUTH_FAILED
        assert c.auth_plain("victim2", "bad4").line == AUTH_FAILED
        assert c.read_until_eof(timeout=5) == b""

    def counted():
        return (metric(mport, "popbridge_auth_attempts_total", mechanism="user", result="rate_limited") == 1
                and metric(mport, "popbridge_auth_attempts_total", mechanism="plain", result="rate_limited") == 1)
    wait_until(counted, QUICK, "rate_limited to be counted once per closed connection")
    # Every attempt once: the first as bad_credentials, the one that hit the limit as
    # rate_limited (not both).
    assert metric(mport, "popbridge_auth_attempts_total", mechanism="user", result="bad_credentials") == 1
    assert metric(mport, "popbridge_auth_attempts_total", mechanism="plain", result="bad_credentials") == 1
    assert metric(mport, "popbridge_auth_attempts_total", mechanism="user", result="ok") == 0


@pytest.mark.parametrize("mode", ["users_file", "passthrough"])
def test_exclusive_sessions(mode, updove, files, make_gateway, ctx):
    acct = updove.add_user()
    password = "excl-pw" if mode == "users_file" else acct.password
    over: dict = {"auth": {"exclusive_sessions": True, "max_attempts": 10}}
    if mode == "users_file":
        over["auth"].update(mode="users_file", users_file=users_file(files, {acct.name: (password, "sha512")}))
        over["upstream"] = {"login": {"mode": "master", "master_user": MASTER[0],
                                      "master_password_file": secret_file(files, MASTER[1])}}
    mport = free_port()
    over["metrics"] = {"address": f"{HOST}:{mport}"}
    g = make_gateway(updove, over)
    wait_until(lambda: port_accepts(HOST, mport), QUICK, "the admin endpoint")
    first = RawPop3(g.pop3s_port, tls_context=ctx)
    with first:
        assert user_pass(first, acct.name, password).ok
        with RawPop3(g.pop3s_port, tls_context=ctx) as second:
            # Wrong credentials never learn that a session exists.
            r = user_pass(second, acct.name, password + "-wrong")
            assert r.line == AUTH_FAILED, f"{mode}: a wrong password must get [AUTH], got {r}"
            r = user_pass(second, acct.name, password)
            assert r.line.startswith(b"-ERR [IN-USE]"), r
            assert first.cmd("STAT").ok  # the first session is untouched
            assert first.quit().ok
            # Once the first session is over, the same connection can log in.
            r = wait_until(lambda: (lambda r: r if r.ok else None)(user_pass(second, acct.name, password)),
                           QUICK, "a login after the first session's QUIT")
            assert r.ok
            assert second.quit().ok
    assert metric(mport, "popbridge_auth_attempts_total", mechanism="user", result="in_use") >= 1


# ==================================================================== reload

def test_users_file_reload_on_sighup(updove, files, make_gateway, ctx):
    old = updove.add_user()
    new = updove.add_user()
    uf = users_file(files, {old.name: ("old-pw", "sha512")})
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf, "max_attempts": 10},
                              "upstream": {"login": {"mode": "master", "master_user": MASTER[0],
                                                     "master_password_file": secret_file(files, MASTER[1])}}})
    wait_event(g, "started")
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, new.name, "new-pw").line == AUTH_FAILED
        assert user_pass(c, old.name, "old-pw").ok
        assert c.quit().ok
    write_file(uf, [f"{new.name}:{crypt_hash('new-pw', 'yescrypt')}"])
    g.proc.send_signal(signal.SIGHUP)
    wait_event(g, "reloaded")

    def new_user_logs_in():
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            r = user_pass(c, new.name, "new-pw")
            if r.ok:
                c.quit()
            return r.ok
    wait_until(new_user_logs_in, QUICK, "the user added to users_file to log in after SIGHUP",
               on_timeout=g.diagnostics)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        assert user_pass(c, old.name, "old-pw").line == AUTH_FAILED  # removed from the file


def test_upstream_refusing_the_clients_own_password_is_auth(updove, files, make_gateway, ctx):
    """users_file with passthrough upstream login: the users file accepts the password but
    the upstream refuses that same password. It is a bad password, not a gateway fault:
    -ERR [AUTH], after the failure delay, counted toward max_attempts."""
    acct = updove.add_user()
    uf = users_file(files, {acct.name: ("stale-pw", "sha512")})
    g = make_gateway(updove, {"auth": {"mode": "users_file", "users_file": uf,
                                       "failure_delay": "300ms", "max_attempts": 2}})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        started = time.monotonic()
        assert user_pass(c, acct.name, "stale-pw").line == AUTH_FAILED
        assert time.monotonic() - started >= 0.3, "the failure delay applies"
        assert user_pass(c, acct.name, "stale-pw").line == AUTH_FAILED
        assert c.read_until_eof(timeout=QUICK) == b"", "closed after max_attempts failures"
    assert "upstream_login_refused" not in g.log_text()
