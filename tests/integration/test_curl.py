# SPDX-License-Identifier: Apache-2.0
"""curl 7.88 as a real POP3 client: pop3s:// (implicit TLS) and pop3:// with --ssl-reqd (STLS)."""

from __future__ import annotations

import pytest

from harness import messages
from harness.clients import curl, curl_pop3_stls, curl_pop3s
from harness.messages import as_retrieved


@pytest.fixture
def mailbox(dovecot, account):
    msgs = messages.demo_messages() + [messages.tricky_messages()["dots"], messages.tricky_messages()["no_final_crlf"]]
    dovecot.append_many(account.name, msgs)
    return account, msgs


def listing(stdout: bytes) -> dict[int, int]:
    out = {}
    for line in stdout.split(b"\r\n"):
        if line:
            n, size = line.split()
            out[int(n)] = int(size)
    return out


def test_curl_pop3s_list(gateway, pki, mailbox):
    acct, msgs = mailbox
    p = curl_pop3s(gateway.pop3s_port, "", acct.name, acct.password, pki.ca)
    assert p.returncode == 0, p.stderr.decode()
    assert listing(p.stdout) == {n: len(m) for n, m in enumerate(msgs, 1)}


def test_curl_pop3s_retrieve_each(gateway, pki, mailbox):
    acct, msgs = mailbox
    for n, msg in enumerate(msgs, 1):
        p = curl_pop3s(gateway.pop3s_port, str(n), acct.name, acct.password, pki.ca)
        assert p.returncode == 0, p.stderr.decode()
        assert p.stdout == as_retrieved(msg), f"message {n} differs"


def test_curl_pop3_stls_retrieve(gateway, pki, mailbox):
    acct, msgs = mailbox
    p = curl_pop3_stls(gateway.pop3_port, "1", acct.name, acct.password, pki.ca)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout == msgs[0]
    p = curl_pop3_stls(gateway.pop3_port, "", acct.name, acct.password, pki.ca)
    assert p.returncode == 0, p.stderr.decode()
    assert listing(p.stdout) == {n: len(m) for n, m in enumerate(msgs, 1)}


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_curl_sasl_mechanisms(gateway, pki, mailbox, mech):
    """curl picks the mechanism from CAPA; --login-options forces each one."""
    acct, msgs = mailbox
    p = curl_pop3s(gateway.pop3s_port, "1", acct.name, acct.password, pki.ca, "--login-options", f"AUTH={mech}")
    assert p.returncode == 0, f"AUTH={mech}: {p.stderr.decode()}"
    assert p.stdout == msgs[0]


def test_curl_without_tls_cannot_log_in(gateway, pki, mailbox):
    """allow_plaintext: false: a client that doesn't use STLS can't send credentials."""
    acct, _ = mailbox
    p = curl(f"pop3://127.0.0.1:{gateway.pop3_port}/1", acct.name, acct.password, pki.ca)
    assert p.returncode != 0, "plain-text login must fail"
    assert p.stdout == b""


def test_curl_rejects_untrusted_certificate(gateway, mailbox):
    """Sanity check of the test setup: curl really verifies the gateway's certificate."""
    acct, _ = mailbox
    p = curl(f"pop3s://127.0.0.1:{gateway.pop3s_port}/", acct.name, acct.password, "/etc/ssl/certs/ca-certificates.crt")
    assert p.returncode == 60, p.stderr.decode()  # CURLE_PEER_FAILED_VERIFICATION
