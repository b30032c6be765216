# SPDX-License-Identifier: Apache-2.0
"""A private Dovecot instance as the upstream IMAP server, plus imaplib helpers.

Dovecot (Debian's dovecot-imapd 2.3) is started as root with `dovecot -F -c CONF`
from a configuration generated into a temporary directory that also holds its
base_dir, state_dir, logs, passwd-file and maildirs, so nothing under /etc, /run
or /var is touched and the system's own Dovecot (if any) is left alone.

Quirks this works around (see also the notes in the methods):
  * Dovecot treats a client whose IP equals the server's own IP as "secured":
    with both on 127.0.0.1 `disable_plaintext_auth = yes` has no effect. So
    require_tls=True makes the instance listen on 127.0.0.2 (clients connecting
    from the default loopback source 127.0.0.1 are then not "secured").
  * After a failed login Dovecot's auth process delays further logins from the
    same IP (the anvil "auth penalty", 2 s doubling up to 15 s) until one
    succeeds, and answers each failure only after auth_failure_delay (2 s by
    default). The generated config sets auth_failure_delay to 0 and, unless
    auth_penalty=True, removes anvil's auth-penalty socket so the penalty is
    off. Tests still end failure sequences with a good login, which also resets
    the penalty when it is on.
  * pop3_uidl_format=... also enables Dovecot's own POP3 server (dovecot-pop3d)
    on a third port, so tests can compare the gateway's UIDLs and sizes with
    what Dovecot's POP3 prints for the same maildir. Dovecot's pop3 keeps no
    lock on the mailbox (pop3_lock_session = no, the default), but tests still
    end (QUIT) one POP3 session before starting another on the same mailbox.
"""

from __future__ import annotations

import dataclasses
import imaplib
import itertools
import os
import poplib
import re
import socket
import ssl
import subprocess
from typing import Iterable, Mapping, Optional

from . import procs, tempdirs
from .certs import Pki
from .imap_accounts import ImapAccounts, append_octets, appended_uid, check_crlf_octets
from .upstream_process import UpstreamProcess
from .ports import free_ports
from .wait import TIME_FACTOR, wait_until

DOVECOT = "/usr/sbin/dovecot"
MAIL_UID = 65534  # nobody
MAIL_GID = 65534  # nogroup

_instance_counter = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    password: str


class Dovecot(UpstreamProcess, ImapAccounts):
    """One Dovecot instance. Use as a context manager or call start()/stop().

    users: {name: password}. Names are [A-Za-z0-9._@+-] (each is also a file
    name); passwords must not contain ":" or newlines (passwd-file format);
    the {PLAIN} scheme is used.
    """

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 3.0  # graceful stop normally takes ~1 s; right after a start anvil can linger ~5 s, then SIGKILL
    SERVER_NAME = "dovecot"

    def __init__(self, pki: Pki, users: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 *, require_tls: bool = False, host: Optional[str] = None,
                 auth_penalty: bool = False, auth_failure_delay: str = "0",
                 extra_config: str = "", pop3_uidl_format: Optional[str] = None):
        self.pki = pki
        self.require_tls = require_tls
        self.host = host or ("127.0.0.2" if require_tls else "127.0.0.1")
        self.auth_penalty = auth_penalty
        self.auth_failure_delay = auth_failure_delay
        self.extra_config = extra_config
        if pop3_uidl_format is not None and (not pop3_uidl_format or any(c in pop3_uidl_format for c in "\r\n\0")):
            raise ValueError(f"unusable pop3_uidl_format {pop3_uidl_format!r}")
        self.pop3_uidl_format = pop3_uidl_format
        self._take_users(users)
        # pop3_port: Dovecot's own POP3 listener, only with pop3_uidl_format.
        self.pop3_port: Optional[int] = None
        if pop3_uidl_format is None:
            self.imap_port, self.imaps_port = free_ports(2, self.host)
        else:
            self.imap_port, self.imaps_port, self.pop3_port = free_ports(3, self.host)
        self.instance_name = f"popbridge-test-{os.getpid()}-{next(_instance_counter)}"
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None

    # ----------------------------------------------------------------- paths

    @property
    def conf_path(self) -> str:
        return os.path.join(self.dir, "dovecot.conf")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "dovecot.log")

    @property
    def users_path(self) -> str:
        """Directory of passwd-files, one per user."""
        return os.path.join(self.dir, "users")

    @property
    def mail_root(self) -> str:
        return os.path.join(self.dir, "mail")

    @property
    def ports(self) -> list[int]:
        """Every port the instance listens on."""
        return [self.imap_port, self.imaps_port] + ([self.pop3_port] if self.pop3_port is not None else [])

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Starts the instance (again, after stop()/kill(), on the same ports and
        with the same mail), and waits until every listener (imap, imaps and, with
        pop3_uidl_format, pop3) accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("Dovecot is already running")
        if not os.access(DOVECOT, os.X_OK):
            raise RuntimeError(f"{DOVECOT} not found: apt-get install dovecot-imapd")
        if os.geteuid() != 0:
            raise RuntimeError("Dovecot is started as root (it switches to mail_uid 65534 itself); run the tests as root")
        if self.dir is None:
            self._prepare_dir()
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: starting {self.instance_name} ===\n".encode())
        # Dovecot daemonizes unless -F; its own stdout/stderr carry only early
        # start-up errors (before log_path is open), so they go to a file too.
        self._stderr = open(os.path.join(self.dir, "dovecot.stderr"), "ab")
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            start_new_session=True, close_fds=True,
            preexec_fn=procs.die_with_parent())
        procs.register(self.proc)

        self._await_listening(f"dovecot {self.instance_name}")

    def stop(self) -> None:
        """SIGTERM to the master, SIGKILL to the whole process group after a
        deadline; returns when no process of the instance is left and the ports
        no longer accept connections. Mail and config stay (start() again works)."""
        self._reap(kill=False)

    def kill(self) -> None:
        """SIGKILLs every process of the instance at once (the "upstream dies"
        case): the master, auth, login and imap processes all vanish, so open IMAP
        connections are closed by the kernel mid-stream."""
        self._reap(kill=True)


    # ------------------------------------------------------------ config

    def _prepare_dir(self) -> None:
        self.dir = tempdirs.make("dovecot")
        try:
            # Dovecot's unprivileged processes (imap as 65534, auth as dovecot)
            # must traverse the directory to reach the maildirs and passwd-file.
            os.chmod(self.dir, 0o755)
            for sub in ("run", "state"):
                os.mkdir(os.path.join(self.dir, sub), 0o755)
            os.mkdir(self.mail_root, 0o700)
            os.chown(self.mail_root, MAIL_UID, MAIL_GID)
            self._write_users()
            with open(self.conf_path, "w") as f:
                f.write(self._config_text())
        except BaseException:
            tempdirs.remove(self.dir)
            self.dir = None
            raise

    def _config_text(self) -> str:
        d = self.dir
        penalty = "" if self.auth_penalty else """
# No anvil auth-penalty socket: the auth process then runs without the
# per-IP login penalty (auth-penalty.c disables itself when it cannot connect).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
"""
        return f"""# Generated by tests/integration/harness/dovecot.py; throwaway test instance.
instance_name = {self.instance_name}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
protocols = imap
listen = {self.host}
shutdown_clients = yes

ssl = yes
ssl_cert = <{self.pki.cert}
ssl_key = <{self.pki.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = {"yes" if self.require_tls else "no"}
auth_mechanisms = plain login
auth_failure_delay = {self.auth_failure_delay}
login_trusted_networks =

# One passwd-file per user: passwd-file re-reads a changed file at most once a
# second, so a user added to a shared file could stay unknown for up to a
# second; a new file (new path) is read on first use.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users/%u
}}

mail_location = maildir:{d}/mail/%u
mail_uid = {MAIL_UID}
mail_gid = {MAIL_GID}
first_valid_uid = {MAIL_UID}
first_valid_gid = {MAIL_GID}

service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
{penalty}{self._pop3_config()}
{self.extra_config}
"""

    def _pop3_config(self) -> str:
        """Dovecot's own POP3 server, only with pop3_uidl_format. The value goes in
        verbatim (an f-string, so "%" needs no escaping; Dovecot expands %u, %v,
        %g... itself when it builds each UIDL). Dovecot 2.3's configuration check
        accepts only one-letter variables here: a long name such as %{uid} makes
        it refuse to start ("Unknown pop3_uidl_format variable: %{"). The pop3s
        listener of Dovecot's built-in defaults (port 995) is switched off."""
        if self.pop3_uidl_format is None:
            return ""
        return f"""
# Dovecot's own POP3 server, to compare the gateway's UIDLs and sizes with.
protocols = imap pop3
pop3_uidl_format = {self.pop3_uidl_format}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""

    # ------------------------------------------------------------- users

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        # The name is also a file name (one passwd-file per user).
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}", name):
            raise ValueError(f"unusable user name {name!r}")
        if not password or any(c in password for c in ":\r\n\0"):
            raise ValueError(f"unusable passwd-file password {password!r}")

    def _write_users(self) -> None:
        os.makedirs(self.users_path, mode=0o755, exist_ok=True)
        for name, password in self._users.items():
            self._write_user(name, password)

    def _write_user(self, name: str, password: str) -> None:
        # name:password:uid:gid:gecos:home:shell:extra; uid/gid come from mail_uid/mail_gid.
        path = os.path.join(self.users_path, name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{name}:{{PLAIN}}{password}::::::\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def add_user(self, name: Optional[str] = None, password: Optional[str] = None) -> Account:
        """Adds a user (a fresh, empty mailbox) and returns its account; the user
        can log in at once, also while the instance runs."""
        name, password = self._new_user(name, password)
        self._users[name] = password
        if self.dir is not None:
            self._write_user(name, password)
        return Account(name, password)

    def account(self, name: str) -> Account:
        return Account(name, self._users[name])

    # -------------------------------------------------------------- logs

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        if self.dir is not None:
            for name in ("dovecot.stderr", "dovecot.log"):
                try:
                    with open(os.path.join(self.dir, name), "rb") as f:
                        tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
                except OSError:
                    continue
                parts.append(f"--- {name} (tail) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def session_ends(self, user: str) -> int:
        """How many IMAP sessions of `user` have ended, from the log ("imap(user)...
        Logged out", "Disconnected", "Connection closed" or "Server shutting down"; a
        session killed with the server logs nothing). Waiting for this number to grow
        tells a test that a client's upstream session is really over."""
        pattern = re.compile(r"imap\(" + re.escape(user) + r"\)<[^>]*><[^>]*>: (?:Info: )?"
                             r"(?:Logged out|Disconnected|Connection closed|Server shutting down)")
        return len(pattern.findall(self.log_text()))

    def settled_session_ends(self, user: str) -> int:
        """session_ends() once every session of `user` begun so far has ended and been
        logged: a baseline for wait_session_ends() that the end of a session begun before
        it (the harness's own last APPEND, whose "Logged out" may come late) cannot meet."""
        self.fence(user)
        wait_until(lambda: self.session_ends(user) >= sum(self._login_counts(user)), 10.0 * TIME_FACTOR,
                   f"every IMAP session of {user} to end", on_timeout=self.diagnostics)
        return self.session_ends(user)

    def wait_session_ends(self, user: str, at_least: int, timeout: float = 15.0) -> None:
        timeout *= TIME_FACTOR  # how fast the gateway closes its upstream session
        wait_until(lambda: self.session_ends(user) >= at_least, timeout,
                   f"{at_least} ended IMAP session(s) of {user} in the Dovecot log",
                   on_timeout=self.diagnostics)

    # ----------------------------------------------------- imaplib helpers

    def client_context(self) -> ssl.SSLContext:
        return self.pki.client_context()

    def imap(self, user: str, tls: str = "starttls") -> imaplib.IMAP4:
        """A logged-in imaplib connection. tls: "starttls" (port imap), "implicit"
        (port imaps) or "none" (plain LOGIN on port imap). The server certificate is
        verified against the test CA, including the host name."""
        password = self._users[user]
        if tls == "implicit":
            conn = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.client_context(), timeout=30)
        else:
            conn = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
            if tls == "starttls":
                conn.starttls(self.client_context())
            elif tls != "none":
                raise ValueError(f"tls={tls!r}")
        try:
            conn.login(user, password)
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def logins(self, user: str) -> int:
        """The user's IMAP "Login:" lines in the log, leaving out the fence's (see fence())."""
        return self._login_counts(user)[0]

    def fence(self, user: str) -> None:
        """Logs `user` in from FENCE_ADDRESS and waits for that login's own line in the log.
        Dovecot's log process may write a login's line a little after the login, so a test
        counting logins fences first: a login that finished before the fence began is in
        the log once the fence's line is. The fence's line is told apart by its address,
        not by the count, which the logins being waited for would also raise."""
        def fence_lines() -> int:
            return self._login_counts(user)[1]

        before = fence_lines()
        conn = _FenceImap(self.host, self.imap_port, timeout=30)
        try:
            conn.starttls(self.client_context())
            conn.login(user, self._users[user])
        except BaseException:
            conn.shutdown()
            raise
        conn.logout()
        wait_until(lambda: fence_lines() > before, 10.0 * TIME_FACTOR,
                   f"the fence login of {user} in Dovecot's log", on_timeout=self.diagnostics)

    def log_mark(self, *users: str) -> int:
        """An offset into the log for a test that then looks only at later lines: every
        login of these users so far (the harness's own APPENDs, say) is logged before it."""
        for user in users:
            self.fence(user)
        return len(self.log_text())

    def _login_counts(self, user: str) -> tuple[int, int]:
        """(other logins, fence logins) of the user, told apart by the fence's address. IMAP
        logins only: Dovecot's own POP3 server (pop3-login) is no upstream session."""
        pattern = re.compile(r"imap-login: (?:Info: )?Login: user=<" + re.escape(user) + ">")
        fence_mark = f"rip={FENCE_ADDRESS},"
        lines = [line for line in self.log_text().splitlines() if pattern.search(line)]
        fences = sum(1 for line in lines if fence_mark in line)
        return len(lines) - fences, fences

    def append(self, user: str, message: bytes, flags: str = "", tls: str = "starttls") -> int:
        """APPENDs `message` to the user's INBOX and returns its UID (from UIDPLUS's
        APPENDUID). The message must use CRLF line ends only: imaplib would rewrite
        bare CR or LF, and tests compare bytes exactly."""
        if re.search(rb"\r(?!\n)|(?<!\r)\n", message):
            raise ValueError("message has a bare CR or LF; use CRLF line ends")
        conn = self.imap(user, tls)
        try:
            return appended_uid(*conn.append("INBOX", flags or None, None, message))
        finally:
            conn.logout()

    def append_raw(self, user: str, message: bytes, tls: str = "starttls") -> int:
        """Like append(), but sends `message` exactly as given: bare LF or CR line
        ends and 8-bit octets (anywhere, headers included) reach Dovecot unchanged
        (imaplib's append() would rewrite the line ends). Returns the UID."""
        if b"\0" in message:
            raise ValueError("NUL is not allowed in an IMAP literal")
        conn = self.imap(user, tls)
        try:
            conn.literal = message  # what imaplib.append() sets, minus its CRLF rewriting
            return appended_uid(*conn._simple_command("APPEND", "INBOX"))
        finally:
            conn.logout()

    def append_binary(self, user: str, message: bytes, tls: str = "starttls") -> int:
        """APPENDs `message` as an RFC 3516 literal8 (~{n}), the only way to store NUL
        octets through IMAP; the octets reach Dovecot unchanged. Returns the UID."""
        conn = self.imap(user, tls)
        try:
            tag = conn._new_tag()
            conn.send(tag + b" APPEND INBOX ~{%d}\r\n" % len(message))
            if not conn.readline().startswith(b"+"):
                raise RuntimeError("APPEND of a literal8 got no continuation")
            conn.send(message + b"\r\n")
            while True:
                line = conn.readline()
                if not line:
                    raise RuntimeError("connection closed during APPEND")
                if line.startswith(tag + b" "):
                    status = line[len(tag) + 1:].split(b" ", 1)[0].decode()
                    return appended_uid(status, [line])
        finally:
            conn.logout()

    def create_mailbox(self, user: str, mailbox: str, message: Optional[bytes] = None,
                       replace: bool = False) -> None:
        """Creates `mailbox` (deleting it first with replace=True, which gives it a new
        UIDVALIDITY) and APPENDs `message` to it when given."""
        conn = self.imap(user)
        try:
            if replace:
                conn.delete(mailbox)  # NO when it does not exist yet: fine
            typ, data = conn.create(mailbox)
            if typ != "OK":
                raise RuntimeError(f"CREATE {mailbox} failed: {typ} {data}")
            if message is not None:
                typ, data = conn.append(mailbox, None, None, message)
                if typ != "OK":
                    raise RuntimeError(f"APPEND to {mailbox} failed: {typ} {data}")
        finally:
            conn.logout()

    def append_many(self, user: str, messages: Iterable[bytes]) -> list[int]:
        """APPENDs each message (CRLF line ends, as append()) in one session; their UIDs."""
        conn = self.imap(user)
        try:
            uids = []
            for message in messages:
                check_crlf_octets(message)
                uids.append(append_octets(conn, message))
            return uids
        finally:
            conn.logout()

    def _examine(self, conn: imaplib.IMAP4) -> None:
        typ, data = conn.select("INBOX", readonly=True)
        if typ != "OK":
            raise RuntimeError(f"EXAMINE failed: {typ} {data}")

    def uids(self, user: str) -> list[int]:
        conn = self.imap(user)
        try:
            self._examine(conn)
            typ, data = conn.uid("SEARCH", None, "ALL")
            if typ != "OK":
                raise RuntimeError(f"UID SEARCH failed: {typ} {data}")
            return sorted(int(x) for x in (data[0] or b"").split())
        finally:
            conn.logout()

    def fetch_all(self, user: str) -> dict[int, bytes]:
        """{uid: exact bytes of BODY[]} for every message of the user's INBOX (read-only, no \\Seen change)."""
        conn = self.imap(user)
        try:
            self._examine(conn)
            typ, data = conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH failed: {typ} {data}")
            out: dict[int, bytes] = {}
            for item in data:
                if isinstance(item, tuple):
                    m = re.search(rb"\bUID (\d+)", item[0])
                    if not m:
                        raise RuntimeError(f"no UID in {item[0]!r}")
                    out[int(m.group(1))] = item[1]
            return out
        finally:
            conn.logout()

    def fetch(self, user: str, uid: int) -> bytes:
        return self.fetch_all(user)[uid]

    def sizes(self, user: str) -> dict[int, int]:
        """{uid: RFC822.SIZE}."""
        conn = self.imap(user)
        try:
            self._examine(conn)
            typ, data = conn.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH failed: {typ} {data}")
            out = {}
            for item in data:
                if not item:
                    continue
                line = item if isinstance(item, bytes) else item[0]
                m = re.search(rb"UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+)", line)
                if m:
                    if m.group(1):
                        out[int(m.group(1))] = int(m.group(2))
                    else:
                        out[int(m.group(4))] = int(m.group(3))
            return out
        finally:
            conn.logout()

    def flags(self, user: str, uid: int) -> set[str]:
        conn = self.imap(user)
        try:
            self._examine(conn)
            typ, data = conn.uid("FETCH", str(uid), "(FLAGS)")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH failed: {typ} {data}")
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                if line and re.search(rb"\bUID %d\b" % uid, line):
                    m = re.search(rb"FLAGS \(([^)]*)\)", line)
                    return set(m.group(1).decode().split()) if m else set()
            raise KeyError(f"no message with UID {uid}")
        finally:
            conn.logout()

    def uidvalidity(self, user: str, mailbox: str = "INBOX") -> int:
        conn = self.imap(user)
        try:
            typ, data = conn.status(mailbox, "(UIDVALIDITY)")
            if typ != "OK":
                raise RuntimeError(f"STATUS failed: {typ} {data}")
            m = re.search(rb"UIDVALIDITY (\d+)", data[0])
            return int(m.group(1))
        finally:
            conn.logout()

    # ------------------------------------------- Dovecot's own POP3 (poplib)

    def pop3(self, user: str, tls: str = "starttls") -> poplib.POP3:
        """A logged-in poplib connection to Dovecot's own POP3 server (needs
        pop3_uidl_format). tls: "starttls" (STLS, certificate and host name verified
        against the test CA) or "none". The caller must QUIT it before another POP3
        session (the gateway's included) opens the same mailbox."""
        if self.pop3_port is None:
            raise RuntimeError("Dovecot's POP3 is off: pass pop3_uidl_format to Dovecot()")
        password = self._users[user]
        conn = poplib.POP3(self.host, self.pop3_port, timeout=30)
        try:
            if tls == "starttls":
                conn.stls(self.client_context())
            elif tls != "none":
                raise ValueError(f"tls={tls!r}")
            conn.user(user)
            conn.pass_(password)
        except BaseException:
            conn.close()
            raise
        return conn

    def _pop3_listing(self, user: str, command: str, tls: str) -> list[tuple[int, bytes]]:
        conn = self.pop3(user, tls)
        try:
            resp, lines, _ = conn.uidl() if command == "UIDL" else conn.list()
            if not resp.startswith(b"+OK"):
                raise RuntimeError(f"{command} failed: {resp!r}")
            out = []
            for line in lines:
                n, value = line.split(b" ", 1)
                out.append((int(n), value))
        except BaseException:
            conn.close()
            raise
        conn.quit()  # ends the session (poplib raises on -ERR): the mailbox is free for the next one
        return out

    def pop3_uidls(self, user: str, tls: str = "starttls") -> list[tuple[int, str]]:
        """[(message number, UIDL)] in order, as Dovecot's own POP3 lists them (UIDL
        without argument) with this instance's pop3_uidl_format. The session is
        QUIT before this returns (no DELE, so nothing changes)."""
        return [(n, value.decode("ascii")) for n, value in self._pop3_listing(user, "UIDL", tls)]

    def pop3_sizes(self, user: str, tls: str = "starttls") -> list[tuple[int, int]]:
        """[(message number, size)] in order, from Dovecot's own POP3 LIST; QUIT before returning."""
        return [(n, int(value)) for n, value in self._pop3_listing(user, "LIST", tls)]


# The harness's fence logins (Dovecot.fence) come from this address, which no gateway
# uses: the kernel gives loopback connections 127.0.0.1 unless told otherwise.
FENCE_ADDRESS = "127.0.0.3"


class _FenceImap(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(FENCE_ADDRESS, 0))
