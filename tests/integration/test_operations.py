# SPDX-License-Identifier: Apache-2.0
"""Operations: the admin endpoint (/metrics, /healthz, /readyz), SIGTERM drain,
SIGHUP reload, certificate rotation, the PROXY protocol, worker loops and user
names in logs.

Every wait polls a condition with a deadline; nothing sleeps to synchronise.
Signals go to the gateway's own PID only, and only after its "started" log line
(the signal handlers are installed just before it).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import hmac
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from typing import Optional

import pytest

from harness import messages, tempdirs
from harness.clients import (V2_SIGNATURE, RawPop3,
                             connect_with_header, proxy_v1, proxy_v2)
from harness.fake_imap import FakeImap, Message
from harness.gateway import Gateway
from harness.ports import free_port, free_ports
from harness.tcp_table import LISTEN, LOOPBACK, tcp_sockets
from harness.wait import TIME_FACTOR, port_accepts, port_refuses, wait_until

HOST = "127.0.0.1"
QUICK = 10.0 * TIME_FACTOR  # deadline for things that take well under a second


# ===================================================================== helpers

# ---- Prometheus text exposition

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def _unescape(value: str) -> str:
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


class Scrape:
    """One /metrics exposition: samples [(name, {label: value}, float)] and # TYPE lines."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        self.types: dict[str, str] = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) == 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE.match(line)
            assert m, f"unparsable exposition line: {line!r}"
            labels: dict[str, str] = {}
            if m.group(2):
                rest = m.group(2).strip().rstrip(",")
                pos = 0
                while pos < len(rest):
                    lm = _LABEL.match(rest, pos)
                    assert lm, f"unparsable labels in {line!r}"
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == want for k, want in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the matching samples; a name/label set that matches nothing is an
        error (a renamed metric must fail the test, not read as 0)."""
        found = self.series(name, **labels)
        if not found:
            raise AssertionError(f"no sample {name}{labels} in the exposition:\n"
                                 + "\n".join(l for l in self.text.splitlines() if name.split("_")[1] in l)[:3000])
        return sum(v for _, v in found)


def http_request(port: int, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout * TIME_FACTOR)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def http_status(port: int, path: str) -> Optional[int]:
    """The status of GET path, or None when the endpoint refuses the connection."""
    try:
        return http_request(port, "GET", path)[0]
    except (ConnectionError, OSError):
        return None


def scrape(port: int) -> Scrape:
    status, body, headers = http_request(port, "GET", "/metrics")
    assert status == 200, f"/metrics answered {status}"
    return Scrape(body.decode("utf-8"))


# ---- logs (logfmt)

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def log_events(g, event: str) -> list[dict[str, str]]:
    out = []
    for line in g.log_text().splitlines():
        fields = {k: (v[1:-1] if v.startswith('"') else v) for k, v in _FIELD.findall(line)}
        if fields.get("event") == event:
            out.append(fields)
    return out


def wait_event(g, event: str, count: int = 1, timeout: float = QUICK, **match: str) -> list[dict[str, str]]:
    def found():
        hits = [e for e in log_events(g, event) if all(e.get(k) == v for k, v in match.items())]
        return hits if len(hits) >= count else None
    return wait_until(found, timeout, f"{count} log line(s) event={event} {match}", on_timeout=g.diagnostics)


# ---- gateways

def start_gateway(make_gateway, upstream, overrides: Optional[dict] = None, *, metrics: bool = True, **kwargs):
    """make_gateway plus an admin endpoint on a free port; returns (gateway, admin
    port or None) once the "started" line is logged (signal handlers installed)."""
    overrides = dict(overrides or {})
    port = None
    if metrics:
        port = free_port()
        overrides["metrics"] = {**overrides.get("metrics", {}), "address": f"{HOST}:{port}"}
    g = make_gateway(upstream, overrides, **kwargs)
    wait_event(g, "started")
    if port is not None:
        wait_until(lambda: port_accepts(HOST, port), QUICK, "the admin endpoint to accept")

        def settled() -> bool:
            # Gateway.start() probed each listener with a connection of its own: let
            # those sessions end so that tests see only their own connections.
            s = scrape(port)
            return (s.value("popbridge_connections_active") == 0
                    and s.value("popbridge_sessions_total") == s.value("popbridge_connections_accepted_total")
                    and s.value("popbridge_connections_accepted_total") == g.probe_connections)
        wait_until(settled, QUICK, "the harness's start-up probe connections to end", on_timeout=g.diagnostics)
    return g, port


def wait_ready(port: int) -> None:
    wait_until(lambda: http_status(port, "/readyz") == 200, QUICK, "/readyz to answer 200")


def wait_exit(g, timeout: float) -> int:
    """Waits (deadline) for the gateway process to exit by itself; returns its status."""
    proc = g.proc
    try:
        return proc.wait(timeout * TIME_FACTOR)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"popbridge still running {timeout}s later\n{g.diagnostics()}") from None


def login(port: int, ctx, account, timeout: float = 15.0) -> RawPop3:
    c = RawPop3(port, tls_context=ctx, timeout=timeout)
    try:
        c.login(account.name, account.password)
    except BaseException:
        c.close()
        raise
    return c


def shutdown_ends(g) -> int:
    """Sessions the gateway ended because of the shutdown (session_end reason=shutdown).
    (Session ids are per worker, so sessions are not told apart by id here.)"""
    return sum(1 for e in log_events(g, "session_end") if e["reason"] == "shutdown")


def cert_der(chain_path: str) -> bytes:
    """DER of the first (leaf) certificate of a PEM chain."""
    with open(chain_path) as f:
        pem = f.read()
    first = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
    return ssl.PEM_cert_to_DER_cert(first)


def not_after(chain_path: str) -> float:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", chain_path],
                         capture_output=True, text=True, check=True).stdout
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


def peer_der(c: RawPop3) -> bytes:
    return c.sock.getpeercert(binary_form=True)


# ---- PROXY protocol headers

def closed_without_greeting(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends `data` as the first bytes of a connection and returns everything the
    server sent until it closed the connection (a still-open connection at the
    deadline fails the test)."""
    with RawPop3(port, read_greeting=False, timeout=timeout) as c:
        if data:
            c.send(data)
        return c.read_until_eof(timeout=timeout)


def listen_sockets(port: int) -> int:
    """Number of TCP sockets in LISTEN state on 127.0.0.1:port."""
    return sum(1 for s in tcp_sockets()
               if (s.local_host, s.local_port, s.state) == (LOOPBACK, port, LISTEN))


# ============================================================ 1. /metrics

def test_metrics_after_scripted_session(make_gateway, dovecot, ctx, account, pki):
    msg = messages.simple(1, body_lines=40)
    dovecot.append(account.name, msg)
    g, mport = start_gateway(make_gateway, dovecot)
    wait_ready(mport)
    before = scrape(mport)

    # A session with a malformed command and a failed login.
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd("XYZZY").err
        assert c.cmd(f"USER {account.name}").ok
        r = c.cmd("PASS not-the-password")
        assert r.line.startswith(b"-ERR [AUTH]"), r
        assert c.quit().ok
    # The scripted session.
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        c.login(account.name, account.password)
        assert c.cmd("STAT").text == f"+OK 1 {len(msg)}"
        assert c.cmd("LIST", multiline=True).body == b"1 %d\r\n" % len(msg)
        retr = c.cmd("RETR 1", multiline=True)
        assert retr.ok and retr.body == msg
        top = c.cmd("TOP 1 0", multiline=True)
        assert top.ok and top.body == messages.expected_top(msg, 0)
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    assert dovecot.uids(account.name) == []

    def settled():
        s = scrape(mport)
        done = (s.value("popbridge_sessions_total", reason="quit")
                - before.value("popbridge_sessions_total", reason="quit")) >= 2
        return s if done and s.value("popbridge_connections_active") == 0 \
            and s.value("popbridge_upstream_connections_active") == 0 else None

    after = wait_until(settled, QUICK, "both sessions to end in the metrics")

    def d(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    problems = []

    def check(what, got, want):
        if got != want:
            problems.append(f"{what}: {got!r}, expected {want!r}")

    check("accepted pop3s", d("popbridge_connections_accepted_total", listener="pop3s"), 2)
    check("accepted pop3", d("popbridge_connections_accepted_total", listener="pop3"), 0)
    check("auth success", d("popbridge_auth_attempts_total", mechanism="user", result="ok"), 1)
    check("auth bad_credentials", d("popbridge_auth_attempts_total", mechanism="user", result="bad_credentials"), 1)
    check("auth upstream_unavailable", d("popbridge_auth_attempts_total", result="upstream_unavailable"), 0)
    check("RETR ok (absolute)", after.value("popbridge_commands_total", command="RETR", result="ok"), 1)
    check("RETR err", d("popbridge_commands_total", command="RETR", result="error"), 0)
    for command, result, n in [("STAT", "ok", 1), ("LIST", "ok", 1), ("TOP", "ok", 1), ("DELE", "ok", 1),
                               ("QUIT", "ok", 2), ("USER", "ok", 2), ("PASS", "ok", 1), ("PASS", "error", 1),
                               ("invalid", "error", 1)]:
        check(f"commands {command} {result}", d("popbridge_commands_total", command=command, result=result), n)
    retr_count = d("popbridge_command_duration_seconds_count", command="RETR")
    if retr_count < 1:
        problems.append(f"command_duration_seconds_count{{RETR}} moved by {retr_count}")
    check("messages retrieved", d("popbridge_messages_retrieved_total"), 1)
    check("messages deleted", d("popbridge_messages_deleted_total"), 1)
    check("size mismatches", d("popbridge_retrieve_size_mismatch_total"), 0)
    out = d("popbridge_bytes_total", direction="client_out")
    if not out > len(msg) + len(messages.split_header(msg)[0]):
        problems.append(f"bytes client_out moved by {out}, less than RETR + TOP ({len(msg)} octets message)")
    upstream_in = d("popbridge_bytes_total", direction="upstream_in")
    if not upstream_in > len(msg):
        problems.append(f"bytes upstream_in moved by {upstream_in}")
    for direction in ("client_in", "upstream_out"):
        if not d("popbridge_bytes_total", direction=direction) > 0:
            problems.append(f"bytes {direction} did not move")
    check("TLS 1.3 handshakes", d("popbridge_tls_handshakes_total", listener="pop3s", version="TLSv1.3", result="ok"), 2)
    check("TLS handshake errors", d("popbridge_tls_handshakes_total", result="error"), 0)
    check("TLS duration count", d("popbridge_tls_handshake_duration_seconds_count", listener="pop3s"), 2)
    check("sessions quit", d("popbridge_sessions_total", reason="quit"), 2)
    check("sessions all", d("popbridge_sessions_total"), 2)
    check("upstream ok", d("popbridge_upstream_connections_total", result="ok"), 1)
    check("upstream error", d("popbridge_upstream_connections_total", result="error"), 0)
    check("upstream connect duration count", d("popbridge_upstream_connect_duration_seconds_count"), 1)
    check("upstream errors", d("popbridge_upstream_errors_total"), 0)
    check("rejected", d("popbridge_connections_rejected_total"), 0)
    check("active", after.value("popbridge_connections_active", listener="pop3s"), 0)
    check("upstream active", after.value("popbridge_upstream_connections_active"), 0)
    check("ready", after.value("popbridge_ready"), 1)
    build = after.series("popbridge_build_info")
    if len(build) != 1 or build[0][1] != 1 or not build[0][0].get("version") or not build[0][0].get("tls_library"):
        problems.append(f"build_info: {build}")
    expiry = after.series("popbridge_certificate_expiry_timestamp_seconds", certificate=pki.cert)
    if len(expiry) != 1 or not expiry[0][1] > time.time() or abs(expiry[0][1] - not_after(pki.cert)) > 1:
        problems.append(f"certificate expiry {expiry}, notAfter {not_after(pki.cert)}")
    # Exposition conventions: every sample belongs to a typed family; counters end in _total.
    for name, labels, _ in after.samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in after.types else name
        if family not in after.types:
            problems.append(f"{name} has no # TYPE line")
        if after.types.get(family) == "counter" and not name.endswith("_total"):
            problems.append(f"counter {name} does not end in _total")
    assert not problems, "\n".join(problems) + "\n" + g.diagnostics(30)


def test_metrics_tls_versions_and_failed_handshakes(make_gateway, dovecot, pki):
    g, mport = start_gateway(make_gateway, dovecot)
    before = scrape(mport)
    ctx12 = pki.client_context()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with RawPop3(g.pop3s_port, tls_context=ctx12, timeout=15) as c:
        assert c.sock.version() == "TLSv1.2"
        assert c.quit().ok
    with RawPop3(g.pop3_port, timeout=15) as c:  # STLS, TLS 1.3
        assert c.cmd("STLS").ok
        c.starttls(pki.client_context())
        assert c.sock.version() == "TLSv1.3"
        assert c.quit().ok
    # Plain POP3 on the implicit-TLS port: the handshake fails.
    got = closed_without_greeting(g.pop3s_port, b"USER alice\r\n")
    assert b"+OK" not in got

    def settled():
        s = scrape(mport)
        return s if s.value("popbridge_connections_active") == 0 and \
            s.value("popbridge_sessions_total") - before.value("popbridge_sessions_total") >= 3 else None

    after = wait_until(settled, QUICK, "the three sessions to end")

    def d(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    got = {
        "pop3s TLSv1.2 ok": d("popbridge_tls_handshakes_total", listener="pop3s", version="TLSv1.2", result="ok"),
        "pop3s TLSv1.3 ok": d("popbridge_tls_handshakes_total", listener="pop3s", version="TLSv1.3", result="ok"),
        "pop3 TLSv1.3 ok": d("popbridge_tls_handshakes_total", listener="pop3", version="TLSv1.3", result="ok"),
        "pop3s error": d("popbridge_tls_handshakes_total", listener="pop3s", result="error"),
        "pop3 error": d("popbridge_tls_handshakes_total", listener="pop3", result="error"),
        "rejected tls_handshake": d("popbridge_connections_rejected_total", reason="tls_handshake"),
        "sessions tls_handshake": d("popbridge_sessions_total", reason="tls_handshake"),
        "sessions quit": d("popbridge_sessions_total", reason="quit"),
        "accepted pop3s": d("popbridge_connections_accepted_total", listener="pop3s"),
        "accepted pop3": d("popbridge_connections_accepted_total", listener="pop3"),
        "duration pop3s": d("popbridge_tls_handshake_duration_seconds_count", listener="pop3s"),
        "duration pop3": d("popbridge_tls_handshake_duration_seconds_count", listener="pop3"),
    }
    want = {"pop3s TLSv1.2 ok": 1, "pop3s TLSv1.3 ok": 0, "pop3 TLSv1.3 ok": 1, "pop3s error": 1,
            "pop3 error": 0, "rejected tls_handshake": 1, "sessions tls_handshake": 1, "sessions quit": 2,
            "accepted pop3s": 2, "accepted pop3": 1, "duration pop3s": 1, "duration pop3": 1}
    assert got == want


# ================================================= 2. health and readiness

def test_admin_endpoints(make_gateway, dovecot):
    g, mport = start_gateway(make_gateway, dovecot)
    assert http_request(mport, "GET", "/healthz")[:2] == (200, b"ok\n")
    wait_ready(mport)
    status, body, headers = http_request(mport, "GET", "/readyz")
    assert status == 200
    assert http_request(mport, "GET", "/nope")[0] == 404
    assert http_request(mport, "GET", "/metrics/extra")[0] == 404
    assert http_request(mport, "POST", "/metrics")[0] == 405
    assert http_request(mport, "DELETE", "/healthz")[0] == 405
    status, body, headers = http_request(mport, "GET", "/metrics?x=1")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"popbridge_build_info" in body
    # HEAD: the headers only.
    status, body, headers = http_request(mport, "HEAD", "/healthz")
    assert status == 200 and body == b""
    # Keep-alive: several requests on one connection.
    conn = http.client.HTTPConnection(HOST, mport, timeout=5)
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            assert r.status == 200, path
    finally:
        conn.close()
    # Malformed request: 400, then the connection is closed.
    with socket.create_connection((HOST, mport), timeout=5) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data
    assert b"connection: close" in data.lower()
    # The endpoint still answers afterwards.
    assert http_status(mport, "/healthz") == 200


def test_admin_pipelined_requests(make_gateway, dovecot):
    g, mport = start_gateway(make_gateway, dovecot)
    # Two answers take milliseconds; the deadline only bounds the wait for the second.
    with socket.create_connection((HOST, mport), timeout=2 * TIME_FACTOR) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    assert data.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 404" in data, data


def test_readyz_503_while_upstream_unreachable(make_gateway, ctx):
    closed = ("127.0.0.1", free_port())  # nothing listens there
    g, mport = start_gateway(make_gateway, closed)
    # The first probe failed (the probe logs upstream_unreachable only on a change
    # from reachable; the IMAP client logs every failure).
    wait_event(g, "upstream_failed", kind="connect")
    assert http_status(mport, "/readyz") == 503
    assert http_status(mport, "/healthz") == 200, "liveness must not depend on the upstream"
    s = scrape(mport)
    assert s.value("popbridge_ready") == 0
    # POP3 is still served: the login fails temporarily.
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.greeting.ok
        assert c.cmd("USER somebody").ok
        r = c.cmd("PASS whatever")
        assert r.line.startswith(b"-ERR [SYS/TEMP]"), r
        assert c.quit().ok
    s = scrape(mport)
    assert s.value("popbridge_auth_attempts_total", result="upstream_unavailable") == 1
    assert s.value("popbridge_auth_attempts_total", result="bad_credentials") == 0
    assert s.value("popbridge_upstream_connections_total", result="error") == 1
    assert s.value("popbridge_upstream_errors_total", kind="connect") == 1
    assert http_status(mport, "/readyz") == 503


# ================================================================ 3. drain

def test_drain_lets_open_session_finish(make_gateway, dovecot, ctx, account):
    uids = dovecot.append_many(account.name, [messages.simple(1), messages.simple(2)])
    g, mport = start_gateway(make_gateway, dovecot, {"limits": {"drain_timeout": "30s"}, "workers": 2})
    wait_ready(mport)
    others = [dovecot.add_user() for _ in range(3)]
    # Several sessions, so that (most likely) both workers have one to drain.
    extra = [login(g.pop3s_port, ctx, a) for a in others]
    c = login(g.pop3s_port, ctx, account)
    try:
        g.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: http_status(mport, "/readyz") != 200, QUICK, "/readyz to stop answering 200")
        assert http_status(mport, "/readyz") in (503, None)
        # The open sessions keep working.
        assert c.cmd("STAT").line.startswith(b"+OK 2 ")
        for e in extra:
            assert e.cmd("STAT").text == "+OK 0 0"
            assert e.quit().ok
        # New connections are refused on every listener.
        wait_until(lambda: port_refuses(HOST, g.pop3s_port) and port_refuses(HOST, g.pop3_port), QUICK,
                   "the POP3 listeners to close")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, g.pop3s_port), timeout=5).close()
        assert g.proc.poll() is None, "exited while a session was open"
        retr = c.cmd("RETR 2", multiline=True)
        assert retr.ok and retr.body == messages.simple(2)
        # QUIT with a deletion: the UPDATE state completes during the drain.
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    finally:
        c.close()
        for e in extra:
            e.close()
    status = wait_exit(g, 3.0)  # at once when the last session ends, not at the deadline
    assert status == 0, g.diagnostics()
    log = g.log_text()
    assert not log_events(g, "drain_deadline"), "the session ended by QUIT, not at the deadline\n" + log
    assert log_events(g, "stopping") and log_events(g, "stopped")
    assert dovecot.uids(account.name) == [uids[1]]


def test_drain_deadline_closes_idle_session(make_gateway, dovecot, ctx, account):
    uid = dovecot.append(account.name, messages.simple(1))
    drain = 2.0
    g, mport = start_gateway(make_gateway, dovecot, {"limits": {"drain_timeout": "2s"}})
    c = login(g.pop3s_port, ctx, account)
    try:
        assert c.cmd("DELE 1").ok  # marked only: a shutdown must not expunge it
        sent = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        rest = c.read_until_eof(timeout=drain + 5 * TIME_FACTOR)
        closed_after = time.monotonic() - sent
    finally:
        c.close()
    limit = drain + 5 * TIME_FACTOR  # the leak check at exit takes its time
    status = wait_exit(g, (limit - (time.monotonic() - sent)) / TIME_FACTOR)
    exited_after = time.monotonic() - sent
    assert status == 0, g.diagnostics()
    assert b"+OK" not in rest, rest
    assert closed_after >= drain - 0.25, f"closed {closed_after:.2f}s after SIGTERM, before the drain deadline"
    assert exited_after < limit
    ended = wait_event(g, "drain_deadline")
    assert ended[0]["closed"] == "1" and ended[0]["updating"] == "0", ended
    assert shutdown_ends(g) == 1, g.diagnostics()
    assert dovecot.uids(account.name) == [uid], "a drained session must not delete anything"


def test_drain_waits_for_update_in_flight(make_gateway):
    """A session whose QUIT expunge is in flight at the drain deadline finishes."""
    entered, release = threading.Event(), threading.Event()

    def slow_expunge(session, cmd):
        entered.set()
        release.wait(30)
        return False  # then answer normally

    fake = FakeImap(users={"dave": "dave-secret-4"},
                    messages=[Message(1, messages.simple(1)), Message(2, messages.simple(2))],
                    hooks={"UID EXPUNGE": slow_expunge}).start()
    try:
        g, mport = start_gateway(make_gateway, fake.address, {"limits": {"drain_timeout": "1s"}},
                                 upstream_tls="none")
        c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15)
        try:
            c.login("dave", "dave-secret-4")
            assert c.cmd("DELE 1").ok
            c.send_line("QUIT")
            wait_until(entered.is_set, QUICK, "the UID EXPUNGE to reach the upstream")
            g.proc.send_signal(signal.SIGTERM)
            hit = wait_event(g, "drain_deadline")
            assert hit[0]["updating"] == "1" and hit[0]["closed"] == "0", hit
            assert g.proc.poll() is None
            release.set()
            r = c.read_reply()
            assert r.ok, r
        finally:
            release.set()
            c.close()
        assert wait_exit(g, 5.0) == 0, g.diagnostics()
        assert fake.uids() == [2]
    finally:
        release.set()
        fake.close()
    assert not fake.errors, fake.errors


def test_second_signal_stops_at_once(make_gateway, dovecot, ctx, account):
    g, mport = start_gateway(make_gateway, dovecot, {"limits": {"drain_timeout": "30s"}})
    c = login(g.pop3s_port, ctx, account)
    try:
        g.proc.send_signal(signal.SIGTERM)
        wait_event(g, "draining")
        sent = time.monotonic()
        g.proc.send_signal(signal.SIGINT)
        c.read_until_eof(timeout=5 * TIME_FACTOR)
        status = wait_exit(g, 5.0)
    finally:
        c.close()
    assert time.monotonic() - sent < 5 * TIME_FACTOR
    assert status == 0, g.diagnostics()
    assert log_events(g, "stopping_now")
    assert shutdown_ends(g) == 1, g.diagnostics()


# =============================================================== 4. SIGHUP

def test_sighup_applies_to_new_sessions_only(make_gateway, dovecot, ctx, account):
    inbox_msg = messages.simple(1, body_lines=3)
    other_msg = messages.simple(2, body_lines=30)
    dovecot.append(account.name, inbox_msg)
    dovecot.create_mailbox(account.name, "Other", other_msg)
    g, mport = start_gateway(make_gateway, dovecot, {"auth": {"failure_delay": "100ms"}})

    old = login(g.pop3s_port, ctx, account)
    try:
        assert old.cmd("STAT").text == f"+OK 1 {len(inbox_msg)}"
        g.config["upstream"]["mailbox"] = "Other"
        g.config["auth"]["failure_delay"] = "1500ms"
        g.write_config()
        g.proc.send_signal(signal.SIGHUP)
        wait_event(g, "reloaded", trigger="SIGHUP")
        s = scrape(mport)
        assert s.value("popbridge_config_reloads_total", result="ok") == 1
        assert s.value("popbridge_config_reloads_total", result="error") == 0

        # A new session uses the new mailbox and the new failure delay.
        with login(g.pop3s_port, ctx, account) as new:
            assert new.cmd("STAT").text == f"+OK 1 {len(other_msg)}"
            assert new.cmd("RETR 1", multiline=True).body == other_msg
            assert new.quit().ok
        with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as bad:
            assert bad.cmd(f"USER {account.name}").ok
            t = time.monotonic()
            assert bad.cmd("PASS wrong").line.startswith(b"-ERR [AUTH]")
            assert time.monotonic() - t >= 1.4, "the reloaded auth.failure_delay was not applied"

        # The session from before the reload still sees its old mailbox.
        assert old.cmd("NOOP").ok
        retr = old.cmd("RETR 1", multiline=True)
        assert retr.ok and retr.body == inbox_msg
        assert old.quit().ok
    finally:
        old.close()


def test_sighup_rejects_bad_config(make_gateway, dovecot, ctx, account):
    msg = messages.simple(1)
    dovecot.append(account.name, msg)
    g, mport = start_gateway(make_gateway, dovecot, {"workers": 1})
    original = open(g.config_path).read()

    def reload_expecting_rejection(n: int, reason_part: str) -> None:
        g.proc.send_signal(signal.SIGHUP)
        hits = wait_event(g, "reload_rejected", count=n)
        assert reason_part in hits[-1]["reason"], hits[-1]
        assert scrape(mport).value("popbridge_config_reloads_total", result="error") == n

    # 1. An unknown key.
    with open(g.config_path, "a") as f:
        f.write("no_such_key: 1\n")
    reload_expecting_rejection(1, "invalid configuration")
    assert any("no_such_key" in e["problem"] for e in log_events(g, "config_error"))
    # 2. A change of the worker count needs a restart.
    g.config["workers"] = 2
    g.write_config()
    reload_expecting_rejection(2, "restart")
    # 3. So does a change of the listeners.
    g.config["workers"] = 1
    g.config["listeners"][1]["name"] = "renamed"
    g.write_config()
    reload_expecting_rejection(3, "restart")
    # 4. A certificate that cannot be loaded.
    with open(g.config_path, "w") as f:
        f.write(original.replace(g.pki.key, g.pki.ca_key))
    reload_expecting_rejection(4, "")
    assert scrape(mport).value("popbridge_config_reloads_total", result="ok") == 0

    # The old configuration is still in force: new sessions work.
    assert g.proc.poll() is None
    with login(g.pop3s_port, ctx, account) as c:
        assert c.cmd("STAT").text == f"+OK 1 {len(msg)}"
        assert c.cmd("RETR 1", multiline=True).body == msg
        assert c.quit().ok
    # And a good file is accepted afterwards.
    with open(g.config_path, "w") as f:
        f.write(original)
    g.proc.send_signal(signal.SIGHUP)
    wait_event(g, "reloaded")
    assert scrape(mport).value("popbridge_config_reloads_total", result="ok") == 1


def test_reload_keeps_readiness(make_gateway, dovecot):
    g, mport = start_gateway(make_gateway, dovecot)
    wait_ready(mport)
    seen = []
    for n in range(1, 4):
        g.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            seen.append(http_status(mport, "/readyz"))
        wait_event(g, "reloaded", count=n)
    assert set(seen) == {200}, f"/readyz during reloads: {seen.count(503)} x 503 of {len(seen)}"


# ================================================ 5. certificate rotation

def _k8s_secret_dir(root: str, name: str, chain: str, key: str) -> None:
    """Kubernetes' layout: root/..<name>/{tls.crt,tls.key}; root/..data -> ..<name>
    (swapped atomically by renaming a new symlink over it); root/tls.crt -> ..data/tls.crt."""
    d = os.path.join(root, f"..{name}")
    os.mkdir(d)
    for src, dst in ((chain, "tls.crt"), (key, "tls.key")):
        with open(src, "rb") as f_in, open(os.path.join(d, dst), "wb") as f_out:
            f_out.write(f_in.read())
    tmp = os.path.join(root, "..data_tmp")
    os.symlink(f"..{name}", tmp)
    os.replace(tmp, os.path.join(root, "..data"))
    for f in ("tls.crt", "tls.key"):
        link = os.path.join(root, f)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", f), link)


def test_certificate_rotation(make_gateway, dovecot, ctx, account, pki):
    msg = messages.simple(1)
    dovecot.append(account.name, msg)
    root = os.path.join(pki.directory, f"secret-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(root)
    _k8s_secret_dir(root, "2025_11_26_12_00_00.1", pki.cert, pki.key)
    crt, key = os.path.join(root, "tls.crt"), os.path.join(root, "tls.key")
    g, mport = start_gateway(make_gateway, dovecot, {"tls": {"certificate": crt, "private_key": key}})

    old = login(g.pop3s_port, ctx, account)
    try:
        assert peer_der(old) == cert_der(pki.cert)
        expiry_before = scrape(mport).value("popbridge_certificate_expiry_timestamp_seconds", certificate=crt)

        new_chain, new_key = pki.issue(f"rotated-{time.monotonic_ns()}", days=5)
        assert cert_der(new_chain) != cert_der(pki.cert)
        _k8s_secret_dir(root, "2025_11_26_13_00_00.2", new_chain, new_key)
        # Polled every 5 s, then 0.5 s of debounce.
        wait_event(g, "reloaded", trigger="certificate_changed", timeout=12.0 * TIME_FACTOR)
        assert not log_events(g, "reload_rejected"), g.diagnostics()

        with login(g.pop3s_port, ctx, account) as new:
            assert peer_der(new) == cert_der(new_chain), "a new connection still gets the old certificate"
            assert new.quit().ok
        # STLS gets it too.
        with RawPop3(g.pop3_port, timeout=15) as c:
            assert c.cmd("STLS").ok
            c.starttls(ctx)
            assert peer_der(c) == cert_der(new_chain)
        expiry_after = scrape(mport).value("popbridge_certificate_expiry_timestamp_seconds", certificate=crt)
        assert abs(expiry_after - not_after(new_chain)) <= 1, (expiry_before, expiry_after)
        assert expiry_after > expiry_before

        # The session from before the rotation is unaffected.
        retr = old.cmd("RETR 1", multiline=True)
        assert retr.ok and retr.body == msg
        assert old.quit().ok
    finally:
        old.close()


# =========================================================== 6. PROXY protocol

PP_LISTENERS = (("pp-stls", "starttls"), ("pp-tls", "implicit"))


@pytest.fixture
def pp_gateway(make_gateway, dovecot):
    ports = free_ports(2)
    listeners = [{"name": name, "address": f"{HOST}:{port}", "tls": tls, "proxy_protocol": True}
                 for (name, tls), port in zip(PP_LISTENERS, ports)]
    return start_gateway(make_gateway, dovecot, {"listeners": listeners, "limits": {"idle_timeout": "3s"}})


def _pop3_session_works(c: RawPop3, account, msg: bytes, stls: bool, ctx) -> None:
    if stls:
        assert c.cmd("STLS").ok
        c.starttls(ctx)
    c.login(account.name, account.password)
    assert c.cmd("STAT").text == f"+OK 1 {len(msg)}"
    assert c.cmd("RETR 1", multiline=True).body == msg
    assert c.quit().ok


def test_proxy_protocol_headers(pp_gateway, dovecot, ctx, account):
    g, mport = pp_gateway
    msg = messages.simple(1)
    dovecot.append(account.name, msg)
    stls, tls = g.port("pp-stls"), g.port("pp-tls")
    cases = [
        ("pp-stls", "203.0.113.7", lambda: connect_with_header(stls, proxy_v1("203.0.113.7", HOST, 40001, stls))),
        ("pp-stls", "198.51.100.9", None),  # v2 with a pipelined command in the same write, below
        ("pp-tls", "203.0.113.8", lambda: connect_with_header(tls, proxy_v1("203.0.113.8", HOST, 40003, tls), ctx)),
        ("pp-tls", "198.51.100.10",
         lambda: connect_with_header(tls, proxy_v2("198.51.100.10", HOST, 40004, tls), ctx, same_write=True)),
        ("pp-tls", "198.51.100.11",
         lambda: connect_with_header(tls, proxy_v2("198.51.100.11", HOST, 40005, tls), ctx)),
        ("pp-stls", "203.0.113.12",
         lambda: connect_with_header(stls, proxy_v1("203.0.113.12", HOST, 40006, stls), pieces=5)),
        ("pp-tls", "198.51.100.13",
         lambda: connect_with_header(tls, proxy_v2("198.51.100.13", HOST, 40007, tls), ctx, pieces=7)),
    ]
    for listener, src, open_conn in cases:
        if open_conn is None:
            c = RawPop3(stls, read_greeting=False, timeout=15)
            try:
                c.send(proxy_v2(src, HOST, 40002, stls) + b"CAPA\r\n")
                assert c.read_reply().ok
                assert b"STLS" in c.read_reply(multiline=True).body
                _pop3_session_works(c, account, msg, True, ctx)
            finally:
                c.close()
            continue
        with open_conn() as c:
            _pop3_session_works(c, account, msg, listener == "pp-stls", ctx)

    starts = log_events(g, "session_start")
    seen = {(e["listener"], e["client"]) for e in starts}
    for listener, src, _ in cases:
        assert (listener, src) in seen, f"no session_start listener={listener} client={src} in {starts}"
    assert not any(e["client"] == HOST for e in starts), starts
    # A session is counted as it closes, which may be just after the client read +OK.
    s = wait_until(lambda: (lambda m: m if m.value("popbridge_sessions_total", reason="quit")
                            == len(cases) else None)(scrape(mport)),
                   10 * TIME_FACTOR, "every session counted as ended by QUIT")
    assert s.value("popbridge_connections_rejected_total", reason="proxy_protocol") == 0
    assert s.value("popbridge_tls_handshakes_total", listener="pp-tls", result="ok") == 4


def test_proxy_protocol_local_keeps_peer_address(pp_gateway, dovecot, ctx, account):
    """v2 LOCAL (a balancer's health check) carries no client: the peer address stays."""
    g, mport = pp_gateway
    tls = g.port("pp-tls")
    with connect_with_header(tls, proxy_v2("192.0.2.1", HOST, 1, tls, command=0x0), ctx) as c:
        assert c.quit().ok
    starts = log_events(g, "session_start")
    assert [e["client"] for e in starts] == [HOST], starts


def test_proxy_protocol_logs_source_port(pp_gateway, ctx):
    g, mport = pp_gateway
    tls = g.port("pp-tls")
    with connect_with_header(tls, proxy_v1("203.0.113.50", HOST, 45678, tls), ctx) as c:
        assert c.quit().ok
    start = wait_event(g, "session_start", client="203.0.113.50")[0]
    assert start["client_port"] == "45678", start


def test_proxy_protocol_malformed_headers_close(pp_gateway, ctx):
    g, mport = pp_gateway
    stls, tls = g.port("pp-stls"), g.port("pp-tls")
    truncated_v2 = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 4) + socket.inet_aton("203.0.113.9")
    bad = [
        (stls, b"HELLO gateway\r\n"),                                           # garbage
        (stls, truncated_v2),                                                    # v2, addresses cut short
        (stls, b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 110\r\n"),               # bad port
        (tls, b"PROXY TCP4 203.0.113.9 127.0.0.1 1234\r\n"),                     # a field missing
        (tls, b"PROXY TCP4 203.0.113.9 127.0.0.1 01234 995\r\n"),                # leading zero
        (stls, b"PROXY TCP4 203.0.113.9 127.0.0.1 1234 110\n"),                  # LF only
        (stls, b"CAPA\r\n"),                                                     # POP3 without a header
        (stls, V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12)),  # version 3
    ]
    for port, data in bad:
        got = closed_without_greeting(port, data)
        assert b"+OK" not in got, f"{data!r} got {got!r}"
    # A TLS client without a header: its ClientHello is not a header.
    with pytest.raises(OSError):
        c = RawPop3(tls, tls_context=ctx, timeout=5)
        c.close()

    def counted():
        s = scrape(mport)
        return s.value("popbridge_connections_rejected_total", reason="proxy_protocol") == len(bad) + 1
    wait_until(counted, QUICK, f"{len(bad) + 1} proxy_protocol rejections")
    s = scrape(mport)
    assert s.value("popbridge_connections_rejected_total") == len(bad) + 1
    assert s.value("popbridge_auth_attempts_total") == 0
    assert len(log_events(g, "proxy_protocol_rejected")) == len(bad) + 1
    assert not log_events(g, "session_start"), "no session may start without a valid header"
    wait_until(lambda: scrape(mport).value("popbridge_connections_active") == 0, QUICK, "no active connections")


def test_proxy_protocol_silent_client_is_closed(pp_gateway):
    """A POP3 client that waits for the greeting and never sends a header is closed
    by the header timeout (the idle timeout when shorter: 3 s here), is told nothing,
    and counts as rejected."""
    g, mport = pp_gateway
    started = time.monotonic()
    got = closed_without_greeting(g.port("pp-stls"), b"", timeout=10)
    assert b"+OK" not in got, got
    assert time.monotonic() - started < 3 + 5 * TIME_FACTOR
    assert not log_events(g, "session_start")


# =================================================== 7. workers and user logging

def test_two_workers_serve_parallel_sessions(make_gateway, dovecot, ctx):
    accounts = [dovecot.add_user() for _ in range(5)]  # Dovecot allows 10 connections per user and IP
    bodies = {a.name: messages.simple(i + 1, body_lines=10 + i) for i, a in enumerate(accounts)}
    for a in accounts:
        dovecot.append(a.name, bodies[a.name])
    g, mport = start_gateway(make_gateway, dovecot, {"workers": 2})
    assert wait_event(g, "started")[0]["workers"] == "2"
    assert listen_sockets(g.pop3s_port) == 2 and listen_sockets(g.pop3_port) == 2, \
        "each worker has its own SO_REUSEPORT listening socket"

    n = 20
    logged_in = threading.Barrier(n + 1, timeout=30 * TIME_FACTOR)
    release = threading.Barrier(n + 1, timeout=30 * TIME_FACTOR)

    def session(i: int) -> None:
        a = accounts[i % len(accounts)]
        c = None
        try:
            c = login(g.pop3s_port, ctx, a)
            assert c.cmd("STAT").text == f"+OK 1 {len(bodies[a.name])}"
            logged_in.wait()
            release.wait()
            assert c.cmd("RETR 1", multiline=True).body == bodies[a.name]
            assert c.quit().ok
        except BaseException:
            logged_in.abort()
            release.abort()
            raise
        finally:
            if c is not None:
                c.close()

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(session, i) for i in range(n)]
        try:
            logged_in.wait()
            active = scrape(mport).value("popbridge_connections_active", listener="pop3s")
            release.wait()
        except threading.BrokenBarrierError:
            active = None
        errors = [f.exception() for f in futures if f.exception() is not None]
    assert not errors, errors
    assert active == n, f"connections_active summed over the workers: {active}"
    s = wait_until(lambda: (lambda s: s if s.value("popbridge_sessions_total", reason="quit") == n else None)(
        scrape(mport)), QUICK, f"{n} sessions to end")
    assert s.value("popbridge_auth_attempts_total", result="ok") == n
    assert s.value("popbridge_messages_retrieved_total") == n
    wait_until(lambda: scrape(mport).value("popbridge_connections_active") == 0, QUICK, "no active connections")


def test_session_ids_unique_across_workers(make_gateway, dovecot):
    g, _ = start_gateway(make_gateway, dovecot, {"workers": 2}, metrics=False)
    for _ in range(20):
        with RawPop3(g.pop3_port, timeout=15) as c:
            assert c.quit().ok
    starts = wait_event(g, "session_start", count=20)
    ids = [e["session"] for e in starts]
    dup = sorted({i for i in ids if ids.count(i) > 1}, key=int)
    assert not dup, f"session ids used more than once: {dup}"


def _login_twice(g, ctx, account) -> None:
    """One failed and one good login (both log the user)."""
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd(f"USER {account.name}").ok
        assert c.cmd("PASS wrong").line.startswith(b"-ERR [AUTH]")
        c.login(account.name, account.password)
        assert c.quit().ok
    wait_event(g, "session_end")


def test_logging_user_hash(make_gateway, dovecot, ctx, account):
    """logging.user: hash is an HMAC under a key from the environment (or a file): the
    same user gets the same 16 hex digits, and neither the name nor its plain SHA-256
    (reversible with a list of addresses) appears."""
    key = "log-key-" + account.name
    g, _ = start_gateway(make_gateway, dovecot,
                         {"logging": {"user": "hash", "user_hash_key_env": "POPBRIDGE_TEST_LOG_KEY"}},
                         metrics=False, env={"POPBRIDGE_TEST_LOG_KEY": key})
    _login_twice(g, ctx, account)
    log = g.log_text()
    assert account.name not in log, "the user name appears in clear"
    assert hashlib.sha256(account.name.encode()).hexdigest()[:16] not in log, "an unkeyed hash"
    digest = hmac.new(key.encode(), account.name.encode(), hashlib.sha256).hexdigest()[:16]
    lines = log_events(g, "login") + log_events(g, "login_failed")
    assert len(lines) == 2, log
    for e in lines:
        assert e["user"] == digest, e


def test_session_end_sums_up_what_the_client_did(make_gateway, dovecot, ctx, account):
    """One line per session at its end with the user and what the client took, as
    Dovecot's pop3_logout_format (top=%t/%p, retr=%r/%b, del=%d/%m, size=%s)."""
    msgs = [messages.simple(n) for n in (1, 2, 3)]
    dovecot.append_many(account.name, msgs)
    g, _ = start_gateway(make_gateway, dovecot, metrics=False)
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        c.login(account.name, account.password)
        assert c.cmd("RETR 1", multiline=True).ok
        assert c.cmd("RETR 3", multiline=True).ok
        assert c.cmd("TOP 2 0", multiline=True).ok
        assert c.cmd("DELE 3").ok
        assert c.quit().ok
    # (The harness's start-up probes end without a login, so without these fields.)
    ends = wait_until(lambda: [e for e in log_events(g, "session_end") if "user" in e], QUICK,
                      "the session_end line of the logged-in session", on_timeout=g.diagnostics)
    assert len(ends) == 1, ends
    e = ends[0]
    header = messages.split_header(msgs[1])[0]
    assert (e["reason"], e["user"], e["messages"], e["mailbox_octets"]) == \
        ("quit", account.name, "3", str(sum(len(m) for m in msgs))), e
    assert (e["retr"], e["retr_octets"]) == ("2", str(len(msgs[0]) + len(msgs[2]))), e
    assert (e["top"], e["top_octets"], e["deleted"]) == ("1", str(len(header)), "1"), e


def test_logging_user_omit(make_gateway, dovecot, ctx, account):
    g, _ = start_gateway(make_gateway, dovecot, {"logging": {"user": "omit"}}, metrics=False)
    _login_twice(g, ctx, account)
    log = g.log_text()
    assert account.name not in log, "the user name appears in clear"
    lines = log_events(g, "login") + log_events(g, "login_failed")
    assert len(lines) == 2 and all(e["user"] == "-" for e in lines), lines


def test_logging_user_plain(make_gateway, dovecot, ctx, account):
    g, _ = start_gateway(make_gateway, dovecot, {"logging": {"user": "plain"}}, metrics=False)
    _login_twice(g, ctx, account)
    lines = log_events(g, "login") + log_events(g, "login_failed")
    assert len(lines) == 2 and all(e["user"] == account.name for e in lines), lines


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_is_returned_when_load_drops(make_gateway, dovecot, ctx):
    """glibc keeps the heap that closed sessions freed; when the open sessions fall to
    half their peak, popbridge gives it back (malloc_trim): the resident set falls back
    towards where it started instead of staying at the peak."""
    g, _ = start_gateway(make_gateway, dovecot, {"limits": {"max_connections": 600}}, metrics=False)
    pid = g.proc.pid
    base = resident_kib(pid)
    sessions = []
    try:
        for _ in range(500):
            s = ctx.wrap_socket(socket.create_connection((HOST, g.pop3s_port), timeout=15),
                                server_hostname="localhost")
            assert s.recv(64).startswith(b"+OK")
            sessions.append(s)
        peak = resident_kib(pid)
    finally:
        for s in sessions:
            s.close()
    e = wait_event(g, "memory_returned")[0]
    assert int(e["peak_sessions"]) >= 250 and int(e["sessions"]) <= int(e["peak_sessions"]) // 2, e
    if os.environ.get("POPBRIDGE_SANITIZED") == "1":
        return  # ASan's allocator keeps freed memory in quarantine whatever glibc does
    grown = peak - base
    assert grown > 2048, f"500 TLS sessions should take megabytes: {base} -> {peak} KiB"
    wait_until(lambda: resident_kib(pid) - base < grown // 2, QUICK,
               "the resident set to fall below half of what the sessions took",
               on_timeout=lambda: f"base {base} KiB, peak {peak} KiB, now {resident_kib(pid)} KiB")


def test_process_metrics(make_gateway, dovecot, ctx):
    """process_* under the names every Prometheus client uses, read from the process
    itself: checked against /proc and against descriptors the test opens."""
    g, mport = start_gateway(make_gateway, dovecot)
    pid = g.proc.pid
    before = scrape(mport)
    with open(f"/proc/{pid}/limits") as limits:
        soft = next(int(line.split()[3]) for line in limits if line.startswith("Max open files"))
    assert before.value("process_max_fds") == soft
    # The scrape's own connection, the upstream probe's and a connection retired on the
    # loop's next turn come and go: some scrape must agree with /proc within 2.
    def fds_agree():
        return abs(scrape(mport).value("process_open_fds") - len(os.listdir(f"/proc/{pid}/fd"))) <= 2
    wait_until(fds_agree, 10 * TIME_FACTOR, "process_open_fds to match /proc/<pid>/fd")
    assert abs(before.value("process_resident_memory_bytes") / 1024 - resident_kib(pid)) < 4096
    assert before.value("process_virtual_memory_bytes") > before.value("process_resident_memory_bytes")
    started = before.value("process_start_time_seconds")
    assert time.time() - 120 < started <= time.time(), started
    sessions = [ctx.wrap_socket(socket.create_connection((HOST, g.pop3s_port), timeout=15),
                                server_hostname="localhost") for _ in range(5)]
    try:
        for s in sessions:
            assert s.recv(64).startswith(b"+OK")
        def agreeing_scrape():
            got = scrape(mport)
            return got if abs(got.value("process_open_fds") - len(os.listdir(f"/proc/{pid}/fd"))) <= 2 else None
        after = wait_until(agreeing_scrape, 10 * TIME_FACTOR, "process_open_fds to match /proc with 5 sessions")
    finally:
        for s in sessions:
            s.close()
    # Five more client connections.
    assert after.value("process_open_fds") >= before.value("process_open_fds") + 5 - 2
    assert after.value("process_cpu_seconds_total") >= before.value("process_cpu_seconds_total") > 0
    assert after.value("process_start_time_seconds") == started


def test_readyz_rides_out_a_blip(make_gateway):
    """One failed probe does not make /readyz 503 (a blip would take every replica out at
    once); metrics.probe_failures failures in a row do, and one success brings it back."""
    fake = FakeImap(capabilities=["IMAP4rev1", "AUTH=PLAIN"]).start()
    try:
        g, mport = start_gateway(make_gateway, fake.address,
                                 {"metrics": {"probe_interval": "1s", "probe_failures": 3}},
                                 upstream_tls="none")
        wait_until(lambda: http_status(mport, "/readyz") == 200, QUICK, "/readyz to answer 200")
        host, port = fake.address
        fake.close()
        first = wait_event(g, "upstream_probe_failed", failures="1")
        assert first[0]["unready_after"] == "3"
        assert http_status(mport, "/readyz") == 200, "one failure is a blip"
        wait_event(g, "upstream_unreachable", failures="3")
        assert http_status(mport, "/readyz") == 503
        fake = FakeImap(capabilities=["IMAP4rev1", "AUTH=PLAIN"], port=port).start()
        wait_until(lambda: http_status(mport, "/readyz") == 200, QUICK, "/readyz to recover")
    finally:
        fake.close()


def test_second_process_cannot_share_the_listening_port(dovecot, make_gateway, pki, popbridge_bin):
    """SO_REUSEPORT would let a second popbridge (started by mistake, another config)
    silently take a share of the connections: it must refuse to start instead."""
    first = make_gateway(dovecot)
    listeners = [{"name": name, "address": f"{HOST}:{port}", "tls": "implicit"}
                 for name, port in first.ports.items()]
    second = Gateway(pki, dovecot, {"listeners": listeners, "logging": {"level": "info"}},
                     binary=popbridge_bin)
    try:
        path = second.write_config()
        p = subprocess.run([popbridge_bin, "--config", path], capture_output=True, text=True,
                           timeout=30 * TIME_FACTOR, stdin=subprocess.DEVNULL)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "address in use by another popbridge process" in p.stderr, p.stderr
    finally:
        tempdirs.remove(second.dir)
    assert first.running, "the first gateway is untouched"


def test_logins_are_counted_under_their_own_command(dovecot, account, make_gateway):
    """An AUTH login is AUTH in popbridge_commands_total, not PASS; the "+ " challenge of a
    two-step AUTH is not an answer and is not counted."""
    g, mport = start_gateway(make_gateway, dovecot)
    import base64
    token = base64.b64encode(f"\0{account.name}\0{account.password}".encode()).decode()
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd("AUTH PLAIN").line.startswith(b"+ ")
        assert c.cmd(token).ok
        assert c.quit().ok
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        c.login(account.name, account.password)
        assert c.quit().ok

    def counted():
        s = scrape(mport)
        return s if s.value("popbridge_commands_total", command="QUIT", result="ok") == 2 else None
    s = wait_until(counted, QUICK, "both sessions to be counted")
    assert s.value("popbridge_commands_total", command="AUTH", result="ok") == 1
    assert s.value("popbridge_commands_total", command="PASS", result="ok") == 1
    assert s.value("popbridge_commands_total", command="USER", result="ok") == 1


def test_json_logs_are_valid_json_with_time(dovecot, make_gateway):
    """logging.format json: every line is a JSON object with the event's UTC time, even
    when a client sends 8-bit octets that are not UTF-8 (they become U+FFFD)."""
    import json
    g = make_gateway(dovecot, {"logging": {"format": "json"}})
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd(b"USER caf\xe9-latin1").ok
        assert c.cmd("PASS wrong").err
        assert c.quit().ok

    def failed_line():
        for line in g.log_text().splitlines():
            if '"login_failed"' in line:
                return line
        return None
    wait_until(failed_line, QUICK, "the login_failed line")
    events = [json.loads(line) for line in g.log_text().splitlines() if line.strip()]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]) for e in events), events[:3]
    failed = next(e for e in events if e["event"] == "login_failed")
    assert failed["user"] == "caf\ufffd-latin1", failed
    assert failed["client"] == "127.0.0.1", failed


def test_log_level_option_outlasts_a_reload(make_gateway, dovecot, ctx, account):
    # --log-level is for this run: a SIGHUP re-reads the file but keeps the option's level.
    g = make_gateway(dovecot, {"logging": {"level": "info"}}, args=["--log-level", "debug"])
    wait_event(g, "started")
    g.proc.send_signal(signal.SIGHUP)
    wait_event(g, "reloaded", trigger="SIGHUP")
    with login(g.pop3s_port, ctx, account) as c:
        assert c.cmd("NOOP").ok
    wait_event(g, "command", command="NOOP")


def _kernel_timer(local_port: int, remote_port: int) -> str:
    """The "tr:when" column of /proc/net/tcp for one loopback socket."""
    wanted = (LOOPBACK, local_port, LOOPBACK, remote_port)
    for s in tcp_sockets():
        if (s.local_host, s.local_port, s.remote_host, s.remote_port) == wanted:
            return s.timer
    return "not found"


def test_client_sockets_probe_idle_peers(make_gateway, dovecot, ctx):
    """The gateway sets nodelay and keep-alive on its listening sockets once, and Linux
    hands them to every socket accepted (saving five system calls per connection): the
    client's socket on the gateway's side has a keep-alive timer of about 60 seconds."""
    g = make_gateway(dovecot)
    for port, tls in ((g.pop3_port, None), (g.pop3s_port, ctx)):
        with RawPop3(port, tls_context=tls, timeout=15) as c:
            client_port = c.sock.getsockname()[1]
            # Until the client acknowledges the greeting the retransmit timer ("01") is shown.
            timer = wait_until(
                lambda: (t := _kernel_timer(port, client_port)).startswith("02:") and t, 5,
                "a keep-alive timer on the gateway's socket",
                on_timeout=lambda: _kernel_timer(port, client_port))
            when = timer.partition(":")[2]
            # clock ticks (USER_HZ, 100 a second) until the first probe; idle is 60 s
            assert 50 * 100 <= int(when, 16) <= 60 * 100, timer
