# SPDX-License-Identifier: Apache-2.0
"""The documentation that ships with popbridge stays true and well-formed.

- Both man pages format without a warning (mandoc's linter and groff).
- popbridge(8) documents every option `popbridge --help` prints, and no other.
- popbridge.yaml(5) documents every configuration key, and names no unknown key. The
  complete key list is config::known_keys() in C++; config/popbridge.example.yaml
  documents exactly those keys (a unit test, ExampleFileDocumentsExactlyTheKnownKeys,
  enforces it), so the keys are read from that file, commented-out keys included.
- LICENSE is the Apache License 2.0, byte for byte.
- CHANGELOG.md has an [Unreleased] section and an entry for the version in
  CMakeLists.txt, and the man pages name that version.

Needs mandoc (Debian: mandoc) and groff (groff-base).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from harness import tempdirs
from harness.gateway import REPO

MAN_DIR = os.path.join(REPO, "docs", "man")
MAN8 = os.path.join(MAN_DIR, "popbridge.8")
MAN5 = os.path.join(MAN_DIR, "popbridge.yaml.5")
PAGES = [MAN8, MAN5]
EXAMPLE = os.path.join(REPO, "config", "popbridge.example.yaml")
LICENSE = os.path.join(REPO, "LICENSE")
APACHE_2_0 = "/usr/share/common-licenses/Apache-2.0"
CHANGELOG = os.path.join(REPO, "CHANGELOG.md")
CMAKELISTS = os.path.join(REPO, "CMakeLists.txt")

TIMEOUT = 60

# A key path as this suite writes it: "workers", "upstream.login.oauth2.token_url",
# "listeners[].name".
KEY_PATH = re.compile(r"[a-z][a-z0-9_]*(\[\])?(\.[a-z0-9_]+(\[\])?)*")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: apt-get install "
                    f"{'mandoc' if name == 'mandoc' else 'groff-base'}; scripts/install-deps)",
                    pytrace=False)
    return path


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT)


def _render(page: str) -> str:
    """The page as plain text: no bold or underline, wide lines so that nothing wraps
    inside a tag."""
    res = _run([_tool("groff"), "-man", "-Tascii", "-P-cbou", "-rLL=200n", page])
    assert res.returncode == 0, f"groff failed on {page}:\n{res.stderr}"
    return res.stdout


def _section(text: str, name: str) -> str:
    """The body of the section titled `name` in rendered text."""
    m = re.search(rf"^{re.escape(name)}\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    assert m, f"no section {name}"
    return m.group(1)


def _mentions(text: str, word: str) -> bool:
    """`word` appears in text as a whole option or key, not inside a longer one."""
    return re.search(rf"(?<![\w.\[\]-]){re.escape(word)}(?![\w\[-]|\.\w)", text) is not None


# ============================================================================ formatting

@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_passes_mandoc_lint(page):
    res = _run([_tool("mandoc"), "-T", "lint", "-W", "warning", page])
    out = (res.stdout + res.stderr).strip()
    assert out == "" and res.returncode == 0, f"mandoc -T lint -W warning {page}:\n{out}"


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_formats_without_groff_warnings(page):
    res = _run([_tool("groff"), "-man", "-ww", "-z", page])
    out = (res.stdout + res.stderr).strip()
    assert out == "" and res.returncode == 0, f"groff -man -ww -z {page}:\n{out}"


# =============================================================================== options

def _help_options(binary: str) -> tuple[set[str], set[str]]:
    """(every option name `popbridge --help` prints, the choices it lists for them)."""
    res = _run([binary, "--help"])
    assert res.returncode == 0, f"popbridge --help exited {res.returncode}:\n{res.stderr}"
    options, choices = set(), set()
    for line in res.stdout.splitlines():
        m = re.match(r"\s+(-\S+)", line)
        if not m:
            continue
        # "-c,--config TEXT", "--log-level TEXT:{trace,debug,...}"
        spec = m.group(1)
        for name in spec.split(","):
            if re.fullmatch(r"--?[A-Za-z][\w-]*", name):
                options.add(name)
        rest = line[m.end():].split()[0] if line[m.end():].split() else ""
        for group in re.findall(r"\{([^}]*)\}", spec + " " + rest):
            choices |= {c for c in group.split(",") if c}
    assert {"--help", "--config", "--version"} <= options, \
        f"could not read the options from popbridge --help:\n{res.stdout}"
    return options, choices


def test_man_page_documents_every_option(popbridge_bin):
    options, choices = _help_options(popbridge_bin)
    text = _render(MAN8)
    missing = sorted(o for o in options if not _mentions(text, o))
    assert not missing, f"popbridge.8 does not mention these options of --help: {missing}"
    body = _section(text, "OPTIONS")
    missing = sorted(c for c in choices if not _mentions(body, c))
    assert not missing, f"popbridge.8 OPTIONS does not list these option values: {missing}"


def test_man_page_documents_no_other_option(popbridge_bin):
    options, _ = _help_options(popbridge_bin)
    documented = set()
    for line in _section(_render(MAN8), "OPTIONS").splitlines():
        m = re.match(r" {7}(-.*)$", line)  # a tag: "-c, --config file", "--check-config"
        if m:
            documented |= set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", m.group(1)))
    assert documented, "found no option tags in popbridge.8 OPTIONS"
    unknown = sorted(documented - options)
    assert not unknown, f"popbridge.8 documents options popbridge --help does not print: {unknown}"


# ================================================================ configuration keys

def example_keys(text: str) -> set[str]:
    """Key paths in a YAML reference file, commented-out keys ("# metrics:",
    "#   address: ...") included, as tests/unit/config/load_test.cc's keys_in_reference()
    reads them: that is the reading the unit test holds to config::known_keys()."""
    key = re.compile(r"^(\s*)(- )?([a-z0-9_]+):(\s|$)")
    found: set[str] = set()
    stack: list[list] = []  # [indent, segment]
    for line in text.splitlines():
        first = len(line) - len(line.lstrip(" "))
        if first < len(line) and line[first] == "#":
            drop = 2 if line[first:first + 2] == "# " else 1
            line = line[:first] + line[first + drop:]
        m = key.match(line)
        if not m:
            continue
        dash, item = len(m.group(1)), m.group(2) is not None
        indent = dash + (2 if item else 0)
        level = dash if item else indent
        while stack and stack[-1][0] >= level:
            stack.pop()
        if item and stack and not stack[-1][1].endswith("[]"):
            stack[-1][1] += "[]"
        stack.append([indent, m.group(3)])
        found.add(".".join(segment for _, segment in stack))
    return found


def _known_keys() -> set[str]:
    with open(EXAMPLE, encoding="utf-8") as f:
        keys = example_keys(f.read())
    # A parser that reads nothing would pass everything: pin a few keys of each depth.
    for sample in ("workers", "listeners[].name", "upstream.login.mode",
                   "upstream.login.oauth2.token_url", "auth.http.url", "metrics.probe_failures"):
        assert sample in keys, f"{sample} not found in {EXAMPLE}: {sorted(keys)}"
    return keys


def _documented_keys() -> set[str]:
    """The keys popbridge.yaml(5) describes: the tags `.TP` / `.B key` that are key paths
    (value tags such as `.B implicit` are not dotted and not top-level keys)."""
    with open(MAN5, encoding="utf-8") as f:
        source = f.read()
    return {m.group(1) for m in re.finditer(r"^\.TP\n\.B (\S+)\n", source, re.M)
            if KEY_PATH.fullmatch(m.group(1))}


def test_config_page_documents_every_key():
    known = _known_keys()
    documented = _documented_keys()
    missing = sorted(known - documented)
    assert not missing, ("popbridge.yaml.5 has no tagged paragraph (.TP / .B KEY) for these "
                         f"configuration keys: {missing}")
    text = _render(MAN5)
    unrendered = sorted(k for k in known if not _mentions(text, k))
    assert not unrendered, f"these keys do not appear in the formatted popbridge.yaml.5: {unrendered}"


def test_config_page_names_no_unknown_key():
    known = _known_keys()
    top = {k for k in known if "." not in k}
    documented = {k for k in _documented_keys() if "." in k or k in top}
    unknown = sorted(documented - known)
    assert not unknown, f"popbridge.yaml.5 documents keys popbridge does not know: {unknown}"


def _flatten(value, path: str = "") -> set[str]:
    keys = set()
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            keys.add(sub)
            keys |= _flatten(v, sub)
    elif isinstance(value, list):
        for item in value:
            keys |= _flatten(item, path + "[]")
    return keys


def test_config_page_documents_what_print_config_prints(popbridge_bin):
    """The binary's own view: every key of `popbridge --print-config` (a configuration
    without files to load, defaults filled in) is documented."""
    d = tempdirs.make("docs")
    try:
        path = os.path.join(d, "popbridge.yaml")
        with open(path, "w") as f:
            f.write("listeners:\n"
                    "  - {name: pop3, address: 127.0.0.1:1110, tls: none}\n"
                    "upstream: {address: 127.0.0.1:1143, tls: none}\n"
                    "auth: {allow_plaintext: true}\n"
                    "metrics: {address: 127.0.0.1:9101}\n")
        res = _run([popbridge_bin, "--print-config", "--config", path])
    finally:
        tempdirs.remove(d)
    assert res.returncode == 0, f"popbridge --print-config exited {res.returncode}:\n{res.stderr}"
    printed = _flatten(yaml.safe_load(res.stdout))
    assert "upstream.keepalive_count" in printed, res.stdout
    missing = sorted(printed - _documented_keys())
    assert not missing, f"popbridge.yaml.5 does not document keys --print-config prints: {missing}"


# ==================================================================== license, changelog

def test_license_is_apache_2_0_verbatim():
    assert os.path.exists(APACHE_2_0), f"{APACHE_2_0} is missing (Debian's base-files)"
    with open(LICENSE, "rb") as ours, open(APACHE_2_0, "rb") as apache:
        assert ours.read() == apache.read(), f"LICENSE differs from {APACHE_2_0}"


def _project_version() -> str:
    with open(CMAKELISTS, encoding="utf-8") as f:
        m = re.search(r"^\s*project\(\s*popbridge\b[^)]*\bVERSION\s+(\d+\.\d+\.\d+)", f.read(),
                      re.M | re.S)
    assert m, "no project(popbridge VERSION x.y.z) in CMakeLists.txt"
    return m.group(1)


def test_changelog_has_unreleased_and_the_current_version():
    with open(CHANGELOG, encoding="utf-8") as f:
        text = f.read()
    assert re.search(r"^## \[Unreleased\]\s*$", text, re.M), "CHANGELOG.md: no ## [Unreleased]"
    version = _project_version()
    assert re.search(rf"^## \[{re.escape(version)}\](\s|$)", text, re.M), \
        f"CHANGELOG.md: no ## [{version}] entry for the version in CMakeLists.txt"
    assert text.index("## [Unreleased]") < text.index(f"## [{version}]"), \
        "CHANGELOG.md: [Unreleased] must come first"


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_names_the_current_version(page):
    version = _project_version()
    with open(page, encoding="utf-8") as f:
        th = next((line for line in f if line.startswith(".TH ")), "")
    assert f'"popbridge {version}"' in th, f"{page}: .TH should name popbridge {version}: {th}"
