# SPDX-License-Identifier: Apache-2.0
"""Fixtures for popbridge's integration tests.

Scopes:
  pki            session  throwaway CA + server certificate (harness.certs)
  popbridge_bin  session  path of the gateway binary; FAILS (not skips) when missing
  dovecot        module   a Dovecot instance with users alice and bob
  gateway        module   popbridge in front of that Dovecot (pop3s: implicit TLS,
                          pop3: STLS), default config
  account        function a fresh user with an empty mailbox on `dovecot`, so tests
                          never depend on each other's mail
  make_gateway   function factory for gateways with config overrides
  make_dovecot   function factory for private Dovecot instances (for tests that
                          stop or kill the upstream)
  ctx            session  ssl.SSLContext trusting only the test CA
  cyrus          module   a private Cyrus IMAP 3.6 with JMAP (harness.cyrus), users alice
                          and bob; FAILS (not skips) when Cyrus is not unpacked
  courier        module   a private Courier-IMAP 5.0 (harness.courier), users alice and bob;
                          FAILS (not skips) when Courier is not unpacked

At the end of the session a check fails the run if a Dovecot or gateway process
or a harness temporary directory was left behind.
"""

from __future__ import annotations

import os
import signal
import ssl
from typing import Callable, Iterator

import pytest

from harness import procs, tempdirs
from harness.certs import Pki, make_pki
from harness.courier import Courier, install_problem as courier_install_problem
from harness.cyrus import Cyrus, install_problem as cyrus_install_problem
from harness.dovecot import Account, Dovecot
from harness.gateway import Gateway, binary_path, binary_problem

ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-2")

def _leftover_processes() -> list[str]:
    """Processes this run started and that are still alive: anything left in the
    process groups the harness started, and any process whose command line names
    one of this run's temp dirs (dovecot -c DIR/dovecot.conf, popbridge --config
    DIR/popbridge.yaml). Other runs' processes (e.g. a parallel session) are ignored."""
    found = []
    own_dirs = tempdirs.made()
    own = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if any(d in cmd for d in own_dirs):
            found.append(f"{entry}: {cmd}")
    for proc in procs.started:
        found += [f"{pid}: (group {proc.pid})" for pid in procs.group_members(proc.pid)]
    return sorted(set(found))


def pytest_configure(config):
    """SIGTERM (e.g. from `timeout` or a CI runner) interrupts like Ctrl-C, so
    fixtures are torn down and no Dovecot or gateway is left running. (Should the
    test process die outright, the servers get SIGTERM through PR_SET_PDEATHSIG,
    see harness/procs.py.)"""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """After every fixture is torn down (pytest's runner tears down what is left in
    its own pytest_sessionfinish, hence trylast): fail the run if anything was left behind."""
    left = _leftover_processes()
    dirs = sorted(tempdirs.live())
    if left or dirs:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"integration harness left behind: processes {left}, directories {dirs}"
        if reporter is not None:
            reporter.write_line(msg, red=True)
        else:
            print(msg)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def pki() -> Iterator[Pki]:
    p = make_pki()
    yield p
    p.cleanup()


@pytest.fixture(scope="session")
def ctx(pki: Pki) -> ssl.SSLContext:
    return pki.client_context()


@pytest.fixture(scope="session")
def popbridge_bin() -> str:
    problem = binary_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return binary_path()


@pytest.fixture(scope="module")
def dovecot(pki: Pki) -> Iterator[Dovecot]:
    with Dovecot(pki, dict([ALICE, BOB])) as d:
        yield d


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A fresh user with an empty INBOX on the module's Dovecot."""
    return dovecot.add_user()


@pytest.fixture(scope="module")
def gateway(pki: Pki, dovecot: Dovecot, popbridge_bin: str) -> Iterator[Gateway]:
    g = Gateway(pki, dovecot, binary=popbridge_bin)
    g.start()
    yield g
    g.close()


@pytest.fixture
def make_gateway(pki: Pki, popbridge_bin: str) -> Iterator[Callable[..., Gateway]]:
    """make_gateway(upstream, overrides=None, **kwargs) -> a started Gateway, stopped
    (and checked for a clean exit) at teardown."""
    made: list[Gateway] = []

    def make(upstream, overrides=None, **kwargs) -> Gateway:
        kwargs.setdefault("binary", popbridge_bin)  # a test may wrap the binary
        g = Gateway(pki, upstream, overrides, **kwargs)
        made.append(g)
        g.start()
        return g

    yield make
    errors = []
    for g in made:
        try:
            g.close()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n\n".join(errors)


@pytest.fixture
def make_dovecot(pki: Pki) -> Iterator[Callable[..., Dovecot]]:
    """make_dovecot(users=..., **kwargs) -> a started private Dovecot, closed at teardown."""
    made: list[Dovecot] = []

    def make(users=(ALICE, BOB), **kwargs) -> Dovecot:
        d = Dovecot(pki, users, **kwargs)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture(scope="module")
def cyrus(pki: Pki) -> Iterator[Cyrus]:
    """A private Cyrus IMAP 3.6 (IMAP, IMAPS and JMAP over HTTP and HTTPS on its own
    loopback ports) with users alice and bob. Cyrus comes unpacked from scripts/install-deps;
    without it this is a test error with the reason, never a skip. Its processes are
    one process group whose command lines name its temp dir, so the end-of-session
    check above covers them."""
    problem = cyrus_install_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    with Cyrus(pki, dict([ALICE, BOB])) as c:
        yield c


@pytest.fixture(scope="module")
def courier(pki: Pki) -> Iterator[Courier]:
    """A private Courier-IMAP 5.0 (IMAP with STARTTLS and IMAPS on its own loopback ports)
    with users alice and bob. Courier comes from scripts/install-deps (courier-imap unpacked,
    its companions installed); without it this is a test error with the reason, never a
    skip. Its processes live in a mount namespace of their own, which stopping sweeps, and
    its listeners' command lines name its temp dir, so the end-of-session check above
    covers them too."""
    problem = courier_install_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    with Courier(pki, dict([ALICE, BOB])) as c:
        yield c
