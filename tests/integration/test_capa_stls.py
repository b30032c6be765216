# SPDX-License-Identifier: Apache-2.0
"""Greeting, CAPA and STLS on both listener kinds (RFC 1939, 2449, 2595, 8314)."""

from __future__ import annotations

import base64
import socket
import ssl

import pytest

from harness.clients import RawPop3, parse_capa, pop3_ssl, pop3_stls

# Capabilities the gateway must always announce.
ALWAYS = ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "IMPLEMENTATION")


def check_greeting(client: RawPop3) -> None:
    g = client.greeting
    assert g is not None and g.line.startswith(b"+OK"), f"greeting: {g}"
    assert len(g.raw) <= 512, "RFC 2449 §4: first response line at most 512 octets"


def check_common(capa: dict[str, list[str]]) -> None:
    for cap in ALWAYS:
        assert cap in capa, f"{cap} missing from CAPA {capa}"
    assert capa["IMPLEMENTATION"], "IMPLEMENTATION should carry a text"


def check_post_tls(capa: dict[str, list[str]]) -> None:
    check_common(capa)
    assert "USER" in capa, f"USER must be offered under TLS: {capa}"
    assert "SASL" in capa and {"PLAIN", "LOGIN"} <= {m.upper() for m in capa["SASL"]}, \
        f"SASL PLAIN LOGIN must be offered under TLS: {capa}"
    assert "STLS" not in capa, "STLS must not be offered once TLS is active (RFC 2595 §4)"


# ------------------------------------------------------------------ pop3s

def test_pop3s_greeting_and_capa(gateway, ctx):
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        check_greeting(c)
        capa = parse_capa(c.capa())
        check_post_tls(capa)
        assert c.quit().ok


def test_pop3s_stls_refused(gateway, ctx):
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        r = c.cmd("STLS")
        assert r.err, f"STLS on an implicit-TLS connection: {r}"
        assert c.cmd("CAPA", multiline=True).ok, "the session goes on"


def test_pop3s_poplib_capa(gateway, ctx):
    conn = pop3_ssl(gateway.pop3s_port, ctx)
    try:
        assert conn.getwelcome().startswith(b"+OK")
        caps = conn.capa()
        for cap in ALWAYS + ("USER", "SASL"):
            assert cap in caps, cap
        assert "STLS" not in caps
    finally:
        conn.quit()


# ------------------------------------------------------- pop3 + STLS

def test_plain_greeting_and_capa_before_stls(gateway):
    with RawPop3(gateway.pop3_port) as c:
        check_greeting(c)
        capa = parse_capa(c.capa())
        check_common(capa)
        assert "STLS" in capa, f"STLS must be offered before TLS: {capa}"
        assert "USER" not in capa, "USER must not be offered in clear text with allow_plaintext: false"
        assert "SASL" not in capa or not capa["SASL"], "no SASL mechanism in clear text with allow_plaintext: false"


def test_plain_logins_refused_before_stls(gateway, dovecot, ctx):
    alice = dovecot.account("alice")
    plain = base64.b64encode(f"\0{alice.name}\0{alice.password}".encode()).decode()
    with RawPop3(gateway.pop3_port) as c:
        r = c.cmd(f"USER {alice.name}")
        assert r.err, f"USER in clear text: {r}"
        r = c.cmd(f"PASS {alice.password}")
        assert r.err, f"PASS in clear text: {r}"
        r = c.cmd(f"AUTH PLAIN {plain}")
        assert r.err, f"AUTH PLAIN in clear text: {r}"
        r = c.cmd("AUTH LOGIN")
        assert r.err, f"AUTH LOGIN in clear text: {r}"
        # None of that may have logged us in.
        assert c.cmd("STAT").err
        # The connection is still usable: STLS and a real login work afterwards.
        assert c.cmd("STLS").ok
        c.starttls(ctx)
        c.login(alice.name, alice.password)
        assert c.cmd("STAT").ok
        assert c.quit().ok


def test_stls_then_capa(gateway, ctx):
    with RawPop3(gateway.pop3_port) as c:
        r = c.cmd("STLS")
        assert r.ok, f"STLS: {r}"
        c.starttls(ctx)
        assert c.tls
        capa = parse_capa(c.capa())
        check_post_tls(capa)
        r = c.cmd("STLS")
        assert r.err, f"a second STLS must be refused: {r}"
        assert c.cmd("STAT").err, "still in AUTHORIZATION state (RFC 2595 §4)"
        assert c.quit().ok


def test_stls_poplib_login(gateway, ctx, dovecot):
    alice = dovecot.account("alice")
    conn = pop3_stls(gateway.pop3_port, ctx)
    try:
        caps = conn.capa()
        assert "USER" in caps and "STLS" not in caps
        conn.user(alice.name)
        conn.pass_(alice.password)
        count, _ = conn.stat()
        assert count >= 0
    finally:
        conn.quit()


def test_stls_command_injection(gateway, ctx):
    """STLS and CAPA in one write (RFC 2595 / CVE-2011-0411 class): the CAPA sent
    in clear text must be discarded, never answered, neither before nor after the
    handshake."""
    with RawPop3(gateway.pop3_port) as c:
        c.send(b"STLS\r\nCAPA\r\n")
        r = c.read_reply()
        assert r.ok, f"STLS: {r}"
        # RawPop3.starttls() fails if any clear-text byte followed the +OK.
        c.starttls(ctx)
        # Nothing may arrive before we send a command. Absence can only be watched
        # over a window (0.5 s here); the CAPA/QUIT exchange below is the exact check.
        with pytest.raises(TimeoutError):
            c.read_line(timeout=0.5)
        # After the handshake we send CAPA and QUIT. If the injected CAPA were
        # processed, its reply would come first and we'd see two CAPA replies.
        c.send(b"CAPA\r\nQUIT\r\n")
        first = c.read_reply(multiline=True)
        assert first.ok and first.body, f"CAPA: {first}"
        assert "STLS" not in parse_capa(l.decode() for l in first.body_lines()), "this CAPA must be the post-TLS one"
        quit_line = c.read_line()
        assert quit_line.startswith(b"+OK"), f"QUIT: {quit_line!r}"
        # Had the injected CAPA been answered, `first` was its reply, `quit_line` the
        # status line of ours, and its capability lines and QUIT's reply would follow.
        rest = c.read_until_eof(timeout=10)
        assert rest == b"", f"an injected command was answered; after one CAPA and QUIT came {rest!r}"


def test_capa_after_login_still_announces_authorization_caps(gateway, ctx, dovecot):
    """RFC 2449 §5: capabilities available in AUTHORIZATION are announced in both states."""
    alice = dovecot.account("alice")
    with RawPop3(gateway.pop3s_port, tls_context=ctx) as c:
        c.login(alice.name, alice.password)
        capa = parse_capa(c.capa())
        check_common(capa)
        assert "USER" in capa
        assert "SASL" in capa
        assert "STLS" not in capa
        assert c.quit().ok


@pytest.mark.parametrize("listener", ["pop3s", "pop3"])
def test_quit_in_authorization(gateway, ctx, listener):
    kwargs = {"tls_context": ctx} if listener == "pop3s" else {}
    with RawPop3(gateway.port(listener), **kwargs) as c:
        assert c.quit().ok
        assert c.read_until_eof(timeout=10) == b""


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_sessions_resume_across_workers(make_gateway, dovecot, pki, version):
    """Clients that poll every minute resume their TLS session instead of a full
    handshake, whichever worker takes the next connection (one TLS context, shared
    ticket keys): TLS 1.2 session tickets and TLS 1.3 PSK."""
    g = make_gateway(dovecot, {"workers": 2})
    ctx = pki.client_context()  # its own: the shared one must keep its versions
    ctx.maximum_version = ctx.minimum_version = getattr(ssl.TLSVersion, version)
    session = None
    reused = []
    for _ in range(8):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", g.pop3s_port), timeout=15),
                             server_hostname="localhost", session=session) as s:
            assert s.recv(100).startswith(b"+OK")
            reused.append(s.session_reused)
            s.sendall(b"QUIT\r\n")
            assert s.recv(100).startswith(b"+OK")
            session = s.session  # TLS 1.3 tickets arrive after the handshake: taken last
    assert reused == [False] + [True] * 7, reused
