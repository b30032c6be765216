# SPDX-License-Identifier: Apache-2.0
"""A private Courier-IMAP 5.0 instance (an IMAP upstream unlike Dovecot), plus imaplib helpers.

Why Courier: it answers LOGIN with a bare "OK LOGIN Ok." (no [CAPABILITY ...]), so
popbridge must ask for the capabilities after login (it pipelines a CAPABILITY there), and
it lists UIDPLUS, which popbridge's UID EXPUNGE needs. It lacks LITERAL+, ID, CONDSTORE,
OBJECTID and MOVE, sends no UIDNEXT on SELECT, adds a final CRLF to a stored message that
lacks one, and answers a bad password with a bare NO (no [AUTHENTICATIONFAILED]).

Debian 12's courier-imap cannot be installed beside Dovecot (courier-imap and dovecot-imapd
both Provide and Conflict with imap-server, and courier-imap Depends on an MTA), so
scripts/install-deps unpacks it into COURIER_ROOT (imapd and imaplogin run from there) and
installs only what it runs with: courier-base (couriertcpd, couriertls),
courier-authdaemon and courier-authlib(-userdb) (authdaemond, the userdb module, makeuserdb).

Courier's paths are compiled in: the auth library reaches authdaemond at
/run/courier/authdaemon/socket, authdaemond reads /etc/courier/authdaemonrc and its userdb
module /etc/courier/userdb.dat. So each instance runs under `unshare --mount` inside
harness/courier_ns.py, which bind-mounts the instance's etc/ over /etc/courier and its
authdaemon/ over /run/courier/authdaemon in that namespace only, then starts authdaemond
and two couriertcpd listeners: IMAP (plain, with STARTTLS) and IMAPS (couriertls first),
as Debian's init scripts would, with the environment of Debian's /etc/courier/imapd and
imapd-ssl (private paths, loopback ports; no `ulimit -v`). Nothing changes in the host's
namespace, and a system authdaemond, if any, is never used.

Courier logs to stderr only (no syslog(3)): authdaemond to log/authdaemond.log, each
listener and its sessions (couriertcpd -stderr=) to log/imap.log and log/imaps.log, the
namespace supervisor to log/courier_ns.log.

Processes: couriertcpd leaves the harness's process group (it calls setpgrp() and signals
its own group, its sessions, on SIGTERM). stop() and kill() therefore also look up every
process in the instance's mount namespace and signal each by PID, so no imapd session is
left behind.

Users: a private userdb (name -> uid/gid 65534, home DIR/home/NAME, SHA-512 crypt hash from
`openssl passwd -6`), compiled with makeuserdb; mail in DIR/home/NAME/Maildir, owned by
nobody, as imapd drops to the user's uid. TLS: the test PKI's server certificate (SANs
localhost and 127.0.0.1) and key in one file for couriertls; DH parameters from `certtool
--get-dh-params` (a fixed RFC 7919 group: nothing is generated).
"""

from __future__ import annotations

import dataclasses
import imaplib
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
from typing import Iterable, Mapping, Optional

from . import procs, tempdirs
from .certs import Pki
from .dovecot import Account
from .ports import free_ports
from .imap_accounts import ImapAccounts, append_octets, check_crlf_octets
from .upstream_process import UpstreamProcess
from .wait import port_refuses, wait_until

COURIER_ROOT = os.environ.get("POPBRIDGE_COURIER_ROOT", "/opt/popbridge-test/courier")
IMAPD = os.path.join(COURIER_ROOT, "usr/bin/imapd")
IMAPLOGIN = os.path.join(COURIER_ROOT, "usr/lib/courier/courier/imaplogin")
COURIERTCPD = "/usr/sbin/couriertcpd"        # courier-base
COURIERTLS = "/usr/bin/couriertls"          # courier-base
AUTHDAEMOND = "/usr/lib/courier/courier-authlib/authdaemond"  # courier-authlib
MAKEUSERDB = "/usr/sbin/makeuserdb"         # courier-authlib-userdb
CERTTOOL = "/usr/bin/certtool"              # gnutls-bin (courier-base Depends on it)
COURIER_NS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "courier_ns.py")
# Compiled into Courier's binaries; the instance's own directories go over them.
ETC_COURIER = "/etc/courier"
AUTHDAEMON_DIR = "/run/courier/authdaemon"
MAIL_UID = 65534  # nobody
MAIL_GID = 65534  # nogroup

# Debian 12's /etc/courier/imapd (IMAP_CAPABILITY_TLS adds AUTH=PLAIN once TLS is on).
IMAP_CAPABILITY = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"



def install_problem() -> Optional[str]:
    """Why Courier cannot run here, or None."""
    for path in (IMAPD, IMAPLOGIN):
        if not os.access(path, os.X_OK):
            return f"{path} not found: run scripts/install-deps (it unpacks Courier-IMAP into {COURIER_ROOT})"
    for path, package in ((COURIERTCPD, "courier-base"), (COURIERTLS, "courier-base"),
                          (AUTHDAEMOND, "courier-authlib"), (MAKEUSERDB, "courier-authlib-userdb"),
                          (CERTTOOL, "gnutls-bin")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: run scripts/install-deps (it installs {package})"
    try:
        pwd.getpwnam("courier")
    except KeyError:
        return "no user 'courier' (courier-base's postinst adds it): run scripts/install-deps"
    if os.geteuid() != 0:
        return "Courier is started as root (imapd switches to the user; unshare needs root); run the tests as root"
    for tool in ("unshare", "mount", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} not found: apt-get install util-linux mount openssl"
    return None


def _mount_ns(pid: int) -> Optional[tuple[int, int]]:
    """(st_dev, st_ino) of the mount namespace of process `pid`, or None if it is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def namespace_members(ns: tuple[int, int]) -> list[int]:
    """PIDs of live processes in the mount namespace `ns` (see _mount_ns)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _mount_ns(int(entry)) == ns:
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            if stat[stat.rfind(b")") + 2:].split()[:1] != [b"Z"]:
                out.append(int(entry))
    return out


@dataclasses.dataclass(frozen=True)
class StoredMessage:
    body: bytes             # BODY[], exactly as Courier returns it
    size: int               # RFC822.SIZE
    flags: frozenset[str]


@dataclasses.dataclass(frozen=True)
class Mailbox:
    uidvalidity: int
    messages: dict[int, StoredMessage]  # by UID


class Courier(UpstreamProcess, ImapAccounts):
    """One Courier-IMAP instance. Use as a context manager or call start()/stop()/close().

    users: {name: password}. Names are [a-z0-9][a-z0-9._-]* (also directory names);
    passwords are printable text without newlines.
    """

    START_TIMEOUT = 20.0
    STOP_TIMEOUT = 5.0
    SERVER_NAME = "Courier"

    def __init__(self, pki: Pki, users: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 *, host: str = "127.0.0.1"):
        self.pki = pki
        self.host = host
        self._take_users(users)
        self.imap_port, self.imaps_port = free_ports(2, host)
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._stderr = None
        # The running instance's mount namespace, and an open descriptor of it: while that
        # is open, the namespace (and its inode number, which identifies its processes)
        # cannot be freed and given to another one, so stop() signals only its own.
        self._namespace: Optional[tuple[int, int]] = None
        self._namespace_fd: Optional[int] = None

    # ----------------------------------------------------------------- paths

    @property
    def ports(self) -> list[int]:
        return [self.imap_port, self.imaps_port]

    def _path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def maildir(self, user: str) -> str:
        return self._path("home", user, "Maildir")

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Starts authdaemond and the two listeners (again after stop(), with the same mail
        and ports) and waits until IMAP and IMAPS accept connections."""
        if self.running:
            raise RuntimeError("Courier is already running")
        problem = install_problem()
        if problem:
            raise RuntimeError(problem)
        if self.dir is None:
            self._prepare_dir()
        self._reset_tls_cache()
        self._stderr = open(self._path("log", "courier_ns.log"), "ab")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, COURIER_NS, self._path("plan.json")],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
            env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            start_new_session=True, close_fds=True, preexec_fn=procs.die_with_parent())
        procs.register(self.proc)
        own_namespace = _mount_ns(os.getpid())

        def namespace_known() -> bool:
            if self._namespace is None:
                if _mount_ns(self.proc.pid) in (None, own_namespace):
                    return False  # unshare has not unshared yet
                fd = os.open(f"/proc/{self.proc.pid}/ns/mnt", os.O_RDONLY)
                st = os.fstat(fd)
                self._namespace, self._namespace_fd = (st.st_dev, st.st_ino), fd
            return True

        self._await_listening("Courier", namespace_known)

    def stop(self) -> None:
        """SIGTERM to the supervisor, which stops authdaemond and the listeners (and they
        their sessions); then SIGTERM, and SIGKILL after a deadline, to anything of the
        instance still alive. Returns when none is left and the ports refuse connections.
        Mail and config stay: start() again works."""
        self._reap(kill=False)

    def kill(self) -> None:
        """SIGKILLs every process of the instance at once (the "upstream dies" case)."""
        self._reap(kill=True)

    def processes(self) -> list[int]:
        """PIDs of the instance's processes: its mount namespace's members."""
        return namespace_members(self._namespace) if self._namespace else []

    def _reap(self, kill: bool) -> None:
        if self.proc is None:
            return
        try:
            if kill:
                # Everything at once: the supervisor's group and, by PID, the listeners'
                # groups and sessions, found through the namespace.
                for pid in self.processes():
                    _signal(pid, 9)
                procs.kill_group(self.proc)
            else:
                procs.stop_group(self.proc, term_timeout=self.STOP_TIMEOUT)
            self._sweep_namespace()
        finally:
            self._stderr.close()
            if self._namespace_fd is not None:
                os.close(self._namespace_fd)
            self._namespace = self._namespace_fd = None
        wait_until(lambda: all(port_refuses(self.host, p) for p in self.ports), 5.0,
                   f"{self.SERVER_NAME}'s ports to close")
        self.proc = None

    def _sweep_namespace(self) -> None:
        """Leftovers (processes outside the supervisor's group that outlived it): SIGTERM,
        then SIGKILL after STOP_TIMEOUT, each by PID."""
        if not self._namespace:
            return
        left = self.processes()
        for pid in left:
            _signal(pid, 15)
        try:
            wait_until(lambda: not self.processes(), self.STOP_TIMEOUT, "Courier's leftover processes to exit")
        except AssertionError:
            for pid in self.processes():
                _signal(pid, 9)
            wait_until(lambda: not self.processes(), 5.0, "Courier's leftover processes to die (SIGKILL)")

    # ------------------------------------------------------------ config

    def _prepare_dir(self) -> None:
        self.dir = tempdirs.make("courier")
        try:
            os.chmod(self.dir, 0o755)  # imapd, as the user, reaches home/NAME/Maildir
            courier = pwd.getpwnam("courier")
            for sub, mode in (("etc", 0o755), ("etc/shared", 0o755), ("authdaemon", 0o750),
                              ("ssl", 0o700), ("run", 0o755), ("log", 0o755), ("home", 0o755)):
                os.mkdir(self._path(sub), mode)
                os.chmod(self._path(sub), mode)  # past the umask
            for sub in ("authdaemon", "ssl"):
                os.chown(self._path(sub), courier.pw_uid, courier.pw_gid)
            # couriertls wants key and certificate in one file, readable by user courier.
            both = self._path("ssl", "both.pem")
            with open(both, "wb") as out:
                for part in (self.pki.key, self.pki.cert):
                    with open(part, "rb") as f:
                        out.write(f.read())
            os.chown(both, courier.pw_uid, courier.pw_gid)
            os.chmod(both, 0o600)
            dh = subprocess.run([CERTTOOL, "--get-dh-params", "--sec-param", "medium"],
                                capture_output=True, check=True).stdout
            pem = re.search(rb"-----BEGIN DH PARAMETERS-----.*?-----END DH PARAMETERS-----\n", dh, re.S)
            if not pem:
                raise RuntimeError(f"no DH parameters from certtool: {dh[:300]!r}")
            with open(self._path("etc", "dhparams.pem"), "wb") as f:
                f.write(pem.group(0))
            os.chown(self._path("etc", "dhparams.pem"), 0, courier.pw_gid)
            os.chmod(self._path("etc", "dhparams.pem"), 0o640)
            with open(self._path("etc", "authdaemonrc"), "w") as f:
                f.write("# Generated by tests/integration/harness/courier.py; /etc/courier/authdaemonrc\n"
                        "# inside the instance's mount namespace.\n")
                f.writelines(f'{k}="{v}"\n' for k, v in self._authdaemonrc().items())
            self._write_userdb()
            for name in self._users:
                self._make_maildir(name)
            with open(self._path("plan.json"), "w") as f:
                json.dump(self._plan(), f, indent=2)
        except BaseException:
            tempdirs.remove(self.dir)
            self.dir = None
            raise

    @staticmethod
    def _authdaemonrc() -> dict[str, str]:
        return {"authmodulelist": "authuserdb", "authmodulelistorig": "authuserdb", "daemons": "3",
                "authdaemonvar": AUTHDAEMON_DIR, "DEBUG_LOGIN": "0", "DEFAULTOPTIONS": "",
                "LOGGEROPTS": ""}

    def _imapd_env(self, **extra: str) -> dict[str, str]:
        """Debian's /etc/courier/imapd and imapd-ssl (what their init scripts export),
        with the instance's paths."""
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "IMAP_CAPABILITY": IMAP_CAPABILITY,
            "IMAP_CAPABILITY_TLS": IMAP_CAPABILITY + " AUTH=PLAIN",
            "IMAP_KEYWORDS": "1",
            "IMAP_ACL": "1",
            "IMAP_PROXY": "0",
            "IMAP_PROXY_FOREIGN": "0",
            "IMAP_IDLE_TIMEOUT": "60",
            "IMAP_MAILBOX_SANITY_CHECK": "1",
            "IMAP_DISABLETHREADSORT": "0",
            "IMAP_CHECK_ALL_FOLDERS": "0",
            "IMAP_OBSOLETE_CLIENT": "0",
            "IMAP_UMASK": "022",
            "IMAP_USELOCKS": "1",
            "IMAP_SHAREDINDEXFILE": self._path("etc", "shared", "index"),
            "IMAP_ENHANCEDIDLE": "0",
            "IMAP_TRASHFOLDERNAME": "Trash",
            "IMAP_EMPTYTRASH": "Trash:7",
            "IMAP_MOVE_EXPUNGE_TO_TRASH": "0",
            "SENDMAIL": "/bin/false",
            "HEADERFROM": "X-IMAP-Sender",
            "MAILDIRPATH": "Maildir",
            "IMAP_TLS_REQUIRED": "0",
            "COURIERTLS": COURIERTLS,
            "TLS_CERTFILE": self._path("ssl", "both.pem"),
            "TLS_DHPARAMS": self._path("etc", "dhparams.pem"),
            "TLS_VERIFYPEER": "NONE",  # no client certificates (and so no TLS_TRUSTCERTS)
            "TLS_CACHEFILE": self._path("run", "tlscache"),
            "TLS_CACHESIZE": "524288",
            # imapd watches the maildir through gamin, whose client starts a gam_server
            # per user and GAM_CLIENT_ID, reached by an abstract socket (shared by every
            # mount namespace). Its own id gives each instance its own gam_server, started
            # in its namespace and stopped with it, never one another instance stops.
            "GAM_CLIENT_ID": os.path.basename(self.dir),
        }
        env.update(extra)
        return env

    def _plan(self) -> dict:
        """What courier_ns.py mounts and starts (see there)."""
        tcpd = [COURIERTCPD, f"-address={self.host}", "-maxprocs=100", "-maxperip=100",
                "-nodnslookup", "-noidentlookup"]
        imap_log, imaps_log = self._path("log", "imap.log"), self._path("log", "imaps.log")
        authdaemond_env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **self._authdaemonrc()}
        return {
            "mounts": [[self._path("etc"), ETC_COURIER], [self._path("authdaemon"), AUTHDAEMON_DIR]],
            "socket": os.path.join(AUTHDAEMON_DIR, "socket"),
            "authdaemond": {"argv": [AUTHDAEMOND], "env": authdaemond_env,
                            "log": self._path("log", "authdaemond.log")},
            "services": [
                {"argv": tcpd + [f"-stderr={imap_log}", str(self.imap_port), IMAPLOGIN, IMAPD, "Maildir"],
                 "env": self._imapd_env(IMAP_STARTTLS="YES"), "log": imap_log},
                {"argv": tcpd + [f"-stderr={imaps_log}", str(self.imaps_port), COURIERTLS, "-server", "-tcpd",
                                 "-user=courier", IMAPLOGIN, IMAPD, "Maildir"],
                 "env": self._imapd_env(IMAP_TLS="1"), "log": imaps_log},
            ],
        }

    def _reset_tls_cache(self) -> None:
        """An empty session cache owned by courier, as the init scripts make at each start."""
        path = self._path("run", "tlscache")
        with open(path, "wb"):
            pass
        courier = pwd.getpwnam("courier")
        os.chown(path, courier.pw_uid, courier.pw_gid)
        os.chmod(path, 0o600)

    # ------------------------------------------------------------- users

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name) or name in (".", ".."):
            raise ValueError(f"unusable Courier user name {name!r}")
        if not password or not password.isprintable():
            raise ValueError(f"unusable password {password!r}")

    def _write_userdb(self) -> None:
        """etc/userdb (one line per user) compiled by makeuserdb into etc/userdb.dat and
        etc/userdbshadow.dat, which authuserdb reopens when they change: users added while
        the instance runs can log in at once."""
        names = list(self._users)
        hashes = subprocess.run(["openssl", "passwd", "-6", "-stdin"], check=True, capture_output=True,
                                input="".join(self._users[n] + "\n" for n in names).encode()).stdout.split()
        if len(hashes) != len(names):
            raise RuntimeError(f"openssl passwd gave {len(hashes)} hashes for {len(names)} passwords")
        path = self._path("etc", "userdb")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            for name, digest in zip(names, hashes):
                home = self._path("home", name)
                f.write(f"{name}\tuid={MAIL_UID}|gid={MAIL_GID}|home={home}|systempw={digest.decode()}\n")
        os.chmod(path, 0o600)  # makeuserdb refuses a userdb with group or world permissions
        out = subprocess.run([MAKEUSERDB, "-f", path], capture_output=True)
        if out.returncode != 0:
            raise RuntimeError(f"makeuserdb failed: {(out.stdout + out.stderr).decode(errors='replace')}")

    def _make_maildir(self, name: str) -> None:
        home = self._path("home", name)
        for d in (home, os.path.join(home, "Maildir"), *(os.path.join(home, "Maildir", s) for s in ("cur", "new", "tmp"))):
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chown(d, MAIL_UID, MAIL_GID)

    def add_user(self, name: Optional[str] = None, password: Optional[str] = None) -> Account:
        """Adds a user with an empty INBOX and returns its account; works while running."""
        name, password = self._new_user(name, password)
        self._users[name] = password
        if self.dir is not None:
            try:
                self._make_maildir(name)
                self._write_userdb()
            except BaseException:
                del self._users[name]
                raise
        return Account(name, password)

    def account(self, name: str) -> Account:
        return Account(name, self._users[name])

    # -------------------------------------------------------------- logs

    LOGS = ("courier_ns.log", "authdaemond.log", "imap.log", "imaps.log")

    def log_text(self, name: str = "imap.log") -> str:
        """One of LOGS so far (imap.log: the STARTTLS listener's sessions, LOGIN/LOGOUT lines)."""
        try:
            with open(self._path("log", name), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        if self.dir is not None:
            for name in self.LOGS:
                tail = self.log_text(name).splitlines()[-lines:]
                if tail:
                    parts.append(f"--- courier {name} (tail) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # ----------------------------------------------------- imaplib helpers

    def client_context(self) -> ssl.SSLContext:
        return self.pki.client_context()

    def connect(self, tls: str = "starttls") -> imaplib.IMAP4:
        """An imaplib connection, not logged in. tls: "starttls" (port imap), "implicit"
        (port imaps) or "none" (plain, port imap). The certificate is verified against
        the test CA, host name included."""
        if tls == "implicit":
            conn = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.client_context(), timeout=30)
        else:
            conn = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        # imaplib writes a literal and the CRLF after it separately: with Nagle's algorithm
        # the second write waits for the ACK Courier delays (~40 ms per APPEND).
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if tls == "starttls":
                conn.starttls(self.client_context())
            elif tls not in ("none", "implicit"):
                raise ValueError(f"tls={tls!r}")
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def imap(self, user: str, tls: str = "starttls", password: Optional[str] = None) -> imaplib.IMAP4:
        """A logged-in imaplib connection as `user` (see connect() for tls)."""
        conn = self.connect(tls)
        try:
            conn.login(user, self._users[user] if password is None else password)
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def _examine(self, conn: imaplib.IMAP4, mailbox: str) -> int:
        typ, data = conn.select(imaplib.IMAP4._quote(conn, mailbox), readonly=True)
        if typ != "OK":
            raise RuntimeError(f"EXAMINE {mailbox} failed: {typ} {data}")
        return int(data[0])

    def append(self, user: str, message: bytes, mailbox: str = "INBOX", flags: str = "") -> int:
        """APPENDs `message` (a synchronizing literal: Courier has no LITERAL+) exactly as
        given, 8-bit octets too, and returns its UID. Courier stores a message that does
        not end in CRLF with one added: compare with fetch(), not with what was sent.
        Bare CR or LF and NUL are refused here (imaplib or Courier would change them)."""
        check_crlf_octets(message)
        conn = self.imap(user)
        try:
            return append_octets(conn, message, mailbox, flags)
        finally:
            conn.logout()

    def append_many(self, user: str, messages: Iterable[bytes], mailbox: str = "INBOX") -> list[int]:
        """APPENDs each message in one session; returns their UIDs in order."""
        conn = self.imap(user)
        try:
            uids = []
            for message in messages:
                check_crlf_octets(message)
                uids.append(append_octets(conn, message, mailbox))
            return uids
        finally:
            conn.logout()

    def mailbox(self, user: str, mailbox: str = "INBOX") -> Mailbox:
        """Everything about `mailbox` in one read-only session (EXAMINE: no \\Seen
        change): its UIDVALIDITY and, per UID, the exact octets of BODY[], RFC822.SIZE
        and the flags."""
        conn = self.imap(user)
        try:
            exists = self._examine(conn, mailbox)
            validity = conn.untagged_responses.get("UIDVALIDITY", [b""])[-1]
            if not validity.isdigit():
                raise RuntimeError(f"no UIDVALIDITY in the EXAMINE {mailbox} answer")
            view = Mailbox(int(validity), {})
            if exists == 0:
                return view
            typ, data = conn.uid("FETCH", "1:*", "(UID RFC822.SIZE FLAGS BODY.PEEK[])")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH failed: {typ} {data}")
            # imaplib gives (text before the literal, literal) and then the text after
            # it as a separate item; the attributes may come on either side.
            records: list[tuple[bytes, bytes]] = []
            for item in data:
                if isinstance(item, tuple):
                    records.append((item[0], item[1]))
                elif item and records:
                    records[-1] = (records[-1][0] + b" " + item, records[-1][1])
            for text, body in records:
                uid = re.search(rb"\bUID (\d+)", text)
                size = re.search(rb"\bRFC822\.SIZE (\d+)", text)
                flags = re.search(rb"\bFLAGS \(([^)]*)\)", text)
                if not (uid and size and flags):
                    raise RuntimeError(f"unexpected FETCH answer {text!r}")
                view.messages[int(uid.group(1))] = StoredMessage(
                    body, int(size.group(1)), frozenset(flags.group(1).decode().split()))
            if len(view.messages) != exists:
                raise RuntimeError(f"{exists} messages exist, FETCH gave {sorted(view.messages)}")
            return view
        finally:
            conn.logout()

    def fetch_all(self, user: str, mailbox: str = "INBOX") -> dict[int, bytes]:
        """{uid: exact bytes of BODY[]} of every message (no \\Seen change)."""
        return {uid: m.body for uid, m in self.mailbox(user, mailbox).messages.items()}

    def fetch(self, user: str, uid: int, mailbox: str = "INBOX") -> bytes:
        return self.fetch_all(user, mailbox)[uid]

    def uids(self, user: str, mailbox: str = "INBOX") -> list[int]:
        return sorted(self.mailbox(user, mailbox).messages)



def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
