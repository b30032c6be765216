# SPDX-License-Identifier: Apache-2.0
"""popbridge uidl-import against real servers: Dovecot's own POP3 is the old server,
and the messages a migration tool copied sit in another mailbox of the same Dovecot,
with new UIDs, another order, and the headers such tools add. After the import the
gateway prints the old server's UIDL for every matched message, so a client with
`keep` downloads nothing again."""
from __future__ import annotations

import os
import poplib
import re
import subprocess

from harness import messages, tempdirs
from harness.auth_servers import crypt_hash, dovecot_identity_config, write_file
from harness.clients import RawPop3
from harness.dovecot import Dovecot
from harness.gateway import binary_path
from harness.wait import TIME_FACTOR, wait_until

MIGRATED = "Migrated"


def run_import(g, d: Dovecot, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary_path(), "uidl-import", "--config", g.config_path,
         "--source", f"pop3://127.0.0.1:{d.pop3_port}", "--source-ca", d.pki.ca, *args],
        capture_output=True, text=True, timeout=120)


def copy_into(d: Dovecot, user: str, raw: list[bytes]) -> list[int]:
    """What a migration tool does: APPEND to the new mailbox, which gives new UIDs."""
    conn = d.imap(user)
    try:
        conn.create(MIGRATED)
        for message in raw:
            typ, data = conn.append(MIGRATED, None, None, message)
            assert typ == "OK", data
        conn.select(MIGRATED)
        typ, data = conn.uid("SEARCH", None, "ALL")
        return [int(u) for u in data[0].split()]
    finally:
        conn.logout()


def set_metadata(d: Dovecot, user: str, text: str) -> None:
    """SETMETADATA with a literal, which imaplib cannot send: written raw (LITERAL+)."""
    conn = d.imap(user)
    try:
        data = text.encode()
        conn.send(b'X1 SETMETADATA "%s" (/private/vendor/popbridge/uidl-map {%d+}\r\n%s)\r\n'
                  % (MIGRATED.encode(), len(data), data))
        while not (line := conn.readline()).startswith(b"X1 "):
            pass
        assert line.startswith(b"X1 OK"), line
    finally:
        conn.logout()


def keep_client(client: poplib.POP3, user: str, password: str, seen: set[str]) -> int:
    """A client with "leave mail on the server" (mpop's `keep on`, fetchmail's `keep`):
    downloads every message whose UIDL it has not seen, remembers it; how many it took."""
    client.user(user)
    client.pass_(password)
    taken = 0
    for line in client.uidl()[1]:
        number, uidl = line.decode().split(" ", 1)
        if uidl not in seen:
            client.retr(int(number))
            seen.add(uidl)
            taken += 1
    client.quit()
    return taken


def assert_only_new_mail_downloaded(d: Dovecot, g, acct, ctx, old_count: int) -> None:
    """What a client that kept its mail on the old server does after the switch: it
    downloads only the one message that arrived upstream (its old copies carry old UIDLs)."""
    seen: set[str] = set()
    old_server = poplib.POP3("127.0.0.1", d.pop3_port, timeout=15)
    old_server.stls(context=d.client_context())
    assert keep_client(old_server, acct.name, acct.password, seen) == old_count
    gateway = poplib.POP3_SSL("127.0.0.1", g.pop3s_port, context=ctx, timeout=15)
    assert keep_client(gateway, acct.name, acct.password, seen) == 1, "downloaded again"


def gateway_uidls(g, acct, ctx) -> list[str]:
    with RawPop3(g.pop3s_port, tls_context=ctx, timeout=15) as c:
        c.login(acct.name, acct.password)
        r = c.cmd("UIDL", multiline=True)
        c.cmd("QUIT")
    assert r.ok, r.text
    return [line.split(b" ", 1)[1].decode() for line in r.body_lines()]


def test_uidl_import_carries_the_old_uidls_over(make_dovecot, make_gateway, ctx):
    d = make_dovecot(pop3_uidl_format="%08Xv%08Xu-old")
    acct = d.add_user()
    originals = [messages.simple(n) for n in range(1, 5)]
    d.append_many(acct.name, originals)  # the old server's INBOX: four messages
    old = [u for _, u in d.pop3_uidls(acct.name)]
    # Three of them migrated, in another order, each with the headers an mbox-era
    # tool adds; message 4 was not migrated; one message arrived only upstream.
    marked = [b"Status: RO\r\nX-UID: 9%d\r\n" % i + m for i, m in enumerate(originals)]
    new_uids = copy_into(d, acct.name, [marked[2], marked[0], marked[1], messages.simple(99)])
    maps = tempdirs.make("uidl-maps")
    password_file = os.path.join(maps, "password")
    try:
        with open(password_file, "w") as f:
            f.write(acct.password + "\n")
        g = make_gateway(d, {"upstream": {"mailbox": MIGRATED, "uidl_format": "uid",
                                          "uidl_map": {"directory": maps}}})
        validity = d.uidvalidity(acct.name, MIGRATED)

        dry = run_import(g, d, "--user", acct.name, "--password-file", password_file, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert not os.path.exists(os.path.join(maps, acct.name)), "a dry run writes nothing"

        start = len(d.log_text())
        done = run_import(g, d, "--user", acct.name, "--password-file", password_file)
        assert done.returncode == 0, done.stdout + done.stderr
        # The old server offered STLS, so the password went over TLS (the CA checked).
        wait_until(lambda: re.search(rf"pop3-login: (Info: )?Login: user=<{acct.name}>.*, TLS", d.log_text()[start:]),
                   10 * TIME_FACTOR, "Dovecot's POP3 login over TLS", on_timeout=d.diagnostics)
        line = done.stdout.strip()
        assert f"user={acct.name} result=ok matched=3 unmatched_old=1 unmatched_new=1 " in line, line
        assert old[3] in done.stderr, "the unmatched old message is reported"

        expected = [old[2], old[0], old[1], f"{validity}.{new_uids[3]}"]
        assert gateway_uidls(g, acct, ctx) == expected
        assert_only_new_mail_downloaded(d, g, acct, ctx, old_count=4)

        with open(os.path.join(maps, acct.name)) as f:
            first = f.read()
        again = run_import(g, d, "--user", acct.name, "--password-file", password_file)
        assert again.returncode == 0 and again.stdout == done.stdout, "a re-run is safe"
        with open(os.path.join(maps, acct.name)) as f:
            assert f.read() == first
    finally:
        tempdirs.remove(maps)


def test_uidl_import_reports_a_failed_login_and_goes_on(make_dovecot, make_gateway, ctx):
    d = make_dovecot(pop3_uidl_format="%08Xv%08Xu")
    good = d.add_user()
    bad = d.add_user()
    d.append_many(good.name, [messages.simple(1)])
    copy_into(d, good.name, [messages.simple(1)])
    maps = tempdirs.make("uidl-maps")
    credentials = os.path.join(maps, "credentials")
    try:
        with open(credentials, "w") as f:
            f.write(f"# user<TAB>password\n{bad.name}\twrong-password\n{good.name}\t{good.password}\n")
        g = make_gateway(d, {"upstream": {"mailbox": MIGRATED, "uidl_map": {"directory": maps}}})
        run = run_import(g, d, "--credentials", credentials)
        assert run.returncode == 1, run.stdout + run.stderr
        lines = run.stdout.splitlines()
        assert len(lines) == 2, lines
        assert lines[0].startswith(f"user={bad.name} result=error side=old "), lines[0]
        assert re.match(rf"user={good.name} result=ok matched=1 ", lines[1]), lines[1]
        assert not os.path.exists(os.path.join(maps, bad.name))
    finally:
        tempdirs.remove(maps)


def test_uidl_import_refuses_bad_usage(make_dovecot, make_gateway):
    d = make_dovecot(pop3_uidl_format="%08Xv%08Xu")
    g = make_gateway(d)
    run = run_import(g, d, "--user", "x")
    assert run.returncode == 2 and "--password-file" in run.stderr, run.stderr
    run = subprocess.run([binary_path(), "uidl-import", "--config", g.config_path,
                          "--source", "imap://127.0.0.1:143", "--user", "x", "--password-file", "/dev/null",
                          "--dry-run"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "pop3s://" in run.stderr, run.stderr


def test_uidl_import_logs_in_upstream_as_the_config_says(make_dovecot, make_gateway):
    """upstream.login.mode master: the old server gets the user's own password, the
    upstream the gateway's master login, as for a POP3 session."""
    files = tempdirs.make("uidl-import-identity")
    os.chmod(files, 0o755)  # Dovecot's auth process reads the master passdb from here
    try:
        master = ("popbridge-master", "master-secret-9")
        d = make_dovecot(pop3_uidl_format="%08Xv%08Xu",
                         extra_config=dovecot_identity_config(files, master=master))
        acct = d.add_user()
        d.append_many(acct.name, [messages.simple(1), messages.simple(2)])
        copy_into(d, acct.name, [messages.simple(2), messages.simple(1)])
        users = write_file(os.path.join(files, "users"), [f"{acct.name}:{crypt_hash('pop3-pw', 'sha512')}"])
        master_file = write_file(os.path.join(files, "master"), [master[1]])
        password_file = write_file(os.path.join(files, "password"), [acct.password])
        g = make_gateway(d, {"auth": {"mode": "users_file", "users_file": users},
                             "upstream": {"mailbox": MIGRATED, "uidl_map": {"directory": files},
                                          "login": {"mode": "master", "master_user": master[0],
                                                    "master_password_file": master_file}}})
        start = len(d.log_text())
        run = run_import(g, d, "--user", acct.name, "--password-file", password_file)
        assert run.returncode == 0, run.stdout + run.stderr
        assert " result=ok matched=2 unmatched_old=0 unmatched_new=0 " in run.stdout, run.stdout
        wait_until(lambda: f"Master user logging in as {acct.name}" in d.log_text()[start:],
                   10 * TIME_FACTOR, "Dovecot's log of the master login", on_timeout=d.diagnostics)
    finally:
        tempdirs.remove(files)


def test_uidl_import_to_imap_metadata(make_dovecot, make_gateway, ctx):
    """upstream.uidl_map.store: metadata: the map goes onto the mailbox (RFC 5464), so it
    travels with it; the gateway reads it back at login. An upstream without METADATA is
    refused with a clear message, and its users log in with fresh UIDLs."""
    attributes = tempdirs.make("dovecot-attributes")
    os.chmod(attributes, 0o777)  # written by Dovecot's mail processes (mail_uid)
    try:
        d = make_dovecot(pop3_uidl_format="%08Xv%08Xu-old", extra_config=(
            f"mail_attribute_dict = file:{attributes}/%u\n"
            "protocol imap {\n  imap_metadata = yes\n}\n"))
        acct = d.add_user()
        originals = [messages.simple(n) for n in range(1, 4)]
        d.append_many(acct.name, originals)
        old = [u for _, u in d.pop3_uidls(acct.name)]
        new_uids = copy_into(d, acct.name, [originals[1], originals[0], messages.simple(50)])
        password_file = os.path.join(attributes, "password")
        with open(password_file, "w") as f:
            f.write(acct.password + "\n")
        g = make_gateway(d, {"upstream": {"mailbox": MIGRATED, "uidl_format": "uid",
                                          "uidl_map": {"store": "metadata"}}})
        validity = d.uidvalidity(acct.name, MIGRATED)
        run = run_import(g, d, "--user", acct.name, "--password-file", password_file)
        assert run.returncode == 0, run.stdout + run.stderr
        assert " result=ok matched=2 unmatched_old=1 unmatched_new=1 " in run.stdout, run.stdout
        assert run.stdout.strip().endswith("map=metadata"), run.stdout
        expected = [old[1], old[0], f"{validity}.{new_uids[2]}"]
        assert gateway_uidls(g, acct, ctx) == expected
        assert_only_new_mail_downloaded(d, g, acct, ctx, old_count=3)
        assert "mapped=2" in g.log_text()
        # The gateway keeps the map it read (per process, UIDVALIDITY unchanged, minutes at
        # most): a map changed behind its back is not read at the next login.
        set_metadata(d, acct.name, f"uidvalidity {validity}\n{new_uids[0]} changed-uidl\n")
        assert gateway_uidls(g, acct, ctx) == expected
    finally:
        tempdirs.remove(attributes)

    plain = make_dovecot(pop3_uidl_format="%08Xv%08Xu")
    acct = plain.add_user()
    plain.append_many(acct.name, [messages.simple(1)])
    copy_into(plain, acct.name, [messages.simple(1)])
    files = tempdirs.make("uidl-import-pw")
    try:
        password_file = os.path.join(files, "password")
        with open(password_file, "w") as f:
            f.write(acct.password + "\n")
        g = make_gateway(plain, {"upstream": {"mailbox": MIGRATED, "uidl_map": {"store": "metadata"}}})
        run = run_import(g, plain, "--user", acct.name, "--password-file", password_file)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "result=error side=map" in run.stdout and "METADATA" in run.stdout, run.stdout
        assert len(gateway_uidls(g, acct, ctx)) == 1, "the login works without a map"
        assert "does not offer METADATA" in g.log_text()
    finally:
        tempdirs.remove(files)
