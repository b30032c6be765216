"""The three upstream TLS modes against Dovecot: STARTTLS on 143, implicit TLS on 993, none."""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.messages import as_retrieved


@pytest.mark.parametrize("upstream_tls", ["starttls", "implicit", "none"])
def test_upstream_tls_mode(dovecot, account, make_gateway, ctx, upstream_tls):
    msg = messages.tricky_messages()["dots"]
    dovecot.append(account.name, msg)
    log_start = len(dovecot.log_text())  # the gateway's logins come after the harness's own
    g = make_gateway(dovecot, upstream_tls=upstream_tls)
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        assert c.cmd("RETR 1", multiline=True).body == as_retrieved(msg)
        assert c.quit().ok
    log = dovecot.log_text()[log_start:]
    mine = [l for l in log.splitlines() if f"user=<{account.name}>" in l and "Login:" in l]
    assert len(mine) == 1, f"Dovecot logged one login by the gateway: {mine}"
    if upstream_tls == "none":
        assert all(", TLS" not in l for l in mine), mine
    else:
        assert all(", TLS" in l for l in mine), f"upstream_tls={upstream_tls} must use TLS: {mine}"
