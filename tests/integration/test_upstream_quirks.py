# SPDX-License-Identifier: Apache-2.0
"""Upstream servers that are not Dovecot, and upstream options.

Most tests here put a scripted IMAP server (harness/fake_imap.py, plain TCP on
127.0.0.1, so upstream.tls: none) behind the gateway, to imitate what Dovecot
never does: Cyrus/Courier-style login failures, missing capabilities (SASL-IR,
AUTH=PLAIN, LITERAL+, UIDPLUS), failing STOREs, BYE in the middle of a literal,
unsolicited responses, a wrong RFC822.SIZE. The fake server records every
command byte-exact, so the tests check what the gateway really sent.

The last tests use the real Dovecot for upstream.mark_seen and upstream.uidl_format.
"""

from __future__ import annotations

import base64

import pytest

from harness import messages
from harness.clients import RawPop3, TERMINATOR
from harness.fake_imap import FakeImap, Message, parse_astrings
from harness.messages import as_retrieved, stuffed
from harness.wait import TIME_FACTOR, wait_until

USER, PASSWORD = "carol", "carol-secret-3"

# Deadlines (seconds) for things that take well under a second on a healthy run.
QUICK = 10.0 * TIME_FACTOR


@pytest.fixture
def make_fake():
    """make_fake(**FakeImap kwargs) -> a started FakeImap knowing USER/PASSWORD;
    closed at teardown, which fails if a server thread hit an unexpected error."""
    made: list[FakeImap] = []

    def make(**kwargs) -> FakeImap:
        kwargs.setdefault("users", {USER: PASSWORD})
        fake = FakeImap(**kwargs).start()
        made.append(fake)
        return fake

    yield make
    errors = []
    for fake in made:
        fake.close()
        errors += fake.errors
    assert not errors, errors


@pytest.fixture
def bridge(make_gateway):
    """bridge(fake, overrides=None) -> a gateway in front of `fake` (plain IMAP)."""
    def make(fake: FakeImap, overrides=None):
        return make_gateway(fake.address, overrides, upstream_tls="none")
    return make


def login(g, user: str = USER, password: str = PASSWORD) -> RawPop3:
    c = RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15)
    try:
        c.login(user, password)
    except BaseException:
        c.close()
        raise
    return c


def wait_upstream_closed(fake: FakeImap) -> None:
    """Waits until the gateway has closed every upstream connection, so the fake's
    record of received commands is complete."""
    wait_until(lambda: fake.connections > 0 and fake.connections_open() == 0, QUICK,
               "the gateway to close its upstream connection",
               on_timeout=lambda: f"commands so far: {[c.text for c in fake.received()]}")


def three_messages() -> list[Message]:
    return [Message(uid, messages.simple(uid)) for uid in (1, 2, 3)]


# ------------------------------------------------------------------ login

@pytest.mark.parametrize("tagged, expected", [
    ("NO Login failed", b"-ERR [AUTH]"),                        # Cyrus / Courier: no response code
    ("NO [AUTHENTICATIONFAILED] Invalid credentials", b"-ERR [AUTH]"),
    ("NO [UNAVAILABLE] Backend temporarily unavailable", b"-ERR [SYS/TEMP]"),
    ("NO [INUSE] Mailbox is locked by another session", b"-ERR [IN-USE]"),
])
def test_login_failure_codes(make_fake, bridge, ctx, tagged, expected):
    fake = make_fake(capabilities=["IMAP4rev1", "UIDPLUS"], login_reply=tagged)
    g = bridge(fake)
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        r = c.cmd(f"PASS {PASSWORD}")
        assert r.line.startswith(expected + b" "), f"{tagged!r} -> {r}"
        # The session stays in AUTHORIZATION and can try again.
        assert c.cmd("CAPA", multiline=True).ok
    assert fake.verbs().count("LOGIN") == 1
    assert "SELECT" not in fake.verbs(), "nothing after a failed login"


@pytest.mark.parametrize("caps, greeting_caps, method", [
    (["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS"], False, "sasl-ir"),
    (["IMAP4rev1", "AUTH=PLAIN", "UIDPLUS"], False, "plain-continuation"),
    (["IMAP4rev1", "AUTH=PLAIN", "UIDPLUS"], True, "plain-continuation"),
    (["IMAP4rev1", "SASL-IR", "AUTH=LOGIN", "UIDPLUS"], False, "login"),
    (["IMAP4rev1", "UIDPLUS"], False, "login"),
    (["IMAP4rev1", "UIDPLUS"], True, "login"),
], ids=["sasl-ir", "plain-no-ir", "plain-no-ir-caps-in-greeting", "auth-login-only", "no-auth", "no-auth-caps-in-greeting"])
def test_login_method_follows_capabilities(make_fake, bridge, ctx, caps, greeting_caps, method):
    greeting = ("* OK [CAPABILITY " + " ".join(caps) + "] ready" if greeting_caps else "* OK ready")
    fake = make_fake(capabilities=caps, greeting=greeting, messages=three_messages())
    g = bridge(fake)
    c = login(g)
    with c:
        assert c.cmd("STAT").line == b"+OK 3 %d" % sum(len(messages.simple(u)) for u in (1, 2, 3))
        assert c.quit().ok
    verbs = fake.verbs()
    if greeting_caps:
        assert verbs[0] != "CAPABILITY", f"capabilities came with the greeting: {verbs}"
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    if method == "login":
        assert "AUTHENTICATE" not in verbs, verbs
        [cmd] = fake.received("LOGIN")
        assert parse_astrings(cmd.args) == [("atom", USER.encode()), ("atom", PASSWORD.encode())], cmd.text
    else:
        assert "LOGIN" not in verbs, verbs
        [cmd] = fake.received("AUTHENTICATE")
        if method == "sasl-ir":
            assert cmd.args == b"PLAIN " + token, cmd.text
        else:
            assert cmd.args == b"PLAIN", f"no SASL-IR: no initial response on the command line: {cmd.text}"
            assert cmd.sasl_response == token
            assert not cmd.premature, "the response was sent before the server's \"+\""
    assert fake.logins == [(USER.encode(), PASSWORD.encode())]


PASSWORDS = {
    "space": "two words",
    "quote-backslash": 'say "hi" \\ bye',
    "only-specials": '"\\"',
    "8bit": "pässwörd-✓",
}


@pytest.mark.parametrize("literal_plus", [False, True], ids=["no-literal+", "literal+"])
@pytest.mark.parametrize("name", list(PASSWORDS))
def test_login_password_quoting(make_fake, bridge, ctx, name, literal_plus):
    password = PASSWORDS[name]
    caps = ["IMAP4rev1", "UIDPLUS"] + (["LITERAL+"] if literal_plus else [])
    fake = make_fake(capabilities=caps, users={USER: password}, messages=three_messages())
    g = bridge(fake)
    with login(g, USER, password) as c:
        assert c.cmd("STAT").ok
        assert c.quit().ok
    [cmd] = fake.received("LOGIN")
    args = parse_astrings(cmd.args)
    assert [v for _, v in args] == [USER.encode(), password.encode()], cmd.text
    form = args[1][0]
    if name == "8bit":
        assert form in ("literal", "literal+"), f"8-bit octets need a literal: {cmd.text!r}"
    else:
        assert form in ("quoted", "literal", "literal+"), cmd.text
    if not literal_plus:
        assert form != "literal+", f"LITERAL+ was not offered: {cmd.text!r}"
        assert not cmd.premature, f"literal sent before the server's continuation: {cmd.text!r}"


# ------------------------------------------------------------------ UPDATE

def test_no_uidplus_refuses_to_expunge(make_fake, bridge, ctx):
    caps = ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR"]
    fake = make_fake(capabilities=caps, messages=three_messages())
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("DELE 2").ok
        r = c.quit()
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
        c.wait_eof(timeout=QUICK)
    wait_upstream_closed(fake)
    verbs = fake.verbs()
    assert not {"UID STORE", "STORE", "EXPUNGE", "UID EXPUNGE"} & set(verbs), verbs
    assert fake.uids() == [1, 2, 3]
    assert all(not m.flags for m in fake.messages)


def test_expunge_without_uidplus_when_allowed(make_fake, bridge, ctx):
    caps = ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR"]
    fake = make_fake(capabilities=caps, messages=three_messages())
    g = bridge(fake, {"upstream": {"expunge_without_uidplus": True}})
    with login(g) as c:
        assert c.cmd("DELE 1").ok
        assert c.cmd("DELE 3").ok
        r = c.quit()
        assert r.ok, r
    wait_upstream_closed(fake)
    verbs = fake.verbs()
    assert "UID EXPUNGE" not in verbs, verbs
    i = verbs.index("UID STORE")
    assert verbs[i + 1] == "EXPUNGE", f"STORE then a plain EXPUNGE: {verbs}"
    store = fake.received("UID STORE")
    assert [s.args for s in store] == [b"1,3 +FLAGS.SILENT (\\Deleted $PopbridgePending)"], \
        [s.text for s in store]
    assert fake.received("EXPUNGE")[0].args == b""
    assert fake.uids() == [2]


@pytest.mark.parametrize("failing", ["store", "expunge"])
def test_update_failure_rolls_back_deleted_flag(make_fake, bridge, ctx, failing):
    def store(session, cmd):
        if failing == "store" and b"+FLAGS" in cmd.args:
            # Like a server that set the flag on some messages, then failed.
            fake.message(2).flags.add("\\Deleted")
            session.line(f"{cmd.tag} NO [SERVERBUG] Internal error storing flags")
            return True
        return False

    def expunge(session, cmd):
        session.line(f"{cmd.tag} NO [SERVERBUG] Internal error expunging")
        return True

    hooks = {"UID STORE": store}
    if failing == "expunge":
        hooks["UID EXPUNGE"] = expunge
    fake = make_fake(messages=three_messages(), hooks=hooks)
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("DELE 2").ok
        assert c.cmd("DELE 3").ok
        r = c.quit()
        assert r.err and r.line.endswith(b"some deleted messages not removed"), r
    wait_upstream_closed(fake)
    stores = [s.args for s in fake.received("UID STORE")]
    assert stores == [b"2:3 +FLAGS.SILENT (\\Deleted $PopbridgePending)",
                      b"2:3 -FLAGS.SILENT (\\Deleted $PopbridgePending)"], stores
    if failing == "store":
        assert "UID EXPUNGE" not in fake.verbs()
    assert fake.uids() == [1, 2, 3]
    assert all("\\Deleted" not in m.flags for m in fake.messages), "the rollback removed the flag"


# ------------------------------------------------------------------ RETR

def big_body(size: int = 300_000) -> bytes:
    return messages.big_message(size, seed="fake-imap")


@pytest.mark.parametrize("where", ["mid-literal", "before-tagged-ok"])
def test_bye_during_retr_no_terminator(make_fake, bridge, ctx, where):
    """Data-integrity rule 1 with a server that says BYE and hangs up during RETR."""
    body = big_body()
    # Mid-literal, the BYE line is (correctly) just more literal octets to the gateway.
    partial = body[: len(body) // 2] + b"\r\n* BYE Server shutting down\r\n"

    def fetch(session, cmd):
        if b"BODY" not in cmd.args.upper():
            return False
        if where == "mid-literal":
            session.send(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + partial)
        else:
            session.send(session.fetch_response(fake.message(1), "BODY.PEEK[]"))
            session.send(b"* BYE Server shutting down\r\n")
        session.close()
        return True

    fake = make_fake(messages=[Message(1, body)], hooks={"UID FETCH": fetch})
    g = bridge(fake)
    with login(g) as c:
        c.send_line("RETR 1")
        status = c.read_line()
        assert status.startswith(b"+OK"), status
        received = c.read_until_eof(timeout=QUICK)
    sent = stuffed(partial if where == "mid-literal" else body)
    assert not received.endswith(TERMINATOR) and not received.endswith(b".\r\n"), \
        "a message cut off by the upstream was terminated as if complete"
    assert sent.startswith(received), "what arrived is a prefix of what the upstream sent, nothing else"


def test_unsolicited_responses_interleaved(make_fake, bridge, ctx):
    msgs = [Message(1, messages.simple(1)), Message(2, messages.tricky_messages()["dots"]),
            Message(5, messages.simple(5))]

    def fetch(session, cmd):
        items = cmd.args.decode()
        out = b""
        if "RFC822.SIZE" in items:
            out += b"* 1 FETCH (FLAGS (\\Seen))\r\n"
            out += session.fetch_response(msgs[0], items)
            out += b"* 4 EXISTS\r\n* 1 RECENT\r\n"
            out += session.fetch_response(msgs[1], items)
            out += b"* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n* OK [ALERT] Quota nearly full\r\n"
            out += session.fetch_response(msgs[2], items)
            out += b"* 3 FETCH (FLAGS ())\r\n"
        else:
            uid = int(items.split()[0])
            msg = fake.message(uid)
            out += b"* 3 EXISTS\r\n* 1 FETCH (FLAGS (\\Seen))\r\n"
            out += session.fetch_response(msg, items)
            out += b"* 5 EXISTS\r\n* 2 FETCH (FLAGS (\\Answered))\r\n"
        session.send(out)
        session.ok(cmd.tag, "Fetch completed.")
        return True

    fake = make_fake(messages=msgs, hooks={"UID FETCH": fetch})
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("STAT").line == b"+OK 3 %d" % sum(len(m.body) for m in msgs)
        r = c.cmd("LIST", multiline=True)
        assert r.body_lines() == [b"%d %d" % (n, len(m.body)) for n, m in enumerate(msgs, 1)], r.body
        r = c.cmd("UIDL", multiline=True)
        assert r.body_lines() == [b"%d %08x%08x" % (n, m.uid, fake.uidvalidity)
                                  for n, m in enumerate(msgs, 1)], r.body
        for n, m in enumerate(msgs, 1):
            r = c.cmd(f"RETR {n}", multiline=True)
            assert r.ok and r.body == as_retrieved(m.body), f"RETR {n}: {r}"
        assert c.cmd("DELE 3").ok
        assert c.quit().ok
    wait_upstream_closed(fake)
    assert [s.args for s in fake.received("UID STORE")] == \
        [b"5 +FLAGS.SILENT (\\Deleted $PopbridgePending)"]
    assert [s.args for s in fake.received("UID EXPUNGE")] == [b"5"]
    assert fake.uids() == [1, 2]


@pytest.mark.parametrize("order, count", [("flags-first", 2), ("flags-after", 2), ("flags-after", 40)])
def test_unsolicited_fetch_with_uid_during_snapshot(make_fake, bridge, ctx, order, count):
    """During a UID command a server includes the UID in unsolicited FETCH responses
    too (Dovecot does, for flag changes made by another session): "* 1 FETCH (UID 1
    FLAGS (\\Seen))" carries no RFC822.SIZE and must not replace the message's size.
    (Regression test: such responses once entered the snapshot as messages of size 0,
    and with 17+ messages even a late one could win, as the sort was not stable.)"""
    msgs = [Message(n, messages.simple(n, body_lines=n)) for n in range(1, count + 1)]

    def fetch(session, cmd):
        items = cmd.args.decode()
        if "RFC822.SIZE" not in items:
            return False
        flags = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen))\r\n" % (n, m.uid) for n, m in enumerate(msgs, 1))
        real = b"".join(session.fetch_response(m, items) for m in msgs)
        session.send(flags + real if order == "flags-first" else real + flags)
        session.ok(cmd.tag, "Fetch completed.")
        return True

    fake = make_fake(messages=msgs, hooks={"UID FETCH": fetch})
    g = bridge(fake)
    with login(g) as c:
        r = c.cmd("LIST", multiline=True)
        assert r.body_lines() == [b"%d %d" % (n, len(m.body)) for n, m in enumerate(msgs, 1)], r.body
        assert c.cmd("STAT").line == b"+OK %d %d" % (count, sum(len(m.body) for m in msgs))
        assert c.quit().ok


@pytest.mark.parametrize("delta", [-20, +37], ids=["listed-smaller", "listed-larger"])
def test_rfc822_size_mismatch(make_fake, bridge, ctx, delta):
    """A server whose RFC822.SIZE is approximate: before any +OK, a NOOP shows the message
    is still there, so it is fetched again and served as it is (every octet, then the
    terminator), and the difference is logged and counted."""
    body = messages.tricky_messages()["dots"]
    fake = make_fake(messages=[Message(1, body, size=len(body) + delta)])
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("LIST 1").line == b"+OK 1 %d" % (len(body) + delta)
        r = c.cmd("RETR 1", multiline=True)
        assert r.ok, r
        assert r.line == b"+OK %d octets" % len(body), r
        assert r.raw[len(r.line) + 2:] == stuffed(body) + b".\r\n", "the literal, byte-exact, then the terminator"
        verbs = fake.verbs()
        assert verbs.count("UID FETCH") == 3 and "NOOP" in verbs, "snapshot, held back, NOOP, again"
        assert c.cmd("NOOP").ok
        assert c.quit().ok
    line = wait_until(lambda: [l for l in g.log_text().splitlines() if "event=size_mismatch" in l], QUICK,
                      "a size_mismatch event in the gateway log", on_timeout=g.diagnostics)
    assert f"listed={len(body) + delta} " in line[0] + " " and f"sent={len(body)} " in line[0] + " ", line


def test_read_ahead_batch_with_a_size_that_differs(make_fake, bridge):
    """A message of a read-ahead batch whose literal is not as long as listed is not
    served from the batch: its RETR takes the usual way (held back, NOOP, fetched again,
    served whole with its real size), and the message after it still comes from the
    batch."""
    bodies = [messages.simple(n) for n in (1, 2, 3, 4)]
    msgs = [Message(n, body) for n, body in enumerate(bodies, 1)]
    msgs[2].size = len(bodies[2]) + 37
    fake = make_fake(messages=msgs)
    g = bridge(fake)

    def body_fetches() -> list[str]:
        return [cmd.text.strip().split(" ", 1)[1] for cmd in fake.received("UID FETCH")
                if b"BODY" in cmd.args]

    with login(g) as c:
        for n in (1, 2):
            assert c.cmd(f"RETR {n}", multiline=True).body == as_retrieved(bodies[n - 1])
        wait_until(lambda: len(body_fetches()) == 3, QUICK, "the read-ahead of messages 3 and 4",
                   on_timeout=lambda: str(body_fetches()))
        r = c.cmd("RETR 3", multiline=True)
        assert r.line == b"+OK %d octets" % len(bodies[2]), r
        assert r.body == as_retrieved(bodies[2])
        assert c.cmd("RETR 4", multiline=True).body == as_retrieved(bodies[3])
        assert c.quit().ok
    assert body_fetches() == ["UID FETCH 1 (BODY.PEEK[])", "UID FETCH 2 (BODY.PEEK[])",
                              "UID FETCH 3:4 (BODY.PEEK[])",  # 3 not whole: not used
                              "UID FETCH 3 (BODY.PEEK[])",  # held back: NOOP, then
                              "UID FETCH 3 (BODY.PEEK[])"], body_fetches()
    assert "NOOP" in fake.verbs()


@pytest.mark.parametrize("outlook_no_nuls", [False, True])
def test_nul_octets_from_the_upstream(make_fake, bridge, outlook_no_nuls):
    """An upstream that sends NUL octets in a literal as they are (Dovecot's IMAP sends
    0x80): relayed unchanged, or as 0x80 with pop3.workarounds outlook-no-nuls, the
    same number of octets either way (the scripted server answers only BODY[] fetches;
    TOP goes through the same stuffer, see pop3_reply_test)."""
    body = b"From: a@example.test\r\nSubject: nul\r\n\r\n\x00first\r\n.\x00\r\nlast \x00\r\n"
    fake = make_fake(messages=[Message(1, body)])
    g = bridge(fake, {"pop3": {"workarounds": ["outlook-no-nuls"] if outlook_no_nuls else []}})
    want = stuffed(body)
    if outlook_no_nuls:
        want = want.replace(b"\x00", b"\x80")
    with login(g) as c:
        r = c.cmd("RETR 1", multiline=True)
        assert r.line == b"+OK %d octets" % len(body), r
        assert r.raw[len(r.line) + 2:] == want + b".\r\n"
        assert c.quit().ok
    assert "size_mismatch" not in g.log_text()


# --------------------------------------------------- real Dovecot: options

@pytest.mark.parametrize("mark_seen", [False, True])
def test_mark_seen(dovecot, account, make_gateway, ctx, mark_seen):
    msgs = [messages.simple(1), messages.simple(2)]
    uids = dovecot.append_many(account.name, msgs)
    g = make_gateway(dovecot, {"upstream": {"mark_seen": mark_seen}})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        r = c.cmd("RETR 1", multiline=True)
        assert r.ok and r.body == msgs[0]
        assert c.quit().ok
    flags = dovecot.flags(account.name, uids[0])
    assert ("\\Seen" in flags) == mark_seen, f"mark_seen={mark_seen}: flags of the retrieved message {flags}"
    assert "\\Seen" not in dovecot.flags(account.name, uids[1]), "a message not retrieved stays unseen"


def test_uidl_format_uid(dovecot, account, make_gateway, ctx):
    uids = dovecot.append_many(account.name, [messages.simple(n) for n in (1, 2, 3)])
    validity = dovecot.uidvalidity(account.name)
    g = make_gateway(dovecot, {"upstream": {"uidl_format": "uid"}})
    with RawPop3(g.pop3s_port, tls_context=ctx) as c:
        c.login(account.name, account.password)
        r = c.cmd("UIDL", multiline=True)
        assert r.body_lines() == [b"%d %d.%d" % (n, validity, uid) for n, uid in enumerate(uids, 1)], r.body
        assert c.cmd("UIDL 2").line == b"+OK 2 %d.%d" % (validity, uids[1])
        assert c.quit().ok


# ------------------------------------------------------------------ sizes that differ

COURIER_PLACEHOLDER = (b"From: Courier mail server at localhost\r\nSubject: message unavailable\r\n\r\n"
                       b"This message is no longer available on the server.\r\n")


def test_placeholder_for_an_expunged_message_is_not_served(make_fake, bridge):
    """Courier answers UID FETCH for a message another session expunged with a short
    placeholder text. Its size differs from the listed one: popbridge finds out why (a
    NOOP brings the EXPUNGE) before any +OK, and answers -ERR as for a vanished message,
    so the client never stores a fake message."""
    expunged = []

    def fetch(session, cmd):
        uid_set, _, items = cmd.args.decode().partition(" ")
        if uid_set == "2" and "BODY.PEEK[]" in items.upper():
            session.send(b"* 2 FETCH (UID 2 BODY[] {%d}\r\n" % len(COURIER_PLACEHOLDER)
                         + COURIER_PLACEHOLDER + b")\r\n")
            session.ok(cmd.tag, "Fetch completed.")
            with fake.lock:  # another session's expunge, reported at the next NOOP
                fake.messages[:] = [m for m in fake.messages if m.uid != 2]
            expunged.append(2)
            return True
        return False

    def noop(session, cmd):
        while expunged:
            expunged.pop()
            session.line("* 2 EXPUNGE")
        session.ok(cmd.tag, "NOOP completed.")
        return True

    fake = make_fake(messages=three_messages(), hooks={"UID FETCH": fetch, "NOOP": noop})
    g = bridge(fake)
    with login(g) as c:
        r = c.cmd("RETR 2", multiline=True)
        assert r.line == b"-ERR message was removed from the mailbox", r
        r = c.cmd("RETR 3", multiline=True)
        assert r.ok and r.body == as_retrieved(messages.simple(3)), "the session goes on"
        assert c.quit().ok
    assert "message_vanished" in g.log_text()
    assert "size_mismatch" not in g.log_text()


@pytest.mark.parametrize("answer", ["NO [NONEXISTENT] Mailbox doesn't exist: Nope",
                                    "NO Mailbox does not exist"], ids=["dovecot", "cyrus-courier"])
def test_missing_mailbox_is_permanent_and_named(make_fake, bridge, answer):
    """A wrong upstream.mailbox is a configuration error, not a passing fault: -ERR
    [SYS/PERM], logged with the mailbox and a hint."""
    def select(session, cmd):
        session.line(f"{cmd.tag} {answer}")
        return True

    fake = make_fake(messages=three_messages(), hooks={"SELECT": select})
    g = bridge(fake, {"upstream": {"mailbox": "Nope"}})
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        r = c.cmd(f"PASS {PASSWORD}")
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
    line = wait_until(lambda: [l for l in g.log_text().splitlines() if "mailbox_unavailable" in l],
                      QUICK, "the configuration error in the log")
    assert "mailbox=Nope" in line[0] and "upstream.mailbox" in line[0], line


def test_mailbox_unavailable_for_now_is_temporary(make_fake, bridge):
    def select(session, cmd):
        session.line(f"{cmd.tag} NO [UNAVAILABLE] Backend down")
        return True

    fake = make_fake(messages=three_messages(), hooks={"SELECT": select})
    g = bridge(fake)
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        assert c.cmd(f"USER {USER}").ok
        assert c.cmd(f"PASS {PASSWORD}").line.startswith(b"-ERR [SYS/TEMP]")


def test_token_mechanisms_follow_what_the_upstream_offers(make_fake, bridge):
    """XOAUTH2/OAUTHBEARER are handed through only to an upstream that offers them. Before
    any session reached the upstream they are offered; a token login that then meets an
    upstream without the mechanism is refused for good ([SYS/PERM], reason logged), and
    from then on CAPA and AUTH stop offering it."""
    fake = make_fake(capabilities=["IMAP4rev1", "AUTH=PLAIN", "AUTH=OAUTHBEARER", "SASL-IR",
                                   "UIDPLUS"], messages=three_messages())
    g = bridge(fake)
    token = base64.b64encode(f"user={USER}\x01auth=Bearer t0ken\x01\x01".encode()).decode()
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        sasl = next(l for l in c.capa() if l.startswith("SASL"))
        assert "XOAUTH2" in sasl and "OAUTHBEARER" in sasl, sasl
        r = c.cmd("AUTH XOAUTH2 " + token)
        assert r.line.startswith(b"-ERR [SYS/PERM]"), r
    assert "upstream does not offer XOAUTH2" in g.log_text()
    with RawPop3(g.pop3s_port, tls_context=g.pki.client_context(), timeout=15) as c:
        sasl = next(l for l in c.capa() if l.startswith("SASL"))
        assert "XOAUTH2" not in sasl and "OAUTHBEARER" in sasl, sasl
        assert c.cmd("AUTH XOAUTH2 " + token).line == b"-ERR unsupported authentication mechanism"
        assert c.quit().ok
    assert "token_mechanism_unavailable" in g.log_text()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
def test_upstream_pipelining(make_fake, bridge, pipelining):
    """upstream.pipelining: ID leaves with the login and SELECT with the snapshot FETCH
    (each pair in one flight, answered in order); off, every command waits for the answer
    before it. The fake notes, before answering ID and SELECT, whether the next command
    had already arrived."""
    arrived_early = {}

    def note(verb):
        def hook(session, cmd):
            arrived_early[verb] = session.next_command_arrived()
            if verb == "ID":
                session.line('* ID ("name" "fake")')
                session.ok(cmd.tag, "ID completed.")
                return True
            return False
        return hook

    caps = ("IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS", "LITERAL+", "ID")
    fake = make_fake(messages=three_messages(), capabilities=caps,
                     hooks={"ID": note("ID"), "SELECT": note("SELECT")})
    g = bridge(fake, {"upstream": {"pipelining": pipelining}})
    with login(g) as c:
        assert c.cmd("STAT").line == b"+OK 3 %d" % sum(len(m.body) for m in fake.messages)
        r = c.cmd("RETR 2", multiline=True)
        assert r.ok and r.body == as_retrieved(fake.message(2).body), r
        assert c.quit().ok
    wait_upstream_closed(fake)
    assert arrived_early == {"ID": pipelining, "SELECT": pipelining}
    # The session's own connection (readiness probes make others); this fake's login
    # answer carries no capabilities, hence the CAPABILITY after it.
    session = fake.received("ID")[0].conn
    verbs = [cmd.verb for cmd in fake.received() if cmd.conn == session]
    assert verbs[:6] == ["CAPABILITY", "ID", "AUTHENTICATE", "CAPABILITY", "SELECT", "UID FETCH"], verbs


def note_capability_after_login(arrived_early: list):
    """A CAPABILITY hook: notes, for one asked after login, whether the next command had
    already arrived before the answer."""
    def hook(session, cmd):
        if session.logged_in:
            arrived_early.append(session.next_command_arrived())
        return False
    return hook


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
@pytest.mark.parametrize("style", [None, "untagged", "code"],
                         ids=["login-answer-without", "untagged-during-login", "response-code"])
def test_capabilities_after_login(make_fake, bridge, style, pipelining):
    """Capabilities a login answer carries (Dovecot's [CAPABILITY] code, Gmail's untagged
    CAPABILITY before the OK) are used as they are; a login answer without them (Courier,
    Exchange) gets a CAPABILITY after it, which SELECT and the snapshot FETCH do not wait
    for when pipelining. Either way the set after login is the one used: UIDPLUS, which
    the server announces only then, lets QUIT expunge."""
    before = ("IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "LITERAL+")
    arrived_early: list = []
    fake = make_fake(messages=three_messages(), capabilities=before,
                     capabilities_after_login=before + ("UIDPLUS",), login_capabilities=style,
                     hooks={"CAPABILITY": note_capability_after_login(arrived_early)})
    g = bridge(fake, {"upstream": {"pipelining": pipelining}})
    with login(g) as c:
        assert c.cmd("STAT").line == b"+OK 3 %d" % sum(len(m.body) for m in fake.messages)
        r = c.cmd("RETR 3", multiline=True)
        assert r.ok and r.body == as_retrieved(fake.message(3).body), r
        assert c.cmd("DELE 1").ok
        assert c.quit().ok
    wait_upstream_closed(fake)
    session = fake.received("AUTHENTICATE")[0].conn
    verbs = [cmd.verb for cmd in fake.received() if cmd.conn == session]
    asked_again = ["CAPABILITY"] if style is None else []
    expected = ["CAPABILITY", "AUTHENTICATE"] + asked_again + ["SELECT", "UID FETCH"]
    assert verbs[:len(expected)] == expected, verbs
    assert "UID EXPUNGE" in verbs, verbs
    assert [m.uid for m in fake.messages] == [2, 3]
    assert arrived_early == ([pipelining] if style is None else [])


def test_snapshot_waits_for_capabilities_it_depends_on(make_fake, bridge):
    """A UIDL format that prints GUIDs makes the snapshot FETCH ask for EMAILID where the
    server offers OBJECTID, which this one announces only after login, in a CAPABILITY
    answer the gateway has to ask for: SELECT leaves behind that CAPABILITY, the FETCH
    waits for its answer."""
    before = ("IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "UIDPLUS", "LITERAL+")
    arrived_early: list = []
    fake = make_fake(messages=three_messages(), capabilities=before,
                     capabilities_after_login=before + ("OBJECTID",),
                     hooks={"CAPABILITY": note_capability_after_login(arrived_early)})
    g = bridge(fake, {"upstream": {"uidl_format": "%g"}})
    with login(g) as c:
        r = c.cmd("UIDL", multiline=True)
        assert r.ok, r
        assert [line.split()[1].decode() for line in r.body.splitlines()] == \
            [FakeImap.email_id(uid) for uid in (1, 2, 3)]
        assert c.quit().ok
    wait_upstream_closed(fake)
    snapshot = [cmd for cmd in fake.received("UID FETCH") if "1:*" in cmd.text]
    assert snapshot and "EMAILID" in snapshot[0].text, [cmd.text for cmd in snapshot]
    assert arrived_early == [True], "SELECT behind the CAPABILITY asked after login"


@pytest.mark.parametrize("answer", ["BAD Invalid messageset", "NO Nothing to fetch"])
def test_empty_mailbox_whose_server_refuses_fetching_all(make_fake, bridge, answer):
    """The snapshot FETCH leaves with SELECT, before the gateway knows the mailbox is
    empty: a server that refuses "UID FETCH 1:*" on an empty mailbox still gives an empty
    maildrop, not an error."""
    def fetch(session, cmd):
        session.line(f"{cmd.tag} {answer}")
        return True

    fake = make_fake(messages=[], hooks={"UID FETCH": fetch})
    g = bridge(fake)
    with login(g) as c:
        assert c.cmd("STAT").line == b"+OK 0 0"
        assert c.quit().ok
