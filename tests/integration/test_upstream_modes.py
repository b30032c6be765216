# SPDX-License-Identifier: Apache-2.0
"""The three upstream TLS modes against Dovecot: STARTTLS on 143, implicit TLS on 993, none."""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import RawPop3
from harness.messages import as_retrieved
from harness.wait import wait_until


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
