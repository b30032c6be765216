# SPDX-License-Identifier: Apache-2.0
"""Deterministic test messages and the replies a POP3 server must derive from them.

All messages use CRLF line ends (what IMAP stores and returns, and what POP3
sizes count). The expected_* functions give what a client gets after removing
the dot-stuffing and the terminating ".\\r\\n" of a multi-line reply.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if os.path.join(_REPO, "scripts") not in sys.path:
    sys.path.insert(0, os.path.join(_REPO, "scripts"))

import demo_mail  # noqa: E402  (scripts/demo_mail.py)

CRLF = b"\r\n"


def _header(subject: str, n: int = 1) -> bytes:
    return (
        b"From: Alice Example <alice@example.test>\r\n"
        b"To: Bob Example <bob@example.test>\r\n"
        b"Date: Wed, 26 Nov 2025 12:00:%02d +0000\r\n" % (n % 60)
        + b"Message-ID: <%s.%d@popbridge.test>\r\n" % (subject.replace(" ", "-").encode(), n)
        + b"Subject: " + subject.encode() + b"\r\n"
        + b"MIME-Version: 1.0\r\n"
        + b"Content-Type: text/plain; charset=utf-8\r\n"
        + b"Content-Transfer-Encoding: 8bit\r\n"
        + b"\r\n"
    )


def simple(n: int, body_lines: int = 5) -> bytes:
    """A small plain message; n makes it unique."""
    body = b"".join(b"Line %d of message %d.\r\n" % (i, n) for i in range(1, body_lines + 1))
    return _header(f"simple {n}", n) + body


def tricky_messages() -> dict[str, bytes]:
    """Messages that exercise dot-stuffing, 8-bit data, long lines and line ends."""
    long_line = bytes(ord("a") + i % 26 for i in range(998))
    return {
        "dots": _header("dots")
        + b"Lines that start with a dot:\r\n"
        + b".\r\n"                      # a line that is only "."
        + b"..\r\n"
        + b"...\r\n"
        + b".hidden line\r\n"
        + b". spaced\r\n"
        + b"\r\n"
        + b".\r\n.\r\n"               # two "." lines in a row
        + b"end.\r\n"
        + b".\r\n",                   # last line is "."
        "eight_bit": _header("8-bit")
        + "Grüße aus Köln – ½ € ✓\r\n".encode("utf-8")
        + bytes(range(0x80, 0x100)) + b"\r\n"
        + b"\xff\xfe\x80 latin-1 \xe9t\xe9\r\n"
        + b"\x01\x02\x1b[0m control bytes\r\n"
        + b".\xc3\xa9 dot and 8-bit\r\n",
        "long_lines": _header("998-octet lines")
        + long_line + b"\r\n"
        + b"." + long_line[1:] + b"\r\n"        # 998 octets starting with "." (999 when stuffed)
        + b"short\r\n"
        + long_line + b"\r\n",
        "no_final_crlf": _header("no final CRLF")
        + b"first line\r\nsecond line\r\nlast line without CRLF",
        "no_final_crlf_dot": _header("no final CRLF, last line is a dot")
        + b"first line\r\n.",
        "empty_body": _header("empty body"),
        "many_short_lines": _header("many lines") + b"".join(b"%d\r\n" % i for i in range(1000)),
    }


def big_message(size: int, seed: str = "popbridge") -> bytes:
    """A deterministic message of exactly `size` octets (CRLF line ends, ending in
    CRLF, 78-octet lines, every 97th line starting with "." to exercise stuffing)."""
    head = _header(f"big {size} {seed}")
    if size < len(head) + 2:
        raise ValueError("size too small")
    parts = [head]
    remaining = size - len(head)
    block = hashlib.sha256(seed.encode()).digest()
    i = 0
    while remaining > 0:
        block = hashlib.sha256(block).digest()
        text = block.hex()  # 64 chars
        line = (text + text)[:76].encode()
        if i % 97 == 0:
            line = b"." + line[1:]
        line += CRLF
        if remaining - len(line) < 2:  # last line: pad it to the exact size
            line = b"x" * (remaining - 2) + CRLF
        parts.append(line)
        remaining -= len(line)
        i += 1
    msg = b"".join(parts)
    assert len(msg) == size and msg.endswith(CRLF)
    return msg


def demo_messages() -> list[bytes]:
    return [m for _, m in demo_mail.sample_messages()]


# ------------------------------------------------------- expected replies

def as_retrieved(message: bytes) -> bytes:
    """What an unstuffed RETR body must be: the message, plus a CRLF when it did
    not end with one (the server terminates the last line before ".")."""
    return message if message.endswith(CRLF) or not message else message + CRLF


def stuffed(message: bytes) -> bytes:
    """The message as a RETR body on the wire, without the terminator: CRLF-completed,
    with a "." added before every line that starts with "."."""
    m = as_retrieved(message)
    return re.sub(rb"(?:^|(?<=\r\n))\.", b"..", m)


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, body). A message without a blank line is all header."""
    i = message.find(b"\r\n\r\n")
    if i < 0:
        return message, b""
    return message[: i + 4], message[i + 4:]


def body_lines(body: bytes) -> list[bytes]:
    """Body lines with their CRLF (the last may lack it)."""
    return re.findall(rb"[^\n]*?\r\n|[^\n]+$", body, re.S) if body else []


def expected_top(message: bytes, n: int) -> bytes:
    """Unstuffed TOP msg n: the header, the blank line, and the first n body lines."""
    header, body = split_header(message)
    return as_retrieved(header + b"".join(body_lines(body)[:n]))


def dovecot_uidl(uid: int, uidvalidity: int) -> str:
    """Dovecot's default POP3 UIDL (pop3_uidl_format = %08Xu%08Xv): UID, then
    UIDVALIDITY, each as at least 8 zero-padded hex digits. Dovecot's X modifier
    prints lower-case hex (printf's %llx), e.g. "000000016b12d686"."""
    return "%08x%08x" % (uid, uidvalidity)
