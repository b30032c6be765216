# SPDX-License-Identifier: Apache-2.0
"""The popbridge process under test.

The binary comes from $POPBRIDGE_BIN, default <repo>/build/popbridge. It runs as
`popbridge --config FILE` with stderr (its log) going to a file in a temporary
directory, in its own process group.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
from typing import Any, Iterable, Mapping, Optional, Union

from . import procs, tempdirs
from .certs import Pki
from .dovecot import Dovecot
from .ports import free_ports
from .wait import TIME_FACTOR, port_accepts, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HOST = "127.0.0.1"


def binary_path() -> str:
    return os.environ.get("POPBRIDGE_BIN") or os.path.join(REPO, "build", "popbridge")


def binary_problem(path: Optional[str] = None) -> Optional[str]:
    """None when the gateway binary is usable, else why not (for a clear test failure)."""
    path = path or binary_path()
    if not os.path.exists(path):
        return (f"popbridge binary not found at {path}: build it (cmake -S . -B build && "
                f"cmake --build build) or set POPBRIDGE_BIN to its path")
    if not os.access(path, os.X_OK):
        return f"popbridge binary at {path} is not executable"
    return None


# ------------------------------------------------------------- YAML

def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a double-quoted JSON string is a valid YAML scalar
    raise TypeError(f"cannot write {v!r} as YAML")


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars (enough for the gateway config)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(v, Mapping) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, Mapping):
                lines.append(f"{pad}{k}: {{}}")
            elif isinstance(v, list):
                lines.append(f"{pad}{k}: []")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and item:
                sub = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            elif isinstance(item, (Mapping, list)):
                raise TypeError("empty or nested list items are not supported")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def deep_merge(base: dict, overrides: Mapping) -> dict:
    """A copy of `base` with `overrides` merged in: mappings merge recursively,
    anything else (lists included) replaces; a value of None deletes the key."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------- Gateway

Upstream = Union[Dovecot, tuple[str, int], None]

DEFAULT_LISTENERS = (("pop3s", "implicit"), ("pop3", "starttls"))



_PROXY_VARIABLES = {"http_proxy", "https_proxy", "no_proxy"}


def inherited_environment() -> dict[str, str]:
    """The test's environment without egress proxy settings: popbridge honours
    HTTPS_PROXY and friends, and a CI machine's proxy for apt must not carry the tests'
    loopback hook and token requests. A test that wants a proxy passes env=."""
    return {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}

class GatewayExitError(AssertionError):
    """The gateway did not exit cleanly (crash, non-zero status, or no exit on SIGTERM)."""


class Gateway:
    """One popbridge process.

    upstream: a Dovecot (its imap port for tls "starttls"/"none", imaps for
    "implicit"), a (host, port) pair, or None (then set upstream.address in
    overrides). listeners: (name, tls mode) pairs; each gets a free port on
    127.0.0.1. overrides: merged into the generated config (see deep_merge),
    e.g. {"auth": {"allow_plaintext": True}}.
    """

    START_TIMEOUT = 20.0 * TIME_FACTOR
    STOP_TIMEOUT = 15.0 * TIME_FACTOR  # SIGTERM drains sessions; SIGKILL after this

    def __init__(self, pki: Pki, upstream: Upstream, overrides: Optional[Mapping] = None, *,
                 upstream_tls: str = "starttls",
                 listeners: Iterable[tuple[str, str]] = DEFAULT_LISTENERS,
                 binary: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                 args: Iterable[str] = ()):
        self.pki = pki
        self.env = dict(env or {})  # added to the test's environment
        self.args = list(args)  # more command-line options
        self.binary = binary or binary_path()
        listeners = list(listeners)
        ports = free_ports(len(listeners), HOST)
        self.ports: dict[str, int] = {name: port for (name, _), port in zip(listeners, ports)}
        if isinstance(upstream, Dovecot):
            up_host = upstream.host
            up_port = upstream.imaps_port if upstream_tls == "implicit" else upstream.imap_port
        elif upstream is not None:
            up_host, up_port = upstream
        else:
            up_host, up_port = HOST, 0
        base = {
            "listeners": [{"name": name, "address": f"{HOST}:{self.ports[name]}", "tls": tls}
                          for name, tls in listeners],
            "tls": {"certificate": pki.cert, "private_key": pki.key, "min_version": "1.2"},
            "upstream": {
                "address": f"{up_host}:{up_port}",
                "tls": upstream_tls,
                "ca_file": pki.ca,
                "verify_certificate": True,
                "server_name": "localhost",
                "mailbox": "INBOX",
                "connect_timeout": "5s",
                "command_timeout": "10s",
            },
            "auth": {"allow_plaintext": False, "failure_delay": "200ms", "max_failure_delay": "400ms",
                     "max_attempts": 3},
            "limits": {"idle_timeout": "10m", "max_connections": 100},
            "logging": {"level": "debug"},
        }
        self.config: dict = deep_merge(base, overrides or {})
        if overrides and "listeners" in overrides:
            # Caller-chosen listeners: learn their ports from the addresses.
            self.ports = {l["name"]: int(str(l["address"]).rsplit(":", 1)[1]) for l in self.config["listeners"]}
        self.dir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None

    # ------------------------------------------------------------ paths

    @property
    def config_path(self) -> str:
        return os.path.join(self.dir, "popbridge.yaml")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "popbridge.log")

    @property
    def pop3s_port(self) -> int:
        return self.ports["pop3s"]

    @property
    def pop3_port(self) -> int:
        return self.ports["pop3"]

    def port(self, name: str) -> int:
        return self.ports[name]

    # -------------------------------------------------------- lifecycle

    def __enter__(self) -> "Gateway":
        self.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # Don't mask the test's own exception with a shutdown complaint.
        self.close(check_exit=exc_type is None)

    def write_config(self) -> str:
        if self.dir is None:
            self.dir = tempdirs.make("gateway")
        with open(self.config_path, "w") as f:
            f.write("# Generated by tests/integration/harness/gateway.py\n")
            f.write(to_yaml(self.config) + "\n")
        return self.config_path

    def start(self) -> None:
        """Starts the gateway and waits until every listener accepts connections.
        Fails with the log's tail if the process exits first."""
        if self.running:
            raise RuntimeError("gateway already running")
        self.write_config()
        self._log = open(self.log_path, "ab")
        self.returncode = None
        self.proc = subprocess.Popen([self.binary, "--config", self.config_path, *self.args],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     env={**inherited_environment(), **self.env}, start_new_session=True,
                                     close_fds=True,
                                     preexec_fn=procs.die_with_parent())
        procs.register(self.proc)

        # The metrics endpoint opens after the POP3 listeners (on the main loop, which may be
        # slower than the workers' to get there): a test that scrapes it must not race it.
        endpoints = [(HOST, p) for p in self.ports.values()]
        metrics_address = (self.config.get("metrics") or {}).get("address")
        if metrics_address:
            host, _, port = str(metrics_address).rpartition(":")
            endpoints.append((host.strip("[]"), int(port)))

        # Each probe of a POP3 listener is a connection the gateway accepts and counts:
        # tests that compare its metrics wait until it has seen exactly these.
        self.probe_connections = 0

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"popbridge exited with status {self.proc.returncode} during start-up\n"
                                     f"{self.diagnostics()}")
            for host, port in endpoints:
                if not port_accepts(host, port):
                    return False
                if port in self.ports.values():
                    self.probe_connections += 1
            return True

        try:
            wait_until(ready, self.START_TIMEOUT, f"popbridge to listen on {endpoints}",
                       on_timeout=self.diagnostics)
        except BaseException:
            self._reap(kill=True)
            raise

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, check_exit: bool = True) -> Optional[int]:
        """SIGTERM, then SIGKILL to the process group after STOP_TIMEOUT. With
        check_exit, raises GatewayExitError unless the gateway exited by itself
        with status 0 (a crash, sanitizer report or hang at shutdown is a bug)."""
        if self.proc is None:
            return self.returncode
        needed_kill = not self._reap(kill=False)
        if check_exit and (needed_kill or self.returncode != 0):
            why = (f"did not exit within {self.STOP_TIMEOUT}s of SIGTERM" if needed_kill
                   else f"exited with status {self.returncode}"
                   + (f" ({signal.Signals(-self.returncode).name})" if self.returncode < 0 else ""))
            raise GatewayExitError(f"popbridge {why}\n{self.diagnostics()}")
        return self.returncode

    def kill(self) -> None:
        self._reap(kill=True)

    def close(self, check_exit: bool = True) -> None:
        """Stops the gateway and removes its directory (after the check, so the log is in the message)."""
        try:
            self.stop(check_exit=check_exit)
        finally:
            if self.dir is not None:
                tempdirs.remove(self.dir)
                self.dir = None

    def _reap(self, kill: bool) -> bool:
        """True when the process exited within the SIGTERM deadline."""
        if self.proc is None:
            return True
        clean = True
        try:
            if kill:
                procs.kill_group(self.proc)
            else:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(self.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    clean = False
                procs.kill_group(self.proc)  # the leader and anything it left behind
        finally:
            self.returncode = self.proc.returncode
            self.proc = None
            self._log.close()
        return clean

    # ------------------------------------------------------------- logs

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def diagnostics(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        cfg = ""
        if self.dir is not None:
            try:
                with open(self.config_path) as f:
                    cfg = f.read()
            except OSError:
                pass
        return f"--- popbridge config ---\n{cfg}--- popbridge log (tail) ---\n" + "\n".join(tail)


def check_config(config_path: str, binary: Optional[str] = None, timeout: float = 30.0) -> tuple[int, str]:
    """Runs `popbridge --check-config --config FILE`; returns (exit status, stdout+stderr)."""
    proc = subprocess.run([binary or binary_path(), "--check-config", "--config", config_path],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    return proc.returncode, out
