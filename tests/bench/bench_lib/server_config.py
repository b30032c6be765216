# SPDX-License-Identifier: Apache-2.0
"""Settings of the servers under test: Dovecot's limits for the sessions a run opens,
doveconf's opinion of them, Dovecot's version, and popbridge's config overrides."""

from __future__ import annotations

import subprocess

from harness.dovecot import Dovecot

from bench_lib.constants import BenchError


def imap_client_limit(sessions: int, requested: int) -> int:
    """Sessions per upstream imap process: Dovecot's default 1 (a process per session) up to
    2000 sessions; beyond, 25 per process, so 10,000 sessions fit in memory (all run as
    one mail_uid, which client_limit > 1 requires)."""
    if requested > 0:
        return requested
    return 1 if sessions <= 2000 else 25


def dovecot_limits(sessions: int, client_limit: int = 1) -> str:
    """Dovecot settings for `sessions` concurrent IMAP sessions of one user from one IP.

    The defaults allow 10 connections per user and IP, 100 processes per service and
    1000 clients per process; and imap-login runs one process per connection.
    """
    processes = sessions + 200
    # doveconf wants auth's and anvil's client_limit to cover every login service's
    # process_limit (imap-login and imap-urlauth-login, both default_process_limit).
    clients = max(1000, 2 * processes + 100)
    return f"""
# run_bench.py: room for {sessions} sessions of one user from 127.0.0.1.
default_process_limit = {processes}
default_client_limit = {clients}
default_vsz_limit = 512M
protocol imap {{
  mail_max_userip_connections = {sessions + 100}
}}
# High-performance mode: a few login processes each serve many connections, instead of
# one process per connection (which default_process_limit would cap).
service imap-login {{
  service_count = 0
  process_min_avail = 2
  client_limit = {clients}
}}
# client_limit = 1: one imap process per session (Dovecot's default); more to fit 10,000,
# which needs service_count = 0 too (by default a process serves one client, then exits).
service imap {{
  client_limit = {client_limit}
  service_count = {0 if client_limit > 1 else 1}
  process_limit = {(sessions + 100 + client_limit - 1) // client_limit + 10}
}}
"""


def check_dovecot_config(dovecot: Dovecot) -> str:
    """doveconf's warnings about the generated config (e.g. a limit too low for the load)."""
    proc = subprocess.run(["doveconf", "-c", dovecot.conf_path, "-n"], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise BenchError(f"doveconf rejected the config:\n{proc.stderr}")
    return "\n".join(line for line in proc.stderr.splitlines() if line.strip())


def gateway_overrides(sessions: int, log_level: str, hold: float = 0, login_reuse: str = "0s") -> dict:
    # A soak holds sessions silent for longer than the 10-minute autologout.
    idle_timeout = f"{int(hold) + 600}s"
    return {
        "auth": {"allow_plaintext": True},
        "limits": {"max_connections": sessions + 100, "idle_timeout": idle_timeout},
        # The harness's 10 s suits tests; production's default is 60 s.
        "upstream": {"command_timeout": "60s", "login_reuse": {"idle": login_reuse, "max": 10000}},
        "logging": {"level": log_level},
    }


def dovecot_version() -> str:
    try:
        return subprocess.run(["dovecot", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"
