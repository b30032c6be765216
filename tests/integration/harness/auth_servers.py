# SPDX-License-Identifier: Apache-2.0
"""Small local HTTP(S) servers for the identity tests.

  AuthHook         an nginx-style auth_http hook (what popbridge's auth.mode http
                   asks): GET with Auth-* headers, answers with Auth-Status and
                   optionally Auth-Server/Auth-Port, Auth-User/Auth-Pass,
                   X-Popbridge-Mailbox, Auth-Wait.
  OAuth2Server     an OAuth2 token endpoint (POST /token: grant_type refresh_token or
                   client_credentials) and an RFC 7662 token introspection endpoint
                   (POST /introspect, or GET /introspect/<token> and
                   /introspect?token=...), the latter for Dovecot's oauth2 passdb.
                   Several servers may share one TokenStore, e.g. an HTTPS one for the
                   gateway's token requests and a plain one for Dovecot's introspection.

Every server listens on 127.0.0.1 (port 0, the kernel picks), runs in daemon threads,
records each request (method, path, headers, body) and is closed with close() or as
a context manager. A handler told to wait (a "slow" answer) waits on an event that
close() sets, so closing never hangs on it.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import secrets
import socketserver
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Optional

from .certs import Pki

HOST = "127.0.0.1"


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]   # names in lower case; a repeated header keeps its last value
    header_list: list[tuple[str, str]]  # as received, in order
    body: bytes
    at: float                 # time.monotonic() when the request was read
    peer: tuple = ()          # the client's (address, port): equal ports = a reused connection

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode("latin-1"), keep_blank_values=True))


@dataclasses.dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0        # seconds to wait before answering (a slow server)
    drop: bool = False        # close the connection without answering


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class HttpServer:
    """Base class: subclasses implement handle(request) -> Response.

    keep_alive=False answers every request with "Connection: close" (HTTP/1.1 keep-alive
    otherwise): a client's parked idle connections can then not outlive a test."""

    def __init__(self, pki: Optional[Pki] = None, keep_alive: bool = False):
        self.pki = pki
        self.keep_alive = keep_alive
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.lock = threading.RLock()
        self.closing = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "popbridge-test"
            sys_version = ""

            def log_message(self, *args) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(self.command, self.path,
                              {k.lower(): v for k, v in self.headers.items()},
                              list(self.headers.items()), body, time.monotonic(),
                              tuple(self.client_address))
                with owner.lock:
                    owner.requests.append(req)
                try:
                    resp = owner.handle(req)
                except Exception as e:  # a harness bug: make it visible, answer 500
                    owner.errors.append(f"{req.method} {req.path}: {e!r}")
                    resp = Response(500, body=b"harness error\n")
                if resp.delay > 0 and owner.closing.wait(resp.delay):
                    self.close_connection = True
                    return
                if resp.drop:
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                if not owner.keep_alive:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if resp.body and self.command != "HEAD":
                    self.wfile.write(resp.body)

            do_GET = do_POST = do_HEAD = do_PUT = _serve

        self._server = _ThreadingServer((HOST, 0), Handler)
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki.cert, pki.key)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    @property
    def scheme(self) -> str:
        return "https" if self.pki is not None else "http"

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{HOST}:{self.port}{path}"

    def received(self, path_prefix: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def close(self) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        if self._thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} on port {self.port} did not stop")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ================================================================= auth hook

@dataclasses.dataclass
class HookUser:
    password: str
    server: Optional[str] = None        # Auth-Server
    port: Optional[int] = None          # Auth-Port
    upstream_user: Optional[str] = None  # Auth-User in the answer
    upstream_pass: Optional[str] = None  # Auth-Pass in the answer
    mailbox: Optional[str] = None       # X-Popbridge-Mailbox
    upstream_tls: Optional[str] = None  # X-Popbridge-Upstream-TLS
    server_name: Optional[str] = None   # X-Popbridge-Upstream-Server-Name


class AuthHook(HttpServer):
    """nginx auth_http semantics: 200 with "Auth-Status: OK" logs in; 200 with any other
    Auth-Status is a failure ("Auth-Wait: N" asks the gateway to wait N seconds).

    users: {pop3 user: HookUser}. `respond`, when set, overrides everything:
    respond(request) -> Response. `wait` (seconds) adds Auth-Wait to failures;
    `failure_text` is the Auth-Status of a failure."""

    def __init__(self, users: Optional[dict[str, HookUser]] = None, *,
                 respond: Optional[Callable[[Request], Response]] = None,
                 wait: Optional[int] = None, pki: Optional[Pki] = None, keep_alive: bool = False):
        self.users = dict(users or {})
        self.respond = respond
        self.wait = wait
        self.failure_text = "Invalid login or password"
        super().__init__(pki, keep_alive)

    def handle(self, request: Request) -> Response:
        if self.respond is not None:
            return self.respond(request)
        user = urllib.parse.unquote(request.header("Auth-User") or "")
        password = urllib.parse.unquote(request.header("Auth-Pass") or "")
        entry = self.users.get(user)
        if entry is None or entry.password != password:
            headers = {"Auth-Status": self.failure_text}
            if self.wait is not None:
                headers["Auth-Wait"] = str(self.wait)
            return Response(200, headers)
        headers = {"Auth-Status": "OK"}
        if entry.server is not None:
            headers["Auth-Server"] = entry.server
        if entry.port is not None:
            headers["Auth-Port"] = str(entry.port)
        if entry.upstream_user is not None:
            headers["Auth-User"] = entry.upstream_user
        if entry.upstream_pass is not None:
            headers["Auth-Pass"] = entry.upstream_pass
        if entry.mailbox is not None:
            headers["X-Popbridge-Mailbox"] = entry.mailbox
        if entry.upstream_tls is not None:
            headers["X-Popbridge-Upstream-TLS"] = entry.upstream_tls
        if entry.server_name is not None:
            headers["X-Popbridge-Upstream-Server-Name"] = entry.server_name
        return Response(200, headers)

    def checks(self) -> list[Request]:
        return self.received("")


# ===================================================================== OAuth2

def make_token(prefix: str = "at", length: int = 320) -> str:
    """A bearer token of `length` characters (URL-safe base64 alphabet), long enough
    that an AUTH line carrying it exceeds POP3's 255-octet command limit."""
    body = secrets.token_urlsafe(length)
    return (prefix + "-" + body)[:length]


class TokenStore:
    """Access tokens and refresh tokens, shared by the servers that issue and check them."""

    def __init__(self):
        self.lock = threading.RLock()
        self.access: dict[str, tuple[str, float]] = {}   # token -> (user, expires at, monotonic)
        self.refresh: dict[str, str] = {}                # refresh token -> user
        self.clients: dict[str, str] = {}                # client_id -> client_secret
        self.client_users: dict[str, str] = {}           # client_credentials: client_id -> user

    def add_access(self, user: str, token: Optional[str] = None, lifetime: float = 3600.0) -> str:
        token = token or make_token()
        with self.lock:
            self.access[token] = (user, time.monotonic() + lifetime)
        return token

    def lookup(self, token: str) -> Optional[str]:
        with self.lock:
            entry = self.access.get(token)
        if entry is None or time.monotonic() >= entry[1]:
            return None
        return entry[0]

    def revoke_refresh(self, refresh_token: str) -> None:
        with self.lock:
            self.refresh.pop(refresh_token, None)


class OAuth2Server(HttpServer):
    """POST /token (form: grant_type, refresh_token, client_id, client_secret, scope;
    client credentials also as HTTP Basic) issues {"access_token", "token_type":
    "Bearer", "expires_in"}; an unknown refresh token gets 400 {"error":
    "invalid_grant"}, a bad client 401 {"error": "invalid_client"}.

    /introspect (POST form token=..., GET /introspect/<token> or ?token=) answers
    {"active": true, "username": user} for a live token, {"active": false} otherwise.

    expires_in: lifetime of issued tokens in seconds. token_length: characters.
    token_delay: seconds each /token answer is held back (to make requests overlap)."""

    def __init__(self, store: Optional[TokenStore] = None, *, pki: Optional[Pki] = None,
                 expires_in: int = 3600, token_length: int = 320, keep_alive: bool = False):
        self.store = store or TokenStore()
        self.expires_in = expires_in
        self.token_length = token_length
        self.token_delay = 0.0
        self.issued: list[tuple[str, str]] = []  # (user, access token)
        super().__init__(pki, keep_alive)

    # -- token endpoint
    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.header("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
                cid, _, csec = decoded.partition(":")
                client_id, secret = urllib.parse.unquote(cid), urllib.parse.unquote(csec)
            except ValueError:
                return False
        with self.store.lock:
            if not self.store.clients:
                return True
            return client_id in self.store.clients and (
                self.store.clients[client_id] == secret or self.store.clients[client_id] is None)

    @staticmethod
    def _json(status: int, obj) -> Response:
        return Response(status, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                        json.dumps(obj).encode())

    def token_requests(self) -> list[Request]:
        return [r for r in self.received("/token")]

    def introspections(self) -> list[Request]:
        return [r for r in self.received("/introspect")]

    def handle(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/token":
            if self.token_delay:
                time.sleep(self.token_delay)  # the endpoint is slow; not synchronisation
            if request.method != "POST":
                return self._json(405, {"error": "invalid_request"})
            form = request.form
            if not self._client_ok(request, form):
                return self._json(401, {"error": "invalid_client"})
            grant = form.get("grant_type")
            if grant == "refresh_token":
                with self.store.lock:
                    user = self.store.refresh.get(form.get("refresh_token", ""))
            elif grant == "client_credentials":
                with self.store.lock:
                    user = self.store.client_users.get(form.get("client_id", ""))
            else:
                return self._json(400, {"error": "unsupported_grant_type"})
            if user is None:
                return self._json(400, {"error": "invalid_grant",
                                        "error_description": "refresh token expired or revoked"})
            token = self.store.add_access(user, make_token("at", self.token_length), self.expires_in)
            with self.lock:
                self.issued.append((user, token))
            return self._json(200, {"access_token": token, "token_type": "Bearer",
                                    "expires_in": self.expires_in})
        if path.startswith("/introspect"):
            token = None
            if request.method == "POST":
                token = request.form.get("token")
            if token is None and "?" in request.path:
                token = dict(urllib.parse.parse_qsl(request.path.split("?", 1)[1])).get("token")
            if token is None and path.startswith("/introspect/"):
                token = urllib.parse.unquote(path[len("/introspect/"):])
            if token is None:
                auth = request.header("Authorization") or ""
                if auth.lower().startswith("bearer "):
                    token = auth[7:].strip()
            user = self.store.lookup(token or "")
            if user is None:
                return self._json(200, {"active": False})
            return self._json(200, {"active": True, "username": user})
        return self._json(404, {"error": "not_found"})


# ============================================================ identity files

def crypt_hash(password: str, kind: str) -> str:
    """A crypt(3) hash for an auth.users_file line. kind: "sha512" ($6$), "bcrypt"
    ($2b$, cost 4 to keep tests fast) or "yescrypt" ($y$). Uses libxcrypt (through
    Python's crypt module and, for yescrypt's setting, crypt_gensalt via ctypes)."""
    import ctypes
    import ctypes.util
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated since 3.11, still in Debian's Python
    if kind == "sha512":
        setting = crypt.mksalt(crypt.METHOD_SHA512)
    elif kind == "bcrypt":
        setting = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)
    elif kind == "yescrypt":
        lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
        raw = lib.crypt_gensalt(b"$y$", 0, None, 0)
        if not raw:
            raise RuntimeError("libcrypt cannot make a yescrypt setting")
        setting = raw.decode()
    else:
        raise ValueError(f"hash kind {kind!r}")
    out = crypt.crypt(password, setting)
    prefix = {"sha512": "$6$", "bcrypt": "$2b$", "yescrypt": "$y$"}[kind]
    if not out or not out.startswith(prefix):
        raise RuntimeError(f"crypt() gave {out!r} for a {kind} setting {setting!r}")
    return out


def write_file(path: str, lines, mode: int = 0o600) -> str:
    """Writes lines (each without a newline) atomically; returns the path."""
    import os
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for line in lines:
            f.write(line + "\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def dovecot_identity_config(directory: str, *, master: Optional[tuple[str, str]] = None,
                            introspection_url: Optional[str] = None,
                            trusted_networks: Optional[str] = None,
                            verbose: bool = True) -> str:
    """extra_config for harness.dovecot.Dovecot with the passdbs the identity tests need,
    writing their files into `directory` (which Dovecot's auth process must be able to
    traverse: mode 0755).

    master=(user, password): a master passdb (passwd-file, master = yes, pass = yes),
      so AUTHENTICATE PLAIN with authzid=<user>, authcid=<master user> logs in as <user>
      (pass = yes: the user must also exist in the normal passdb).
    introspection_url: an oauth2 passdb for XOAUTH2/OAUTHBEARER validating tokens with an
      RFC 7662 POST to that URL ({"active": true, "username": ...}).
    trusted_networks: login_trusted_networks (then Dovecot takes the client address from
      IMAP ID x-originating-ip). Later settings override the harness's earlier ones.
    verbose: auth_verbose = yes (logs "Master user logging in as <user>"; no secrets)."""
    import os
    parts = []
    if introspection_url:
        parts.append("auth_mechanisms = plain login xoauth2 oauthbearer")
    if trusted_networks:
        parts.append(f"login_trusted_networks = {trusted_networks}")
    if verbose:
        parts.append("auth_verbose = yes")
    if master:
        path = write_file(os.path.join(directory, "dovecot-master-users"),
                          [f"{master[0]}:{{PLAIN}}{master[1]}::::::"], mode=0o644)
        parts.append(f"""passdb {{
  driver = passwd-file
  master = yes
  args = scheme=PLAIN {path}
  pass = yes
}}""")
    if introspection_url:
        path = write_file(os.path.join(directory, "dovecot-oauth2.conf.ext"), [
            "introspection_mode = post",
            f"introspection_url = {introspection_url}",
            "username_attribute = username",
            "active_attribute = active",
            "active_value = true",
        ], mode=0o644)
        parts.append(f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {path}
}}""")
    return "\n".join(parts) + "\n"
