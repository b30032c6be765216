#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sample e-mails for popbridge's demo and tests.

sample_messages() returns a list of (name, bytes): a few short, realistic
messages with CRLF line ends, one of them multipart with an attachment-like
part. Everything is deterministic (fixed dates, ids and attachment bytes), so
sizes and UIDL-independent checks are stable.

Run it to write the messages as .eml files:  demo_mail.py [DIRECTORY]
"""

from __future__ import annotations

import base64
import os
import sys

__all__ = ["sample_messages"]


def _crlf(text: str) -> bytes:
    """Text with "\\n" line ends -> UTF-8 bytes with CRLF line ends."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _attachment_bytes() -> bytes:
    # A small deterministic "PDF-like" binary blob.
    head = b"%PDF-1.4\n% popbridge demo attachment\n"
    return head + bytes((i * 37 + 11) % 256 for i in range(600))


def _b64_lines(data: bytes, width: int = 76) -> str:
    enc = base64.b64encode(data).decode("ascii")
    return "\n".join(enc[i:i + width] for i in range(0, len(enc), width))


def sample_messages() -> list[tuple[str, bytes]]:
    welcome = _crlf("""\
Return-Path: <support@example.net>
From: Example Support <support@example.net>
To: Alice <alice@example.org>
Subject: Welcome to your new mailbox
Date: Mon, 24 Nov 2025 09:15:00 +0000
Message-ID: <welcome-0001@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hello Alice,

your mailbox is ready. You can read it with any POP3 client:
  server: pop.example.org, port 995 (TLS)

.signature lines and lines that start with a dot are fine too:
.
Regards,
Example Support
""")

    meeting = _crlf("""\
From: Bob <bob@example.org>
To: Alice <alice@example.org>
Cc: Carol <carol@example.org>
Subject: =?UTF-8?Q?Planung_f=C3=BCr_Donnerstag?=
Date: Tue, 25 Nov 2025 14:02:31 +0100
Message-ID: <meeting-20251125@example.org>
In-Reply-To: <agenda-20251124@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Hi Alice,

Donnerstag um 10:00 passt. Ich bringe die Zahlen für Q4 mit – die
Übersicht hängt an der nächsten Mail.

Grüße
Bob
""")

    report = _crlf(f"""\
From: Reports <reports@example.com>
To: Alice <alice@example.org>
Subject: Quarterly report (PDF attached)
Date: Wed, 26 Nov 2025 08:00:00 +0000
Message-ID: <report-q4-2025@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_popbridge_demo_boundary"

This is a multi-part message in MIME format.

--=_popbridge_demo_boundary
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Please find the quarterly report attached.

--=_popbridge_demo_boundary
Content-Type: application/pdf; name="report-q4.pdf"
Content-Disposition: attachment; filename="report-q4.pdf"
Content-Transfer-Encoding: base64

{_b64_lines(_attachment_bytes())}
--=_popbridge_demo_boundary--
""")

    newsletter = _crlf("""\
From: Newsletter <news@example.com>
To: alice@example.org
Subject: This week: 3 short stories
Date: Wed, 26 Nov 2025 18:30:00 +0000
Message-ID: <news-48@example.com>
List-Unsubscribe: <mailto:unsubscribe@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-48"

--alt-48
Content-Type: text/plain; charset=us-ascii

1. POP3 is still everywhere.
2. IMAP keeps mail on the server.
3. A gateway can speak both.

--alt-48
Content-Type: text/html; charset=us-ascii

<html><body><ol><li>POP3 is still everywhere.</li>
<li>IMAP keeps mail on the server.</li>
<li>A gateway can speak both.</li></ol></body></html>

--alt-48--
""")

    short_note = _crlf("""\
From: Carol <carol@example.org>
To: Alice <alice@example.org>
Subject: lunch?
Date: Thu, 27 Nov 2025 11:45:10 +0000
Message-ID: <lunch-1127@example.org>

12:30 at the usual place?
""")

    return [
        ("welcome", welcome),
        ("meeting", meeting),
        ("report-with-attachment", report),
        ("newsletter", newsletter),
        ("short-note", short_note),
    ]


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(f"usage: {argv[0]} [DIRECTORY]", file=sys.stderr)
        return 2
    if len(argv) == 2:
        os.makedirs(argv[1], exist_ok=True)
    for i, (name, data) in enumerate(sample_messages(), 1):
        if len(argv) == 2:
            path = os.path.join(argv[1], f"{i:02d}-{name}.eml")
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}\t{len(data)} octets")
        else:
            print(f"{i:02d}-{name}\t{len(data)} octets")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
