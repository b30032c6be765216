# SPDX-License-Identifier: Apache-2.0
"""The three upstream TLS modes against Dovecot: STARTTLS on 143, implicit TLS on 993, none."""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.messages import as_retrieved
from harness.wait import TIME_FACTOR, wait_until


@pytest.mark.parametrize("upstream_tls", ["starttls", "implicit", "none"])
def test_upstream_tls_mode(dovecot, account, make_gateway, ctx, upstream_tls):
    msg = messages.tricky_messages()["dots"]
    dovecot.append(account.name, msg)
    # The harness's own APPEND logged in over TLS too; only look at later lines.
    wait_until(lambda: f"user=<{account.name}>" in dovecot.log_text(), 10, "the APPEND login in the log")
    log_start = len(dovecot.log_text())
    g = make_gateway(dovecot, upstream_tls=upstream_tls)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok

    def gateway_logins() -> list[str]:
        return [l for l in dovecot.log_text()[log_start:].splitlines()
                if f"user=<{account.name}>" in l and "Login:" in l]

    # Dovecot's log process writes asynchronously: wait for the line.
    mine = wait_until(gateway_logins, 10, "Dovecot to log the gateway's login", on_timeout=dovecot.diagnostics)
    assert len(mine) == 1, mine
    if upstream_tls == "none":
        assert ", TLS" not in mine[0], mine
    else:
        assert ", TLS" in mine[0], f"upstream_tls={upstream_tls} must use TLS: {mine}"


@pytest.mark.parametrize("upstream_tls", ["starttls", "implicit"])
def test_upstream_tls_sessions_resume(make_dovecot, make_gateway, ctx, upstream_tls):
    """Every POP3 login opens an upstream connection; the gateway keeps the TLS sessions
    the upstream hands out and the next login resumes one (no signature upstream, no chain
    to verify here). Dovecot resumes only within one imap-login process (its ticket keys
    are per process), so it runs in performance mode, as large installations run it; in
    Dovecot's default mode (a process per connection) every handshake stays a full one."""
    d = make_dovecot(extra_config="service imap-login {\n  service_count = 0\n}\n")
    account = d.add_user()
    msg = messages.simple(1)
    d.append(account.name, msg)
    g = make_gateway(d, upstream_tls=upstream_tls)
    # The gateway's startup probe of the upstream makes the one full handshake; a login
    # that overtook it (a slow, sanitized build) would make its own.
    wait_until(lambda: "event=upstream_reachable" in g.log_text(), 10 * TIME_FACTOR,
               "the startup probe's answer", on_timeout=g.diagnostics)

    def login_lines() -> list[str]:
        return [l for l in g.log_text().splitlines() if "event=login " in l]

    for n in range(1, 4):
        with RawPop3(g.pop3s_port, tls_context=ctx) as c:
            c.login(account.name, account.password)
            assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
            assert c.quit().ok
        wait_until(lambda: len(login_lines()) >= n, 10 * TIME_FACTOR, f"login line {n}", on_timeout=g.diagnostics)
    assert all('upstream_tls="TLSv1.3 ' in l and ' resumed"' in l for l in login_lines()), login_lines()
