# SPDX-License-Identifier: Apache-2.0
"""A small scripted JMAP server (RFC 8620 core, RFC 8621 mail), for upstream faults.

Plain HTTP/1.1 on 127.0.0.1 (keep-alive; every answer carries Content-Length), a
ThreadingHTTPServer (one thread per connection), one account whose store all users
share. It answers like Cyrus or Fastmail would, and records every request so tests
can assert what the client sent.

Endpoints (all need authentication, see below):
  GET  /.well-known/jmap, /jmap/session   the Session object (RFC 8620 2)
  POST /jmap/api/                         the API (Request -> Response, RFC 8620 3)
  GET  /jmap/download/{accountId}/{blobId}/{name}?accept={type}   blob octets
  POST /jmap/upload/{accountId}/          stores a blob (201 {accountId, blobId, type, size})
  GET  /jmap/eventsource/...              advertised, answers 501

Methods: Core/echo; Mailbox/get, Mailbox/query; Email/get, Email/query, Email/set
(update mailboxIds/keywords, destroy; create answers notCreated "forbidden");
Thread/get; */changes and */queryChanges answer cannotCalculateChanges. Result
references (#arg with {resultOf, name, path}, "*" in paths) per RFC 8620 3.7.
Request-level errors are 400 problem JSON (notJSON, notRequest, unknownCapability,
limit); method-level errors are ["error", {"type": ...}, callId] (unknownMethod,
invalidArguments, accountNotFound, requestTooLarge, invalidResultReference,
unsupportedFilter, unsupportedSort, anchorNotFound, stateMismatch, ...).
Email/get computes the header-derived properties (subject, from, messageId, sentAt,
header:Name[:asRaw|asText|asAddresses|asMessageIds|asDate|asURLs][:all], preview,
hasAttachment) from the raw message; bodyStructure, textBody, htmlBody, attachments
are null and bodyValues is {}. Email/query sorts by receivedAt or size and filters
on inMailbox, inMailboxOtherThan, before, after, minSize, maxSize, hasKeyword,
notKeyword and AND/OR/NOT operators; without a sort, oldest first (insertion order).

Constructor (all keyword arguments):
  users              {name: password} for HTTP Basic; default none
  tokens             {bearer token: name}
  account_id         "u1234"; account_name: the account's "name" (default: the user)
  mailboxes          [(name, role)...]; default Inbox/inbox, Archive/archive,
                     Trash/trash. add_message's "INBOX" means the inbox role.
  max_objects_in_get 500 (requestTooLarge above it); max_objects_in_set 500;
  max_calls_in_request 16; max_size_request 10_000_000; max_size_upload
                     the core capability; all live in `server.core` (editable)
  max_query_limit    1000: Email/query and Mailbox/query return at most this many
                     ids and then report "limit" in the response
  well_known_redirect  None, 301, 307...: /.well-known/jmap answers with that status
                     and Location: <base>/jmap/session (before authentication, as
                     Fastmail does); /jmap/session serves the Session itself
  session_state      the Session's "state" and every Response's "sessionState"
  strict_content_type  True: a POST to the API without Content-Type
                     application/json is notJSON (RFC 8620 3.6.1)
  port               0: any free port

Store API (thread-safe; `server.lock` guards the store):
  add_message(raw, mailbox="INBOX", received_at=None, email_id=None, *,
              keywords=(), blob_id=None) -> email id ("M" + 24 hex; blobId is
              "G" + sha1 of the octets, shared by equal messages; threadId "T...";
              size = len(raw)). mailbox: id, name or role, or a list of them;
              received_at: datetime, epoch seconds or RFC 3339 text; default now
              (strictly increasing between defaulted messages).
  messages(mailbox=None) -> [Email] (live objects, oldest first); email(id);
  delete_message(id) (as if another client expunged it); mailbox_id(name or role);
  add_mailbox(name, role=None) -> id; state (the Email/Mailbox state string)
  requests           [Request] in arrival order: Request(number, conn, method, path,
                     headers (lower-case names), body (parsed JSON for the API, else
                     bytes), raw_body, user, status, progress (download octets written
                     so far), sent (None until the download body ended: complete, cut
                     or the client gone; then the octets written), finished: an Event
                     set when the server is done with it, hooks included); unpacks as
                     (method, path, headers, body). api_calls(name=None) lists the
                     [name, args, callId] the client sent; received(prefix) filters.
  errors             harness bugs (exceptions in the server); tests may assert []
  url (the Session URL /.well-known/jmap), session_url, api_url, base_url,
  download_url(blob_id, name, type), auth_header(user)
  start()/stop() (alias close()), or use as a context manager.

Fault knobs (attributes; change them at any time):
  download_cut       {blobId or email id or "*": N or (N, times)}: a download
                     announces the full Content-Length, sends N body octets and
                     closes the connection (FIN). With (N, times) only the next
                     `times` downloads are cut.
  size_lie           {email id or "*": size}: the size Email/get reports
  destroy_fail       set of email ids, or "*" for all: Email/set destroy leaves them
                     and answers notDestroyed {id: {"type": destroy_fail_type}}
                     (default "serverFail"); update_fail / update_fail_type likewise
                     for update
  unauthorized_from  N: the N-th request (counting every request, 1-based) and all
                     later ones answer 401, as if the credentials were revoked
  throttles          [Throttle(match, status=503, retry_after=1, times=None)]: match
                     is a path prefix ("/jmap/download/"), a JMAP method name
                     ("Email/get": any API request that calls it) or "*"; matching
                     requests get `status` with Retry-After (checked before
                     authentication, like a front-end proxy); `times` limits how many
                     requests are answered so; Throttle.hits counts them
  download_chunk     octets per write of a download (65536)
  download_pause     fn(blob_id, octets_sent) called after each chunk (may block)
  hold_download(after=0, match=None) -> DownloadHold: the next download (of `match`,
                     a blobId or email id; None: any) stops after `after` body octets
                     until hold.release(); hold.wait(timeout) / hold.reached tell
                     when it got there. No sleeps needed: read `after` octets, check,
                     release, read the rest. stop() frees held downloads.
  accept_ranges      False: Range is ignored (200, whole blob); True: single byte
                     ranges are served as 206 (416 when unsatisfiable)
  before_request     fn(Request) -> None | Response: runs first, for any endpoint
  before_api         fn(request_json) -> None | dict/list (sent as 200 JSON) | bytes
                     (sent as 200 application/json) | Response: runs for API
                     requests that parse as JSON, before any checking
  method_hooks       {method name: fn(args, call_id) -> None | [[name, args, callId],
                     ...]}: replaces one method call's answer (args already have
                     result references resolved); None means default handling
  www_authenticate   the WWW-Authenticate of a 401 ('Basic realm="jmap"')

Response(status=200, body=b"" | dict | list, headers={}, drop=False): an answer for
the hooks; drop=True closes the connection without answering.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import email.header
import email.policy
import email.utils
import hashlib
import http.server
import json
import re
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Optional, Union

HOST = "127.0.0.1"
CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
ERR = "urn:ietf:params:jmap:error:"

API_PATHS = ("/jmap/api/", "/jmap/api")
SESSION_PATHS = ("/.well-known/jmap", "/jmap/session")
DEFAULT_MAILBOXES = (("Inbox", "inbox"), ("Archive", "archive"), ("Trash", "trash"))

EMAIL_PROPERTIES = (
    "id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt",
    "messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
    "replyTo", "subject", "sentAt", "hasAttachment", "preview", "bodyValues",
    "textBody", "htmlBody", "attachments",
)
EMAIL_EXTRA_PROPERTIES = ("headers", "bodyStructure")
MAILBOX_PROPERTIES = (
    "id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails",
    "totalThreads", "unreadThreads", "myRights", "isSubscribed",
)
# convenience property -> (header name, form)
_HEADER_PROPERTIES = {
    "messageId": ("Message-ID", "asMessageIds"),
    "inReplyTo": ("In-Reply-To", "asMessageIds"),
    "references": ("References", "asMessageIds"),
    "sender": ("Sender", "asAddresses"),
    "from": ("From", "asAddresses"),
    "to": ("To", "asAddresses"),
    "cc": ("Cc", "asAddresses"),
    "bcc": ("Bcc", "asAddresses"),
    "replyTo": ("Reply-To", "asAddresses"),
    "subject": ("Subject", "asText"),
    "sentAt": ("Date", "asDate"),
}
_HEADER_FORMS = ("asRaw", "asText", "asAddresses", "asMessageIds", "asDate", "asURLs")


# ====================================================================== data

@dataclasses.dataclass
class Mailbox:
    id: str
    name: str
    role: Optional[str] = None
    parent_id: Optional[str] = None
    sort_order: int = 0
    is_subscribed: bool = True


@dataclasses.dataclass
class Email:
    id: str
    blob_id: str
    thread_id: str
    raw: bytes
    mailbox_ids: set
    keywords: set            # lower case, e.g. {"$seen"}
    received_at: str         # UTCDate, "2024-05-01T12:00:00Z"
    seq: int                 # insertion order

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclasses.dataclass
class Request:
    number: int                # 1-based, in arrival order over all connections
    conn: int                  # connection number, 1-based in accept order (same = reused)
    method: str
    path: str                  # as sent, query included
    headers: dict              # lower-case names; a repeated header keeps its last value
    body: Any                  # parsed JSON for a POST to the API that parses; else bytes
    raw_body: bytes
    user: Optional[str] = None     # who authenticated
    status: Optional[int] = None   # the status answered (None: dropped)
    sent: Optional[int] = None     # downloads: body octets written, set when the body ended
    progress: int = 0              # downloads: body octets written so far (live)
    finished: threading.Event = dataclasses.field(default_factory=threading.Event, repr=False,
                                                  compare=False)  # set when the server is done with it

    def __iter__(self):
        return iter((self.method, self.path, self.headers, self.body))

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def calls(self) -> list:
        """The method names of an API request, in order ([] for anything else)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("methodCalls"), list):
            return [c[0] for c in self.body["methodCalls"]
                    if isinstance(c, list) and c and isinstance(c[0], str)]
        return []


@dataclasses.dataclass
class Response:
    status: int = 200
    body: Union[bytes, dict, list] = b""
    headers: dict = dataclasses.field(default_factory=dict)
    drop: bool = False         # close the connection without answering


@dataclasses.dataclass
class Throttle:
    match: str                 # "/path/prefix", a JMAP method name, or "*"
    status: int = 503
    retry_after: Optional[Union[int, str]] = 1   # None: no Retry-After header
    times: Optional[int] = None                  # None: every matching request
    hits: int = 0


class DownloadHold:
    """A gate in the next download of `match` (None: any) after `after` body octets."""

    def __init__(self, after: int, match: Optional[str]):
        self.after = after
        self.match = match
        self.reached = threading.Event()
        self.request: Optional[Request] = None   # the download that was held
        self._gate = threading.Event()

    def wait(self, timeout: float = 5.0) -> bool:
        return self.reached.wait(timeout)

    def release(self) -> None:
        self._gate.set()


class MethodError(Exception):
    def __init__(self, type_: str, description: Optional[str] = None, **extra):
        super().__init__(type_)
        self.body = {"type": type_}
        if description:
            self.body["description"] = description
        self.body.update(extra)


class _RefError(Exception):
    pass


# ================================================================ helpers

def _utc_date(value) -> str:
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a date: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pointer_tokens(path: str) -> list:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _RefError(f"path {path!r} does not start with /")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _evaluate(value, tokens: list):
    """RFC 8620 3.7: JSON Pointer plus "*" (map over an array, flattening arrays)."""
    if not tokens:
        return value
    token, rest = tokens[0], tokens[1:]
    if isinstance(value, list):
        if token == "*":
            out = []
            for item in value:
                r = _evaluate(item, rest)
                if isinstance(r, list):
                    out.extend(r)
                else:
                    out.append(r)
            return out
        if not token.isdigit() or int(token) >= len(value):
            raise _RefError(f"no index {token!r}")
        return _evaluate(value[int(token)], rest)
    if isinstance(value, dict):
        if token not in value:
            raise _RefError(f"no member {token!r}")
        return _evaluate(value[token], rest)
    raise _RefError(f"cannot descend into {type(value).__name__} with {token!r}")


def _raw_headers(raw: bytes) -> list:
    """[(name, raw value)] of the header section, values as after the colon (folds kept)."""
    end = len(raw)
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = raw.find(sep)
        if 0 <= i < end:
            end = i
    text = raw[:end].decode("utf-8", "replace")
    out: list = []
    for line in re.split(r"(?<=\n)", text):
        if not line:
            continue
        if line[0] in " \t" and out:
            out[-1][1] += line
        elif ":" in line:
            name, value = line.split(":", 1)
            out.append([name.strip(), value])
    return [(n, v.rstrip("\r\n")) for n, v in out]


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _header_form(value: str, form: str):
    if form == "asRaw":
        return value
    text = _unfold(value).strip()
    if form == "asText":
        return _decode_words(text)
    if form == "asAddresses":
        return [{"name": _decode_words(n) or None, "email": a}
                for n, a in email.utils.getaddresses([text]) if a or n]
    if form == "asMessageIds":
        ids = re.findall(r"<([^<>\s]+)>", text)
        return ids or None
    if form == "asURLs":
        return re.findall(r"<([^<>\s]+)>", text) or None
    if form == "asDate":
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return when.isoformat()
    raise ValueError(form)


def _parse_header_property(prop: str):
    """"header:Name[:form][:all]" -> (name, form, all) or None when malformed."""
    parts = prop.split(":")
    if len(parts) < 2 or parts[0] != "header" or not parts[1]:
        return None
    name, rest = parts[1], parts[2:]
    want_all = bool(rest) and rest[-1] == "all"
    if want_all:
        rest = rest[:-1]
    if len(rest) > 1:
        return None
    form = rest[0] if rest else "asRaw"
    if form not in _HEADER_FORMS:
        return None
    return name, form, want_all


def _json(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


# ================================================================ HTTP layer

class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64
    owner: "FakeJmap"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeJMAP/1.0"
    sys_version = ""

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.owner = self.server.owner
        self.conn_number = self.owner._register(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._unregister(self.connection)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _serve(self) -> None:
        self.headers_sent = False
        raw = self._read_body()
        req = self.owner._record(self, raw)
        try:
            self.owner._dispatch(self, req)
        except OSError:        # the client went away
            self.close_connection = True
        except Exception as e:  # a harness bug: make it visible to the test
            self.owner.errors.append(f"request {req.number} {req.method} {req.path}: {e!r}")
            if self.headers_sent:
                self.close_connection = True
            else:
                try:
                    self.reply(req, 500, b"harness error\n", "text/plain")
                except OSError:
                    self.close_connection = True
        finally:
            req.finished.set()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve

    # ------------------------------------------------------------- answers
    def start_reply(self, req: Request, status: int, length: int, ctype: Optional[str],
                    headers: Optional[dict] = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.headers_sent = True
        req.status = status

    def reply(self, req: Request, status: int, body: bytes = b"", ctype: Optional[str] = None,
              headers: Optional[dict] = None) -> None:
        self.start_reply(req, status, len(body), ctype, headers)
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, req: Request, obj, status: int = 200, headers: Optional[dict] = None) -> None:
        self.reply(req, status, _json(obj), "application/json", headers)

    def problem(self, req: Request, status: int, type_: str, detail: str,
                headers: Optional[dict] = None, **extra) -> None:
        body = {"type": type_, "status": status, "detail": detail}
        body.update(extra)
        self.reply(req, status, _json(body), "application/problem+json", headers)

    def reply_response(self, req: Request, resp: Response) -> None:
        if resp.drop:
            self.close_connection = True
            return
        body, ctype = resp.body, None
        if isinstance(body, (dict, list)):
            body, ctype = _json(body), "application/json"
        headers = dict(resp.headers)
        for k in list(headers):
            if k.lower() == "content-type":
                ctype = headers.pop(k)
        self.reply(req, resp.status, body, ctype, headers)


# ==================================================================== server

class FakeJmap:
    """See the module docstring. Use as a context manager or start()/stop()."""

    def __init__(self, *, users: Optional[dict] = None, tokens: Optional[dict] = None,
                 account_id: str = "u1234", account_name: Optional[str] = None,
                 mailboxes: Iterable = DEFAULT_MAILBOXES,
                 max_objects_in_get: int = 500, max_objects_in_set: int = 500,
                 max_calls_in_request: int = 16, max_size_request: int = 10_000_000,
                 max_size_upload: int = 50_000_000, max_query_limit: int = 1000,
                 well_known_redirect: Optional[int] = None, session_state: str = "s1",
                 strict_content_type: bool = True, port: int = 0):
        self.users: dict = dict(users or {})
        self.tokens: dict = dict(tokens or {})
        self.account_id = account_id
        self.account_name = account_name
        self.core = {
            "maxSizeUpload": max_size_upload,
            "maxConcurrentUpload": 4,
            "maxSizeRequest": max_size_request,
            "maxConcurrentRequests": 4,
            "maxCallsInRequest": max_calls_in_request,
            "maxObjectsInGet": max_objects_in_get,
            "maxObjectsInSet": max_objects_in_set,
            "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap", "i;unicode-casemap"],
        }
        self.mail_account_capability = {
            "maxMailboxesPerEmail": None,
            "maxMailboxDepth": None,
            "maxSizeMailboxName": 490,
            "maxSizeAttachmentsPerEmail": 50_000_000,
            "emailQuerySortOptions": ["receivedAt", "size"],
            "mayCreateTopLevelMailbox": True,
        }
        self.max_query_limit = max_query_limit
        self.well_known_redirect = well_known_redirect
        self.session_state = session_state
        self.strict_content_type = strict_content_type
        self.www_authenticate = 'Basic realm="jmap"'
        self.port = port

        # fault knobs
        self.download_cut: dict = {}
        self.size_lie: dict = {}
        self.destroy_fail: Union[set, str] = set()
        self.destroy_fail_type = "serverFail"
        self.update_fail: Union[set, str] = set()
        self.update_fail_type = "serverFail"
        self.unauthorized_from: Optional[int] = None
        self.throttles: list = []
        self.download_chunk = 65536
        self.download_pause: Optional[Callable[[str, int], None]] = None
        self.accept_ranges = False
        self.before_request: Optional[Callable[[Request], Optional[Response]]] = None
        self.before_api: Optional[Callable[[Any], Any]] = None
        self.method_hooks: dict = {}

        # store and records
        self.lock = threading.RLock()
        self.requests: list = []
        self.errors: list = []
        self._mailboxes: dict = {}
        self._emails: dict = {}          # id -> Email, insertion order
        self._uploads: dict = {}         # blobId -> (octets, type)
        self._modseq = 1
        self._seq = 0
        self._mailbox_seq = 0
        self._last_default_received = 0
        self._holds: list = []
        self._open: dict = {}            # socket -> handler thread
        self._connections = 0
        self._closing = threading.Event()
        self._server: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        for name, role in mailboxes:
            self.add_mailbox(name, role)

    # ================================================================ URLs
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + "/.well-known/jmap"

    @property
    def session_url(self) -> str:
        return self.base_url + "/jmap/session"

    @property
    def api_url(self) -> str:
        return self.base_url + "/jmap/api/"

    def download_url(self, blob_id: str, name: str = "message.eml", type: str = "message/rfc822") -> str:
        q = urllib.parse.quote
        return (f"{self.base_url}/jmap/download/{q(self.account_id, safe='')}/{q(blob_id, safe='')}/"
                f"{q(name, safe='')}?accept={q(type, safe='')}")

    def auth_header(self, user: str) -> str:
        """The Authorization value for `user` (Basic, with its password from `users`)."""
        pair = f"{user}:{self.users[user]}".encode("utf-8")
        return "Basic " + base64.b64encode(pair).decode("ascii")

    # =============================================================== store
    @property
    def state(self) -> str:
        with self.lock:
            return str(self._modseq)

    def _bump(self) -> None:
        self._modseq += 1

    def add_mailbox(self, name: str, role: Optional[str] = None, parent_id: Optional[str] = None) -> str:
        with self.lock:
            self._mailbox_seq += 1
            mid = "P" + hashlib.sha1(f"mailbox{self._mailbox_seq}".encode()).hexdigest()[:8]
            self._mailboxes[mid] = Mailbox(mid, name, role, parent_id, sort_order=self._mailbox_seq)
            self._bump()
            return mid

    def rename_mailbox(self, ref: str, name: str) -> None:
        with self.lock:
            self._mailboxes[self.mailbox_id(ref)].name = name
            self._bump()

    def mailbox_id(self, ref: str) -> str:
        """The id of a mailbox given by id, name or role ("INBOX" means role inbox)."""
        with self.lock:
            if ref in self._mailboxes:
                return ref
            for m in self._mailboxes.values():
                if m.name == ref:
                    return m.id
            for m in self._mailboxes.values():
                if m.role is not None and m.role.lower() == ref.lower():
                    return m.id
            if ref.upper() == "INBOX":
                for m in self._mailboxes.values():
                    if m.role == "inbox":
                        return m.id
        raise KeyError(f"no mailbox {ref!r}")

    def add_message(self, raw: bytes, mailbox: Union[str, Iterable[str]] = "INBOX", received_at=None,
                    email_id: Optional[str] = None, *, keywords: Iterable[str] = (),
                    blob_id: Optional[str] = None) -> str:
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        refs = [mailbox] if isinstance(mailbox, str) else list(mailbox)
        with self.lock:
            mids = {self.mailbox_id(r) for r in refs}
            self._seq += 1
            if received_at is None:
                now = max(int(time.time()), self._last_default_received + 1)
                self._last_default_received = now
                received_at = now
            eid = email_id or "M" + hashlib.sha1(b"%d:" % self._seq + raw).hexdigest()[:24]
            if eid in self._emails:
                raise ValueError(f"email id {eid} exists")
            e = Email(id=eid, blob_id=blob_id or "G" + hashlib.sha1(raw).hexdigest(),
                      thread_id="T" + hashlib.sha1(b"thread%d" % self._seq).hexdigest()[:16],
                      raw=bytes(raw), mailbox_ids=mids, keywords={k.lower() for k in keywords},
                      received_at=_utc_date(received_at), seq=self._seq)
            self._emails[eid] = e
            self._bump()
            return eid

    def messages(self, mailbox: Optional[str] = None) -> list:
        with self.lock:
            mid = None if mailbox is None else self.mailbox_id(mailbox)
            return [e for e in self._emails.values() if mid is None or mid in e.mailbox_ids]

    def email(self, email_id: str) -> Email:
        with self.lock:
            return self._emails[email_id]

    def delete_message(self, email_id: str) -> None:
        with self.lock:
            del self._emails[email_id]
            self._bump()

    def _blob(self, blob_id: str):
        """(octets, [email ids]) of a blob, or (None, [])."""
        with self.lock:
            ids = [e.id for e in self._emails.values() if e.blob_id == blob_id]
            if ids:
                return self._emails[ids[0]].raw, ids
            if blob_id in self._uploads:
                return self._uploads[blob_id][0], []
        return None, []

    # ============================================================= records
    def _register(self, sock) -> int:
        with self.lock:
            self._connections += 1
            self._open[sock] = threading.current_thread()
            return self._connections

    def _unregister(self, sock) -> None:
        with self.lock:
            self._open.pop(sock, None)

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Closes every connection now open, as a server ending its idle keep-alive
        connections does; returns once their handlers have ended."""
        with self.lock:
            open_now = dict(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in open_now.values():
            t.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            left = [s for s in open_now if s in self._open]
        if left:
            raise RuntimeError(f"{len(left)} fake JMAP connections did not close")

    @property
    def connections(self) -> int:
        """How many TCP connections were accepted so far."""
        with self.lock:
            return self._connections

    def _record(self, h: _Handler, raw: bytes) -> Request:
        body: Any = raw
        if h.command == "POST" and h.path.split("?")[0] in API_PATHS and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                pass
        with self.lock:
            req = Request(len(self.requests) + 1, h.conn_number, h.command, h.path,
                          {k.lower(): v for k, v in h.headers.items()}, body, raw)
            self.requests.append(req)
        return req

    def received(self, path_prefix: str = "") -> list:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def api_calls(self, name: Optional[str] = None) -> list:
        """Every [name, args, callId] the client sent to the API, in order."""
        out = []
        with self.lock:
            for r in self.requests:
                if r.path.split("?")[0] in API_PATHS and isinstance(r.body, dict):
                    for c in r.body.get("methodCalls") or []:
                        if isinstance(c, list) and c and (name is None or c[0] == name):
                            out.append(c)
        return out

    # ============================================================ dispatch
    def _dispatch(self, h: _Handler, req: Request) -> None:
        path, _, query = req.path.partition("?")
        if self.before_request is not None:
            resp = self.before_request(req)
            if resp is not None:
                h.reply_response(req, resp)
                return
        t = self._throttle_for(req, path)
        if t is not None:
            headers = {} if t.retry_after is None else {"Retry-After": t.retry_after}
            h.problem(req, t.status, "about:blank", f"throttled ({t.match})", headers)
            return
        if path == "/.well-known/jmap" and self.well_known_redirect:
            h.reply(req, self.well_known_redirect, b"", None, {"Location": self.session_url})
            return
        user = self._authenticate(req)
        if user is None:
            h.reply(req, 401, b"401 Unauthorized\n", "text/plain",
                    {"WWW-Authenticate": self.www_authenticate})
            return
        req.user = user
        method = req.method
        if path in SESSION_PATHS:
            if method not in ("GET", "HEAD"):
                h.reply(req, 405, b"", None, {"Allow": "GET, HEAD"})
                return
            h.reply_json(req, self.session(user), headers={"Cache-Control": "no-cache, no-store"})
        elif path in API_PATHS:
            if method != "POST":
                h.reply(req, 405, b"", None, {"Allow": "POST"})
                return
            self._api(h, req)
        elif path.startswith("/jmap/download/"):
            if method not in ("GET", "HEAD"):
                h.reply(req, 405, b"", None, {"Allow": "GET, HEAD"})
                return
            self._download(h, req, path, query)
        elif path.startswith("/jmap/upload/"):
            if method != "POST":
                h.reply(req, 405, b"", None, {"Allow": "POST"})
                return
            self._upload(h, req, path)
        elif path.startswith("/jmap/eventsource"):
            h.reply(req, 501, b"event source not implemented\n", "text/plain")
        else:
            h.reply(req, 404, b"404 Not Found\n", "text/plain")

    def _throttle_for(self, req: Request, path: str) -> Optional[Throttle]:
        calls = req.calls if path in API_PATHS else []
        with self.lock:
            for t in self.throttles:
                if t.times is not None and t.hits >= t.times:
                    continue
                if t.match == "*" or (t.match.startswith("/") and path.startswith(t.match)) \
                        or t.match in calls:
                    t.hits += 1
                    return t
        return None

    def _authenticate(self, req: Request) -> Optional[str]:
        if self.unauthorized_from is not None and req.number >= self.unauthorized_from:
            return None
        value = req.header("authorization") or ""
        scheme, _, cred = value.strip().partition(" ")
        cred = cred.strip()
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
            except ValueError:
                return None
            if sep and user in self.users and self.users[user] == password:
                return user
        elif scheme.lower() == "bearer":
            return self.tokens.get(cred)
        return None

    # ============================================================= session
    def session(self, username: str) -> dict:
        base = self.base_url
        return {
            "capabilities": {CORE: dict(self.core), MAIL: {}},
            "accounts": {
                self.account_id: {
                    "name": self.account_name or username,
                    "isPersonal": True,
                    "isReadOnly": False,
                    "accountCapabilities": {MAIL: dict(self.mail_account_capability)},
                },
            },
            "primaryAccounts": {MAIL: self.account_id},
            "username": username,
            "apiUrl": base + "/jmap/api/",
            "downloadUrl": base + "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
            "uploadUrl": base + "/jmap/upload/{accountId}/",
            "eventSourceUrl": base + "/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}",
            "state": self.session_state,
        }

    # ================================================================= API
    def _api(self, h: _Handler, req: Request) -> None:
        if len(req.raw_body) > self.core["maxSizeRequest"]:
            h.problem(req, 400, ERR + "limit", "request too large", limit="maxSizeRequest")
            return
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        body = req.body
        if (self.strict_content_type and ctype != "application/json") or isinstance(body, bytes):
            h.problem(req, 400, ERR + "notJSON", "the request is not application/json I-JSON")
            return
        if self.before_api is not None:
            out = self.before_api(body)
            if out is not None:
                if isinstance(out, Response):
                    h.reply_response(req, out)
                elif isinstance(out, (bytes, bytearray)):
                    h.reply(req, 200, bytes(out), "application/json")
                else:
                    h.reply_json(req, out)
                return
        using = body.get("using") if isinstance(body, dict) else None
        calls = body.get("methodCalls") if isinstance(body, dict) else None
        if (not isinstance(using, list) or not all(isinstance(u, str) for u in using)
                or not isinstance(calls, list)
                or not all(isinstance(c, list) and len(c) == 3 and isinstance(c[0], str)
                           and isinstance(c[1], dict) and isinstance(c[2], str) for c in calls)):
            h.problem(req, 400, ERR + "notRequest", "not a JMAP Request object")
            return
        unknown = [u for u in using if u not in (CORE, MAIL)]
        if unknown:
            h.problem(req, 400, ERR + "unknownCapability",
                      f"unknown capability {', '.join(unknown)}")
            return
        if len(calls) > self.core["maxCallsInRequest"]:
            h.problem(req, 400, ERR + "limit", "too many method calls", limit="maxCallsInRequest")
            return
        responses: list = []
        for name, args, call_id in calls:
            responses.extend(self._call(name, args, call_id, using, responses))
        out = {"methodResponses": responses, "sessionState": self.session_state}
        if "createdIds" in body:
            out["createdIds"] = body["createdIds"]
        h.reply_json(req, out)

    def _resolve(self, args: dict, responses: list) -> dict:
        out = {}
        for key, value in args.items():
            if not key.startswith("#"):
                out[key] = value
                continue
            plain = key[1:]
            if plain in args:
                raise MethodError("invalidArguments", f"both {plain} and {key} given")
            if (not isinstance(value, dict) or not isinstance(value.get("resultOf"), str)
                    or not isinstance(value.get("name"), str) or not isinstance(value.get("path"), str)):
                raise _RefError(f"{key} is not a ResultReference")
            target = next((r for r in responses if r[2] == value["resultOf"]), None)
            if target is None:
                raise _RefError(f"no response with call id {value['resultOf']!r}")
            if target[0] != value["name"]:
                raise _RefError(f"call {value['resultOf']!r} answered {target[0]!r}, not {value['name']!r}")
            out[plain] = _evaluate(target[1], _pointer_tokens(value["path"]))
        return out

    _METHODS = {
        "Core/echo": (CORE, "_core_echo"),
        "Mailbox/get": (MAIL, "_mailbox_get"),
        "Mailbox/query": (MAIL, "_mailbox_query"),
        "Mailbox/changes": (MAIL, "_no_changes"),
        "Mailbox/queryChanges": (MAIL, "_no_changes"),
        "Email/get": (MAIL, "_email_get"),
        "Email/query": (MAIL, "_email_query"),
        "Email/set": (MAIL, "_email_set"),
        "Email/changes": (MAIL, "_no_changes"),
        "Email/queryChanges": (MAIL, "_no_changes"),
        "Thread/get": (MAIL, "_thread_get"),
        "Thread/changes": (MAIL, "_no_changes"),
    }

    def _call(self, name: str, args: dict, call_id: str, using: list, responses: list) -> list:
        try:
            try:
                args = self._resolve(args, responses)
            except _RefError as e:
                raise MethodError("invalidResultReference", str(e)) from None
            hook = self.method_hooks.get(name)
            if hook is not None:
                out = hook(args, call_id)
                if out is not None:
                    return list(out)
            entry = self._METHODS.get(name)
            if entry is None or entry[0] not in using:
                raise MethodError("unknownMethod", f"{name} is not known with this `using`")
            return [[name, getattr(self, entry[1])(args), call_id]]
        except MethodError as e:
            return [["error", e.body, call_id]]

    # ------------------------------------------------------- argument checks
    def _check_account(self, args: dict) -> None:
        acc = args.get("accountId")
        if not isinstance(acc, str):
            raise MethodError("invalidArguments", "accountId is required")
        if acc != self.account_id:
            raise MethodError("accountNotFound")

    def _ids(self, args: dict, key: str = "ids", limit_key: str = "maxObjectsInGet") -> Optional[list]:
        ids = args.get(key)
        if ids is None:
            return None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise MethodError("invalidArguments", f"{key} must be a list of ids")
        if len(ids) > self.core[limit_key]:
            raise MethodError("requestTooLarge", f"more than {self.core[limit_key]} ids")
        return list(dict.fromkeys(ids))

    def _properties(self, args: dict, known: tuple, default: tuple, headers_ok: bool = False) -> list:
        props = args.get("properties")
        if props is None:
            return list(default)
        if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
            raise MethodError("invalidArguments", "properties must be a list of strings")
        bad = [p for p in props
               if p not in known and not (headers_ok and _parse_header_property(p) is not None)]
        if bad:
            raise MethodError("invalidArguments", f"unknown properties {bad}")
        return list(dict.fromkeys(props))

    def _window(self, args: dict, ids: list) -> dict:
        """position/anchor/limit/calculateTotal of a /query (RFC 8620 5.5)."""
        position = args.get("position", 0) or 0
        limit = args.get("limit")
        if not isinstance(position, int) or isinstance(position, bool):
            raise MethodError("invalidArguments", "position must be an integer")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise MethodError("invalidArguments", "limit must be a non-negative integer")
        total = len(ids)
        anchor = args.get("anchor")
        if anchor is not None:
            if anchor not in ids:
                raise MethodError("anchorNotFound")
            start = max(0, ids.index(anchor) + int(args.get("anchorOffset") or 0))
        elif position < 0:
            start = max(0, total + position)
        else:
            start = position
        capped = None
        if limit is None or limit > self.max_query_limit:
            if limit is not None or total - start > self.max_query_limit:
                capped = self.max_query_limit
            limit = self.max_query_limit
        out = {"queryState": self.state, "canCalculateChanges": False,
               "position": start, "ids": ids[start:start + limit]}
        if args.get("calculateTotal"):
            out["total"] = total
        if capped is not None:
            out["limit"] = capped
        return out

    @staticmethod
    def _sorted(items: list, sort, keys: dict) -> list:
        if sort is None:
            return items
        if not isinstance(sort, list):
            raise MethodError("invalidArguments", "sort must be a list")
        for comp in sort:
            if not isinstance(comp, dict) or comp.get("property") not in keys:
                prop = comp.get("property") if isinstance(comp, dict) else comp
                raise MethodError("unsupportedSort", f"cannot sort by {prop!r}")
        for comp in reversed(sort):
            items = sorted(items, key=keys[comp["property"]], reverse=not comp.get("isAscending", True))
        return items

    # ============================================================ methods
    def _core_echo(self, args: dict) -> dict:
        return args

    def _no_changes(self, args: dict) -> dict:
        self._check_account(args)
        raise MethodError("cannotCalculateChanges")

    # ------------------------------------------------------------ Mailbox
    def _mailbox_object(self, m: Mailbox, props: list) -> dict:
        emails = [e for e in self._emails.values() if m.id in e.mailbox_ids]
        unread = [e for e in emails if "$seen" not in e.keywords]
        full = {
            "id": m.id, "name": m.name, "parentId": m.parent_id, "role": m.role,
            "sortOrder": m.sort_order, "totalEmails": len(emails), "unreadEmails": len(unread),
            "totalThreads": len({e.thread_id for e in emails}),
            "unreadThreads": len({e.thread_id for e in unread}),
            "myRights": {k: True for k in ("mayReadItems", "mayAddItems", "mayRemoveItems",
                                           "maySetSeen", "maySetKeywords", "mayCreateChild",
                                           "mayRename", "mayDelete", "maySubmit")},
            "isSubscribed": m.is_subscribed,
        }
        out = {p: full[p] for p in props}
        out["id"] = m.id
        return out

    def _mailbox_get(self, args: dict) -> dict:
        self._check_account(args)
        ids = self._ids(args)
        props = self._properties(args, MAILBOX_PROPERTIES, MAILBOX_PROPERTIES)
        with self.lock:
            wanted = list(self._mailboxes) if ids is None else ids
            found = [i for i in wanted if i in self._mailboxes]
            return {"accountId": self.account_id, "state": self.state,
                    "list": [self._mailbox_object(self._mailboxes[i], props) for i in found],
                    "notFound": [i for i in wanted if i not in self._mailboxes]}

    _MAILBOX_FILTERS = {"role": (str, type(None)), "name": (str,), "parentId": (str, type(None)),
                        "hasAnyRole": (bool,), "isSubscribed": (bool,)}

    def _check_mailbox_filter(self, f) -> None:
        if f is None:
            return
        if not isinstance(f, dict):
            raise MethodError("invalidArguments", "filter must be an object")
        if "operator" in f:
            if f["operator"] not in ("AND", "OR", "NOT"):
                raise MethodError("unsupportedFilter", f"unknown operator {f['operator']!r}")
            if not isinstance(f.get("conditions"), list):
                raise MethodError("invalidArguments", "conditions must be a list")
            for c in f["conditions"]:
                self._check_mailbox_filter(c)
            return
        for key, value in f.items():
            if key not in self._MAILBOX_FILTERS:
                raise MethodError("unsupportedFilter", f"unsupported Mailbox filter {key!r}")
            if not isinstance(value, self._MAILBOX_FILTERS[key]):
                raise MethodError("invalidArguments", f"bad value for filter {key}")

    def _mailbox_matches(self, m: Mailbox, f) -> bool:
        if f is None:
            return True
        if "operator" in f:
            return self._combine(f["operator"], [self._mailbox_matches(m, c) for c in f["conditions"]])
        for key, value in f.items():
            if key == "role" and m.role != value:
                return False
            if key == "name" and value.casefold() not in m.name.casefold():
                return False
            if key == "parentId" and m.parent_id != value:
                return False
            if key == "hasAnyRole" and (m.role is not None) != value:
                return False
            if key == "isSubscribed" and m.is_subscribed != value:
                return False
        return True

    @staticmethod
    def _combine(operator: str, results: list) -> bool:
        if operator == "AND":
            return all(results)
        if operator == "OR":
            return any(results)
        return not any(results)  # NOT

    def _mailbox_query(self, args: dict) -> dict:
        self._check_account(args)
        f = args.get("filter")
        self._check_mailbox_filter(f)
        with self.lock:
            boxes = [m for m in self._mailboxes.values() if self._mailbox_matches(m, f)]
            boxes = self._sorted(boxes, args.get("sort"),
                                 {"name": lambda m: m.name.casefold(), "sortOrder": lambda m: m.sort_order})
            out = {"accountId": self.account_id}
            out.update(self._window(args, [m.id for m in boxes]))
            return out

    # -------------------------------------------------------------- Email
    def _email_property(self, e: Email, prop: str, cache: dict):
        if prop == "id":
            return e.id
        if prop == "blobId":
            return e.blob_id
        if prop == "threadId":
            return e.thread_id
        if prop == "mailboxIds":
            return {m: True for m in sorted(e.mailbox_ids)}
        if prop == "keywords":
            return {k: True for k in sorted(e.keywords)}
        if prop == "size":
            for key in (e.id, "*"):
                if key in self.size_lie:
                    return self.size_lie[key]
            return e.size
        if prop == "receivedAt":
            return e.received_at
        if prop == "bodyValues":
            return {}
        if prop in ("textBody", "htmlBody", "attachments", "bodyStructure"):
            return None
        if "headers" not in cache:
            cache["headers"] = _raw_headers(e.raw)
        headers = cache["headers"]
        if prop == "headers":
            return [{"name": n, "value": v} for n, v in headers]
        if prop in ("preview", "hasAttachment"):
            if "msg" not in cache:
                cache["msg"] = email.message_from_bytes(e.raw, policy=email.policy.default)
            msg = cache["msg"]
            try:
                if prop == "hasAttachment":
                    return any(p.get_content_disposition() == "attachment" for p in msg.walk())
                part = msg.get_body(preferencelist=("plain", "html"))
                text = part.get_content() if part is not None else ""
                return re.sub(r"\s+", " ", text).strip()[:256]
            except Exception:
                return False if prop == "hasAttachment" else ""
        if prop in _HEADER_PROPERTIES:
            name, form = _HEADER_PROPERTIES[prop]
            want_all = False
        else:
            name, form, want_all = _parse_header_property(prop)
        values = [_header_form(v, form) for n, v in headers if n.lower() == name.lower()]
        if want_all:
            return values
        return values[-1] if values else None

    def _email_get(self, args: dict) -> dict:
        self._check_account(args)
        ids = self._ids(args)
        props = self._properties(args, EMAIL_PROPERTIES + EMAIL_EXTRA_PROPERTIES,
                                 EMAIL_PROPERTIES, headers_ok=True)
        with self.lock:
            if ids is None:
                if len(self._emails) > self.core["maxObjectsInGet"]:
                    raise MethodError("requestTooLarge", "too many Emails for ids: null")
                ids = list(self._emails)
            listed, not_found = [], []
            for i in ids:
                e = self._emails.get(i)
                if e is None:
                    not_found.append(i)
                    continue
                cache: dict = {}
                obj = {p: self._email_property(e, p, cache) for p in props}
                obj["id"] = e.id
                listed.append(obj)
            return {"accountId": self.account_id, "state": self.state,
                    "list": listed, "notFound": not_found}

    def _check_email_filter(self, f) -> None:
        if f is None:
            return
        if not isinstance(f, dict):
            raise MethodError("invalidArguments", "filter must be an object")
        if "operator" in f:
            if f["operator"] not in ("AND", "OR", "NOT"):
                raise MethodError("unsupportedFilter", f"unknown operator {f['operator']!r}")
            if not isinstance(f.get("conditions"), list):
                raise MethodError("invalidArguments", "conditions must be a list")
            for c in f["conditions"]:
                self._check_email_filter(c)
            return
        for key, value in f.items():
            if key in ("inMailbox", "hasKeyword", "notKeyword"):
                ok = isinstance(value, str)
            elif key == "inMailboxOtherThan":
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            elif key in ("before", "after"):
                try:
                    _utc_date(value)
                    ok = isinstance(value, str)
                except (TypeError, ValueError):
                    ok = False
            elif key in ("minSize", "maxSize"):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                raise MethodError("unsupportedFilter", f"unsupported Email filter {key!r}")
            if not ok:
                raise MethodError("invalidArguments", f"bad value for filter {key}")

    def _email_matches(self, e: Email, f) -> bool:
        if f is None:
            return True
        if "operator" in f:
            return self._combine(f["operator"], [self._email_matches(e, c) for c in f["conditions"]])
        for key, value in f.items():
            if key == "inMailbox" and value not in e.mailbox_ids:
                return False
            if key == "inMailboxOtherThan" and not (e.mailbox_ids - set(value)):
                return False
            if key == "before" and not e.received_at < _utc_date(value):
                return False
            if key == "after" and not e.received_at >= _utc_date(value):
                return False
            if key == "minSize" and not e.size >= value:
                return False
            if key == "maxSize" and not e.size < value:
                return False
            if key == "hasKeyword" and value.lower() not in e.keywords:
                return False
            if key == "notKeyword" and value.lower() in e.keywords:
                return False
        return True

    def _email_query(self, args: dict) -> dict:
        self._check_account(args)
        f = args.get("filter")
        self._check_email_filter(f)
        with self.lock:
            emails = [e for e in self._emails.values() if self._email_matches(e, f)]
            emails = self._sorted(emails, args.get("sort"),
                                  {"receivedAt": lambda e: e.received_at, "size": lambda e: e.size})
            out = {"accountId": self.account_id}
            out.update(self._window(args, [e.id for e in emails]))
            return out

    def _thread_get(self, args: dict) -> dict:
        self._check_account(args)
        ids = self._ids(args) or []
        with self.lock:
            listed, not_found = [], []
            for t in ids:
                members = [e.id for e in self._emails.values() if e.thread_id == t]
                if members:
                    listed.append({"id": t, "emailIds": members})
                else:
                    not_found.append(t)
            return {"accountId": self.account_id, "state": self.state,
                    "list": listed, "notFound": not_found}

    @staticmethod
    def _fails(knob, email_id: str) -> bool:
        return knob == "*" or (not isinstance(knob, str) and (email_id in knob or "*" in knob))

    def _patched(self, e: Email, patch) -> tuple:
        def invalid(prop, why):
            return MethodError("invalidProperties", why, properties=[prop])

        if not isinstance(patch, dict):
            raise MethodError("invalidPatch", "a PatchObject must be an object")
        mailboxes, keywords = set(e.mailbox_ids), set(e.keywords)
        for path, value in patch.items():
            top, sep, sub = path.partition("/")
            sub = sub.replace("~1", "/").replace("~0", "~")
            if top == "mailboxIds" and not sep:
                if not isinstance(value, dict) or not all(v is True for v in value.values()):
                    raise invalid("mailboxIds", "mailboxIds must map ids to true")
                mailboxes = set(value)
            elif top == "mailboxIds" and sub and "/" not in sub:
                if value is True:
                    mailboxes.add(sub)
                elif value is None:
                    mailboxes.discard(sub)
                else:
                    raise invalid("mailboxIds", f"{path} must be true or null")
            elif top == "keywords" and not sep:
                if not isinstance(value, dict) or not all(v is True for v in value.values()):
                    raise invalid("keywords", "keywords must map keywords to true")
                keywords = {k.lower() for k in value}
            elif top == "keywords" and sub and "/" not in sub:
                if value is True:
                    keywords.add(sub.lower())
                elif value is None:
                    keywords.discard(sub.lower())
                else:
                    raise invalid("keywords", f"{path} must be true or null")
            elif top in EMAIL_PROPERTIES:
                raise invalid(top, f"{top} is immutable")
            else:
                raise MethodError("invalidPatch", f"cannot patch {path!r}")
        unknown = sorted(mailboxes - set(self._mailboxes))
        if unknown:
            raise invalid("mailboxIds", f"unknown mailboxes {unknown}")
        if not mailboxes:
            raise invalid("mailboxIds", "an Email must be in at least one Mailbox")
        return mailboxes, keywords

    def _email_set(self, args: dict) -> dict:
        self._check_account(args)
        create = args.get("create") or {}
        update = args.get("update") or {}
        destroy = args.get("destroy") or []
        if (not isinstance(create, dict) or not isinstance(update, dict)
                or not isinstance(destroy, list) or not all(isinstance(i, str) for i in destroy)):
            raise MethodError("invalidArguments", "create/update must be objects, destroy a list of ids")
        if len(create) + len(update) + len(destroy) > self.core["maxObjectsInSet"]:
            raise MethodError("requestTooLarge", f"more than {self.core['maxObjectsInSet']} objects")
        with self.lock:
            old = self.state
            if args.get("ifInState") is not None and args["ifInState"] != old:
                raise MethodError("stateMismatch")
            changed = False
            not_created = {k: {"type": "forbidden", "description": "Email/set create is not supported"}
                           for k in create}
            updated, not_updated = {}, {}
            for eid, patch in update.items():
                e = self._emails.get(eid)
                if e is None:
                    not_updated[eid] = {"type": "notFound"}
                    continue
                if self._fails(self.update_fail, eid):
                    not_updated[eid] = {"type": self.update_fail_type}
                    continue
                try:
                    mailboxes, keywords = self._patched(e, patch)
                except MethodError as err:
                    not_updated[eid] = err.body
                    continue
                if (mailboxes, keywords) != (e.mailbox_ids, e.keywords):
                    e.mailbox_ids, e.keywords = mailboxes, keywords
                    changed = True
                updated[eid] = None
            destroyed, not_destroyed = [], {}
            for eid in dict.fromkeys(destroy):
                if eid not in self._emails:
                    not_destroyed[eid] = {"type": "notFound"}
                elif self._fails(self.destroy_fail, eid):
                    not_destroyed[eid] = {"type": self.destroy_fail_type}
                else:
                    del self._emails[eid]
                    destroyed.append(eid)
                    changed = True
            if changed:
                self._bump()
            return {"accountId": self.account_id, "oldState": old, "newState": self.state,
                    "created": None, "updated": updated or None, "destroyed": destroyed or None,
                    "notCreated": not_created or None, "notUpdated": not_updated or None,
                    "notDestroyed": not_destroyed or None}

    # ========================================================== downloads
    def hold_download(self, after: int = 0, match: Optional[str] = None) -> DownloadHold:
        hold = DownloadHold(after, match)
        with self.lock:
            self._holds.append(hold)
        return hold

    def _take_cut(self, keys: list) -> Optional[int]:
        with self.lock:
            for key in keys + ["*"]:
                if key not in self.download_cut:
                    continue
                value = self.download_cut[key]
                if isinstance(value, tuple):
                    n, times = value
                    if times <= 1:
                        del self.download_cut[key]
                    else:
                        self.download_cut[key] = (n, times - 1)
                    return n
                return value
        return None

    def _claim_hold(self, keys: list, sent: int, req: Request) -> Optional[DownloadHold]:
        with self.lock:
            for hold in self._holds:
                if hold.request is None and hold.after <= sent and (hold.match is None or hold.match in keys):
                    hold.request = req
                    self._holds.remove(hold)
                    return hold
        return None

    def _next_hold(self, keys: list, sent: int) -> Optional[int]:
        with self.lock:
            afters = [h.after for h in self._holds
                      if h.after > sent and (h.match is None or h.match in keys)]
        return min(afters) if afters else None

    def _download(self, h: _Handler, req: Request, path: str, query: str) -> None:
        parts = [urllib.parse.unquote(p) for p in path[len("/jmap/download/"):].split("/")]
        if len(parts) < 2 or parts[0] != self.account_id:
            h.reply(req, 404, b"404 Not Found\n", "text/plain")
            return
        blob_id = parts[1]
        name = parts[2] if len(parts) > 2 and parts[2] else blob_id
        accept = urllib.parse.parse_qs(query).get("accept", [""])[0] or "application/octet-stream"
        data, email_ids = self._blob(blob_id)
        if data is None:
            h.reply(req, 404, b"404 Not Found\n", "text/plain")
            return
        status = 200
        headers = {"Content-Disposition": f'attachment; filename="{name}"',
                   "Cache-Control": "private, immutable, max-age=31536000"}
        if self.accept_ranges:
            headers["Accept-Ranges"] = "bytes"
            rng = req.header("range")
            if rng:
                m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        first = int(m.group(1))
                        last = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                    else:
                        first, last = max(0, len(data) - int(m.group(2))), len(data) - 1
                    if first >= len(data) or last < first:
                        h.reply(req, 416, b"", None, {"Content-Range": f"bytes */{len(data)}"})
                        return
                    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                    data, status = data[first:last + 1], 206
        keys = [blob_id] + email_ids
        h.start_reply(req, status, len(data), accept, headers)
        if req.method == "HEAD":
            return
        cut = self._take_cut(keys)
        end = len(data) if cut is None else max(0, min(cut, len(data)))
        sent = 0
        try:
            while True:
                hold = self._claim_hold(keys, sent, req)
                if hold is not None:
                    hold.reached.set()
                    while not hold._gate.wait(0.05) and not self._closing.is_set():
                        pass
                    continue
                if sent >= end:
                    break
                n = min(max(1, self.download_chunk), end - sent)
                boundary = self._next_hold(keys, sent)
                if boundary is not None:
                    n = min(n, boundary - sent)
                h.wfile.write(data[sent:sent + n])
                sent += n
                req.progress = sent
                if self.download_pause is not None:
                    self.download_pause(blob_id, sent)
        finally:
            req.sent = sent
        if end < len(data):
            h.close_connection = True   # the cut: a FIN after `end` octets

    def _upload(self, h: _Handler, req: Request, path: str) -> None:
        account = urllib.parse.unquote(path[len("/jmap/upload/"):].strip("/"))
        if account != self.account_id:
            h.reply(req, 404, b"404 Not Found\n", "text/plain")
            return
        data = req.raw_body
        if len(data) > self.core["maxSizeUpload"]:
            h.problem(req, 413, ERR + "limit", "upload too large", limit="maxSizeUpload")
            return
        ctype = req.header("content-type") or "application/octet-stream"
        blob_id = "G" + hashlib.sha1(data).hexdigest()
        with self.lock:
            self._uploads[blob_id] = (data, ctype)
        h.reply_json(req, {"accountId": account, "blobId": blob_id, "type": ctype, "size": len(data)},
                     status=201)

    # ========================================================== lifecycle
    def start(self) -> "FakeJmap":
        self._closing.clear()
        server = _HTTPServer((HOST, self.port), _Handler)
        server.owner = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-jmap-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._server = None
        deadline = time.monotonic() + 5
        while True:
            with self.lock:
                open_now = dict(self._open)
            if not open_now:
                break
            for sock in open_now:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for t in open_now.values():
                t.join(max(0.0, min(0.2, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                alive = [t.name for t in open_now.values() if t.is_alive()]
                if alive:
                    raise RuntimeError(f"fake JMAP handler threads did not stop: {alive}")
                break

    close = stop

    def __enter__(self) -> "FakeJmap":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
