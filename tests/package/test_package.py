# SPDX-License-Identifier: Apache-2.0
"""The Debian package, built by scripts/package-deb, checked as a packager would.

- Contents and metadata: the binary in /usr/sbin, the configuration as a conffile, the
  systemd unit, compressed man pages, OpenSSL (not the Android BoringSSL) as the TLS
  library; lintian reports no error or warning.
- Installed with apt into a fresh Debian 12 root made by debootstrap: the postinst
  creates the `popbridge` system user and gives the configuration to its group; the
  unit's ExecStart line, run as that user in the root, reaches READY=1 on the notify
  socket and answers a POP3 client; ExecReload (check, then SIGHUP) reloads; SIGTERM
  stops it cleanly; systemd-analyze finds the unit valid. `apt-get purge` leaves no
  file behind.

Needs root, debootstrap, lintian and a reachable Debian mirror (DEBIAN_MIRROR, default
http://deb.debian.org/debian). POPBRIDGE_DEB names the package to test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from typing import Iterator

import pytest

from harness import procs, tempdirs
from harness.certs import make_pki
from harness.ports import free_port, free_ports
from harness.wait import TIME_FACTOR, port_accepts, wait_until

MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
QUICK = 15.0 * TIME_FACTOR
UNIT = "lib/systemd/system/popbridge.service"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and r.returncode != 0:
        raise AssertionError(f"{shlex.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def deb() -> str:
    path = os.environ.get("POPBRIDGE_DEB")
    if not path:
        pytest.skip("POPBRIDGE_DEB is not set (scripts/test builds the package and sets it)")
    assert os.path.isfile(path), path
    return path


# ---------------------------------------------------------------- the .deb itself

def test_contents(deb):
    listing = run(["dpkg-deb", "--contents", deb]).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for path in ["/usr/sbin/popbridge", "/etc/popbridge/popbridge.yaml", "/" + UNIT,
                 "/usr/share/man/man8/popbridge.8.gz", "/usr/share/man/man5/popbridge.yaml.5.gz",
                 "/usr/share/doc/popbridge/copyright",
                 "/usr/share/doc/popbridge/examples/popbridge.example.yaml"]:
        assert path in files, f"{path} not in the package:\n{listing}"


def test_metadata(deb):
    fields = run(["dpkg-deb", "--field", deb]).stdout
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    assert "libssl3" in depends and "libsystemd0" in depends and "adduser" in depends, depends
    assert "boringssl" not in depends, depends
    # One version: CMake's project() (what --version prints) is the package's.
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        project_version = re.search(r"project\(popbridge VERSION ([\d.]+)", f.read()).group(1)
    assert re.search(r"^Version: (.*)$", fields, re.M).group(1) == project_version
    conffiles = run(["dpkg-deb", "--info", deb, "conffiles"]).stdout.split()
    assert conffiles == ["/etc/popbridge/popbridge.yaml"], conffiles


def test_lintian_is_clean(deb):
    if shutil.which("lintian") is None:
        pytest.fail("lintian is not installed (scripts/install-deps installs it)")
    r = run(["lintian", "--fail-on", "error,warning", "--tag-display-limit", "0", deb], check=False)
    problems = [l for l in r.stdout.splitlines() if l[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


# ------------------------------------------------------ installed into a Debian root

@pytest.fixture(scope="module")
def root(deb) -> Iterator[str]:
    """A minimal Debian 12 root with the package installed by apt."""
    path = tempdirs.make("debroot")
    os.chmod(path, 0o755)  # the root's "/": mkdtemp's 0700 would lock the service user out
    cache = os.environ.get("DEBOOTSTRAP_CACHE")  # a tarball to reuse between local runs
    args = ["debootstrap", "--variant=minbase"]
    if cache and os.path.exists(cache):
        args.append(f"--unpack-tarball={cache}")
    run(args + ["bookworm", path, MIRROR], timeout=900)
    try:
        shutil.copy(deb, os.path.join(path, "tmp", "popbridge.deb"))
        # Nothing may start services in a root without systemd.
        with open(os.path.join(path, "usr/sbin/policy-rc.d"), "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(os.path.join(path, "usr/sbin/policy-rc.d"), 0o755)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["chroot", path, "apt-get", "update"], env=env, timeout=600)
        # systemd too: the host it is meant for, and the units systemd-analyze resolves.
        run(["chroot", path, "apt-get", "install", "-y", "--no-install-recommends",
             "systemd", "/tmp/popbridge.deb"], env=env, timeout=900)
        yield path
    finally:
        tempdirs.remove(path)


def in_root(root: str, *args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return run(["chroot", root, *args], check=check, **kwargs)


def test_install_creates_the_user_and_protects_the_configuration(root):
    passwd = in_root(root, "getent", "passwd", "popbridge").stdout.split(":")
    assert passwd[0] == "popbridge" and int(passwd[2]) < 1000, passwd  # a system user
    assert passwd[6].strip() in ("/usr/sbin/nologin", "/bin/false"), passwd
    # Not readable by all (it may name secrets' files): a dpkg-statoverride, which upgrades keep.
    for path, mode in (("/etc/popbridge/popbridge.yaml", "640"), ("/etc/popbridge", "750"),
                       ("/etc/popbridge/tls", "750")):
        stat = in_root(root, "stat", "-c", "%U:%G %a", path).stdout.split()
        assert stat == ["root:popbridge", mode], (path, stat)
    assert in_root(root, "/usr/sbin/popbridge", "--version").stdout.startswith("popbridge ")
    assert "OpenSSL 3" in in_root(root, "/usr/sbin/popbridge", "--version").stdout


def unit_lines(root: str, key: str) -> list[list[str]]:
    with open(os.path.join(root, UNIT)) as f:
        return [shlex.split(line.split("=", 1)[1]) for line in f if line.startswith(key + "=")]


def test_the_unit_is_valid_for_systemd(root):
    # (--man=no: the man pages are checked by tests/integration/test_docs.py.)
    r = run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "popbridge.service"],
            check=False)
    # Only complaints about this unit count (the bare root has no other units to load).
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "popbridge" in l]
    assert not problems, r.stdout + r.stderr
    exposure = run(["systemd-analyze", "security", "--offline=true", f"--root={root}",
                    "--no-pager", "popbridge.service"], check=False)
    m = re.search(r"Overall exposure level for popbridge.service: ([\d.]+)", exposure.stdout)
    assert m, exposure.stdout + exposure.stderr
    assert float(m.group(1)) <= 3.0, exposure.stdout  # "OK" or better in systemd's scale


def test_exec_start_serves_reloads_and_stops(root):
    pop3s, admin = free_ports(2, "127.0.0.1")
    pki = make_pki()
    try:
        secrets = os.path.join(root, "srv", "popbridge-test")
        os.makedirs(secrets, exist_ok=True)
        for name, src in (("tls.crt", pki.cert), ("tls.key", pki.key)):
            shutil.copy(src, os.path.join(secrets, name))
        in_root(root, "chgrp", "-R", "popbridge", "/srv/popbridge-test")
        in_root(root, "chmod", "-R", "g+rX", "/srv/popbridge-test")
        with open(os.path.join(root, "etc/popbridge/popbridge.yaml"), "w") as f:
            f.write(f"""listeners:
  - {{name: pop3s, address: "127.0.0.1:{pop3s}", tls: implicit}}
tls: {{certificate: /srv/popbridge-test/tls.crt, private_key: /srv/popbridge-test/tls.key}}
upstream: {{address: "127.0.0.1:{free_port()}", tls: none}}
workers: 1
metrics: {{address: "127.0.0.1:{admin}"}}
""")
        notify_path = os.path.join(root, "run", "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        os.chmod(notify_path, 0o666)
        notify.settimeout(0.2)
        seen: list[str] = []

        def notified(word: str, count: int = 1):
            def found():
                try:
                    seen.extend(notify.recv(4096).decode().splitlines())
                except socket.timeout:
                    pass
                return seen.count(word) >= count
            wait_until(found, QUICK, f"{word} x{count} on the notify socket (got {seen})")

        (pre,) = unit_lines(root, "ExecStartPre")
        in_root(root, "runuser", "-u", "popbridge", "--", *pre)
        (start,) = unit_lines(root, "ExecStart")
        proc = subprocess.Popen(["chroot", "--userspec=popbridge:popbridge", root, *start],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={"NOTIFY_SOCKET": "/run/notify.sock", "PATH": "/usr/sbin:/usr/bin"},
                                start_new_session=True, preexec_fn=procs.die_with_parent())
        procs.register(proc)
        try:
            notified("READY=1")
            assert port_accepts("127.0.0.1", pop3s)
            import ssl
            context = ssl.create_default_context(cafile=pki.ca)
            with socket.create_connection(("127.0.0.1", pop3s), timeout=QUICK) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    assert tls.recv(512).startswith(b"+OK")
            # ExecReload: the check, then the signal ($MAINPID is the process we run).
            check, kill = unit_lines(root, "ExecReload")
            in_root(root, "runuser", "-u", "popbridge", "--", *check)
            assert kill[-1] == "$MAINPID", kill
            os.kill(proc.pid, signal.SIGHUP)
            notified("RELOADING=1")
            notified("READY=1", 2)
            proc.send_signal(signal.SIGTERM)
            notified("STOPPING=1")
            assert proc.wait(timeout=QUICK) == 0
        finally:
            if proc.poll() is None:
                procs.kill_group(proc)
            notify.close()
            os.unlink(notify_path)
            shutil.rmtree(secrets)
    finally:
        pki.cleanup()


def test_purge_leaves_nothing(root):
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    in_root(root, "apt-get", "purge", "-y", "popbridge", env=env)
    assert in_root(root, "dpkg", "-s", "popbridge", check=False).returncode != 0
    for path in ["usr/sbin/popbridge", "etc/popbridge", UNIT, "usr/share/doc/popbridge"]:
        assert not os.path.exists(os.path.join(root, path)), path
