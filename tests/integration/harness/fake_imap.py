# SPDX-License-Identifier: Apache-2.0
"""A small scripted IMAP server, for upstream behaviour Dovecot cannot imitate.

Plain TCP on 127.0.0.1 (the gateway runs with upstream.tls: none), or implicit TLS
when given a server context (upstream.tls: implicit), one thread per connection, one
mailbox shared by all connections. It answers what popbridge sends
(CAPABILITY, LOGIN, AUTHENTICATE PLAIN, SELECT, UID FETCH (BODY[], and TOP's
BODY[HEADER] and BODY[TEXT]<o.n>), UID STORE, UID EXPUNGE,
EXPUNGE, NOOP, LOGOUT) like a minimal IMAP4rev1 server, and records every command
it received, byte-exact, so tests can assert what the gateway sent.

Scripting:
  capabilities       what CAPABILITY says (before and after login)
  greeting           the first line ("* OK ..."); by default without a CAPABILITY code
  permanent_flags    the list SELECT announces as [PERMANENTFLAGS (...)]; None: none
  login_reply        e.g. "NO Login failed": the tagged reply to every LOGIN /
                     AUTHENTICATE (without the tag); None checks `users`
  login_capabilities how a successful login tells the capabilities after it: None (it
                     does not: Courier, Exchange), "untagged" (a CAPABILITY response
                     before the tagged OK: Gmail) or "code" (OK [CAPABILITY ...]: Dovecot)
  tls                an ssl.SSLContext (server side): implicit TLS, through memory BIOs
                     so a hook can send part of a record (Session.send_sealed_in_pieces)
  hooks              {verb: fn(session, command) -> bool}: runs before the default
                     handling of that verb ("UID FETCH", "LOGIN", ...); returning True
                     means the hook answered (or chose not to answer) the command.
                     Session.fetch_response() and Session.default() help hooks.

Synchronising literals ({n}) and AUTHENTICATE without an initial response are
answered with a "+" continuation only after checking (for up to
CONTINUATION_GRACE seconds) that the client has not already sent the data it must
wait for; a client that did is recorded in Command.premature.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import select
import socket
import ssl
import threading
import time
from typing import Callable, Optional

HOST = "127.0.0.1"
CONTINUATION_GRACE = 0.25  # seconds: how long a premature literal has to show up

_LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}$")


@dataclasses.dataclass
class Message:
    uid: int
    body: bytes
    size: Optional[int] = None   # RFC822.SIZE to announce; default len(body)
    flags: set = dataclasses.field(default_factory=set)

    @property
    def listed_size(self) -> int:
        return len(self.body) if self.size is None else self.size


@dataclasses.dataclass
class Command:
    conn: int                  # connection number, 1-based, in accept order
    tag: str
    verb: str                  # upper case; "UID FETCH" etc. for UID commands
    args: bytes                # everything after the verb (literal octets inline)
    raw: bytes                 # every octet received for this command, CRLFs included
    premature: bool = False    # sent literal/continuation data before our "+"
    sasl_response: Optional[bytes] = None  # AUTHENTICATE: the client's response line

    @property
    def text(self) -> str:
        return self.raw.decode("latin-1")


class Closed(Exception):
    pass


def parse_astrings(data: bytes) -> list[tuple[str, bytes]]:
    """Splits IMAP command arguments into (form, value) pairs; form is "atom",
    "quoted", "literal" ({n}) or "literal+" ({n+}). Raises ValueError on bad syntax."""
    out = []
    i = 0
    n = len(data)
    while i < n:
        if data[i:i + 1] == b" ":
            i += 1
            continue
        if data[i:i + 1] == b'"':
            i += 1
            value = bytearray()
            while True:
                if i >= n:
                    raise ValueError(f"unterminated quoted string in {data!r}")
                c = data[i:i + 1]
                if c == b"\\":
                    if i + 1 >= n or data[i + 1:i + 2] not in (b'"', b"\\"):
                        raise ValueError(f"bad quoted-pair in {data!r}")
                    value += data[i + 1:i + 2]
                    i += 2
                elif c == b'"':
                    i += 1
                    break
                elif c in (b"\r", b"\n") or c[0] >= 0x80:
                    raise ValueError(f"octet {c!r} not allowed in a quoted string: {data!r}")
                else:
                    value += c
                    i += 1
            out.append(("quoted", bytes(value)))
        elif data[i:i + 1] == b"{":
            m = re.match(rb"\{(\d+)(\+?)\}\r\n", data[i:])
            if not m:
                raise ValueError(f"bad literal at {data[i:]!r}")
            size = int(m.group(1))
            start = i + m.end()
            if start + size > n:
                raise ValueError("literal runs past the command")
            out.append(("literal+" if m.group(2) else "literal", data[start:start + size]))
            i = start + size
        else:
            j = i
            while j < n and data[j:j + 1] not in (b" ",):
                c = data[j]
                if c < 0x21 or c >= 0x7f or chr(c) in '(){%*"\\':
                    raise ValueError(f"bad atom octet {chr(c)!r} in {data!r}")
                j += 1
            out.append(("atom", data[i:j]))
            i = j
    return out


def parse_uid_set(text: str, max_uid: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        if ":" in part:
            a, b = part.split(":", 1)
            lo = max_uid if a == "*" else int(a)
            hi = max_uid if b == "*" else int(b)
            lo, hi = min(lo, hi), max(lo, hi)
            out.update(range(lo, hi + 1))
        else:
            out.add(max_uid if part == "*" else int(part))
    return out


class _TlsChannel:
    """Implicit TLS over a session's socket through memory BIOs: what is sealed can be
    sent in pieces, a server slow within one record."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext):
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.engine = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        while True:
            try:
                self.engine.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_sealed()
                self._fill()
        self._send_sealed()

    def _send_sealed(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.incoming.write(data)

    def seal(self, data: bytes) -> bytes:
        self.engine.write(data)
        return self.outgoing.read()

    def recv(self) -> bytes:
        while True:
            try:
                data = self.engine.read(65536)
                self._send_sealed()  # what reading made the engine say (a KeyUpdate's reply)
                return data
            except ssl.SSLWantReadError:
                self._send_sealed()
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""


class Session:
    """One client connection (runs in its own thread)."""

    def __init__(self, server: "FakeImap", sock: socket.socket, number: int):
        self.server = server
        self.sock = sock
        self.number = number
        self.buf = bytearray()
        self.closed = False
        self.logged_in = False
        self.selected = False
        self.tls: Optional[_TlsChannel] = None

    # ---------------------------------------------------------- I/O
    def send(self, data) -> None:
        if isinstance(data, str):
            data = data.encode("latin-1")
        if self.closed:
            raise Closed()
        try:
            self.sock.sendall(self.tls.seal(data) if self.tls is not None else data)
        except OSError:
            raise Closed() from None

    def send_sealed_in_pieces(self, data: bytes, pieces: int, pause: float) -> None:
        """Seals `data` (at most 16 KiB: one TLS record) and sends the ciphertext in
        `pieces` parts, `pause` seconds apart: the record is whole only at the end."""
        assert self.tls is not None and len(data) <= 16384
        if self.closed:
            raise Closed()
        sealed = self.tls.seal(data)
        step = -(-len(sealed) // pieces)
        for at in range(0, len(sealed), step):
            if at:
                time.sleep(pause)  # pacing the server's output, not synchronisation
            try:
                self.sock.sendall(sealed[at:at + step])
            except OSError:
                raise Closed() from None

    def line(self, text: str) -> None:
        self.send(text + "\r\n")

    def default_silently(self, cmd: "Command") -> None:
        """Carries `cmd` out as default() would, but sends no reply (for a connection
        cut after the server acted and before its answer arrived)."""
        send = self.send
        self.send = lambda data: None
        try:
            self.default(cmd)
        finally:
            self.send = send

    def close(self) -> None:
        """Closes the connection (a FIN after what was sent)."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    def _recv(self) -> None:
        try:
            data = self.tls.recv() if self.tls is not None else self.sock.recv(65536)
        except (OSError, ssl.SSLError):
            data = b""
        if not data:
            raise Closed()
        self.buf += data

    def _read_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i + 2])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 1 << 20:
                raise Closed()
            self._recv()

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _client_sent_early(self) -> bool:
        """True if the client sent more before we answered with "+" (it must wait)."""
        tls = self.tls
        if self.buf or (tls is not None and (tls.engine.pending() or tls.incoming.pending)):
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], CONTINUATION_GRACE)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def next_command_arrived(self) -> bool:
        """True if the client sent its next command before this one was answered
        (pipelining), waiting up to CONTINUATION_GRACE for it."""
        return self._client_sent_early()

    def continuation(self, text: str = "") -> bool:
        """Sends "+ text" after checking the client waited for it; returns False if it did not."""
        early = self._client_sent_early()
        self.line("+ " + text if text else "+ ")
        return not early

    def _read_command(self) -> Command:
        raw = bytearray()
        premature = False
        while True:
            line = self._read_line()
            raw += line
            m = _LITERAL_AT_END.search(line[:-2])
            if not m:
                break
            size = int(m.group(1))
            if not m.group(2):  # synchronising: the client must wait for "+"
                if not self.continuation("Ready for literal data"):
                    premature = True
            raw += self._read_exactly(size)
        first = bytes(raw).split(b"\r\n", 1)[0]
        parts = first.split(b" ", 2)
        tag = parts[0].decode("latin-1")
        verb = parts[1].decode("latin-1").upper() if len(parts) > 1 else ""
        rest_start = len(parts[0]) + 1 + (len(parts[1]) + 1 if len(parts) > 1 else 0)
        if verb == "UID" and len(parts) > 2:
            sub = parts[2].split(b" ", 1)[0]
            verb = "UID " + sub.decode("latin-1").upper()
            rest_start += len(sub) + 1
        args = bytes(raw[rest_start:]) if rest_start <= len(first) else b""
        if args.endswith(b"\r\n"):
            args = args[:-2]
        return Command(self.number, tag, verb, args, bytes(raw), premature)

    # ------------------------------------------------------- loop
    def run(self) -> None:
        try:
            if self.server.tls is not None:
                try:
                    self.tls = _TlsChannel(self.sock, self.server.tls)
                except (OSError, ssl.SSLError):
                    raise Closed() from None
            if self.server.greeting is not None:
                self.line(self.server.greeting)
            while not self.closed:
                cmd = self._read_command()
                self.server._record(cmd)
                hook = self.server.hooks.get(cmd.verb)
                if hook is not None and hook(self, cmd):
                    continue
                self.default(cmd)
        except Closed:
            pass
        except Exception as e:  # a harness bug: make it visible to the test
            self.server.errors.append(f"connection {self.number}: {e!r}")
        finally:
            self.close()

    # -------------------------------------------------- responses
    def ok(self, tag: str, text: str = "completed") -> None:
        self.line(f"{tag} OK {text}")

    def fetch_response(self, msg: Message, items: str, body: Optional[bytes] = None) -> bytes:
        """One "* n FETCH (...)" response for `msg` with the items popbridge asks for."""
        seq = self.server.sequence(msg.uid)
        out = [b"UID %d" % msg.uid]
        upper = items.upper()
        if "RFC822.SIZE" in upper:
            out.append(b"RFC822.SIZE %d" % msg.listed_size)
        if re.search(r"\bFLAGS\b", upper):
            out.append(b"FLAGS (" + " ".join(sorted(msg.flags)).encode() + b")")
        if "EMAILID" in upper:
            out.append(b"EMAILID (%s)" % self.server.email_id(msg.uid).encode())
        if "BODY.PEEK[]" in upper or "BODY[]" in upper:
            data = msg.body if body is None else body
            out.append(b"BODY[] {%d}\r\n" % len(data) + data)
        # TOP's sections: the header (with its blank line), then partials of the text.
        end = msg.body.find(b"\r\n\r\n")
        split = len(msg.body) if end < 0 else end + 4
        if "[HEADER]" in upper:
            out.append(b"BODY[HEADER] {%d}\r\n" % split + msg.body[:split])
        partial = re.search(r"\[TEXT\]<(\d+)\.(\d+)>", upper)
        if partial:
            origin, length = int(partial.group(1)), int(partial.group(2))
            data = msg.body[split:][origin:origin + length]
            out.append(b"BODY[TEXT]<%d> {%d}\r\n" % (origin, len(data)) + data)
        return b"* %d FETCH (" % seq + b" ".join(out) + b")\r\n"

    def default(self, cmd: Command) -> None:
        srv = self.server
        tag, verb, args = cmd.tag, cmd.verb, cmd.args.decode("latin-1")
        if verb == "CAPABILITY":
            caps = srv.capabilities_after_login if self.logged_in else srv.capabilities
            self.line("* CAPABILITY " + " ".join(caps))
            self.ok(tag, "Capability completed.")
        elif verb == "NOOP":
            self.ok(tag, "NOOP completed.")
        elif verb == "LOGOUT":
            self.line("* BYE Logging out")
            self.ok(tag, "Logout completed.")
            self.close()
        elif verb == "LOGIN":
            try:
                user, password = [v for _, v in parse_astrings(cmd.args)]
            except ValueError as e:
                self.line(f"{tag} BAD {e}")
                return
            self._finish_login(tag, user, password)
        elif verb == "AUTHENTICATE":
            words = args.split(" ")
            if words[0].upper() != "PLAIN":
                self.line(f"{tag} NO Unsupported mechanism")
                return
            if len(words) > 1:
                response = words[1].encode()
            else:
                if not self.continuation():
                    cmd.premature = True
                response = self._read_line()[:-2]
                cmd.sasl_response = response
            if response == b"*":
                self.line(f"{tag} BAD Authentication cancelled")
                return
            try:
                _, user, password = base64.b64decode(response, validate=True).split(b"\0")
            except ValueError:
                self.line(f"{tag} BAD bad PLAIN response")
                return
            self._finish_login(tag, user, password)
        elif verb in ("SELECT", "EXAMINE"):
            self.selected = True
            with srv.lock:
                count = len(srv.messages)
                next_uid = max((m.uid for m in srv.messages), default=0) + 1
            self.line(r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)")
            self.line(f"* {count} EXISTS")
            self.line("* 0 RECENT")
            self.line(f"* OK [UIDVALIDITY {srv.uidvalidity}] UIDs valid")
            if srv.permanent_flags is not None:
                self.line(f"* OK [PERMANENTFLAGS ({srv.permanent_flags})] Flags permitted.")
            self.line(f"* OK [UIDNEXT {next_uid}] Predicted next UID")
            self.ok(tag, "[READ-WRITE] Select completed.")
        elif verb == "UID FETCH":
            uid_set, _, items = args.partition(" ")
            out = bytearray()
            with srv.lock:
                wanted = parse_uid_set(uid_set, srv.max_uid())
                for msg in srv.messages:
                    if msg.uid in wanted:
                        out += self.fetch_response(msg, items)
                        if "BODY[]" in items.upper():
                            msg.flags.add("\\Seen")
            self.send(bytes(out))
            self.ok(tag, "Fetch completed.")
        elif verb == "UID STORE":
            m = re.fullmatch(r"(\S+) ([+-])FLAGS(?:\.SILENT)? \(([^)]*)\)", args)
            if not m:
                self.line(f"{tag} BAD bad STORE")
                return
            with srv.lock:
                wanted = parse_uid_set(m.group(1), srv.max_uid())
                flags = set(m.group(3).split())
                for msg in srv.messages:
                    if msg.uid in wanted:
                        if m.group(2) == "+":
                            msg.flags |= flags
                        else:
                            msg.flags -= flags
            self.ok(tag, "Store completed.")
        elif verb in ("UID EXPUNGE", "EXPUNGE"):
            if verb == "UID EXPUNGE" and "UIDPLUS" not in [c.upper() for c in srv.capabilities_after_login]:
                self.line(f"{tag} BAD Unknown command")
                return
            with srv.lock:
                wanted = parse_uid_set(args, srv.max_uid()) if verb == "UID EXPUNGE" else None
                out = []
                keep = []
                for i, msg in enumerate(srv.messages):
                    if "\\Deleted" in msg.flags and (wanted is None or msg.uid in wanted):
                        out.append(f"* {i + 1 - len(out)} EXPUNGE")
                    else:
                        keep.append(msg)
                srv.messages[:] = keep
            for line in out:
                self.line(line)
            self.ok(tag, "Expunge completed.")
        else:
            self.line(f"{tag} BAD Unknown command {verb}")

    def _finish_login(self, tag: str, user: bytes, password: bytes) -> None:
        srv = self.server
        srv.logins.append((user, password))
        if srv.login_reply is not None:
            self.line(f"{tag} {srv.login_reply}")
            if srv.login_reply.upper().startswith("OK"):
                self.logged_in = True
            return
        if srv.users.get(user) == password:
            self.logged_in = True
            caps = " ".join(srv.capabilities_after_login)
            if srv.login_capabilities == "untagged":
                self.line("* CAPABILITY " + caps)
            self.ok(tag, f"[CAPABILITY {caps}] Logged in" if srv.login_capabilities == "code"
                    else "Logged in")
        else:
            self.line(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")


Hook = Callable[[Session, Command], bool]


class FakeImap:
    """See the module docstring. Use as a context manager or start()/close()."""

    def __init__(self, *, users: Optional[dict] = None,
                 capabilities=("IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS", "LITERAL+"),
                 capabilities_after_login=None,
                 greeting: Optional[str] = "* OK Fake IMAP server ready.",
                 login_reply: Optional[str] = None,
                 login_capabilities: Optional[str] = None,
                 messages=(), uidvalidity: int = 1234567,
                 permanent_flags: Optional[str] = None,
                 hooks: Optional[dict[str, Hook]] = None, port: int = 0,
                 tls: Optional[ssl.SSLContext] = None):
        def b(v):
            return v.encode("utf-8") if isinstance(v, str) else v
        self.users = {b(k): b(v) for k, v in (users or {}).items()}
        self.capabilities = list(capabilities)
        self.capabilities_after_login = list(capabilities_after_login if capabilities_after_login is not None
                                             else capabilities)
        self.greeting = greeting
        self.login_reply = login_reply
        assert login_capabilities in (None, "untagged", "code"), login_capabilities
        self.login_capabilities = login_capabilities
        self.messages: list[Message] = [m if isinstance(m, Message) else Message(*m) for m in messages]
        self.messages.sort(key=lambda m: m.uid)
        self.uidvalidity = uidvalidity
        self.permanent_flags = permanent_flags  # SELECT's [PERMANENTFLAGS (...)]; None: not sent
        self.hooks: dict[str, Hook] = dict(hooks or {})
        self.tls = tls
        self.commands: list[Command] = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self._listener: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []
        self._sessions: list[Session] = []
        self._stop = threading.Event()
        self.port = port  # 0: any free port

    # ------------------------------------------------------ mailbox
    def max_uid(self) -> int:
        return max((m.uid for m in self.messages), default=0)

    @staticmethod
    def email_id(uid: int) -> str:
        """The RFC 8474 EMAILID a FETCH gives for `uid`."""
        return f"Mfake{uid:06d}"

    def sequence(self, uid: int) -> int:
        for i, m in enumerate(self.messages):
            if m.uid == uid:
                return i + 1
        raise KeyError(uid)

    def uids(self) -> list[int]:
        with self.lock:
            return [m.uid for m in self.messages]

    def message(self, uid: int) -> Message:
        with self.lock:
            for m in self.messages:
                if m.uid == uid:
                    return m
        raise KeyError(uid)

    # ----------------------------------------------------- records
    def _record(self, cmd: Command) -> None:
        with self.lock:
            self.commands.append(cmd)

    def received(self, verb: Optional[str] = None) -> list[Command]:
        with self.lock:
            return [c for c in self.commands if verb is None or c.verb == verb]

    def verbs(self) -> list[str]:
        return [c.verb for c in self.received()]

    @property
    def connections(self) -> int:
        return len(self._sessions)

    def connections_open(self) -> int:
        return sum(1 for s in self._sessions if not s.closed)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    # --------------------------------------------------- lifecycle
    def start(self) -> "FakeImap":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(16)
        self._listener = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"fake-imap-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            session = Session(self, conn, len(self._sessions) + 1)
            self._sessions.append(session)
            t = threading.Thread(target=session.run, name=f"fake-imap-{self.port}-{session.number}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for s in list(self._sessions):
            s.close()
        if self._listener is not None:
            self._listener.close()
        deadline = time.monotonic() + 5
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"fake IMAP threads did not stop: {alive}")

    def __enter__(self) -> "FakeImap":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
