# SPDX-License-Identifier: Apache-2.0
"""`popbridge --check-config`: bad configs are rejected naming the key and the line."""

from __future__ import annotations

import os
import re

import pytest

from harness import tempdirs
from harness.gateway import check_config

GOOD = """\
listeners:
  - name: pop3s
    address: "127.0.0.1:9995"
    tls: implicit
  - name: pop3
    address: "127.0.0.1:9110"
    tls: starttls
tls:
  certificate: {cert}
  private_key: {key}
  min_version: "1.2"
upstream:
  address: "127.0.0.1:9143"
  tls: starttls
  ca_file: {ca}
  verify_certificate: true
  server_name: localhost
  mailbox: INBOX
  connect_timeout: 5s
  command_timeout: 10s
auth:
  allow_plaintext: false
  failure_delay: 200ms
  max_attempts: 3
limits:
  idle_timeout: 10m
  max_connections: 100
logging:
  level: debug
"""


@pytest.fixture
def workdir():
    d = tempdirs.make("config")
    yield d
    tempdirs.remove(d)


def write(workdir: str, text: str, name: str = "popbridge.yaml") -> str:
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def good_text(pki) -> str:
    return GOOD.format(cert=pki.cert, key=pki.key, ca=pki.ca)


def line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the config")


def assert_names(output: str, key: str, line: int) -> None:
    """Some line of the output names both the key and the line number."""
    for out_line in output.splitlines():
        if key in out_line and re.search(rf"(?<![0-9]){line}(?![0-9])", out_line):
            return
    raise AssertionError(f"no diagnostic names key {key!r} and line {line}:\n{output}")


def test_good_config_passes(popbridge_bin, pki, workdir):
    rc, out = check_config(write(workdir, good_text(pki)), popbridge_bin)
    assert rc == 0, out


def test_unknown_key(popbridge_bin, pki, workdir):
    text = good_text(pki).replace("  server_name: localhost\n", "  server_name: localhost\n  sever_nmae: typo\n")
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc != 0, out
    assert_names(out, "sever_nmae", line_of(text, "sever_nmae"))


def test_unknown_top_level_key(popbridge_bin, pki, workdir):
    text = good_text(pki) + "listners: []\n"
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc != 0, out
    assert_names(out, "listners", line_of(text, "listners"))


@pytest.mark.parametrize("bad", ["127.0.0.1:notaport", "127.0.0.1:99999", "127.0.0.1", ":"])
def test_bad_listener_address(popbridge_bin, pki, workdir, bad):
    text = good_text(pki).replace('"127.0.0.1:9110"', f'"{bad}"')
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc != 0, f"{bad!r} accepted:\n{out}"
    assert_names(out, "address", line_of(text, f'address: "{bad}"'))


def test_bad_upstream_address(popbridge_bin, pki, workdir):
    text = good_text(pki).replace('"127.0.0.1:9143"', '"127.0.0.1:0x8f"')
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc != 0, out
    assert_names(out, "address", line_of(text, "0x8f"))


def test_several_errors_reported_in_one_pass(popbridge_bin, pki, workdir):
    text = (good_text(pki)
            .replace("  server_name: localhost\n", "  server_name: localhost\n  sever_nmae: typo\n")
            .replace('"127.0.0.1:9110"', '"127.0.0.1:notaport"'))
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc != 0, out
    assert_names(out, "sever_nmae", line_of(text, "sever_nmae"))
    assert_names(out, "address", line_of(text, "notaport"))


def test_missing_file(popbridge_bin, workdir):
    rc, out = check_config(os.path.join(workdir, "nonexistent.yaml"), popbridge_bin)
    assert rc != 0
    assert "nonexistent.yaml" in out


def run(popbridge_bin, *args) -> tuple[int, str, str]:
    import subprocess
    p = subprocess.run([popbridge_bin, *args], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_print_config_shows_defaults_and_loads_again(popbridge_bin, pki, workdir):
    rc, printed, err = run(popbridge_bin, "--print-config", "--config", write(workdir, good_text(pki)))
    assert rc == 0, err
    assert "keepalive_count: 4" in printed and 'uidl_format: "%08Xu%08Xv"' in printed, printed
    assert "failure_delay: 200ms" in printed, "values from the file"
    rc, again, err = run(popbridge_bin, "--print-config", "--config",
                         write(workdir, printed, "printed.yaml"))
    assert rc == 0, err
    assert again == printed


def test_usage_errors_exit_2(popbridge_bin, pki, workdir):
    assert run(popbridge_bin, "--no-such-flag")[0] == 2
    assert run(popbridge_bin, "--log-level", "loud", "--config", write(workdir, good_text(pki)))[0] == 2
    assert run(popbridge_bin)[0] == 2, "--config is required"


def test_version_names_revision_and_libraries(popbridge_bin):
    rc, out, _ = run(popbridge_bin, "--version")
    assert rc == 0
    assert re.match(r"popbridge \d+\.\d+\.\d+ \(revision ([0-9a-f]{7,}(-dirty)?|unknown)\)", out), out
    assert "libuv:" in out and "TLS:" in out, out


# --check-config loads and cross-checks what start-up loads, as `nginx -t` does.

def openssl(*args: str) -> None:
    import subprocess
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def test_check_config_loads_certificate_and_key(popbridge_bin, pki, workdir):
    garbage = write(workdir, "not a certificate\n", "garbage.crt")
    rc, out = check_config(write(workdir, good_text(pki).replace(pki.cert, garbage)), popbridge_bin)
    assert rc == 1 and "tls" in out, out
    # The CA's certificate where the key belongs, and a key of another pair.
    rc, out = check_config(write(workdir, good_text(pki).replace(pki.key, pki.ca)), popbridge_bin)
    assert rc == 1 and "tls" in out, out
    other_key = os.path.join(workdir, "other.key")
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other_key)
    rc, out = check_config(write(workdir, good_text(pki).replace(pki.key, other_key)), popbridge_bin)
    assert rc == 1 and "tls" in out, out


def test_check_config_refuses_a_host_name_as_listener_address(popbridge_bin, pki, workdir):
    text = good_text(pki).replace('"127.0.0.1:9110"', '"localhost:9110"')
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc == 1 and "listener pop3" in out and "IP address" in out, out


@pytest.mark.parametrize("line", ["carol", "carol:{SHA512-CRYPT}$6$abc$def", "carol:plaintext"])
def test_check_config_reads_the_users_file(popbridge_bin, pki, workdir, line):
    users = write(workdir, "# users\nalice:$6$saltsalt$" + "x" * 86 + "\n" + line + "\n", "users")
    text = good_text(pki).replace(
        "auth:\n  allow_plaintext: false\n",
        f"auth:\n  mode: users_file\n  users_file: {users}\n  allow_plaintext: false\n")
    rc, out = check_config(write(workdir, text), popbridge_bin)
    assert rc == 1, out
    assert f"{users}:3" in out, out
    if "{" in line:
        assert "remove the {SCHEME} prefix" in out, out


def test_check_config_warns_of_a_certificate_about_to_expire(popbridge_bin, pki, workdir):
    cert, key = os.path.join(workdir, "soon.crt"), os.path.join(workdir, "soon.key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "3", "-subj", "/CN=localhost", "-keyout", key, "-out", cert)
    rc, out = check_config(write(workdir, good_text(pki).replace(pki.cert, cert).replace(pki.key, key)),
                           popbridge_bin)
    assert rc == 0, out
    assert "warning" in out and "expires in" in out, out
