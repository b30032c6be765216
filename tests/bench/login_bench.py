# SPDX-License-Identifier: Apache-2.0
"""Login latency per identity mode: the time from TCP connect to the "+OK" after PASS
(TLS to the gateway, login upstream, SELECT and the snapshot FETCH included), for
passthrough, users_file with each hash kind plus a master login, and mapped credentials;
next to a direct IMAP login (connect, STARTTLS, LOGIN, SELECT) to the same Dovecot in
the same run. Prints medians and 95th percentiles; no target.

    /usr/bin/python3 tests/bench/login_bench.py [--logins 30] [--binary build/popbridge]
"""

import argparse
warnings_module = __import__("warnings")
warnings_module.filterwarnings("ignore", category=DeprecationWarning)
import crypt  # noqa: E402  (deprecated in 3.11; still the way to reach libxcrypt from Python)
import imaplib
import os
import poplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
warnings.filterwarnings("ignore", category=DeprecationWarning)

from harness.certs import make_pki  # noqa: E402
from harness.dovecot import Dovecot  # noqa: E402
from harness.gateway import Gateway  # noqa: E402

CLIENT_PASSWORD = "client-password-1"
MAILBOX_PASSWORD = "mailbox-password-1"
MASTER_PASSWORD = "master-password-1"


def hashes() -> dict:
    out = {"sha512": crypt.crypt(CLIENT_PASSWORD, crypt.mksalt(crypt.METHOD_SHA512)),
           "bcrypt": crypt.crypt(CLIENT_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 10))}
    try:
        yes = subprocess.run(["mkpasswd", "-m", "yescrypt", CLIENT_PASSWORD],
                             capture_output=True, text=True, check=True).stdout.strip()
        out["yescrypt"] = yes
    except (OSError, subprocess.CalledProcessError):
        pass  # mkpasswd comes with Debian's whois package
    return out


def timed_logins(port: int, ctx: ssl.SSLContext, user: str, password: str, count: int) -> list:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client = poplib.POP3_SSL("127.0.0.1", port, context=ctx, timeout=30)
        client.user(user)
        client.pass_(password)
        times.append(time.perf_counter() - start)
        client.quit()
    return times


def direct_logins(dovecot: Dovecot, ctx: ssl.SSLContext, count: int) -> list:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
        imap.starttls(ssl_context=ctx)
        imap.login("mailbox", MAILBOX_PASSWORD)
        imap.select("INBOX")
        times.append(time.perf_counter() - start)
        imap.logout()
    return times


def report(name: str, times: list, reference: float) -> None:
    median = statistics.median(times) * 1000
    p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)] * 1000
    print(f"{name:<34} median {median:7.2f} ms   p95 {p95:7.2f} ms   x{median / reference:5.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--binary", default=os.path.join(REPO, "build", "popbridge"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="pblogin-")
    pki = make_pki()
    ctx = pki.client_context()
    master_file = os.path.join(work, "master-users")
    with open(master_file, "w") as f:
        f.write(f"popbridge:{{PLAIN}}{MASTER_PASSWORD}\n")
    os.chmod(work, 0o755)
    os.chmod(master_file, 0o644)
    extra = f"""
passdb {{
  driver = passwd-file
  master = yes
  args = {master_file}
  pass = yes
}}
mail_max_userip_connections = 1000
"""
    with Dovecot(pki, {"mailbox": MAILBOX_PASSWORD}, extra_config=extra) as dovecot:
        dovecot.append("mailbox", b"Subject: hello\r\n\r\nbody\r\n")
        direct = direct_logins(dovecot, ctx, args.logins)
        reference = statistics.median(direct) * 1000
        print(f"{args.logins} logins each; popbridge {args.binary}")
        report("direct IMAP (STARTTLS+LOGIN+SELECT)", direct, reference)
        with Gateway(pki, dovecot, {"logging": {"level": "warn"}}, binary=args.binary) as g:
            report("passthrough", timed_logins(g.pop3s_port, ctx, "mailbox", MAILBOX_PASSWORD,
                                               args.logins), reference)
        secret = os.path.join(work, "master-secret")
        with open(secret, "w") as f:
            f.write(MASTER_PASSWORD + "\n")
        for kind, value in hashes().items():
            users = os.path.join(work, f"users-{kind}")
            with open(users, "w") as f:
                f.write(f"mailbox:{value}\n")
            overrides = {"logging": {"level": "warn"},
                         "auth": {"mode": "users_file", "users_file": users},
                         "upstream": {"login": {"mode": "master", "master_user": "popbridge",
                                                "master_password_file": secret}}}
            with Gateway(pki, dovecot, overrides, binary=args.binary) as g:
                report(f"users_file {kind} + master", timed_logins(
                    g.pop3s_port, ctx, "mailbox", CLIENT_PASSWORD, args.logins), reference)
        credentials = os.path.join(work, "credentials")
        with open(credentials, "w") as f:
            f.write(f"scanner:mailbox:{MAILBOX_PASSWORD}\n")
        users = os.path.join(work, "users-mapped")
        with open(users, "w") as f:
            f.write(f"scanner:{hashes()['sha512']}\n")
        overrides = {"logging": {"level": "warn"},
                     "auth": {"mode": "users_file", "users_file": users},
                     "upstream": {"login": {"mode": "mapped", "credentials_file": credentials}}}
        with Gateway(pki, dovecot, overrides, binary=args.binary) as g:
            report("users_file sha512 + mapped", timed_logins(
                g.pop3s_port, ctx, "scanner", CLIENT_PASSWORD, args.logins), reference)
    pki.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
