# SPDX-License-Identifier: Apache-2.0
"""POP3 clients for the tests: poplib helpers, a byte-exact raw client, curl.

All network waits have deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import dataclasses
import poplib
import socket
import ssl
import struct
import subprocess
import time
from typing import Optional, Sequence, Union

from .wait import TIME_FACTOR

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 30.0  # seconds; RawPop3 multiplies every timeout by TIME_FACTOR
TERMINATOR = b"\r\n.\r\n"


# ------------------------------------------------------------------ poplib

def pop3_ssl(port: int, context: ssl.SSLContext, host: str = HOST, timeout: float = DEFAULT_TIMEOUT) -> poplib.POP3_SSL:
    """poplib over implicit TLS (pop3s), verifying the certificate with `context`."""
    return poplib.POP3_SSL(host, port, context=context, timeout=timeout)


def pop3_stls(port: int, context: ssl.SSLContext, host: str = HOST, timeout: float = DEFAULT_TIMEOUT) -> poplib.POP3:
    """poplib on a plain listener, upgraded with STLS before returning."""
    conn = poplib.POP3(host, port, timeout=timeout)
    try:
        conn.stls(context)
    except BaseException:
        conn.close()
        raise
    return conn


def pop3_plain(port: int, host: str = HOST, timeout: float = DEFAULT_TIMEOUT) -> poplib.POP3:
    return poplib.POP3(host, port, timeout=timeout)


# ----------------------------------------------------------- raw client

def dot_unstuff(raw: bytes) -> bytes:
    """Undoes POP3 byte-stuffing of a multi-line body (the bytes after the status
    line, without the final ".\\r\\n"): a leading "." of every line is removed."""
    if not raw:
        return raw
    lines = raw.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@dataclasses.dataclass
class Reply:
    line: bytes                   # the status line without CRLF
    body: Optional[bytes] = None  # multi-line replies: the unstuffed body
    raw: bytes = b""              # everything received for this reply, byte-exact

    @property
    def ok(self) -> bool:
        return self.line.startswith(b"+OK")

    @property
    def err(self) -> bool:
        return self.line.startswith(b"-ERR")

    @property
    def text(self) -> str:
        return self.line.decode("utf-8", "replace")

    def body_lines(self) -> list[bytes]:
        """Lines of the unstuffed body, without CRLF."""
        if not self.body:
            return []
        return self.body[:-2].split(b"\r\n") if self.body.endswith(b"\r\n") else self.body.split(b"\r\n")

    def __repr__(self) -> str:
        body = "" if self.body is None else f", body={len(self.body)} octets"
        return f"Reply({self.line!r}{body})"


class ConnectionClosed(AssertionError):
    """The server closed the connection while a reply was expected."""


Data = Union[bytes, str]


def _b(data: Data) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


class RawPop3:
    """A POP3 client that sends exactly the bytes it is given and returns exactly
    the bytes it receives, for protocol-level assertions.

    tls_context: wrap the socket in TLS at once (implicit TLS). starttls() wraps it
    later. rcvbuf: set SO_RCVBUF before connecting (limits how much the kernel
    buffers for us, for backpressure tests). The greeting is read on connect and
    kept in .greeting unless read_greeting=False. Timeouts (seconds) are
    multiplied by TIME_FACTOR (slower sanitizer builds).
    """

    def __init__(self, port: int, host: str = HOST, *, tls_context: Optional[ssl.SSLContext] = None,
                 server_hostname: str = "localhost", timeout: float = DEFAULT_TIMEOUT,
                 rcvbuf: Optional[int] = None, read_greeting: bool = True):
        self.host, self.port, self.timeout = host, port, timeout
        self.buf = bytearray()
        self.eof = False
        self.greeting: Optional[Reply] = None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout * TIME_FACTOR)
            sock.connect((host, port))
            if tls_context is not None:
                sock = tls_context.wrap_socket(sock, server_hostname=server_hostname)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        if read_greeting:
            try:
                self.greeting = self.read_reply()
            except BaseException:
                self.close()
                raise

    # -- context manager
    def __enter__(self) -> "RawPop3":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def tls(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    # -- sending
    def send(self, data: Data) -> None:
        """Sends `data` in one sendall() call (one write, as far as TCP allows)."""
        self.sock.sendall(_b(data))

    def send_line(self, line: Data) -> None:
        self.send(_b(line) + b"\r\n")

    # -- receiving
    def _fill(self, deadline: float) -> bool:
        """Reads more bytes into the buffer; False at EOF. Raises TimeoutError at the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 18)
        except socket.timeout:
            raise TimeoutError(f"no data from {self.host}:{self.port} before the deadline; "
                               f"buffered: {bytes(self.buf[-200:])!r}") from None
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            data = b""  # EOF (TLS without close_notify included)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _deadline(self, timeout: Optional[float]) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout) * TIME_FACTOR

    def read_line(self, timeout: Optional[float] = None, max_len: int = 1 << 20) -> bytes:
        """One line without its CRLF. Raises ConnectionClosed at EOF."""
        deadline = self._deadline(timeout)
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            start = max(0, len(self.buf) - 1)
            if len(self.buf) > max_len:
                raise AssertionError(f"line longer than {max_len} octets: {bytes(self.buf[:100])!r}...")
            if not self._fill(deadline):
                raise ConnectionClosed(f"connection closed; partial line {bytes(self.buf[:200])!r}")

    def read_multiline_raw(self, timeout: Optional[float] = None) -> bytes:
        """The raw bytes of a multi-line body up to and including the terminating
        ".\\r\\n" (the status line must have been read already)."""
        deadline = self._deadline(timeout)
        start = 0
        while True:
            # The terminator is "." CRLF right at the start (empty body), or CRLF "." CRLF.
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b".\r\n"
            i = self.buf.find(TERMINATOR, start)
            if i >= 0:
                raw = bytes(self.buf[: i + 5])
                del self.buf[: i + 5]
                return raw
            start = max(0, len(self.buf) - 4)
            if not self._fill(deadline):
                raise ConnectionClosed(
                    f"connection closed inside a multi-line reply after {len(self.buf)} octets; "
                    f"tail {bytes(self.buf[-100:])!r}")

    def read_reply(self, multiline: bool = False, timeout: Optional[float] = None) -> Reply:
        """Reads one reply. With multiline=True the body is read only after +OK
        (a -ERR is always a single line)."""
        line = self.read_line(timeout)
        raw = line + b"\r\n"
        if multiline and line.startswith(b"+OK"):
            body_raw = self.read_multiline_raw(timeout)
            raw += body_raw
            body = dot_unstuff(body_raw[:-3])  # drop the final ".\r\n"
            return Reply(line, body, raw)
        return Reply(line, None, raw)

    def cmd(self, line: Data, multiline: bool = False, timeout: Optional[float] = None) -> Reply:
        self.send_line(line)
        return self.read_reply(multiline, timeout)

    def read_exactly(self, n: int, timeout: Optional[float] = None) -> bytes:
        deadline = self._deadline(timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionClosed(f"connection closed after {len(self.buf)} of {n} octets")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_until_eof(self, timeout: Optional[float] = None, limit: int = 1 << 30) -> bytes:
        """Everything until the server closes the connection. Raises TimeoutError if
        the connection is still open at the deadline."""
        deadline = self._deadline(timeout)
        while self._fill(deadline):
            if len(self.buf) > limit:
                raise AssertionError(f"more than {limit} octets before EOF")
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def wait_eof(self, timeout: Optional[float] = None) -> bytes:
        return self.read_until_eof(timeout)

    @property
    def buffered(self) -> bytes:
        return bytes(self.buf)

    # -- TLS
    def starttls(self, context: ssl.SSLContext, server_hostname: str = "localhost") -> None:
        """Upgrades the connection in place. Bytes that arrived after the STLS reply
        and before the handshake would belong to the plaintext phase: they are
        refused here (the caller checks for injection)."""
        if self.buf:
            raise AssertionError(f"plaintext received after the STLS reply: {bytes(self.buf)!r}")
        self.sock.settimeout(self.timeout * TIME_FACTOR)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    # -- conveniences
    def login(self, user: str, password: str) -> Reply:
        """USER/PASS; asserts +OK for both."""
        r = self.cmd(f"USER {user}")
        assert r.ok, f"USER {user}: {r}"
        r = self.cmd(f"PASS {password}")
        assert r.ok, f"PASS for {user}: {r}"
        return r

    def auth_plain(self, user: str, password: str, authzid: str = "") -> Reply:
        token = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")

    def capa(self) -> list[str]:
        r = self.cmd("CAPA", multiline=True)
        assert r.ok, f"CAPA: {r}"
        return [l.decode("utf-8", "replace") for l in r.body_lines()]

    def quit(self) -> Reply:
        return self.cmd("QUIT")

    def close(self) -> None:
        """Closes the socket without QUIT (a dropped connection, as far as the server can tell)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        """Closes with a TCP RST (SO_LINGER 0): the connection drops abruptly."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()


def parse_capa(lines: Sequence[str]) -> dict[str, list[str]]:
    """{CAPABILITY (upper case): [arguments]} from CAPA body lines."""
    out: dict[str, list[str]] = {}
    for line in lines:
        parts = line.split()
        if parts:
            out[parts[0].upper()] = parts[1:]
    return out


# ------------------------------------------------------------------ curl

CURL = "/usr/bin/curl"


def curl(url: str, user: str, password: str, ca_file: str, *extra: str,
         timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs curl against a POP3 URL; stdout is bytes, exactly as curl wrote it."""
    timeout *= TIME_FACTOR
    args = [CURL, "--silent", "--show-error", "--max-time", str(int(timeout)),
            "--cacert", ca_file, "--user", f"{user}:{password}", *extra, url]
    return subprocess.run(args, capture_output=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)


def curl_pop3s(port: int, path: str, user: str, password: str, ca_file: str, *extra: str,
               host: str = HOST, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`curl pop3s://host:port/path` (implicit TLS). path "" lists, "1" retrieves message 1."""
    return curl(f"pop3s://{host}:{port}/{path}", user, password, ca_file, *extra, timeout=timeout)


def curl_pop3_stls(port: int, path: str, user: str, password: str, ca_file: str, *extra: str,
                   host: str = HOST, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`curl --ssl-reqd pop3://host:port/path` (STLS required)."""
    return curl(f"pop3://{host}:{port}/{path}", user, password, ca_file, "--ssl-reqd", *extra, timeout=timeout)


# ------------------------------------------------------- shared by several test files

def user_pass(c: "RawPop3", user: str, password: str):
    """USER then PASS; returns the PASS reply (USER must be accepted)."""
    r = c.cmd(f"USER {user}")
    assert r.ok, f"USER {user}: {r}"
    return c.cmd(f"PASS {password}")


# PROXY protocol headers (HAProxy's spec) and clients that send them first.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src: str, dst: str, sport: int, dport: int) -> bytes:
    return f"PROXY TCP4 {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src: str, dst: str, sport: int, dport: int, command: int = 0x1) -> bytes:
    payload = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(payload)) + payload


class BioTlsSocket:
    """Client TLS over an already connected socket through memory BIOs, so that the
    ClientHello can go out in the same write as bytes before it (a PROXY header).
    Offers what RawPop3 uses of a socket (recv, sendall, settimeout, close)."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext, prefix: bytes = b"",
                 server_hostname: str = "localhost"):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        pending = prefix
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            data = pending + self.outgoing.read()
            pending = b""
            if data:
                sock.sendall(data)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("connection closed during the TLS handshake")
            self.incoming.write(chunk)
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def settimeout(self, t) -> None:
        self.sock.settimeout(t)

    def sendall(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                data = self.obj.read(n)
                self._flush()
                return data
            except ssl.SSLWantReadError:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return b""
                self.incoming.write(chunk)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def getpeercert(self, binary_form: bool = False):
        return self.obj.getpeercert(binary_form)

    def setsockopt(self, *args) -> None:
        self.sock.setsockopt(*args)

    def close(self) -> None:
        self.sock.close()


def connect_with_header(port: int, header: bytes, ctx: Optional[ssl.SSLContext] = None,
                        same_write: bool = False, pieces: int = 1) -> RawPop3:
    """A RawPop3 whose connection starts with `header` (sent in `pieces` writes, with
    TCP_NODELAY); with ctx, a TLS handshake follows (in the same write as the header
    when same_write). The greeting is read."""
    c = RawPop3(port, read_greeting=False, timeout=15)
    try:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None and same_write:
            c.sock = BioTlsSocket(c.sock, ctx, prefix=header)
        else:
            step = -(-len(header) // pieces)
            for i in range(0, len(header), step):
                c.send(header[i:i + step])
            if ctx is not None:
                c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
        c.greeting = c.read_reply()
        assert c.greeting.ok, c.greeting
        return c
    except BaseException:
        c.close()
        raise
