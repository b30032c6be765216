# SPDX-License-Identifier: Apache-2.0
"""Real legacy POP3 clients through popbridge: fetchmail 6.4, mpop 1.4 and getmail6, as
Debian 12 ships them (scripts/install-deps installs them).

What the product promises a POP3 user, checked with the programs such users really run:
"legacy clients just work" and "nothing is downloaded twice". Each client polls a fresh
Dovecot user through the gateway over TLS, verifying the certificate against the test CA,
and keeps its mail on the server, remembering UIDLs in a state file of its own: the first
poll delivers every message exactly once, byte for byte what the upstream holds (dot lines,
8-bit octets, 998-octet lines, no final CRLF, an empty body); a second poll delivers
nothing; a message appended upstream is delivered alone by the third; and the upstream is
left as it was (no \\Seen, nothing deleted). Further tests delete at QUIT (mpop, pipelined,
and fetchmail, both over STLS) and check that each client refuses a certificate it cannot
verify.

"Byte for byte" means: the octets the upstream holds (read over IMAP), completed with a
CRLF when the last line lacks one (RFC 1939 needs a whole last line before the "."
terminator), after exactly the changes the client itself makes and nothing else:
  fetchmail  none: `set invisible` (no Received field), `no rewrite` (addresses as sent),
             `no stripcr` (CRLF kept); an MDA writes each message to a file of its own.
  mpop       CRLF becomes LF (its Maildir delivery writes Unix line ends);
             `received_header off` (no Received field).
  getmail    CRLF becomes LF (Maildir), and its Return-Path rewrite: it removes the
             message's Return-Path fields and puts `Return-Path: <sender>` first, the
             sender being the old Return-Path's address or "unknown"; `delivered_to` and
             `received` are off (no Delivered-To or Received field).

What each client does on the wire (see their -v/--debug output): fetchmail sends `LIST n`
then retrieves with `TOP n 99999999`, or with `RETR n` when told `fetchall`; mpop pipelines
(RFC 2449 PIPELINING: with `auth user` USER and PASS together, and every RETR, then every
DELE, before reading their answers; left to choose, `auth on`, it logs in with AUTH PLAIN);
getmail is poplib, one command at a time. Every client gets every path explicitly (configuration, state files, Maildir) and a
HOME of its own in a temporary directory, so none reads the user's own files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from typing import Iterator, Optional, Sequence

import pytest

from harness import messages, tempdirs
from harness.dovecot import Account, Dovecot
from harness.messages import as_retrieved

IP = "127.0.0.1"
NAME = "localhost"  # fetchmail 6.4 checks the certificate's DNS names only, never IP SANs
CLIENT_TIMEOUT = 60  # seconds per client run
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"  # public CAs: the test CA is not among them
NOBODY = 65534  # getmail run as root delivers only as another user (its Maildir `user`)


# ----------------------------------------------------------------- helpers

def lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def label(message: bytes) -> str:
    m = re.search(rb"^Message-ID: *(<[^>\r\n]*>)", message, re.M | re.I)
    return m.group(1).decode("ascii", "replace") if m else repr(message[:60])


def assert_delivered(got: Sequence[bytes], want: Sequence[bytes], run: "Run") -> None:
    """The same messages, each exactly once, in any order; on a difference, names them and
    shows where the octets first differ."""
    if sorted(got) == sorted(want):
        return
    report = [f"delivered {len(got)} messages, expected {len(want)}"]
    missing = [w for w in want if w not in got]
    extra = [g for g in got if g not in want]
    for w in missing:
        twin = next((g for g in extra if label(g) == label(w)), None)
        if twin is None:
            report.append(f"not delivered: {label(w)}")
            continue
        i = next((k for k, (a, b) in enumerate(zip(twin, w)) if a != b), min(len(twin), len(w)))
        report.append(f"{label(w)} differs at octet {i} (delivered {len(twin)} octets, expected {len(w)}):\n"
                      f"  delivered {twin[max(0, i - 40):i + 40]!r}\n"
                      f"  expected  {w[max(0, i - 40):i + 40]!r}")
    for g in extra:
        if not any(label(g) == label(w) for w in missing):
            report.append(f"delivered but not expected: {label(g)}")
    if len(set(got)) != len(got):
        report.append("some message was delivered twice")
    pytest.fail("\n".join(report) + f"\n{run}", pytrace=False)


def upstream_flags(dovecot: Dovecot, user: str) -> dict[int, set[str]]:
    """{uid: flags} of the user's INBOX, read in one read-only (EXAMINE) session."""
    conn = dovecot.imap(user)
    try:
        typ, data = conn.select("INBOX", readonly=True)
        assert typ == "OK", data
        typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS)")
        assert typ == "OK", data
        out = {}
        for line in data:
            line = line[0] if isinstance(line, tuple) else line
            uid = re.search(rb"\bUID (\d+)", line)
            flags = re.search(rb"FLAGS \(([^)]*)\)", line)
            out[int(uid.group(1))] = set(flags.group(1).decode().split())
        return out
    finally:
        conn.logout()


def assert_upstream_untouched(dovecot: Dovecot, user: str, held: dict[int, bytes]) -> None:
    """Every message still there with the same octets and no flag but \\Recent (which only
    tells a session that the message is new to it): no \\Seen, no \\Deleted, no keyword."""
    assert dovecot.fetch_all(user) == held, "the upstream mailbox changed"
    flags = upstream_flags(dovecot, user)
    assert set(flags) == set(held)
    changed = {uid: f for uid, f in flags.items() if f - {"\\Recent"}}
    assert not changed, f"flags set upstream: {changed}"


@dataclasses.dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        def tail(text: str, n: int = 150) -> str:
            lines = text.splitlines()
            return "\n".join((["[...]"] if len(lines) > n else []) + lines[-n:])
        return (f"$ {' '.join(self.argv)}\nexit status {self.returncode}\n"
                f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}")

    __repr__ = __str__  # what pytest shows as an assertion's message


def run_client(argv: list[str], home: str, ok: Sequence[int], env: Optional[dict] = None) -> Run:
    """Runs a client with a minimal environment (HOME of its own, no proxy or D-Bus
    variables) and a deadline; fails unless its exit status is in `ok`."""
    environment = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": home, "TMPDIR": home,
                   "LC_ALL": "C.UTF-8", **(env or {})}
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=environment,
                           cwd=home, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        run = Run(argv, -1, (e.stdout or b"").decode("utf-8", "replace"), (e.stderr or b"").decode("utf-8", "replace"))
        pytest.fail(f"no exit within {CLIENT_TIMEOUT} s\n{run}", pytrace=False)
    run = Run(argv, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))
    if run.returncode not in ok:
        pytest.fail(f"unexpected exit status (wanted one of {list(ok)})\n{run}", pytrace=False)
    return run


class Delivered:
    """The files a client delivered under some directories, each handed out once."""

    def __init__(self, *dirs: str):
        self.dirs = dirs
        self.seen: set[str] = set()

    def new(self) -> list[bytes]:
        out = []
        for d in self.dirs:
            for name in sorted(os.listdir(d)):
                path = os.path.join(d, name)
                if path not in self.seen:
                    self.seen.add(path)
                    with open(path, "rb") as f:
                        out.append(f.read())
        return out


def make_maildir(path: str, owner: Optional[int] = None) -> str:
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub))
    if owner is not None:
        for p in (path, *(os.path.join(path, s) for s in ("cur", "new", "tmp"))):
            os.chown(p, owner, owner)
    return path


def write_private(path: str, text: str) -> str:
    """A configuration file holding a password: mode 0600, as the clients demand."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


# ----------------------------------------------------------------- clients

class Fetchmail:
    """fetchmail 6.4, its UIDL list in an idfile (`uidl`), delivering through an MDA that
    writes each message to a file of its own."""

    NO_MAIL = (1,)  # fetchmail's exit status for a poll that found no new mail

    def __init__(self, home: str, port: int, account: Account, ca: str, *, implicit_tls: bool, keep: bool,
                 fetchall: bool = False):
        self.home = home
        out = os.path.join(home, "delivered")
        os.makedirs(out)
        mda = os.path.join(home, "deliver.sh")
        with open(mda, "w") as f:
            f.write('#!/bin/sh\n# fetchmail pipes each message into a new run of this.\n'
                    'exec cat > "$(mktemp "$1/msg.XXXXXXXX")"\n')
        os.chmod(mda, 0o755)
        # `ssl`: implicit TLS; without it, `sslcertck` makes fetchmail insist on STLS.
        # `sslcertck` (the default since 6.4) with `sslcertfile`: verify against the test CA.
        self.rcfile = write_private(os.path.join(home, "fetchmailrc"), f"""\
set no syslog
set invisible
poll {NAME} service {port} protocol pop3 uidl
  user "{account.name}" there with password "{account.password}"
  {"ssl " if implicit_tls else ""}sslcertck sslcertfile "{ca}"
  {"keep" if keep else "no keep"}{" fetchall" if fetchall else ""} no rewrite no stripcr
  mda "{mda} {out}"
""")
        self.delivered = Delivered(out)

    def run(self, ok: Sequence[int] = (0,)) -> Run:
        return run_client(["fetchmail", "-v", "-v", "-f", self.rcfile,
                           "--idfile", os.path.join(self.home, "fetchids"),
                           "--pidfile", os.path.join(self.home, "fetchmail.pid")],
                          self.home, ok, env={"FETCHMAILHOME": self.home})

    @staticmethod
    def expected(message: bytes) -> bytes:
        return as_retrieved(message)


class Mpop:
    """mpop 1.4 (GnuTLS), its UIDLs in a uidls_file, delivering to a Maildir, run with
    --debug (the conversation on stdout, which shows the pipelining)."""

    NO_MAIL = (0,)

    def __init__(self, home: str, port: int, account: Account, ca: str, *, implicit_tls: bool, keep: bool,
                 auth: str = "user"):
        self.home = home
        self.maildir = make_maildir(os.path.join(home, "Maildir"))
        self.rcfile = write_private(os.path.join(home, "mpoprc"), f"""\
defaults
account default
host {IP}
port {port}
tls on
tls_starttls {"off" if implicit_tls else "on"}
tls_trust_file {ca}
auth {auth}
user {account.name}
password {account.password}
pipelining on
received_header off
keep {"on" if keep else "off"}
uidls_file {os.path.join(home, "uidls")}
delivery maildir {self.maildir}
""")
        self.delivered = Delivered(os.path.join(self.maildir, "new"), os.path.join(self.maildir, "cur"))

    def run(self, ok: Sequence[int] = (0,)) -> Run:
        run = run_client(["mpop", "--debug", "-C", self.rcfile], self.home, ok)
        assert os.listdir(os.path.join(self.maildir, "tmp")) == [], run
        return run

    @staticmethod
    def expected(message: bytes) -> bytes:
        return lf(as_retrieved(message))


class Getmail:
    """getmail6 (Python's poplib and ssl), its UIDLs in the oldmail file of its getmaildir,
    delivering to a Maildir. Run as root it delivers only as another user (it refuses root),
    so the Maildir belongs to nobody and the configuration says `user = nobody`."""

    NO_MAIL = (0,)

    def __init__(self, home: str, port: int, account: Account, ca: str):
        self.home = home
        self.getmaildir = os.path.join(home, "getmail")
        os.makedirs(self.getmaildir)
        self.maildir = make_maildir(os.path.join(home, "Maildir"), owner=NOBODY)
        self.rcfile = write_private(os.path.join(home, "getmailrc"), f"""\
[retriever]
type = SimplePOP3SSLRetriever
server = {IP}
port = {port}
username = {account.name}
password = {account.password}
ca_certs = {ca}

[destination]
type = Maildir
path = {self.maildir}/
user = nobody

[options]
verbose = 2
delete = false
read_all = false
delivered_to = false
received = false
""")
        self.delivered = Delivered(os.path.join(self.maildir, "new"), os.path.join(self.maildir, "cur"))

    def run(self, ok: Sequence[int] = (0,)) -> Run:
        run = run_client(["getmail", "--getmaildir", self.getmaildir, "--rcfile", self.rcfile], self.home, ok)
        assert os.listdir(os.path.join(self.maildir, "tmp")) == [], run
        return run

    @staticmethod
    def expected(message: bytes) -> bytes:
        header, body = messages.split_header(as_retrieved(message))
        fields = re.findall(rb"[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", header)
        assert b"".join(fields) == header and fields[-1] == b"\r\n", "unexpected header layout"
        assert not any(f.lower().startswith(b"sender:") for f in fields), "getmail would take Sender as sender"
        return_paths = [f for f in fields if f.lower().startswith(b"return-path:")]
        sender = b"unknown"
        if return_paths:
            sender = return_paths[0].split(b":", 1)[1].strip().strip(b"<>")
        kept = b"".join(f for f in fields if f not in return_paths)
        return lf(b"Return-Path: <" + sender + b">\r\n" + kept + body)


# ---------------------------------------------------------------- fixtures

def _installed(program: str) -> str:
    path = shutil.which(program, path="/usr/bin:/bin")
    if path is None:
        pytest.fail(f"{program} is not installed: run scripts/install-deps (Debian's fetchmail, mpop, getmail6)",
                    pytrace=False)
    return path


@pytest.fixture(scope="module", autouse=True)
def clients_installed() -> None:
    for program in ("fetchmail", "mpop", "getmail"):
        _installed(program)


@pytest.fixture
def home() -> Iterator[str]:
    """The client's own directory: configuration, state, deliveries. Traversable by
    nobody, for getmail's delivery process."""
    path = tempdirs.make("client")
    os.chmod(path, 0o755)
    yield path
    tempdirs.remove(path)


def first_messages() -> list[bytes]:
    t = messages.tricky_messages()
    return messages.demo_messages() + [t["dots"], t["eight_bit"], t["long_lines"], t["no_final_crlf"],
                                       t["no_final_crlf_dot"], t["empty_body"]]


@pytest.fixture
def mailbox(dovecot: Dovecot, account: Account) -> tuple[Account, dict[int, bytes]]:
    """A fresh user with the first messages; {uid: octets} as the upstream holds them."""
    appended = first_messages()
    uids = dovecot.append_many(account.name, appended)
    held = dovecot.fetch_all(account.name)
    assert held == dict(zip(uids, appended))
    return account, held


def keeps_and_remembers(client, dovecot: Dovecot, account: Account, held: dict[int, bytes], seed: str) -> list[Run]:
    """Three polls of a client that keeps mail on the server and remembers UIDLs:
    everything once, then nothing, then only what was appended. Returns the runs."""
    first = client.run()
    assert_delivered(client.delivered.new(), [client.expected(m) for m in held.values()], first)

    second = client.run(ok=client.NO_MAIL)
    again = client.delivered.new()
    assert again == [], f"the second poll delivered {[label(m) for m in again]} again\n{second}"

    uid = dovecot.append(account.name, messages.big_message(150_000, seed=seed))
    held = {**held, uid: dovecot.fetch(account.name, uid)}
    third = client.run()
    assert_delivered(client.delivered.new(), [client.expected(held[uid])], third)

    assert_upstream_untouched(dovecot, account.name, held)
    return [first, second, third]


# ------------------------------------------------------------------- tests

def test_fetchmail_keeps_mail_and_fetches_each_message_once(gateway, dovecot, pki, home, mailbox):
    """fetchmail --ssl --sslcertck, keep, uidl: `LIST n` and `TOP n 99999999` for each new
    message. fetchmail compares each LIST size with the octets it got, and warns (only) about
    the messages without a final CRLF: LIST gives their size upstream, and RFC 1939 needs
    the CRLF that ends the last line before the terminator (Dovecot's own POP3 does the same)."""
    account, held = mailbox
    client = Fetchmail(home, gateway.pop3s_port, account, pki.ca, implicit_tls=True, keep=True)
    first, second, third = keeps_and_remembers(client, dovecot, account, held, "fetchmail")
    trace = first.stdout + first.stderr
    assert re.search(r"^fetchmail: POP3> TOP 1 \d+$", trace, re.M), first
    warned = {tuple(map(int, m)) for m in
              re.findall(r"message \S+:(\d+) was not the expected length \((\d+) actual != (\d+) expected\)", trace)}
    unterminated = {(n, len(m) + 2, len(m)) for n, m in enumerate(held.values(), 1) if not m.endswith(b"\r\n")}
    assert warned == unterminated, first


def test_fetchmail_over_stls_deletes_what_it_retrieved(gateway, dovecot, pki, home, mailbox):
    """fetchmail without `keep`, with `fetchall` (which makes it RETR instead of TOP), on the
    STLS listener: RETR and DELE for each message, then QUIT expunges them upstream."""
    account, held = mailbox
    client = Fetchmail(home, gateway.pop3_port, account, pki.ca, implicit_tls=False, keep=False, fetchall=True)
    run = client.run()
    trace = run.stdout + run.stderr
    assert "POP3> STLS" in trace and "upgrade to TLS succeeded" in trace, run
    assert "POP3> RETR 1" in trace and "POP3> DELE 1" in trace, run
    assert_delivered(client.delivered.new(), [client.expected(m) for m in held.values()], run)
    assert dovecot.uids(account.name) == [], f"messages left upstream\n{run}"
    run = client.run(ok=(1,))
    assert client.delivered.new() == [], run


def _sent_together(debug: str, first: str) -> list[str]:
    """The commands mpop sent, from the first that starts with `first`, before it read
    another line (its --debug output prints "--> " for each line sent, "<-- " for each
    line read)."""
    lines = debug.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith(f"--> {first}")), None)
    if start is None:
        return []
    sent = []
    for line in lines[start:]:
        if line.startswith("<-- "):
            break
        if line.startswith("--> "):
            sent.append(line[4:])
    return sent


def test_mpop_keeps_mail_and_fetches_each_message_once_pipelined(gateway, dovecot, pki, home, mailbox):
    """mpop over implicit TLS with `keep on`, `pipelining on`, letting it choose how to
    authenticate (`auth on`)."""
    account, held = mailbox
    client = Mpop(home, gateway.pop3s_port, account, pki.ca, implicit_tls=True, keep=True, auth="on")
    first, second, third = keeps_and_remembers(client, dovecot, account, held, "mpop")
    assert "<-- PIPELINING" in first.stdout, f"popbridge's CAPA lacks PIPELINING\n{first}"
    retrs = _sent_together(first.stdout, "RETR ")
    assert retrs == [f"RETR {n}" for n in range(1, len(held) + 1)], \
        f"mpop did not send every RETR before the first answer: {retrs}\n{first}"
    assert _sent_together(third.stdout, "RETR ") == [f"RETR {len(held) + 1}"], third
    assert "new: no messages" in second.stdout, second


def test_mpop_over_stls_deletes_pipelined(gateway, dovecot, pki, home, mailbox):
    """mpop on the STLS listener without `keep`: RETR and DELE pipelined, USER/PASS,
    QUIT expunges; the next poll finds an empty mailbox."""
    account, held = mailbox
    client = Mpop(home, gateway.pop3_port, account, pki.ca, implicit_tls=False, keep=False)
    run = client.run()
    assert "--> STLS" in run.stdout, run
    assert _sent_together(run.stdout, "USER ") == [f"USER {account.name}", f"PASS {account.password}"], run
    numbers = range(1, len(held) + 1)
    assert _sent_together(run.stdout, "RETR ") == [f"RETR {n}" for n in numbers], run
    assert _sent_together(run.stdout, "DELE ") == [f"DELE {n}" for n in numbers], run
    assert_delivered(client.delivered.new(), [client.expected(m) for m in held.values()], run)
    assert dovecot.uids(account.name) == [], f"messages left upstream\n{run}"
    run = client.run()
    assert client.delivered.new() == [], run
    assert re.search(r"^no messages$", run.stdout, re.M), run


def test_getmail_keeps_mail_and_fetches_each_message_once(gateway, dovecot, pki, home, mailbox):
    """getmail's SimplePOP3SSLRetriever with ca_certs, `delete = false`, `read_all = false`."""
    account, held = mailbox
    client = Getmail(home, gateway.pop3s_port, account, pki.ca)
    first, second, third = keeps_and_remembers(client, dovecot, account, held, "getmail")
    total = sum(len(m) for m in held.values())  # getmail counts LIST sizes
    assert f"{len(held)} messages ({total} bytes) retrieved, 0 skipped" in first.stdout, first
    assert f"0 messages (0 bytes) retrieved, {len(held)} skipped" in second.stdout, second
    assert f"1 messages (150000 bytes) retrieved, {len(held)} skipped" in third.stdout, third


@pytest.mark.parametrize("program", ["fetchmail", "mpop", "getmail"])
def test_client_refuses_a_certificate_it_cannot_verify(gateway, dovecot, home, mailbox, program):
    """The setup really verifies: trusting only the public CAs, each client stops at the
    TLS handshake, before logging in, fails, delivers nothing and leaves the mailbox as it
    was."""
    account, held = mailbox
    if program == "fetchmail":
        client = Fetchmail(home, gateway.pop3s_port, account, SYSTEM_CAS, implicit_tls=True, keep=True)
        run = client.run(ok=range(2, 256))  # 1 is "no new mail": a poll that worked
    elif program == "mpop":
        client = Mpop(home, gateway.pop3s_port, account, SYSTEM_CAS, implicit_tls=True, keep=True)
        run = client.run(ok=range(1, 256))
    else:
        client = Getmail(home, gateway.pop3s_port, account, SYSTEM_CAS)
        run = client.run(ok=range(1, 256))
    trace = run.stdout + run.stderr
    assert re.search(r"certificate verif(y|ication) (error|failed)", trace, re.I), run
    assert not re.search(r"^(fetchmail: POP3> |--> )(USER|AUTH)", trace, re.M), f"{program} logged in\n{run}"
    assert client.delivered.new() == [], run
    assert_upstream_untouched(dovecot, account.name, held)
