# SPDX-License-Identifier: Apache-2.0
"""A private Cyrus IMAP 3.6 instance (IMAP and JMAP upstream), plus imaplib and JMAP helpers.

Debian 12's Cyrus cannot be installed beside Dovecot (cyrus-imapd and dovecot-imapd both
Provide and Conflict with imap-server, and cyrus-common Depends on an MTA), so
scripts/install-deps downloads and unpacks the packages into CYRUS_ROOT; the binaries run
from there with LD_LIBRARY_PATH, and only their libraries are installed.

Each instance has its own temporary directory (config, sasldb, mail spool, databases,
logs) and its own loopback ports: IMAP (plain and STARTTLS), IMAPS, HTTP and HTTPS (Cyrus's
httpd, serving JMAP only; the HTTPS one is httpd -s, TLS from the first byte, with the same
certificate as IMAPS: the test PKI's server certificate, whose SANs name localhost and
127.0.0.1, so the default host 127.0.0.1 verifies). Cyrus's master is started as root and switches to nobody
itself. Users and their passwords live in a private sasldb; an admin account (not a mail
user) creates each user's INBOX ("user.NAME") over IMAP, as cyradm does.

Cyrus logs only through syslog(3). master therefore runs under `unshare --mount` inside
harness/syslog_ns.py, which gives that namespace its own /dev whose /dev/log it reads into
log/syslog.log (nothing is mounted in the host's namespace). The process tree is:
syslog_ns.py (the group leader, also the log reader) -> master -> imapd, httpd...; stop()
sends SIGTERM to the leader, which passes it on to master, which stops its services.

Configuration choices (see _imapd_conf):
  * munge8bit: 0 -- stock Cyrus turns every 8-bit octet in a header into "X" on APPEND;
    with 0 the octets stay, so byte-identity checks hold.
  * conversations: yes and httpmodules: jmap -- JMAP needs the conversations database.
  * allowplaintext: yes -- LOGIN before STARTTLS, and HTTP Basic auth without TLS.
  * failedloginpause: 0 -- imapd answers a bad password at once (3 s by default).
  * altnamespace: no, unixhierarchysep: no (Debian's shipped choices): the separator is
    ".", a user's other mailboxes are "INBOX.Name", and user names must not contain ".".

Differences from Dovecot that tests meet: a bad password gets a bare NO (no
[AUTHENTICATIONFAILED]); the IMAP EMAILID (RFC 8474) of a message is its JMAP Email id.
"""

from __future__ import annotations

import base64
import glob
import imaplib
import itertools
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Optional

from . import procs, tempdirs
from .certs import Pki
from .imap_accounts import ImapAccounts, append_octets, check_crlf_octets
from .upstream_process import UpstreamProcess
from .dovecot import Account
from .ports import free_ports

CYRUS_ROOT = os.environ.get("POPBRIDGE_CYRUS_ROOT", "/opt/popbridge-test/cyrus")
CYRUS_BIN = os.path.join(CYRUS_ROOT, "usr/lib/cyrus/bin")
SASLPASSWD2 = os.path.join(CYRUS_ROOT, "usr/sbin/saslpasswd2")
SYSLOG_NS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syslog_ns.py")
CYRUS_UID = 65534  # nobody
CYRUS_GID = 65534  # nogroup
SERVERNAME = "cyrus.popbridge-test"  # also the SASL realm of the sasldb entries
ADMIN = "cyrusadmin"

JMAP_CORE = "urn:ietf:params:jmap:core"
JMAP_MAIL = "urn:ietf:params:jmap:mail"

_instance_counter = itertools.count(1)


def install_problem() -> Optional[str]:
    """Why Cyrus cannot run here, or None."""
    for path in (os.path.join(CYRUS_BIN, "master"), os.path.join(CYRUS_BIN, "imapd"),
                 os.path.join(CYRUS_BIN, "httpd"), SASLPASSWD2):
        if not os.access(path, os.X_OK):
            return f"{path} not found: run scripts/install-deps (it unpacks Cyrus into {CYRUS_ROOT})"
    if os.geteuid() != 0:
        return "Cyrus is started as root (master switches to nobody; unshare needs root); run the tests as root"
    if shutil.which("unshare") is None:
        return "unshare not found: apt-get install util-linux"
    return None


class JmapError(RuntimeError):
    pass


class Cyrus(UpstreamProcess, ImapAccounts):
    """One Cyrus instance. Use as a context manager or call start()/stop()/close().

    users: {name: password}. Names are [a-z0-9][a-z0-9_-]* (Cyrus folds names to lower
    case, and "." is its hierarchy separator); passwords are any printable text.
    """

    START_TIMEOUT = 30.0
    STOP_TIMEOUT = 5.0
    SERVER_NAME = "Cyrus"

    def __init__(self, pki: Pki, users: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 *, host: str = "127.0.0.1", munge8bit: bool = False, extra_config: str = ""):
        self.pki = pki
        self.host = host
        self.munge8bit = munge8bit
        self.extra_config = extra_config
        self._take_users(users)
        self.admin_password = f"admin-{os.getpid()}-{next(_instance_counter)}"
        self.imap_port, self.imaps_port, self.http_port, self.https_port = free_ports(4, host)
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self._stderr = None
        self._provisioned: set[str] = set()

    # ----------------------------------------------------------------- paths

    @property
    def conf_path(self) -> str:
        return os.path.join(self.dir, "imapd.conf")

    @property
    def syslog_path(self) -> str:
        return os.path.join(self.dir, "log", "syslog.log")

    @property
    def ports(self) -> list[int]:
        return [self.imap_port, self.imaps_port, self.http_port, self.https_port]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def jmap_session_url(self) -> str:
        return f"{self.base_url}/.well-known/jmap"

    @property
    def https_base_url(self) -> str:
        """https://HOST:https_port. The certificate is the test PKI's server certificate
        (also served on IMAPS); it names 127.0.0.1 and localhost, so with the default
        host the URL verifies against pki.ca, host name included."""
        return f"https://{self.host}:{self.https_port}"

    @property
    def jmap_https_session_url(self) -> str:
        """The JMAP session resource over HTTPS. Cyrus redirects it to /jmap/ and the
        URLs in the session are relative, so they resolve against this host and port."""
        return f"{self.https_base_url}/.well-known/jmap"

    @property
    def _libs(self) -> str:
        return ":".join(glob.glob(os.path.join(CYRUS_ROOT, "usr/lib/*-linux-gnu")))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Starts master (again after stop(), with the same mail and ports), waits until
        IMAP, IMAPS, HTTP and HTTPS accept connections, and creates the users' INBOXes."""
        if self.running:
            raise RuntimeError("Cyrus is already running")
        problem = install_problem()
        if problem:
            raise RuntimeError(problem)
        if self.dir is None:
            self._prepare_dir()
        self._stderr = open(os.path.join(self.dir, "log", "master.stderr"), "ab")
        env = dict(os.environ, LD_LIBRARY_PATH=self._libs)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, SYSLOG_NS, os.path.join(self.dir, "ns"), self.syslog_path, "--",
             os.path.join(CYRUS_BIN, "master"), "-C", self.conf_path,
             "-M", os.path.join(self.dir, "cyrus.conf"), "-p", os.path.join(self.dir, "run", "master.pid")],
            stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr, env=env,
            start_new_session=True, close_fds=True, preexec_fn=procs.die_with_parent())
        procs.register(self.proc)

        self._await_listening("Cyrus master")
        try:
            self._provision(self._users)
        except BaseException:
            self._reap(kill=True)
            raise

    def stop(self) -> None:
        """SIGTERM to master (through syslog_ns.py), SIGKILL to the whole process group
        after a deadline; returns when no process of the instance is left and the ports
        refuse connections. Mail and config stay: start() again works."""
        self._reap(kill=False)

    def kill(self) -> None:
        """SIGKILLs every process of the instance at once (the "upstream dies" case)."""
        self._reap(kill=True)


    # ------------------------------------------------------------ config

    def _prepare_dir(self) -> None:
        self.dir = tempdirs.make("cyrus")
        try:
            os.chmod(self.dir, 0o755)  # nobody traverses it to its own subdirectories
            for sub in ("log", "ns", "run", "ssl", "spool", "lib", "lib/socket", "lib/proc", "lib/lock",
                        "lib/sieve", "lib/db", "lib/log", "lib/user", "lib/quota"):
                os.mkdir(os.path.join(self.dir, sub), 0o700 if sub == "ssl" else 0o755)
            # the test PKI's directory is root's only: nobody reads copies
            shutil.copyfile(self.pki.cert, os.path.join(self.dir, "ssl", "cert.pem"))
            shutil.copyfile(self.pki.key, os.path.join(self.dir, "ssl", "key.pem"))
            with open(self.conf_path, "w") as f:
                f.write(self._imapd_conf())
            with open(os.path.join(self.dir, "cyrus.conf"), "w") as f:
                f.write(self._cyrus_conf())
            self._saslpasswd(ADMIN, self.admin_password)
            for name, password in self._users.items():
                self._saslpasswd(name, password)
            for sub in ("run", "ssl", "spool", "lib"):
                for root, dirs, files in os.walk(os.path.join(self.dir, sub)):
                    for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                        os.chown(name, CYRUS_UID, CYRUS_GID)
            for name in ("ssl/key.pem", "ssl/cert.pem"):
                os.chmod(os.path.join(self.dir, name), 0o600)
        except BaseException:
            tempdirs.remove(self.dir)
            self.dir = None
            raise

    def _imapd_conf(self) -> str:
        d = self.dir
        return f"""# Generated by tests/integration/harness/cyrus.py; throwaway test instance.
configdirectory: {d}/lib
proc_path: {d}/lib/proc
mboxname_lockpath: {d}/lib/lock
defaultpartition: default
partition-default: {d}/spool
sievedir: {d}/lib/sieve
lmtpsocket: {d}/lib/socket/lmtp
idlesocket: {d}/lib/socket/idle
notifysocket: {d}/lib/socket/notify
temp_path: {d}/run
servername: {SERVERNAME}
syslog_prefix: popbridge-cyrus
cyrus_user: nobody
cyrus_group: nogroup
admins: {ADMIN}
altnamespace: no
unixhierarchysep: no
hashimapspool: true
umask: 077

allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {d}/lib/sasldb2
sasl_mech_list: PLAIN LOGIN
sasl_auto_transition: no
failedloginpause: 0

tls_server_cert: {d}/ssl/cert.pem
tls_server_key: {d}/ssl/key.pem
tls_versions: tls1_2 tls1_3

munge8bit: {1 if self.munge8bit else 0}

conversations: yes
conversations_db: twoskip
httpmodules: jmap
httpallowcompress: no
{self.extra_config}
"""

    def _cyrus_conf(self) -> str:
        # master does not pass its -C on to the services: each command names it.
        c = f"-C {self.conf_path}"
        b = CYRUS_BIN
        h = self.host
        return f"""# Generated by tests/integration/harness/cyrus.py
START {{
  recover cmd="{b}/ctl_cyrusdb {c} -r"
}}
SERVICES {{
  imap  cmd="{b}/imapd {c}" listen="{h}:{self.imap_port}" prefork=0 maxchild=100
  imaps cmd="{b}/imapd {c} -s" listen="{h}:{self.imaps_port}" prefork=0 maxchild=100
  http  cmd="{b}/httpd {c}" listen="{h}:{self.http_port}" prefork=0 maxchild=50
  https cmd="{b}/httpd {c} -s" listen="{h}:{self.https_port}" prefork=0 maxchild=50
}}
EVENTS {{
  checkpoint cmd="{b}/ctl_cyrusdb {c} -c" period=30
}}
DAEMON {{
}}
"""

    # ------------------------------------------------------------- users

    @staticmethod
    def _check_user(name: str, password: str) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name) or name == ADMIN:
            raise ValueError(f"unusable Cyrus user name {name!r}")
        if not password or not password.isprintable():
            raise ValueError(f"unusable password {password!r}")

    def _saslpasswd(self, name: str, password: str) -> None:
        path = os.path.join(self.dir, "lib", "sasldb2")
        out = subprocess.run([SASLPASSWD2, "-p", "-c", "-f", path, "-u", SERVERNAME, name],
                             input=password.encode(), capture_output=True,
                             env=dict(os.environ, LD_LIBRARY_PATH=self._libs))
        if out.returncode != 0:
            raise RuntimeError(f"saslpasswd2 {name} failed: {out.stderr.decode(errors='replace')}")
        os.chown(path, CYRUS_UID, CYRUS_GID)
        os.chmod(path, 0o600)

    def _provision(self, names: Iterable[str]) -> None:
        """Creates the INBOX (user.NAME) of each user that has none yet, as the admin."""
        todo = [n for n in names if n not in self._provisioned]
        if not todo:
            return
        conn = self.imap_admin()
        try:
            for name in todo:
                typ, data = conn.list('""', f"user.{name}")
                if not (data and data[0]):
                    typ, data = conn.create(f"user.{name}")
                    if typ != "OK":
                        raise RuntimeError(f"CREATE user.{name} failed: {typ} {data}")
                self._provisioned.add(name)
        finally:
            conn.logout()

    def add_user(self, name: Optional[str] = None, password: Optional[str] = None) -> Account:
        """Adds a user with an empty INBOX and returns its account; works while running."""
        name, password = self._new_user(name, password)
        if self.dir is not None:
            self._saslpasswd(name, password)
        self._users[name] = password
        if self.running:
            self._provision([name])
        return Account(name, password)

    def account(self, name: str) -> Account:
        return Account(name, self._users[name])

    # -------------------------------------------------------------- logs

    def log_text(self) -> str:
        """Cyrus's syslog messages so far."""
        try:
            with open(self.syslog_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        if self.dir is not None:
            for name in ("master.stderr", "syslog.log"):
                try:
                    with open(os.path.join(self.dir, "log", name), "rb") as f:
                        tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
                except OSError:
                    continue
                parts.append(f"--- {name} (tail) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # ----------------------------------------------------- imaplib helpers

    def client_context(self) -> ssl.SSLContext:
        return self.pki.client_context()

    def _connect(self, tls: str) -> imaplib.IMAP4:
        if tls == "implicit":
            return imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.client_context(), timeout=30)
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        if tls == "starttls":
            conn.starttls(self.client_context())
        elif tls != "none":
            conn.shutdown()
            raise ValueError(f"tls={tls!r}")
        return conn

    def imap(self, user: str, tls: str = "starttls", password: Optional[str] = None) -> imaplib.IMAP4:
        """A logged-in imaplib connection as `user`. tls: "starttls" (port imap),
        "implicit" (port imaps) or "none" (plain LOGIN on port imap). The certificate
        is verified against the test CA, host name included."""
        conn = self._connect(tls)
        try:
            conn.login(user, self._users[user] if password is None else password)
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def imap_admin(self) -> imaplib.IMAP4:
        """A logged-in imaplib connection as the Cyrus admin (sees every "user.NAME")."""
        conn = self._connect("starttls")
        try:
            conn.login(ADMIN, self.admin_password)
        except BaseException:
            conn.shutdown()
            raise
        return conn

    def append(self, user: str, message: bytes, mailbox: str = "INBOX", flags: str = "",
               tls: str = "starttls") -> int:
        """APPENDs `message` exactly as given (8-bit octets too) to the user's `mailbox`
        and returns its UID. Cyrus refuses bare CR or LF (and NUL), so use CRLF."""
        check_crlf_octets(message)  # Cyrus refuses those
        conn = self.imap(user, tls)
        try:
            return append_octets(conn, message, mailbox, flags)
        finally:
            conn.logout()

    def messages(self, user: str, mailbox: str = "INBOX") -> dict[int, dict[str, Any]]:
        """{uid: {"emailid", "threadid", "size"}} of every message in `mailbox`, from
        UID FETCH (EMAILID THREADID RFC822.SIZE) (RFC 8474); Cyrus's EMAILID is the
        JMAP Email id."""
        conn = self.imap(user)
        try:
            typ, data = conn.select(imaplib.IMAP4._quote(conn, mailbox), readonly=True)
            if typ != "OK":
                raise RuntimeError(f"EXAMINE {mailbox} failed: {typ} {data}")
            if int(data[0]) == 0:
                return {}
            typ, data = conn.uid("FETCH", "1:*", "(UID EMAILID THREADID RFC822.SIZE)")
            if typ != "OK":
                raise RuntimeError(f"UID FETCH failed: {typ} {data}")
            out: dict[int, dict[str, Any]] = {}
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                if not line:
                    continue
                uid = re.search(rb"\bUID (\d+)", line)
                emailid = re.search(rb"\bEMAILID \(([^)]*)\)", line)
                threadid = re.search(rb"\bTHREADID (?:\(([^)]*)\)|NIL)", line)
                size = re.search(rb"\bRFC822\.SIZE (\d+)", line)
                if not (uid and emailid and size):
                    raise RuntimeError(f"unexpected FETCH answer {line!r}")
                out[int(uid.group(1))] = {
                    "emailid": emailid.group(1).decode(),
                    "threadid": threadid.group(1).decode() if threadid and threadid.group(1) else None,
                    "size": int(size.group(1)),
                }
            return out
        finally:
            conn.logout()

    def emailid(self, user: str, uid: int, mailbox: str = "INBOX") -> str:
        """The JMAP Email id of the message with `uid` in `mailbox`."""
        return self.messages(user, mailbox)[uid]["emailid"]

    def fetch(self, user: str, uid: int, mailbox: str = "INBOX") -> bytes:
        """The exact bytes of BODY[] (read-only: no \\Seen change)."""
        conn = self.imap(user)
        try:
            conn.select(imaplib.IMAP4._quote(conn, mailbox), readonly=True)
            typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
            if typ != "OK" or not data or not isinstance(data[0], tuple):
                raise RuntimeError(f"UID FETCH {uid} failed: {typ} {data}")
            return data[0][1]
        finally:
            conn.logout()


    # -------------------------------------------------------- JMAP helpers

    def basic_auth(self, user: str, password: Optional[str] = None) -> str:
        """The value of an HTTP Authorization header for `user`."""
        pw = self._users[user] if password is None else password
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    def http(self, user: Optional[str], url: str, body: Optional[bytes] = None,
             content_type: str = "application/json", password: Optional[str] = None,
             method: Optional[str] = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one HTTP request to Cyrus's httpd, with Basic auth
        as `user` (none when user is None). An absolute path (on the HTTP port) or URL,
        http or https (the latter verified against the test CA, host name included);
        errors are returned, not raised. Redirects are not followed."""
        if url.startswith("/"):
            url = self.base_url + url
        req = urllib.request.Request(url, data=body, method=method)
        if user is not None:
            req.add_header("Authorization", self.basic_auth(user, password))
        if body is not None:
            req.add_header("Content-Type", content_type)
        opener = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=self.client_context()))
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, dict(e.headers.items()), e.read()

    def jmap_session(self, user: str) -> dict[str, Any]:
        """The user's JMAP session resource (GET /.well-known/jmap)."""
        status, headers, body = self.http(user, self.jmap_session_url)
        if status in (301, 302, 307, 308):
            status, headers, body = self.http(user, urllib.parse.urljoin(self.jmap_session_url,
                                                                         headers["Location"]))
        if status != 200:
            raise JmapError(f"JMAP session for {user}: HTTP {status} {body[:500]!r}")
        return json.loads(body)

    def jmap(self, user: str, method_calls: list, using: Iterable[str] = (JMAP_CORE, JMAP_MAIL),
             session: Optional[dict] = None) -> list:
        """POSTs one JMAP request to the apiUrl and returns its methodResponses.
        An "error" method response raises JmapError."""
        session = session or self.jmap_session(user)
        body = json.dumps({"using": list(using), "methodCalls": method_calls}).encode()
        status, _, answer = self.http(user, urllib.parse.urljoin(self.base_url, session["apiUrl"]), body)
        if status != 200:
            raise JmapError(f"JMAP request: HTTP {status} {answer[:500]!r}")
        responses = json.loads(answer)["methodResponses"]
        for name, args, call_id in responses:
            if name == "error":
                raise JmapError(f"JMAP method call {call_id}: {args}")
        return responses

    def account_id(self, user: str, session: Optional[dict] = None) -> str:
        session = session or self.jmap_session(user)
        return session["primaryAccounts"][JMAP_MAIL]

    def download_url(self, user: str, blob_id: str, name: str = "message.eml",
                     mime_type: str = "message/rfc822", session: Optional[dict] = None) -> str:
        """The session's downloadUrl template filled in (RFC 8620 section 6.2)."""
        session = session or self.jmap_session(user)
        url = session["downloadUrl"]
        for var, value in (("accountId", self.account_id(user, session)), ("blobId", blob_id),
                           ("name", name), ("type", mime_type)):
            url = url.replace("{" + var + "}", urllib.parse.quote(value, safe=""))
        return urllib.parse.urljoin(self.base_url, url)

    def download(self, user: str, blob_id: str, session: Optional[dict] = None) -> bytes:
        status, _, body = self.http(user, self.download_url(user, blob_id, session=session))
        if status != 200:
            raise JmapError(f"blob download {blob_id}: HTTP {status} {body[:500]!r}")
        return body


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None
