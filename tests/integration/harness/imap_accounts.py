# SPDX-License-Identifier: Apache-2.0
"""imaplib helpers the tests' IMAP servers (Dovecot, Cyrus, Courier) share: putting exact
octets into a mailbox and emptying one. A server class mixes ImapAccounts in and gives
imap(user), a logged-in imaplib connection."""

from __future__ import annotations

import imaplib
import re


def appended_uid(typ: str, data) -> int:
    """The UID an APPEND answer's [APPENDUID ...] (UIDPLUS) gives."""
    if typ != "OK":
        raise RuntimeError(f"APPEND failed: {typ} {data}")
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[-1] or b"")
    if not m:
        raise RuntimeError(f"no APPENDUID in {data!r}")
    return int(m.group(2))


def check_crlf_octets(message: bytes) -> None:
    """Bare CR or LF and NUL are refused before sending: imaplib or the server would change
    them, and the tests compare octets."""
    if re.search(rb"\r(?!\n)|(?<!\r)\n", message) or b"\0" in message:
        raise ValueError("message has a bare CR or LF or a NUL; use CRLF line ends")


def append_octets(conn: imaplib.IMAP4, message: bytes, mailbox: str = "INBOX", flags: str = "") -> int:
    """APPENDs `message` exactly as given on a logged-in connection; returns its UID."""
    conn.literal = message  # what imaplib.append() sets, minus its line-end rewriting
    args = [imaplib.IMAP4._quote(conn, mailbox)] + ([f"({flags})"] if flags else [])
    return appended_uid(*conn._simple_command("APPEND", *args))


class ImapAccounts:
    def imap(self, user: str, *args, **kwargs) -> imaplib.IMAP4:
        raise NotImplementedError

    def clear(self, user: str, mailbox: str = "INBOX") -> None:
        """Removes every message of the user's `mailbox`."""
        conn = self.imap(user)
        try:
            typ, data = conn.select(imaplib.IMAP4._quote(conn, mailbox))
            if typ == "OK" and int(data[0]) > 0:  # "1:*" is a BAD in an empty mailbox
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                conn.expunge()
        finally:
            conn.logout()
