# SPDX-License-Identifier: Apache-2.0
"""The C++ test client (tests/bench/pop3_bench_client: our own codecs on the client side,
BoringSSL for TLS) against the real gateway and the real Dovecot: RETR through POP3S and a
direct IMAPS FETCH of the same message must give the same octets and the same SHA-256 as
what was appended upstream."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from harness import messages

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def client_bin(popbridge_bin: str) -> str:
    # Built next to the gateway binary (build/ or build-asan/).
    path = os.path.join(os.path.dirname(popbridge_bin), "tests", "bench", "pop3_bench_client")
    if not os.access(path, os.X_OK):
        pytest.fail(f"the C++ test client is not built: {path}", pytrace=False)
    return path


def run(client_bin: str, *args: str) -> dict:
    done = subprocess.run([client_bin, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"
    line = next(l for l in done.stdout.splitlines() if l.startswith("mode="))
    return dict(field.split("=", 1) for field in line.split())


def test_retr_through_gateway_matches_direct_fetch(client_bin, gateway, dovecot, account, pki):
    tricky = messages.tricky_messages()
    # Dot-stuffing, 8-bit octets and a 2 MiB body in one message.
    message = tricky["dots"] + tricky["eight_bit"].split(b"\r\n\r\n", 1)[1] + \
        messages.big_message(2 << 20).split(b"\r\n\r\n", 1)[1]
    uid = dovecot.append(account.name, message)
    expected = hashlib.sha256(message).hexdigest()

    through = run(client_bin, "retr", "--pop3", f"{HOST}:{gateway.pop3s_port}", "--tls",
                  "--ca", pki.ca, "--user", account.name, "--pass", account.password,
                  "--message", "1", "--repeat", "2")
    direct = run(client_bin, "imap-fetch", "--imap", f"{HOST}:{dovecot.imaps_port}", "--tls",
                 "--ca", pki.ca, "--user", account.name, "--pass", account.password,
                 "--uid", str(uid), "--repeat", "2")

    assert through["sha256"] == expected, through
    assert direct["sha256"] == expected, direct
    assert int(through["message_octets"]) == len(message)
    assert int(direct["message_octets"]) == len(message)
