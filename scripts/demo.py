# SPDX-License-Identifier: Apache-2.0
"""The demo behind scripts/demo: Dovecot with sample mail, popbridge in front, a POP3
session through it. Reuses the integration tests' harness, so the demo and the tests
start the upstream the same way."""

import argparse
import os
import poplib
import socket
import subprocess
import sys
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "scripts"))

from harness.certs import make_pki  # noqa: E402
from harness.dovecot import Dovecot  # noqa: E402
from harness.gateway import Gateway  # noqa: E402
import demo_mail  # noqa: E402

USER, PASSWORD = "demo", "demo-password"
# Fixed, so a client configured once keeps working; --pop3s-port etc. change them.
# Clients are told "localhost", not 127.0.0.1: fetchmail 6.4 does not match IP SANs.
HOST = "localhost"
DEFAULT_PORTS = {"pop3s": 9995, "pop3": 9110, "admin": 9101}


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def show_session(gateway: Gateway, pki) -> None:
    print(f"\n$ POP3 over implicit TLS to {HOST}:{gateway.pop3s_port}")
    client = poplib.POP3_SSL(HOST, gateway.pop3s_port, context=pki.client_context(),
                             timeout=15)
    print("S:", client.getwelcome().decode())
    print("C: CAPA ->", " ".join(client.capa().keys()))
    client.user(USER)
    print("C: USER/PASS ->", client.pass_(PASSWORD).decode())
    count, octets = client.stat()
    print(f"C: STAT -> {count} messages, {octets} octets")
    _, uidls, _ = client.uidl()
    for line in uidls:
        number, uidl = line.decode().split()
        _, top, _ = client.top(int(number), 0)
        subject = next((h.decode(errors="replace") for h in top
                        if h.lower().startswith(b"subject:")), "Subject: (none)")
        size = client.list(int(number)).decode().split()[-1]
        print(f"   #{number}  uidl={uidl}  {size:>6} octets  {subject}")
    _, lines, octets = client.retr(1)
    print(f"C: RETR 1 -> {octets} octets; first lines:")
    for line in lines[:12]:
        print("   |", line.decode(errors="replace"))
    print("C: QUIT ->", client.quit().decode())

    print(f"\n$ curl --cacert ca.pem pop3s://{USER}:***@{HOST}:{gateway.pop3s_port}/")
    listing = subprocess.run(
        ["curl", "-sS", "--cacert", pki.ca, "-u", f"{USER}:{PASSWORD}",
         f"pop3s://{HOST}:{gateway.pop3s_port}/"],
        capture_output=True, text=True, timeout=30)
    print(listing.stdout.rstrip() or listing.stderr.rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--serve", action="store_true",
                        help="keep running after the session, until Ctrl-C")
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port,
                            help=f"the {name} port on loopback (default {port})")
    args = parser.parse_args()
    ports = {name: getattr(args, f"{name}_port") for name in DEFAULT_PORTS}
    busy = [f"{port} ({name})" for name, port in ports.items() if port_in_use(port)]
    if busy:
        print(f"error: port {', '.join(busy)} already in use: pass "
              + " ".join(f"--{name}-port N" for name in DEFAULT_PORTS), file=sys.stderr)
        return 1
    overrides = {
        "listeners": [
            {"name": "pop3s", "address": f"127.0.0.1:{ports['pop3s']}", "tls": "implicit"},
            {"name": "pop3", "address": f"127.0.0.1:{ports['pop3']}", "tls": "starttls"},
        ],
        "logging": {"level": "info"},
        "metrics": {"address": f"127.0.0.1:{ports['admin']}"},
    }
    pki = make_pki(days=30)
    try:
        with Dovecot(pki, {USER: PASSWORD}) as upstream:
            for _, message in demo_mail.sample_messages():
                upstream.append(USER, message)
            print(f"Dovecot (upstream IMAP) on {HOST}:{upstream.imap_port}, "
                  f"user {USER!r} with {len(upstream.uids(USER))} messages")
            with Gateway(pki, upstream, overrides, binary=args.binary) as gateway:
                print(f"popbridge config ({gateway.config_path}):")
                with open(gateway.config_path) as config:
                    print("   " + config.read().replace("\n", "\n   "))
                show_session(gateway, pki)
                admin = f"http://{HOST}:{ports['admin']}"
                with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as response:
                    sessions = [l for l in response.read().decode().splitlines()
                                if l.startswith("popbridge_sessions_total") and not l.endswith(" 0")]
                print(f"\nAdmin endpoint: {admin}/metrics  {admin}/healthz  {admin}/readyz")
                for line in sessions:
                    print("   " + line)
                print(f"Log: {gateway.log_path}")
                if args.serve:
                    print(f"\nServing: pop3s on {HOST}:{gateway.pop3s_port}, "
                          f"pop3+STLS on {HOST}:{gateway.pop3_port}, "
                          f"user {USER!r} password {PASSWORD!r}, CA {pki.ca}. Ctrl-C stops.")
                    try:
                        gateway.proc.wait()
                    except KeyboardInterrupt:
                        pass
    finally:
        pki.cleanup()
    print("\nDemo finished: upstream and gateway stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
