# SPDX-License-Identifier: Apache-2.0
"""popbridge's UIDLs, sizes and octets against Dovecot's own POP3 server, same maildir.

A user migrating from Dovecot's POP3 (dovecot-pop3d) to popbridge in front of
Dovecot's IMAP must see the very same UIDL for every message, or the client
downloads the whole mailbox again. So each test runs one private Dovecot with
its POP3 server on (Dovecot(pop3_uidl_format=...)), fills a fresh mailbox
through IMAP (UIDs made non-contiguous by an expunge), asks Dovecot's POP3 and
then popbridge (upstream.uidl_format set to the same template) and compares
the answers byte for byte.

The two POP3 sessions never overlap: Dovecot's is QUIT before popbridge's
starts, and popbridge's upstream IMAP session has ended (Dovecot's log says
so) before Dovecot's POP3 is asked again.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.request
from typing import Callable, Iterator

import pytest

from harness import messages, tempdirs
from harness.clients import RawPop3, dot_unstuff
from harness.dovecot import Account, Dovecot
from harness.gateway import Gateway
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until


def imap_guids(d: Dovecot, user: str) -> dict[int, str]:
    """{uid: X-GUID} (Dovecot's message GUID, what %g prints)."""
    conn = d.imap(user)
    try:
        conn.select("INBOX", readonly=True)
        typ, data = conn.uid("FETCH", "1:*", "(UID X-GUID)")
        assert typ == "OK", data
        out = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            m = re.search(rb"UID (\d+) X-GUID (\S+?)\)?$", line or b"")
            if m:
                out[int(m.group(1))] = m.group(2).decode("ascii")
        return out
    finally:
        conn.logout()


def expunge(d: Dovecot, user: str, uid: int) -> None:
    """Expunges one message through IMAP (UIDPLUS's UID EXPUNGE)."""
    conn = d.imap(user)
    try:
        assert conn.select("INBOX")[0] == "OK"
        typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
        assert typ == "OK", data
        typ, data = conn.uid("EXPUNGE", str(uid))
        assert typ == "OK", data
    finally:
        conn.logout()


@contextlib.contextmanager
def dovecot_pop3(d: Dovecot, acct: Account, ctx) -> Iterator[RawPop3]:
    """A logged-in byte-exact session on Dovecot's own POP3 (STLS, certificate verified)."""
    with RawPop3(d.pop3_port, host=d.host, timeout=15) as c:
        assert c.greeting.ok, c.greeting
        r = c.cmd("STLS")
        assert r.ok, r
        c.starttls(ctx)
        c.login(acct.name, acct.password)
        yield c


@contextlib.contextmanager
def popbridge_pop3(g: Gateway, acct: Account, ctx) -> Iterator[RawPop3]:
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        c.login(acct.name, acct.password)
        yield c


def multiline_body(r) -> bytes:
    """The raw bytes of a multi-line reply after its status line (dot-stuffed, with
    the terminating ".\\r\\n"): what must be identical between the two servers."""
    assert r.ok, r
    return r.raw[len(r.line) + 2:]


def parse_listing(r) -> list[tuple[int, bytes]]:
    out = []
    for line in r.body_lines():
        n, value = line.split(b" ", 1)
        out.append((int(n), value))
    return out


def uidl_survey(c: RawPop3, count: int) -> dict:
    """UIDL (all) and UIDL n for each message, then QUIT."""
    r = c.cmd("UIDL", multiline=True)
    survey = {"listing": parse_listing(r), "raw": multiline_body(r),
              "single": [c.cmd(f"UIDL {n}").line for n in range(1, count + 1)]}
    assert c.quit().ok
    return survey


def gateway_session_over(d: Dovecot, user: str, before: int) -> None:
    """Waits until popbridge's upstream IMAP session (one more than `before`) has ended."""
    d.wait_session_ends(user, before + 1)


# (popbridge upstream.uidl_format, Dovecot pop3_uidl_format, expected UIDL from
# (uid, uidvalidity, guid)). The expectations are computed independently, so a
# setting that neither server applied (both falling back to a default) fails too.
CASES = [
    pytest.param("dovecot", "%08Xu%08Xv", lambda u, v, g: "%08x%08x" % (u, v), id="preset-dovecot"),
    pytest.param("uid", "%v.%u", lambda u, v, g: f"{v}.{u}", id="preset-uid"),
    pytest.param("%08Xu%08Xv", "%08Xu%08Xv", lambda u, v, g: "%08x%08x" % (u, v), id="dovecot-default-template"),
    pytest.param("%u", "%u", lambda u, v, g: str(u), id="uid-decimal"),
    pytest.param("%Xv-%Xu", "%Xv-%Xu", lambda u, v, g: "%x-%x" % (v, u), id="hex-unpadded"),
    # Dovecot 2.3's configuration check refuses long names in pop3_uidl_format
    # ("Unknown pop3_uidl_format variable: %{", var_get_key() returns '{'), so
    # Dovecot runs the equivalent short form; popbridge gets the long names.
    pytest.param("%{uidvalidity}.%{uid}", "%v.%u", lambda u, v, g: f"{v}.{u}", id="long-names"),
    pytest.param("%g", "%g", lambda u, v, g: g, id="guid"),
]


@pytest.mark.parametrize("uidl_format, pop3_uidl_format, expect", CASES)
def test_uidl_matches_dovecot_pop3(make_dovecot, make_gateway, ctx, uidl_format, pop3_uidl_format,
                                   expect: Callable[[int, int, str], str]):
    d = make_dovecot(pop3_uidl_format=pop3_uidl_format)
    acct = d.add_user()
    uids = d.append_many(acct.name, [messages.simple(n) for n in range(1, 7)])
    expunge(d, acct.name, uids[2])
    uids = uids[:2] + uids[3:]
    assert d.uids(acct.name) == uids and uids[2] - uids[1] == 2, "UIDs must have a gap"
    validity = d.uidvalidity(acct.name)
    guids = imap_guids(d, acct.name)
    expected = [(n, expect(uid, validity, guids[uid])) for n, uid in enumerate(uids, 1)]

    # Dovecot's POP3 first (each helper session is QUIT before it returns).
    dovecot_list = d.pop3_uidls(acct.name)
    assert dovecot_list == expected, f"Dovecot's pop3_uidl_format={pop3_uidl_format!r} was not applied as assumed"
    if uidl_format == "dovecot":
        assert all(re.fullmatch(r"[0-9a-f]{16}", u) for _, u in dovecot_list), dovecot_list
    with dovecot_pop3(d, acct, ctx) as c:
        dovecot_survey = uidl_survey(c, len(uids))

    # Then popbridge, in front of the same Dovecot.
    g = make_gateway(d, {"upstream": {"uidl_format": uidl_format}})
    ended = d.settled_session_ends(acct.name)
    with popbridge_pop3(g, acct, ctx) as c:
        bridge_survey = uidl_survey(c, len(uids))
    gateway_session_over(d, acct.name, ended)

    bridge_list = [(n, u.decode("ascii", "replace")) for n, u in bridge_survey["listing"]]
    assert bridge_list == dovecot_list, (
        f"popbridge uidl_format={uidl_format!r} vs Dovecot pop3_uidl_format={pop3_uidl_format!r}")
    assert bridge_survey["raw"] == dovecot_survey["raw"], "UIDL replies must be identical byte for byte"
    assert bridge_survey["single"] == dovecot_survey["single"], "UIDL n replies must be identical"
    if uidl_format == "dovecot":
        assert all(re.fullmatch(rb"[0-9a-f]{16}", u) for _, u in bridge_survey["listing"]), \
            f"the dovecot preset prints 16 lower-case hex digits: {bridge_survey['listing']}"
    # popbridge changed nothing Dovecot's POP3 would see.
    assert d.pop3_uidls(acct.name) == dovecot_list


# ------------------------------------------------------------------ sizes

def size_survey(c: RawPop3, retr: tuple[int, ...] = ()) -> dict:
    """STAT, LIST (all), LIST n, UIDL and RETR of the given messages, then QUIT."""
    stat = c.cmd("STAT")
    assert stat.ok, stat
    r = c.cmd("LIST", multiline=True)
    listing = parse_listing(r)
    survey = {"stat": stat.line, "listing": [(n, int(v)) for n, v in listing], "raw": multiline_body(r),
              "single": [c.cmd(f"LIST {n}").line for n, _ in listing],
              "uidl": multiline_body(c.cmd("UIDL", multiline=True)), "retr": {}}
    for n in retr:
        m = c.cmd(f"RETR {n}", multiline=True)
        survey["retr"][n] = multiline_body(m)
    assert c.quit().ok
    return survey


def compare_sizes(d: Dovecot, g: Gateway, acct: Account, ctx, retr: tuple[int, ...] = ()) -> dict:
    """Dovecot's POP3 (QUIT) then popbridge (QUIT, upstream session over): asserts
    they agree on STAT, LIST, LIST n, UIDL and the RETR bodies; returns Dovecot's survey."""
    dovecot_sizes = d.pop3_sizes(acct.name)
    with dovecot_pop3(d, acct, ctx) as c:
        want = size_survey(c, retr)
    assert want["listing"] == dovecot_sizes
    ended = d.settled_session_ends(acct.name)
    with popbridge_pop3(g, acct, ctx) as c:
        got = size_survey(c, retr)
    gateway_session_over(d, acct.name, ended)
    assert got["listing"] == want["listing"], "LIST sizes differ from Dovecot's POP3"
    assert got["raw"] == want["raw"], "LIST replies must be identical byte for byte"
    assert got["single"] == want["single"], "LIST n replies must be identical"
    assert got["stat"] == want["stat"], "STAT must be identical"
    assert got["uidl"] == want["uidl"], "UIDL replies must be identical"
    for n in retr:
        assert got["retr"][n] == want["retr"][n], f"RETR {n} must deliver the same octets"
    return want


def test_long_listings_match_dovecot_pop3(make_dovecot, make_gateway, ctx):
    """UIDL and LIST of a mailbox kept on the server are written a slice of lines at a
    time, within the write watermarks (here small, so the rest waits for the client to
    drain the queue): across the slices' edges, and with a gap in the UIDs, the listings
    are byte for byte Dovecot's own POP3's."""
    d = make_dovecot(pop3_uidl_format="%08Xu%08Xv")
    acct = d.add_user()
    uids = d.append_many(acct.name, [b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(2500)])
    expunge(d, acct.name, uids[1500])
    g = make_gateway(d, {"limits": {"client_write_high_watermark": "8KiB",
                                    "client_write_low_watermark": "2KiB"}})
    want = compare_sizes(d, g, acct, ctx)
    assert len(want["listing"]) == 2499 and len(want["uidl"]) > 2 * 16 * 1024, \
        "more than two slices, and more than the watermark"


def bare_lf_message() -> bytes:
    """8-bit header bytes (UTF-8 and raw Latin-1/binary), CRLF header, bare-LF body
    with dot lines. Not what imaplib's append() could send: see Dovecot.append_raw."""
    header = (b"From: J\xc3\xb6rg Example <joerg@example.test>\r\n"
              b"To: Bob Example <bob@example.test>\r\n"
              b"Subject: caf\xe9 \xff\xfe 8-bit header\r\n"
              b"X-Raw: \x80\x81\x9f end\r\n"
              b"Message-ID: <bare-lf.1@popbridge.test>\r\n"
              b"\r\n")
    body = b"bare\nLF\nbody\n.\n..two dots\n\xe9t\xe9 latin-1\nlast line\n"
    return header + body


def test_list_sizes_match_dovecot_pop3(make_dovecot, make_gateway, ctx):
    d = make_dovecot(pop3_uidl_format="%08Xu%08Xv")
    acct = d.add_user()
    tricky = messages.tricky_messages()
    msgs = [messages.simple(1), tricky["dots"], tricky["eight_bit"], tricky["long_lines"],
            tricky["no_final_crlf"], tricky["empty_body"], messages.simple(7, body_lines=40)]
    uids = d.append_many(acct.name, msgs)
    expunge(d, acct.name, uids[1])
    del msgs[1]
    g = make_gateway(d)

    before = compare_sizes(d, g, acct, ctx)
    assert before["listing"] == [(n, len(m)) for n, m in enumerate(msgs, 1)], "CRLF messages: size = octets"

    raw = bare_lf_message()
    bare_lfs = len(re.findall(rb"(?<!\r)\n", raw))
    assert bare_lfs == 7
    d.append_raw(acct.name, raw)
    n = len(msgs) + 1
    after = compare_sizes(d, g, acct, ctx, retr=(n,))
    assert after["listing"][:-1] == before["listing"], "the old messages keep their sizes"
    # Both count a bare LF as CRLF (RFC 1939 sizes are of the CRLF form).
    assert after["listing"][-1] == (n, len(raw) + bare_lfs), after["listing"]
    body = after["retr"][n]
    assert body.endswith(b"\r\n.\r\n") and b"\n" not in body.replace(b"\r\n", b""), "RETR sends CRLF only"
    assert len(dot_unstuff(body[:-3])) == len(raw) + bare_lfs, "RETR delivers as many octets as LIST announced"


# ------------------------------------------------------------------ X-UIDL reuse

def with_xuidl(n: int, fields: bytes) -> bytes:
    """messages.simple(n) with header fields put in front (X-UIDL variants)."""
    return fields + messages.simple(n)


XUIDL_MESSAGES = [
    with_xuidl(1, b"X-UIDL: 0a1b2c3d4e5f-old-server\r\n"),
    with_xuidl(2, b"X-UIDL:    padded-value   \r\n"),
    with_xuidl(3, b"X-UIDL:\r\n folded-value\r\n"),
    with_xuidl(4, b"x-uidl: lower-case-name\r\n"),
    with_xuidl(5, b"X-UIDL: first-of-two\r\nX-UIDL: second-of-two\r\n"),
    with_xuidl(6, b"X-UIDL: 0a1b2c3d4e5f-old-server\r\n"),  # a repeat of message 1's
    messages.simple(7),                                      # none
    with_xuidl(8, b"X-UIDL:\r\n"),                           # empty
]


def test_reuse_xuidl_matches_dovecot_pop3(make_dovecot, make_gateway, ctx):
    """upstream.reuse_xuidl against Dovecot's pop3_reuse_xuidl on the same mailbox."""
    d = make_dovecot(pop3_uidl_format="%08Xu%08Xv",
                     extra_config="pop3_reuse_xuidl = yes\npop3_uidl_duplicates = rename\n")
    acct = d.add_user()
    uids = d.append_many(acct.name, XUIDL_MESSAGES)
    validity = d.uidvalidity(acct.name)

    with dovecot_pop3(d, acct, ctx) as c:
        dovecot_survey = uidl_survey(c, len(uids))
    # Dovecot 2.3.19 prints the first X-UIDL's value with leading blanks removed and
    # nothing else changed, which is not always a valid UIDL. Recorded here so that the
    # comparison below cannot pass by both servers ignoring X-UIDL.
    assert dovecot_survey["raw"] == (
        b"1 0a1b2c3d4e5f-old-server\r\n"
        b"2 padded-value   \r\n"            # trailing blanks kept
        b"3 \n folded-value\r\n"            # the folding LF sent as is: a bare LF
        b"4 lower-case-name\r\n"
        b"5 first-of-two\r\n"
        b"6 0a1b2c3d4e5f-old-server-2\r\n"  # pop3_uidl_duplicates = rename
        + b"7 %08x%08x\r\n" % (uids[6], validity)
        + b"8 \r\n"                         # an empty UIDL
        b".\r\n"), dovecot_survey["raw"]

    g = make_gateway(d, {"upstream": {"uidl_format": "dovecot", "reuse_xuidl": True}})
    ended = d.settled_session_ends(acct.name)
    with popbridge_pop3(g, acct, ctx) as c:
        bridge_survey = uidl_survey(c, len(uids))
    gateway_session_over(d, acct.name, ended)
    # Identical wherever Dovecot's UIDL is a valid one; where it is not (RFC 1939: 1-70
    # characters 0x21-0x7E), popbridge sends what a client that splits the line on
    # blanks has stored: trimmed, unfolded, and the format's UIDL for an empty one.
    assert bridge_survey["raw"] == (
        b"1 0a1b2c3d4e5f-old-server\r\n"
        b"2 padded-value\r\n"
        b"3 folded-value\r\n"
        b"4 lower-case-name\r\n"
        b"5 first-of-two\r\n"
        b"6 0a1b2c3d4e5f-old-server-2\r\n"
        + b"7 %08x%08x\r\n" % (uids[6], validity)
        + b"8 %08x%08x\r\n" % (uids[7], validity)
        + b".\r\n"), bridge_survey["raw"]
    for n in (1, 4, 5, 6, 7):
        assert bridge_survey["single"][n - 1] == dovecot_survey["single"][n - 1], f"UIDL {n}"

    # Without the setting the same mailbox gets the format's UIDLs, X-UIDL ignored.
    plain = make_gateway(d, {"upstream": {"uidl_format": "dovecot"}})
    ended = d.settled_session_ends(acct.name)
    with popbridge_pop3(plain, acct, ctx) as c:
        survey = uidl_survey(c, len(uids))
    gateway_session_over(d, acct.name, ended)
    assert [u.decode() for _, u in survey["listing"]] == ["%08x%08x" % (u, validity) for u in uids]


# ------------------------------------------------------------------ client workarounds

WORKAROUND_MESSAGES = [
    b"From: a@example.test\r\nSubject: NUL octets\r\n\r\nbody with \x00 a NUL\r\n\x00\r\n",
    b"From: a@example.test\r\nSubject: header only\r\n",
    b"From: a@example.test\r\nSubject: header only, no final line end",
    messages.simple(4),
]


@pytest.mark.parametrize("workarounds", [True, False], ids=["workarounds-on", "workarounds-off"])
def test_client_workarounds_match_dovecot_pop3(make_dovecot, make_gateway, ctx, workarounds):
    """pop3.workarounds [outlook-no-nuls, oe-ns-eoh] against Dovecot's
    pop3_client_workarounds with the same names: RETR and TOP n 0 byte for byte."""
    d = make_dovecot(pop3_uidl_format="%08Xu%08Xv", extra_config=(
        "pop3_client_workarounds = outlook-no-nuls oe-ns-eoh\n" if workarounds else ""))
    acct = d.add_user()
    for message in WORKAROUND_MESSAGES:
        d.append_binary(acct.name, message)
    commands = [f"{verb} {n}" for n in range(1, len(WORKAROUND_MESSAGES) + 1)
                for verb in ("RETR", "TOP")]

    def survey(c: RawPop3) -> dict[str, bytes]:
        out = {}
        for command in commands:
            r = c.cmd(command + (" 0" if command.startswith("TOP") else ""), multiline=True)
            out[command] = multiline_body(r)
        assert c.quit().ok
        return out

    with dovecot_pop3(d, acct, ctx) as c:
        want = survey(c)
    settings = {"pop3": {"workarounds": ["outlook-no-nuls", "oe-ns-eoh"] if workarounds else []}}
    g = make_gateway(d, settings)
    ended = d.settled_session_ends(acct.name)
    with popbridge_pop3(g, acct, ctx) as c:
        got = survey(c)
    gateway_session_over(d, acct.name, ended)

    # What Dovecot does, so that the comparison cannot pass by both doing nothing.
    empty_line_added = b"Subject: header only\r\n\r\n.\r\n"
    assert want["RETR 2"].endswith(empty_line_added) == workarounds, want["RETR 2"]
    assert want["TOP 3"].endswith(b"no final line end\r\n\r\n.\r\n") == workarounds, want["TOP 3"]
    assert (b"\x00" in want["RETR 1"]) != workarounds, want["RETR 1"]
    assert want["RETR 4"] == messages.stuffed(messages.simple(4)) + b".\r\n", "a message with a body is unchanged"

    for command in commands:
        if command == "RETR 1" and not workarounds:
            # Dovecot's IMAP (unlike its POP3) sends NUL as 0x80 in a BODY[] literal, as
            # IMAP requires; popbridge relays that. test_upstream_quirks has an upstream
            # that sends NUL as is.
            assert got[command] == want[command].replace(b"\x00", b"\x80"), got[command]
            continue
        assert got[command] == want[command], f"{command}: popbridge {got[command]!r}, Dovecot {want[command]!r}"


# ------------------------------------------------------------------ UIDVALIDITY changes

def test_uidvalidity_change_is_logged_and_counted(make_dovecot, make_gateway, ctx):
    """A mailbox recreated (a restore, a migration tool's second pass) gets a new
    UIDVALIDITY, so every UIDL changes and clients download everything again: popbridge
    says so at the next login, with a warning and popbridge_uidvalidity_changes_total."""
    d = make_dovecot()
    acct = d.add_user()
    d.create_mailbox(acct.name, "POP", messages.simple(1))
    first = d.uidvalidity(acct.name, "POP")
    port = free_port()
    g = make_gateway(d, {"upstream": {"mailbox": "POP"}, "metrics": {"address": f"127.0.0.1:{port}"}})

    def uidls() -> list[bytes]:
        ended = d.settled_session_ends(acct.name)
        with popbridge_pop3(g, acct, ctx) as c:
            listing = uidl_survey(c, 1)["listing"]
        gateway_session_over(d, acct.name, ended)
        return listing

    def changes() -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        m = re.search(r"^popbridge_uidvalidity_changes_total (\S+)$", body, re.M)
        assert m, "popbridge_uidvalidity_changes_total is missing"
        return float(m.group(1))

    before = uidls()
    assert uidls() == before and changes() == 0, "an unchanged mailbox is not reported"
    # Dovecot takes a new mailbox's UIDVALIDITY from the clock: recreate until it differs.
    wait_until(lambda: d.create_mailbox(acct.name, "POP", messages.simple(1), replace=True)
               or d.uidvalidity(acct.name, "POP") != first, 10 * TIME_FACTOR,
               "a recreated mailbox with another UIDVALIDITY")
    now = d.uidvalidity(acct.name, "POP")
    after = uidls()
    assert after != before, "the UIDLs changed with UIDVALIDITY"
    assert changes() == 1
    warned = [line for line in g.log_text().splitlines() if "event=uidvalidity_changed" in line]
    assert len(warned) == 1 and f"before={first} " in warned[0] + " " and f"now={now}" in warned[0], warned
    assert "mailbox=POP" in warned[0], warned


# ------------------------------------------------------------------ UIDL map

def test_uidl_map_keeps_the_old_servers_uidls(make_dovecot, make_gateway, ctx):
    """The old server (Dovecot's POP3 with pop3_uidl_format %g, standing in for one whose
    UIDLs cannot be derived over IMAP) gave each message a UIDL; a migration tool wrote
    them into the user's map file. popbridge, with another uidl_format, prints the old
    UIDL for every mapped message, its own for new mail, and ignores a map written for
    another UIDVALIDITY."""
    d = make_dovecot(pop3_uidl_format="%g")
    acct = d.add_user()
    uids = d.append_many(acct.name, [messages.simple(n) for n in range(1, 4)])
    old = d.pop3_uidls(acct.name)  # what the clients have stored
    validity = d.uidvalidity(acct.name)
    maps = tempdirs.make("uidl-maps")
    try:
        path = os.path.join(maps, acct.name)
        with open(path, "w") as f:
            f.write(f"# from the old server\nuidvalidity {validity}\n")
            f.writelines(f"{uid} {uidl}\n" for uid, (_, uidl) in zip(uids, old))
        new_uid = d.append(acct.name, messages.simple(4))  # arrived after the migration
        g = make_gateway(d, {"upstream": {"uidl_format": "uid", "uidl_map": {"directory": maps}}})

        def survey() -> list[str]:
            ended = d.settled_session_ends(acct.name)
            with popbridge_pop3(g, acct, ctx) as c:
                listing = uidl_survey(c, 4)["listing"]
            gateway_session_over(d, acct.name, ended)
            return [u.decode() for _, u in listing]

        assert survey() == [u for _, u in old] + [f"{validity}.{new_uid}"]
        assert "mapped=3" in g.log_text()

        with open(path, "w") as f:  # written for a mailbox since rebuilt
            f.write(f"uidvalidity {validity + 1}\n" + "".join(f"{uid} {uidl}\n" for uid, (_, uidl) in zip(uids, old)))
        assert survey() == [f"{validity}.{uid}" for uid in uids + [new_uid]]
        stale = [l for l in g.log_text().splitlines() if "event=uidl_map_stale" in l]
        assert len(stale) == 1 and f"map_uidvalidity={validity + 1}" in stale[0], stale
    finally:
        tempdirs.remove(maps)
