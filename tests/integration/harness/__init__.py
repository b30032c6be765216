# SPDX-License-Identifier: Apache-2.0
"""Test harness for popbridge's integration tests.

Everything here uses Debian's /usr/bin/python3 standard library plus the
`openssl`, `dovecot` and `curl` command-line tools; no pip packages.

Modules:
  ports    -- free TCP ports on 127.0.0.1
  wait     -- waiting on conditions with deadlines (never fixed sleeps)
  certs    -- a throwaway CA and a server certificate made with `openssl`
  dovecot  -- a private Dovecot instance (IMAP upstream) plus imaplib helpers
  cyrus    -- a private Cyrus IMAP 3.6 instance (IMAP and JMAP upstream, unpacked by
              scripts/install-deps) plus imaplib and JMAP helpers
  syslog_ns -- runs a syslog-only daemon (Cyrus) with /dev/log read into a file
  courier  -- a private Courier-IMAP 5.0 instance (an IMAP upstream that answers LOGIN
              without capabilities; unpacked by scripts/install-deps) plus imaplib helpers
  courier_ns -- runs Courier's authdaemond and listeners in a private mount namespace
              over its compiled-in /etc/courier and /run/courier/authdaemon
  fake_imap -- a scripted IMAP server, for upstream faults
  fake_jmap -- a scripted JMAP server, for upstream faults
  gateway  -- the popbridge process under test
  clients  -- poplib helpers, a byte-exact raw POP3 client, curl helpers
  messages -- deterministic test messages (tricky and large ones)
"""
