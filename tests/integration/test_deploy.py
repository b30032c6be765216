# SPDX-License-Identifier: Apache-2.0
"""The deployment artifacts in deploy/, checked offline.

- Prometheus rules: `promtool check rules` and `promtool test rules`; the PrometheusRule
  manifest is generated from the rule file and must not drift from it. Every alert links
  its runbook, a section of deploy/README.md that exists.
- Alertmanager: the inhibition rules (deploy/alertmanager/inhibit.yaml) pass
  `amtool check-config`, name real alerts and labels, match the AlertmanagerConfig, and
  silence what they should in a real Alertmanager.
- Kubernetes manifests: rendered with `kubectl kustomize` (no cluster needed), as
  `kubectl apply -k` would send them: the configMapGenerator's hashed ConfigMap name and
  its reference in the workload, and a new name when the configuration changes. Then
  schema validation against the Kubernetes and prometheus-operator models
  (tests/deploy/validate.mjs, node), and the cross-references that a schema cannot see:
  probes against the admin port, container ports against the listeners, the grace period
  against the drain deadline, the memory limit against the connection limit and write
  watermarks, Secret mounts against the files the configuration reads, selectors,
  security settings.
- Configuration files (the image's, the generated ConfigMaps'): `popbridge --check-config`.
- Dockerfile: static, as no container engine is available here: base images pinned by
  digest, OCI labels from build arguments, its packages exist in Debian 12, its runtime
  libraries are what the built binary links, its build copies what CMake reads; the apt
  mirror script (deploy/debian-mirror) run on a copy of Debian's apt sources, and the
  HEALTHCHECK script (deploy/popbridge-healthcheck) against real popbridge processes,
  with and without an admin endpoint, and against nothing.
- Grafana dashboard: Grafana's dashboard schema (@grafana/schema, same script), the
  datasource and job/instance variables, the layout.
- Dashboard and alert expressions: a real Prometheus server (Debian's) scrapes a
  real popbridge (in front of the harness's Dovecot) after a POP3 session, and every
  PromQL expression of the dashboard and the rules is run through its HTTP API.

Needs (Debian 12 packages): prometheus (promtool and the server), prometheus-alertmanager
(amtool and the server), python3-yaml, kubectl (Debian's kubernetes-client, or any
kubectl with `kubectl kustomize`); node and npm (tests/deploy/node_modules is installed
with `npm ci` when missing).
"""

from __future__ import annotations

import datetime
import fnmatch
import functools
import json
import os
import poplib
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator, Optional

import pytest
import yaml

from harness import procs, tempdirs
from harness.auth_servers import crypt_hash
from harness.clients import pop3_ssl
from harness.gateway import REPO, Gateway, check_config, to_yaml
from harness.messages import simple
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until

DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
SIDECAR = os.path.join(K8S, "sidecar")
KUSTOMIZATIONS = (K8S, SIDECAR)
DEPLOY_README = os.path.join(DEPLOY, "README.md")
INHIBIT = os.path.join(DEPLOY, "alertmanager", "inhibit.yaml")
DEBIAN_MIRROR = os.path.join(DEPLOY, "debian-mirror")
RULES = os.path.join(DEPLOY, "prometheus", "alerts.yaml")
RULES_TEST = os.path.join(DEPLOY, "prometheus", "alerts_test.yaml")
SYNC_RULES = os.path.join(DEPLOY, "prometheus", "sync-rules.py")
DASHBOARD = os.path.join(DEPLOY, "grafana", "popbridge-dashboard.json")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
DOCKERIGNORE = os.path.join(DEPLOY, "Dockerfile.dockerignore")
IMAGE_CONFIG = os.path.join(DEPLOY, "config", "popbridge.yaml")
HEALTHCHECK = os.path.join(DEPLOY, "popbridge-healthcheck")
NODE_TOOLS = os.path.join(REPO, "tests", "deploy")

JOB = "popbridge"  # the scrape job name the rules and the dashboard expect

# The metric families popbridge exposes (the contract with metrics/). The dashboard and
# the rules may use these (histograms with _bucket/_sum/_count) and `up` only.
METRICS = {
    "popbridge_connections_accepted_total", "popbridge_connections_active",
    "popbridge_connections_rejected_total", "popbridge_tls_handshakes_total",
    "popbridge_tls_handshake_duration_seconds", "popbridge_auth_attempts_total",
    "popbridge_commands_total", "popbridge_command_duration_seconds",
    "popbridge_upstream_connections_total", "popbridge_upstream_connect_duration_seconds",
    "popbridge_upstream_errors_total", "popbridge_upstream_connections_active",
    "popbridge_upstream_logins_reused_total", "popbridge_upstream_connections_parked",
    "popbridge_bytes_total", "popbridge_messages_retrieved_total",
    "popbridge_messages_deleted_total", "popbridge_retrieve_size_mismatch_total",
    "popbridge_sessions_total", "popbridge_build_info", "popbridge_config_reloads_total",
    "popbridge_certificate_expiry_timestamp_seconds", "popbridge_ready",
}
HISTOGRAMS = {"popbridge_tls_handshake_duration_seconds", "popbridge_command_duration_seconds",
              "popbridge_upstream_connect_duration_seconds"}

REQUIRED_ALERTS = {
    "PopbridgeDown", "PopbridgeUpstreamErrors", "PopbridgeAuthFailureSpike",
    "PopbridgeHighCommandLatency", "PopbridgeCertificateExpiringSoon", "PopbridgeNotReady",
    "PopbridgeRetrieveSizeMismatch", "PopbridgeUpstreamDown", "PopbridgeConfigReloadRejected",
    "PopbridgeUpdateFailed", "PopbridgeConnectionLimitReached",
}

# Where runbook_url annotations point: sections of deploy/README.md on the project's site.
RUNBOOK_BASE = "https://github.com/popbridge/popbridge/blob/main/deploy/README.md#"

# A popbridge process's worst-case memory (deploy/README.md, "Memory"): a fixed part
# (binary, libraries, event loops; about 11 MiB measured with one worker) plus, per
# session, a full client write queue (the high watermark), a message read ahead
# (limits.read_ahead) and what may come on top of them:
# one upstream read past the watermark (64 KiB), pipelined client input up to its cap
# (64 KiB), and the TLS state of the client and upstream connections (about 11 KiB
# measured per TLS client; 32 KiB counted).
MEMORY_BASE = 32 * 1024 * 1024
MEMORY_PER_SESSION = 160 * 1024
MEMORY_FORMULA = "32 MiB + max_connections x (client_write_high_watermark + read_ahead + 160 KiB)"


# ----------------------------------------------------------------- helpers

def _run(cmd: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kwargs)


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found: install the Debian package {package} "
                    f"(apt-get install --no-install-recommends {package})", pytrace=False)
    return path


def _yaml_docs(path: str) -> list[Any]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _yaml_file(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _kubectl() -> str:
    return _tool("kubectl", "kubernetes-client")


def _render_text(directory: str) -> str:
    """`kubectl kustomize DIRECTORY`: what `kubectl apply -k` would send, rendered offline."""
    r = _run([_kubectl(), "kustomize", directory], timeout=60)
    assert r.returncode == 0, f"kubectl kustomize {directory} failed:\n{r.stderr}"
    return r.stdout


def _kustomize(directory: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(_render_text(directory)) if d is not None]


@functools.lru_cache(maxsize=None)
def _rendered(directory: str) -> str:
    """`kubectl kustomize DIRECTORY` as YAML text (cached: the files do not change in a run)."""
    return _render_text(directory)


def _example_files() -> list[str]:
    """The example manifests (*-example.yaml): shown, never applied (not in a kustomization)."""
    out = []
    for root, _, files in os.walk(K8S):
        out += [os.path.join(root, f) for f in files if f.endswith("-example.yaml")]
    return sorted(out)


def _objects() -> list[tuple[str, dict]]:
    """(where, object) for every Kubernetes object that deploy/kubernetes applies (each
    kustomization as rendered) or shows (the example Secrets)."""
    out = []
    for directory in KUSTOMIZATIONS:
        where = f"{os.path.relpath(directory, REPO)} (kubectl kustomize)"
        out += [(where, d) for d in yaml.safe_load_all(_rendered(directory)) if d is not None]
    for path in _example_files():
        out += [(path, d) for d in _yaml_docs(path)]
    return out


def _kustomization(directory: str) -> dict:
    return _yaml_file(os.path.join(directory, "kustomization.yaml"))


def _size_bytes(text: Any) -> int:
    """A popbridge size ("256KiB", "1MiB", "64KB", bare bytes)."""
    m = re.fullmatch(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?", str(text).strip())
    assert m, f"bad size {text!r}"
    unit = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3,
            "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}[m.group(2)]
    return int(m.group(1)) * unit


def _quantity_bytes(text: Any) -> int:
    """A Kubernetes memory quantity ("512Mi", "1Gi", "500M", bare bytes)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(text).strip())
    assert m, f"bad quantity {text!r}"
    unit = {None: 1, "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4,
            "k": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4}[m.group(2)]
    return int(m.group(1)) * unit


def _duration_seconds(text: str) -> float:
    """A popbridge duration ("30s", "2m", "1h30m", "500ms", or bare seconds)."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+)(ms|h|m|s)", text):
        assert m.start() == pos, f"bad duration {text!r}"
        total += int(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[m.group(2)]
        pos = m.end()
    assert pos == len(text) and pos > 0, f"bad duration {text!r}"
    return total


def _port(address: str) -> int:
    return int(str(address).rsplit(":", 1)[1])


def _metric_names(text: str) -> set[str]:
    """popbridge_* names used in PromQL text (or in a Grafana JSON dump)."""
    return set(re.findall(r"\bpopbridge_[a-z0-9_]+", text))


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


# ==================================================================== Prometheus rules

def test_promtool_check_rules():
    promtool = _tool("promtool", "prometheus")
    r = _run([promtool, "check", "rules", RULES])
    assert r.returncode == 0, f"promtool check rules failed:\n{r.stdout}{r.stderr}"


def test_promtool_test_rules():
    promtool = _tool("promtool", "prometheus")
    r = _run([promtool, "test", "rules", RULES_TEST], cwd=os.path.dirname(RULES_TEST))
    assert r.returncode == 0, f"promtool test rules failed:\n{r.stdout}{r.stderr}"


def test_rules_cover_the_required_alerts_with_labels_and_annotations():
    groups = _yaml_file(RULES)["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert REQUIRED_ALERTS <= set(alerts), f"missing alerts: {sorted(REQUIRED_ALERTS - set(alerts))}"
    for name, rule in alerts.items():
        assert rule.get("labels", {}).get("severity") in ("critical", "warning", "info"), name
        for key in ("summary", "description", "runbook_url"):
            assert rule.get("annotations", {}).get(key), f"{name}: annotation {key} missing"
        # runbook_url is the name Alertmanager's and Grafana's integrations link; a
        # free-text runbook would not be linked anywhere.
        assert "runbook" not in rule["annotations"], f"{name}: use runbook_url, not runbook"
    # Every alert is exercised by the promtool tests, firing at least once.
    tests = _yaml_file(RULES_TEST)["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    silent = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if not case.get("exp_alerts")}
    assert set(alerts) <= fired, f"alerts never shown firing in alerts_test.yaml: {sorted(set(alerts) - fired)}"
    assert set(alerts) <= silent, f"alerts never shown silent in alerts_test.yaml: {sorted(set(alerts) - silent)}"


def test_prometheusrule_manifest_is_generated_from_the_rule_file():
    r = _run(["/usr/bin/python3", SYNC_RULES, "--check"])
    assert r.returncode == 0, f"{r.stdout}{r.stderr}"
    manifest = _yaml_file(os.path.join(K8S, "prometheusrule.yaml"))
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == _yaml_file(RULES)["groups"]


def _github_anchors(markdown: str) -> dict[str, str]:
    """{anchor: section text} for the headings of a Markdown file, with GitHub's anchors
    (lower case, punctuation other than - and _ dropped, spaces to hyphens, -1, -2, ...
    for repeats); fenced code is not searched for headings."""
    anchors: dict[str, str] = {}
    seen: dict[str, int] = {}
    current: Optional[str] = None
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            current = slug if n == 0 else f"{slug}-{n}"
            anchors[current] = ""
        elif current is not None:
            anchors[current] += line + "\n"
    return anchors


def test_every_alert_links_its_runbook_section_in_deploy_readme():
    """runbook_url of every alert is a section of deploy/README.md (on the project's site)
    that exists, of its own, and says what to do."""
    with open(DEPLOY_README, encoding="utf-8") as f:
        anchors = _github_anchors(f.read())
    used = {}
    for group in _yaml_file(RULES)["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            name, url = rule["alert"], rule["annotations"].get("runbook_url", "")
            assert url.startswith(RUNBOOK_BASE), f"{name}: runbook_url {url!r} is not under {RUNBOOK_BASE}"
            anchor = url[len(RUNBOOK_BASE):]
            assert anchor in anchors, (f"{name}: deploy/README.md has no heading with the anchor #{anchor} "
                                       f"(anchors: {sorted(anchors)})")
            assert anchor not in used, f"{name} and {used.get(anchor)} share the runbook #{anchor}"
            used[anchor] = name
            text = anchors[anchor]
            assert len(text.split()) >= 30, f"{name}: the runbook section #{anchor} is nearly empty"
            # The section is about this alert: it names it, or the alert's metrics.
            metrics = _metric_names(rule["expr"])
            assert name in text or any(m in text for m in metrics) or anchor == name.lower(), anchor


def _inhibit_rules() -> list[dict]:
    return _yaml_file(INHIBIT)["inhibit_rules"]


def _matchers(matchers: list[str]) -> dict[str, str]:
    """Alertmanager equality matchers ("name = value") as a dict; others are refused here."""
    out = {}
    for m in matchers:
        parts = re.fullmatch(r'\s*(\w+)\s*=\s*"?([^"]*?)"?\s*', m)
        assert parts and not re.search(r"[!=~]~|!=", m), f"only equality matchers are expected: {m!r}"
        out[parts.group(1)] = parts.group(2)
    return out


def _grouping_labels(expr: str) -> Optional[set[str]]:
    """The labels an alert's series carry when its expression aggregates (`by (...)`
    on every aggregation), or None when it keeps the input series' labels."""
    groups = re.findall(r"\b(?:sum|count|min|max|avg)\s+by\s*\(([^)]*)\)", expr)
    if not groups:
        return None
    sets = [{l.strip() for l in g.split(",") if l.strip()} for g in groups]
    return set.intersection(*sets)


def test_alertmanager_inhibition_config_is_valid():
    amtool = _tool("amtool", "prometheus-alertmanager")
    r = _run([amtool, "check-config", INHIBIT])
    assert r.returncode == 0, f"amtool check-config failed:\n{r.stdout}{r.stderr}"
    assert "2 inhibit rules" in r.stdout or "inhibit rules" in r.stdout, r.stdout


def test_inhibition_rules_name_real_alerts_and_labels_they_carry():
    """The source alert exists and carries every label in `equal` (a label missing from
    the source compares as empty, so the rule would never match a target that has it),
    and the target is the per-instance PopbridgeNotReady."""
    rules = {r["alert"]: r for g in _yaml_file(RULES)["groups"] for r in g["rules"] if "alert" in r}
    inhibit = _inhibit_rules()
    assert inhibit
    sources = set()
    for rule in inhibit:
        source = _matchers(rule["source_matchers"])
        target = _matchers(rule["target_matchers"])
        assert source["alertname"] in rules, f"inhibit.yaml: no alert {source['alertname']}"
        assert target == {"alertname": "PopbridgeNotReady"}, target
        sources.add(source["alertname"])
        carried = _grouping_labels(rules[source["alertname"]]["expr"])
        assert carried is not None and set(rule["equal"]) <= carried, (
            f"inhibit.yaml: {source['alertname']} carries {carried}, not all of equal {rule['equal']}")
        assert {"namespace", "job"} <= set(rule["equal"]), "a rule must not cross services"
    assert "PopbridgeUpstreamDown" in sources
    # PopbridgeNotReady is per instance (no aggregation), so it has every label of equal.
    assert _grouping_labels(rules["PopbridgeNotReady"]["expr"]) is None


def test_alertmanagerconfig_holds_the_same_inhibition_rules():
    """deploy/kubernetes/alertmanagerconfig.yaml (Prometheus Operator) = inhibit.yaml."""
    (amc,) = [o for _, o in _objects() if o["kind"] == "AlertmanagerConfig"]
    theirs = [({m["name"]: m["value"] for m in r["sourceMatch"]}, {m["name"]: m["value"] for m in r["targetMatch"]},
               r["equal"]) for r in amc["spec"]["inhibitRules"]]
    for r in amc["spec"]["inhibitRules"]:
        assert all(m.get("matchType", "=") == "=" and not m.get("regex") for m in r["sourceMatch"] + r["targetMatch"])
    ours = [(_matchers(r["source_matchers"]), _matchers(r["target_matchers"]), r["equal"]) for r in _inhibit_rules()]
    assert theirs == ours


class Alertmanager:
    """Debian's Alertmanager on a free loopback port, with a given configuration, no
    cluster peers."""

    def __init__(self, config: str):
        self.binary = _tool("prometheus-alertmanager", "prometheus-alertmanager")
        self.port = free_port()
        self.dir = tempdirs.make("alertmanager")
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "Alertmanager":
        self._log = open(os.path.join(self.dir, "alertmanager.log"), "ab")
        self.proc = procs.register(subprocess.Popen(
            [self.binary, f"--config.file={self.config}", f"--storage.path={self.dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, cwd=self.dir,
            start_new_session=True, close_fds=True, preexec_fn=procs.die_with_parent()))

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited with status {self.proc.returncode}\n{self.log()}")
            try:
                return _http_get(f"{self.url}/-/ready", 1.0)[0] == 200
            except OSError:
                return False

        wait_until(ready, 20 * TIME_FACTOR, f"alertmanager to be ready on port {self.port}", on_timeout=self.log)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.proc is not None:
                procs.stop_group(self.proc, term_timeout=10.0)
        finally:
            if self.proc is not None:
                self._log.close()
            tempdirs.remove(self.dir)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "alertmanager.log"), "rb") as f:
                return "--- alertmanager log ---\n" + f.read().decode("utf-8", "replace")[-3000:]
        except OSError:
            return ""

    def post(self, alerts: list[dict]) -> None:
        request = urllib.request.Request(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.status == 200

    def states(self) -> dict[tuple, str]:
        status, body = _http_get(f"{self.url}/api/v2/alerts")
        assert status == 200, body
        return {(a["labels"]["alertname"], a["labels"].get("namespace"), a["labels"].get("service"),
                 a["labels"].get("instance")): a["status"]["state"] for a in json.loads(body)}


def test_inhibition_silences_not_ready_while_the_upstream_is_down_in_a_real_alertmanager():
    """What a page looks like when the upstream goes away: the cause stays, the
    per-instance symptoms of the same service are suppressed, other services' are not."""
    def alert(name: str, **labels: str) -> dict:
        return {"labels": {"alertname": name, "job": JOB, **labels}}

    with Alertmanager(INHIBIT) as am:
        am.post([
            alert("PopbridgeUpstreamDown", namespace="mail", service="popbridge-metrics", severity="critical"),
            alert("PopbridgeNotReady", namespace="mail", service="popbridge-metrics", instance="a"),
            alert("PopbridgeNotReady", namespace="mail", service="popbridge-metrics", instance="b"),
            # The same namespace and job, another Service (a sidecar with its own upstream).
            alert("PopbridgeNotReady", namespace="mail", service="helpdesk-popbridge-metrics", instance="c"),
            alert("PopbridgeNotReady", namespace="other", service="popbridge-metrics", instance="d"),
            # Upstream errors (by namespace and job) silence that service's NotReady.
            alert("PopbridgeUpstreamErrors", namespace="shop", severity="critical"),
            alert("PopbridgeNotReady", namespace="shop", service="popbridge-metrics", instance="e"),
            # Not a target: other alerts of the same service stay.
            alert("PopbridgeCertificateExpiringSoon", namespace="mail", service="popbridge-metrics", instance="a"),
        ])
        wanted = {
            ("PopbridgeUpstreamDown", "mail", "popbridge-metrics", None): "active",
            ("PopbridgeNotReady", "mail", "popbridge-metrics", "a"): "suppressed",
            ("PopbridgeNotReady", "mail", "popbridge-metrics", "b"): "suppressed",
            ("PopbridgeNotReady", "mail", "helpdesk-popbridge-metrics", "c"): "active",
            ("PopbridgeNotReady", "other", "popbridge-metrics", "d"): "active",
            ("PopbridgeUpstreamErrors", "shop", None, None): "active",
            ("PopbridgeNotReady", "shop", "popbridge-metrics", "e"): "suppressed",
            ("PopbridgeCertificateExpiringSoon", "mail", "popbridge-metrics", "a"): "active",
        }
        last: dict = {}

        def settled() -> bool:
            last.clear()
            last.update(am.states())
            return last == wanted

        wait_until(settled, 10 * TIME_FACTOR, "the alerts' inhibition states",
                   on_timeout=lambda: f"states: {last}\n{am.log()}")
        # Resolving the cause lifts the inhibition.
        am.post([{**alert("PopbridgeUpstreamDown", namespace="mail", service="popbridge-metrics",
                          severity="critical"),
                  "endsAt": datetime.datetime.now(datetime.timezone.utc).isoformat()}])
        wanted = {k: v for k, v in wanted.items() if k[0] != "PopbridgeUpstreamDown"}
        wanted[("PopbridgeNotReady", "mail", "popbridge-metrics", "a")] = "active"
        wanted[("PopbridgeNotReady", "mail", "popbridge-metrics", "b")] = "active"
        wait_until(settled, 10 * TIME_FACTOR, "NotReady to be active once the upstream alert resolved",
                   on_timeout=lambda: f"states: {last}\n{am.log()}")


def test_rules_and_dashboard_use_only_known_metrics():
    with open(RULES) as f:
        used = {_family(n) for n in _metric_names(f.read())}
    with open(DASHBOARD) as f:
        used |= {_family(n) for n in _metric_names(f.read())}
    unknown = used - METRICS
    assert not unknown, f"metric names that popbridge does not expose: {sorted(unknown)}"


# ======================================================================= Kubernetes

@pytest.fixture(scope="module")
def node_tools() -> str:
    """tests/deploy with its node_modules (npm ci when missing)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the Kubernetes schema checks (tests/deploy)", pytrace=False)
    if not _node_modules_current():
        r = _run([npm, "ci", "--prefix", NODE_TOOLS, "--no-audit", "--no-fund", "--loglevel=error"], timeout=600)
        assert r.returncode == 0, f"npm ci --prefix tests/deploy failed:\n{r.stdout}{r.stderr}"
        assert _node_modules_current(), "npm ci did not install what tests/deploy/package-lock.json lists"
    return node


def _node_modules_current() -> bool:
    """Every package of tests/deploy/package-lock.json is installed at its locked version."""
    with open(os.path.join(NODE_TOOLS, "package-lock.json")) as f:
        locked = json.load(f)["packages"]
    for path, entry in locked.items():
        if not path:
            continue
        try:
            with open(os.path.join(NODE_TOOLS, path, "package.json")) as f:
                if json.load(f).get("version") != entry.get("version"):
                    return False
        except (OSError, ValueError):
            return False
    return True


@pytest.fixture(scope="module")
def schema_report(node_tools) -> dict:
    """tests/deploy/validate.mjs over what each kustomization renders, the example
    manifests and the dashboard (one node run)."""
    d = tempdirs.make("deploy-rendered")
    try:
        files = []
        for directory in KUSTOMIZATIONS:
            # Named after the kustomization, so that errors say where they come from.
            name = os.path.relpath(directory, REPO).replace("/", "_") + ".rendered.yaml"
            files.append(os.path.join(d, name))
            with open(files[-1], "w", encoding="utf-8") as f:
                f.write(_rendered(directory))
        files += _example_files() + [DASHBOARD]
        r = _run([node_tools, os.path.join(NODE_TOOLS, "validate.mjs"), *files], timeout=120, cwd=REPO)
    finally:
        tempdirs.remove(d)
    try:
        report = json.loads(r.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"tests/deploy/validate.mjs failed (status {r.returncode}):\n{r.stdout}{r.stderr}")
    assert r.returncode in (0, 1), r.stderr
    return report


def test_kubernetes_manifests_match_the_schemas(schema_report):
    errors = [e for e in schema_report["errors"] if not e.startswith(os.path.relpath(DASHBOARD, REPO))]
    assert not errors, "\n".join(errors)
    kinds = {(d["apiVersion"], d["kind"]) for d in schema_report["documents"]}
    for wanted in [("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "Deployment"),
                   ("apps/v1", "StatefulSet"), ("policy/v1", "PodDisruptionBudget"),
                   ("autoscaling/v2", "HorizontalPodAutoscaler"),
                   ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
                   ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig")]:
        assert wanted in kinds, f"no {wanted[1]} ({wanted[0]}) in deploy/kubernetes"


def _generated_config_maps(directory: str) -> dict[str, list[str]]:
    """{ConfigMap base name: its files} of a kustomization's configMapGenerator."""
    out = {}
    for g in _kustomization(directory).get("configMapGenerator", []):
        out[g["name"]] = [f.split("=", 1)[-1] for f in g.get("files", [])]
    return out


def test_kustomizations_list_every_manifest():
    for directory in KUSTOMIZATIONS:
        k = _kustomization(directory)
        resources = k.get("resources", [])
        generated = [f for files in _generated_config_maps(directory).values() for f in files]
        for res in resources + generated:
            assert os.path.exists(os.path.join(directory, res)), f"{directory}/kustomization.yaml: {res} does not exist"
            assert not res.startswith(".."), f"{directory}: kustomize refuses files outside the kustomization's folder: {res}"
        present = {f for f in os.listdir(directory) if f.endswith(".yaml") and f != "kustomization.yaml"}
        # The example Secrets hold placeholders; applying them would overwrite real ones.
        examples = {f for f in present if f.endswith("-example.yaml")}
        unlisted = present - set(resources) - set(generated) - examples
        assert not unlisted, f"{directory}/kustomization.yaml does not use {sorted(unlisted)}"
        assert not examples & set(resources), f"{directory}: an example is applied"
        assert not any(o.get("kind") == "ConfigMap" for res in resources
                       for o in _yaml_docs(os.path.join(directory, res))), \
            f"{directory}: a ConfigMap written by hand does not roll the Pods when it changes; use configMapGenerator"
        assert not k.get("generatorOptions", {}).get("disableNameSuffixHash"), directory
        images = {i["name"] for i in k.get("images", [])}
        for res in resources:
            for doc in _yaml_docs(os.path.join(directory, res)):
                for c in _pod_containers(doc):
                    assert c["image"].rsplit(":", 1)[0] in images, f"{res}: image {c['image']} not in images:"


def _config_map_volumes(obj: dict) -> list[str]:
    return [v["configMap"]["name"] for v in (_pod_spec(obj) or {}).get("volumes", []) if "configMap" in v]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=["standalone", "sidecar"])
def test_kustomize_generates_the_config_map_so_that_a_config_change_rolls_the_pods(directory):
    """`kubectl apply -k`: the ConfigMap's name carries a hash of the configuration and
    the workload refers to exactly that name, so an edit makes a new Pod template (a
    rolling update), and an unchanged file changes nothing."""
    generators = _generated_config_maps(directory)
    assert generators, f"{directory}: no configMapGenerator"
    objects = _kustomize(directory)
    workloads = [o for o in objects if _pod_spec(o)]
    assert workloads
    names = {}
    for base in generators:
        (cm,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(base + "-")]
        names[base] = cm["metadata"]["name"]
        assert re.fullmatch(re.escape(base) + r"-[a-z0-9]{6,}", names[base]), names[base]
    referenced = [n for o in workloads for n in _config_map_volumes(o)]
    assert referenced and set(referenced) == set(names.values()), \
        f"the workloads mount {referenced}, the generator made {sorted(names.values())}"
    assert not set(referenced) & set(generators), "a volume names the ConfigMap without its hash"

    d = tempdirs.make("kustomize")
    try:
        copy = os.path.join(d, "k")
        shutil.copytree(directory, copy)
        # Rendering the same files again: the same names.
        same = _kustomize(copy)
        assert {o["metadata"]["name"] for o in same if o["kind"] == "ConfigMap"} == set(names.values())
        for base, files in generators.items():
            path = os.path.join(copy, files[0])
            config = _yaml_file(path)
            config["logging"]["level"] = "debug" if config["logging"].get("level") != "debug" else "info"
            with open(path, "w") as f:
                f.write(to_yaml(config) + "\n")
        changed = _kustomize(copy)
    finally:
        tempdirs.remove(d)
    new_names = {o["metadata"]["name"] for o in changed if o["kind"] == "ConfigMap"}
    assert not new_names & set(names.values()), "an edited configuration kept its ConfigMap name"
    new_workloads = [o for o in changed if _pod_spec(o)]
    assert {n for o in new_workloads for n in _config_map_volumes(o)} == new_names
    for old, new in zip(workloads, new_workloads):
        assert old["spec"]["template"] != new["spec"]["template"], \
            f"{old['kind']}/{old['metadata']['name']}: the Pod template did not change"


def _pod_spec(obj: dict) -> Optional[dict]:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None


def _pod_containers(obj: dict) -> list[dict]:
    spec = _pod_spec(obj)
    if not spec:
        return []
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _config_map_of(objects: list[tuple[str, dict]], pod: dict, container: dict) -> tuple[dict, str]:
    """The ConfigMap and key that a container's --config path resolves to through its
    volume mounts."""
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1]
    for mount in container["volumeMounts"]:
        mp = mount["mountPath"].rstrip("/")
        if config_path.startswith(mp + "/") or (mount.get("subPath") and config_path == mp):
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert "configMap" in volume, f"--config {config_path} is not on a ConfigMap volume"
            key = mount.get("subPath") or config_path[len(mp) + 1:]
            for item in volume["configMap"].get("items", []):
                if item["path"] == key:
                    key = item["key"]
            cm = next(o for _, o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"])
            return cm, key
    raise AssertionError(f"--config {config_path} is on no volume mount")


def _popbridge_config(objects: list[tuple[str, dict]], pod: dict, container: dict) -> dict:
    """The popbridge configuration a container runs with: its --config path resolved
    through its volume mounts to a ConfigMap key."""
    cm, key = _config_map_of(objects, pod, container)
    return yaml.safe_load(cm["data"][key])


def _workloads() -> list[tuple[str, dict, dict, dict]]:
    """(where, workload, pod spec, popbridge container) for every workload running popbridge."""
    out = []
    for path, obj in _objects():
        for c in _pod_containers(obj):
            if c["name"] == "popbridge":
                out.append((path, obj, _pod_spec(obj), c))
    return out


def _is_native_sidecar(pod: dict, container: dict) -> bool:
    return container in pod.get("initContainers", []) and container.get("restartPolicy") == "Always"


def _unprivileged_port_start(pod: dict) -> int:
    for sysctl in pod.get("securityContext", {}).get("sysctls", []):
        if sysctl["name"] == "net.ipv4.ip_unprivileged_port_start":
            return int(sysctl["value"])
    return 1024


def _is_loopback(address: str) -> bool:
    host = str(address).rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host == "::1"


def _secret_files(config: dict) -> list[str]:
    """Every file the configuration reads that belongs in a Secret."""
    files = [config.get("tls", {}).get(k) for k in ("certificate", "private_key")]
    auth = config.get("auth", {})
    files.append(auth.get("users_file"))
    login = config.get("upstream", {}).get("login", {})
    files += [login.get("master_password_file"), login.get("credentials_file")]
    oauth2 = login.get("oauth2", {})
    files += [oauth2.get("client_secret_file"), oauth2.get("refresh_tokens_file")]
    return [f for f in files if f]


def test_kubernetes_workloads_fit_popbridge():
    objects = _objects()
    workloads = _workloads()
    assert {w[1]["kind"] for w in workloads} == {"Deployment", "StatefulSet"}
    examples = {o["metadata"]["name"]: o for _, o in objects if o["kind"] == "Secret"}
    for path, obj, pod, c in workloads:
        where = f"{path} {obj['kind']}/{obj['metadata']['name']}"
        config = _popbridge_config(objects, pod, c)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        # Container ports are the listeners that other Pods can reach, and the admin endpoint.
        reachable = [l for l in config["listeners"] if not _is_loopback(l["address"])]
        assert sorted(ports.values()) == sorted([_port(l["address"]) for l in reachable]
                                                + [_port(config["metrics"]["address"])]), where
        assert ports["metrics"] == _port(config["metrics"]["address"]), where
        for listener in reachable:
            assert ports[listener["name"]] == _port(listener["address"]), f"{where}: port name {listener['name']}"
        # A non-root process without capabilities binds only from ip_unprivileged_port_start.
        lowest = _unprivileged_port_start(pod)
        for address in [l["address"] for l in config["listeners"]] + [config["metrics"]["address"]]:
            assert _port(address) >= lowest, f"{where}: {address} is below the unprivileged ports (from {lowest})"
        # Probes: liveness /healthz on the admin port; readiness /readyz, except for a
        # native sidecar, whose readiness would be its Pod's (a startupProbe orders it).
        probes = ["livenessProbe"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        if _is_native_sidecar(pod, c):
            assert "readinessProbe" not in c, f"{where}: a sidecar's /readyz would make the whole Pod unready"
            assert c["startupProbe"]["httpGet"]["path"] == "/healthz", where
            probes.append("startupProbe")
        else:
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            probes.append("readinessProbe")
        for probe in probes:
            assert c[probe]["httpGet"]["port"] in ("metrics", ports["metrics"]), f"{where}: {probe} port"
        # The grace period covers the preStop pause plus the drain deadline, with room.
        drain = _duration_seconds(config.get("limits", {}).get("drain_timeout", "30s"))
        pause = 0
        pre_stop = c.get("lifecycle", {}).get("preStop", {})
        if "exec" in pre_stop:
            cmd = pre_stop["exec"]["command"]
            assert cmd[0] == "sleep", where
            pause = float(cmd[1])
        elif "sleep" in pre_stop:
            pause = pre_stop["sleep"]["seconds"]
        grace = pod["terminationGracePeriodSeconds"]
        assert grace >= pause + drain + 5, f"{where}: terminationGracePeriodSeconds {grace} < preStop {pause}s + drain {drain}s + 5s"
        # Hardening.
        pod_sc = pod.get("securityContext", {})
        sc = c["securityContext"]
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) == 10001, f"{where}: the image's user is 10001"
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: resources.{kind}"
        # Every file the config reads from a Secret (certificate, key, users, tokens) is
        # on a Secret volume mounted as a directory (a subPath mount would never see a
        # rotated Secret), under a key that the example Secret of that name has.
        files = _secret_files(config)
        assert files, where
        for file in files:
            mount = next((m for m in c["volumeMounts"] if file.startswith(m["mountPath"].rstrip("/") + "/")), None)
            assert mount and not mount.get("subPath"), f"{where}: {file} is not on a directory mount"
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert "secret" in volume, f"{where}: {file} is not on a Secret volume"
            secret = volume["secret"]["secretName"]
            key = file[len(mount["mountPath"].rstrip("/")) + 1:]
            for item in volume["secret"].get("items", []):
                if item["path"] == key:
                    key = item["key"]
            assert secret in examples, f"{where}: no example of the Secret {secret} (a *-example.yaml)"
            example = examples[secret]
            assert key in {**example.get("data", {}), **example.get("stringData", {})}, \
                f"{where}: {file} is key {key!r} of Secret {secret}, which its example does not have"
            # popbridge (uid/gid 10001, not the files' owner root) can read it.
            mode = volume["secret"].get("defaultMode", 0o644)
            group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
            readable = mode & 0o004 or (mode & 0o040 and pod_sc.get("fsGroup") is not None
                                        and pod_sc.get("fsGroup") == group)
            assert readable, f"{where}: {file} (mode {mode:o}) is not readable by popbridge"
        # The selector selects the Pod template.
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), where


def _worst_case_memory(config: dict) -> int:
    limits = config.get("limits", {})
    sessions = int(limits.get("max_connections", 10000))
    high = _size_bytes(limits.get("client_write_high_watermark", "256KiB"))
    read_ahead = _size_bytes(limits.get("read_ahead", "64KiB"))
    return MEMORY_BASE + sessions * (high + read_ahead + MEMORY_PER_SESSION)


def test_memory_limits_hold_the_worst_case_of_the_mounted_configuration():
    """limits.memory >= 32 MiB + max_connections x (client_write_high_watermark + read_ahead + 160 KiB),
    from the configuration each container mounts (defaults where it sets nothing: 10,000
    connections of 320 KiB would need 5 GiB), and the formula is written next to the
    limit, next to max_connections and in deploy/README.md."""
    objects = _objects()
    for path, obj, pod, c in _workloads():
        where = f"{path} {obj['kind']}/{obj['metadata']['name']}"
        config = _popbridge_config(objects, pod, c)
        worst = _worst_case_memory(config)
        limit = _quantity_bytes(c["resources"]["limits"]["memory"])
        assert limit >= worst, (f"{where}: limits.memory {c['resources']['limits']['memory']} < worst case "
                                f"{worst / 2 ** 20:.0f} MiB ({MEMORY_FORMULA})")
        # Not absurdly above it either (the request and the node's capacity are planned on it).
        assert limit <= 2 * worst, f"{where}: limits.memory is more than twice the worst case {worst / 2 ** 20:.0f} MiB"
        assert _quantity_bytes(c["resources"]["requests"]["memory"]) <= limit, where
    # The image's default config, for `docker run --memory` (deploy/README.md).
    assert _worst_case_memory(_yaml_file(IMAGE_CONFIG)) <= 512 * 2 ** 20
    # Where the formula is written down.
    documented = [DEPLOY_README, IMAGE_CONFIG]
    for directory in KUSTOMIZATIONS:
        documented += [os.path.join(directory, f) for files in _generated_config_maps(directory).values() for f in files]
        for res in _kustomization(directory).get("resources", []):
            if any(c["name"] == "popbridge" for d in _yaml_docs(os.path.join(directory, res)) for c in _pod_containers(d)):
                documented.append(os.path.join(directory, res))
    for path in documented:
        with open(path, encoding="utf-8") as f:
            assert MEMORY_FORMULA in f.read(), f"{os.path.relpath(path, REPO)} does not state {MEMORY_FORMULA!r}"


def test_kubernetes_configs_agree_with_the_image_config():
    """The standalone Deployment runs the image's own default configuration."""
    (cm,) = [o for o in yaml.safe_load_all(_rendered(K8S)) if o and o["kind"] == "ConfigMap"
             and o["metadata"]["name"].startswith("popbridge-config-")]
    assert yaml.safe_load(cm["data"]["popbridge.yaml"]) == _yaml_file(IMAGE_CONFIG)


def test_sidecar_serves_a_legacy_poller_on_loopback_from_microsoft_365():
    """The sidecar example: an application that polls POP3 on 127.0.0.1:110, and popbridge
    beside it logging in to Microsoft 365 with OAuth2, its secrets from Secrets."""
    objects = _objects()
    (path, obj, pod, c), = [w for w in _workloads() if w[1]["kind"] == "StatefulSet"]
    config = _popbridge_config(objects, pod, c)
    # The application's POP3: loopback, port 110, no TLS (nothing leaves the Pod), and
    # plaintext logins allowed for it.
    assert [(l["address"], l.get("tls", "implicit")) for l in config["listeners"]] == [("127.0.0.1:110", "none")]
    assert config["auth"]["allow_plaintext"] is True
    assert _unprivileged_port_start(pod) <= 110
    # Microsoft 365 over IMAPS with OAuth2 (refresh tokens per user, or a service
    # account), and popbridge checks the application's own password.
    up = config["upstream"]
    assert up["address"] == "outlook.office365.com:993" and up.get("tls", "implicit") == "implicit"
    assert up["login"]["mode"] == "oauth2"
    oauth2 = up["login"]["oauth2"]
    assert oauth2["token_url"].startswith("https://login.microsoftonline.com/")
    assert oauth2["token_url"].endswith("/oauth2/v2.0/token")
    assert "outlook.office" in oauth2.get("scope", "")
    assert config["auth"]["mode"] in ("users_file", "http")
    # popbridge is a native sidecar (started before, stopped after the application), and
    # the application is a container of its own, not popbridge, not an IMAP server.
    assert _is_native_sidecar(pod, c)
    apps = pod["containers"]
    assert apps and all(a["name"] != "popbridge" and "dovecot" not in a["image"] for a in apps)
    # One poller per mailbox.
    assert obj["spec"]["replicas"] == 1
    # No Service publishes POP3 for this Pod: popbridge is the application's only.
    labels = obj["spec"]["template"]["metadata"]["labels"]
    for _, svc in objects:
        if svc["kind"] == "Service" and svc["spec"]["selector"].items() <= labels.items():
            assert all(p["port"] not in (110, 995) for p in svc["spec"]["ports"]), svc["metadata"]["name"]


def test_services_monitors_budgets_and_autoscaler_point_at_popbridge():
    objects = [o for _, o in _objects()]
    pods = [(o, o["spec"]["template"]["metadata"]["labels"], _pod_containers(o)) for o in objects if _pod_spec(o)]

    def selected(selector: dict) -> list[tuple[dict, dict, list]]:
        return [p for p in pods if selector.items() <= p[1].items()]

    for svc in (o for o in objects if o["kind"] == "Service"):
        targets = selected(svc["spec"]["selector"])
        assert targets, f"Service {svc['metadata']['name']} selects no Pod"
        for port in svc["spec"]["ports"]:
            for workload, _, containers in targets:
                names = {p.get("name") for c in containers for p in c.get("ports", [])}
                assert port["targetPort"] in names, f"Service {svc['metadata']['name']}: no container port {port['targetPort']}"
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitors
    for sm in monitors:
        services = [o for o in objects if o["kind"] == "Service"
                    and sm["spec"]["selector"]["matchLabels"].items() <= o["metadata"].get("labels", {}).items()]
        assert {s["metadata"]["name"] for s in services} >= {"popbridge-metrics", "helpdesk-popbridge-metrics"}
        for s in services:
            # The job label comes from the Service: the rules and dashboard expect "popbridge".
            assert s["metadata"]["labels"][sm["spec"]["jobLabel"]] == JOB, s["metadata"]["name"]
            assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in s["spec"]["ports"]}
            assert all(p["port"] not in (110, 995) for p in s["spec"]["ports"]), "metrics Service exposes POP3"
            # Only the POP3 Services, never the metrics ones, carry the client ports.
        for e in sm["spec"]["endpoints"]:
            assert e.get("path", "/metrics") == "/metrics"
    pop3 = [o for o in objects if o["kind"] == "Service" and any(p["port"] in (110, 995) for p in o["spec"]["ports"])]
    assert pop3 and all(all(p["name"] != "metrics" for p in s["spec"]["ports"]) for s in pop3)
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "popbridge")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"
    pdb = next(o for o in objects if o["kind"] == "PodDisruptionBudget")
    assert selected(pdb["spec"]["selector"]["matchLabels"]) == [p for p in pods if p[0] is deployment]
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", "popbridge")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"]


# ==================================================================== configurations

def _configs_to_check() -> list:
    out = [pytest.param("deploy/config/popbridge.yaml", _yaml_file(IMAGE_CONFIG), id="image")]
    try:
        objects = _objects()
    except (Exception, pytest.fail.Exception) as e:
        # Collection goes on (kubectl missing, say); the test reports why.
        return out + [pytest.param("deploy/kubernetes", str(e), id="kustomize")]
    for where, obj in objects:
        if obj["kind"] == "ConfigMap" and "popbridge.yaml" in obj.get("data", {}):
            name = f"{where} ConfigMap/{obj['metadata']['name']}"
            base = re.sub(r"-[a-z0-9]+$", "", obj["metadata"]["name"])
            out.append(pytest.param(name, yaml.safe_load(obj["data"]["popbridge.yaml"]), id=f"configmap-{base}"))
    return out


def _with_local_files(config: dict, pki, directory: str) -> dict:
    """The configuration with the test PKI's files in place of the mounted certificate,
    key and CA, and local files in place of the mounted Secrets (users, OAuth2 client
    secret and refresh tokens, credentials, master password)."""
    config = json.loads(json.dumps(config))

    def write(name: str, text: str) -> str:
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    if "tls" in config:
        config["tls"]["certificate"] = pki.cert
        config["tls"]["private_key"] = pki.key
    config["upstream"]["ca_file"] = pki.ca
    user = "support@example.com"
    auth = config.get("auth", {})
    if "users_file" in auth:
        auth["users_file"] = write("users", f"{user}:{crypt_hash('a password', 'sha512')}\n")
    login = config["upstream"].get("login", {})
    if "credentials_file" in login:
        login["credentials_file"] = write("credentials", f"{user}:{user}:secret\n")
    if "master_password_file" in login:
        login["master_password_file"] = write("master", "secret\n")
    oauth2 = login.get("oauth2", {})
    if "client_secret_file" in oauth2:
        oauth2["client_secret_file"] = write("client-secret", "secret\n")
    if "refresh_tokens_file" in oauth2:
        oauth2["refresh_tokens_file"] = write("refresh-tokens", f"{user}:a-refresh-token\n")
    return config


@pytest.mark.parametrize("name,config", _configs_to_check())
def test_deploy_configs_pass_check_config(name, config, pki, popbridge_bin):
    """The shipped configurations are valid for this popbridge (with the test PKI's files
    in place of the mounted certificate and key, and local files for the Secrets)."""
    if isinstance(config, str):
        pytest.fail(f"cannot render {name}: {config}", pytrace=False)
    d = tempdirs.make("deploy-config")
    try:
        config = _with_local_files(config, pki, d)
        path = os.path.join(d, "popbridge.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(config) + "\n")
        status, out = check_config(path, binary=popbridge_bin)
        assert status == 0, f"{name}: popbridge --check-config failed:\n{out}"
        # No complaint beyond the test certificate's short life.
        warnings = [l for l in out.splitlines() if "warning" in l and "expires in" not in l]
        assert not warnings, f"{name}: {warnings}"
    finally:
        tempdirs.remove(d)


# ========================================================================= Dockerfile

def _dockerfile() -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    with open(DOCKERFILE) as f:
        lines = f.read().splitlines()
    joined, current = [], ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    assert not current, "Dockerfile ends with a continuation"
    out, stage = [], ""
    for line in joined:
        instr, _, args = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stage = (m.group(2) or m.group(1)).lower()
        out.append((stage, instr, args.strip()))
    return out


def _apt_packages(stage: str) -> list[str]:
    pkgs = []
    for st, instr, args in _dockerfile():
        if st != stage or instr != "RUN":
            continue
        for segment in re.split(r"&&|;|\|\|", args):
            words = shlex.split(segment)
            if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def _global_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    out = {}
    for stage, instr, args in _dockerfile():
        if stage == "" and instr == "ARG":
            name, _, default = args.partition("=")
            out[name.strip()] = default.strip().strip('"')
    return out


def _stage_args(stage: str) -> dict[str, Optional[str]]:
    """The ARGs a stage declares: {name: default or None}."""
    out: dict[str, Optional[str]] = {}
    for st, instr, args in _dockerfile():
        if st == stage and instr == "ARG":
            name, eq, default = args.partition("=")
            out[name.strip()] = default.strip().strip('"') if eq else None
    return out


def _resolve(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def _stages() -> list[tuple[str, str]]:
    """(stage, base image) with the global ARGs' defaults substituted."""
    g = _global_args()
    return [(stage, _resolve(args.split()[0], g)) for stage, instr, args in _dockerfile() if instr == "FROM"]


def _image_without_digest(image: str) -> str:
    return image.split("@", 1)[0]


def test_dockerfile_is_a_bookworm_multi_stage_build():
    stages = _stages()
    assert [s for s, _ in stages] == ["build", "runtime"], stages
    assert {s: _image_without_digest(i) for s, i in stages} == {"build": "debian:bookworm",
                                                                 "runtime": "debian:bookworm-slim"}
    final = [(i, a) for s, i, a in _dockerfile() if s == "runtime"]
    instr = {i: a for i, a in final}
    # A numeric non-root user (Kubernetes' runAsNonRoot can only verify a number).
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", instr["USER"]), instr["USER"]
    assert instr["USER"].split(":")[0] == "10001"
    # popbridge is PID 1 (exec form) and gets the signals.
    assert json.loads(instr["ENTRYPOINT"]) == ["/usr/local/bin/popbridge"]
    cmd = json.loads(instr["CMD"])
    assert cmd[0] == "--config"
    # The default config is the one in deploy/config, and its ports are the EXPOSEd ones.
    copies = [a.split() for i, a in final if i == "COPY"]
    assert ["deploy/config/popbridge.yaml", cmd[1]] in copies
    config = _yaml_file(IMAGE_CONFIG)
    wanted = sorted([_port(l["address"]) for l in config["listeners"]] + [_port(config["metrics"]["address"])])
    assert sorted(int(p.split("/")[0]) for p in instr["EXPOSE"].split()) == wanted
    assert all(p >= 1024 for p in wanted), "a non-root user cannot bind ports below 1024"
    # HEALTHCHECK runs the script that is copied into the image, without arguments: it
    # finds the admin endpoint (or a listener) in the running configuration.
    health = re.search(r"CMD\s+(\[.*\])", instr["HEALTHCHECK"])
    assert health, instr["HEALTHCHECK"]
    argv = json.loads(health.group(1))
    assert argv == ["/usr/local/bin/popbridge-healthcheck"], argv
    assert ["deploy/popbridge-healthcheck", argv[0]] in copies
    # The script reads the configuration through `popbridge --print-config`: the binary
    # is on the image's PATH under that name.
    assert any(a.split()[-1] == "/usr/local/bin/popbridge" for i, a in final if i == "COPY")
    # The license travels with the image (Apache-2.0 asks for LICENSE and NOTICE).
    assert any({"LICENSE", "NOTICE"} <= set(a.split()[:-1]) for i, a in final if i == "COPY")
    # Nothing is copied from outside the repository or excluded from the build context.
    with open(DOCKERIGNORE) as f:
        ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for stage, i, a in _dockerfile():
        if i != "COPY" or a.startswith("--from"):
            continue
        for src in a.split()[:-1]:
            assert os.path.exists(os.path.join(REPO, src)), f"COPY {src}: not in the repository"
            for pattern in ignored:
                assert not fnmatch.fnmatch(src.rstrip("/"), pattern.lstrip("*/")), f"COPY {src} is excluded by {pattern}"


def test_dockerfile_pins_every_base_image_by_digest():
    """Every FROM is a digest (a tag can be moved under a rebuild), through a global ARG
    so that an offline build can name the same image in its own registry; the tag stays
    for the reader. No `# syntax=` line: BuildKit would pull that frontend image."""
    g = _global_args()
    names = [s for s, _ in _stages()]
    for stage, instr, args in _dockerfile():
        if instr != "FROM":
            continue
        image = args.split()[0]
        assert re.fullmatch(r"\$\{\w+\}", image), f"FROM {image}: name the base image through a global ARG"
        resolved = _resolve(image, g)
        if resolved in names:
            continue  # an earlier stage
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", resolved), \
            f"FROM {image} = {resolved!r} is not pinned as name:tag@sha256:<64 hex digits>"
    with open(DOCKERFILE) as f:
        first = f.readline()
    assert not re.match(r"#\s*syntax\s*=", first, re.I), "a # syntax= line needs Docker Hub at build time"


def _labels(stage: str) -> dict[str, str]:
    out = {}
    for st, instr, args in _dockerfile():
        if st == stage and instr == "LABEL":
            for key, value in re.findall(r'([\w.-]+)=("[^"]*"|\S+)', args):
                out[key] = value.strip('"')
    return out


def test_dockerfile_has_oci_labels_from_the_build_arguments():
    labels = _labels("runtime")
    runtime_args = _stage_args("runtime")
    # Version and revision come from build arguments declared in the stage that uses them.
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${REVISION}"
    assert "VERSION" in runtime_args and "REVISION" in runtime_args
    assert labels["org.opencontainers.image.source"] == "https://github.com/popbridge/popbridge"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    with open(os.path.join(REPO, "LICENSE")) as f:
        head = f.read(2000)
    assert "Apache License" in head and "Version 2.0" in head, "LICENSE is not the Apache License 2.0"
    # The base image label names the pinned runtime image.
    assert labels["org.opencontainers.image.base.name"] == "${DEBIAN_RUNTIME_IMAGE}"
    assert "DEBIAN_RUNTIME_IMAGE" in runtime_args and runtime_args["DEBIAN_RUNTIME_IMAGE"] is None, \
        "redeclare DEBIAN_RUNTIME_IMAGE without a default to get the global one"
    # VERSION's default is CMakeLists.txt's version, in both stages, and the build checks
    # the binary's own --version against VERSION and REVISION (which it passes to CMake).
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        version = re.search(r"project\(popbridge\s+VERSION\s+([\d.]+)", f.read()).group(1)
    build_args = _stage_args("build")
    assert build_args["VERSION"] == runtime_args["VERSION"] == version
    assert build_args["REVISION"] == runtime_args["REVISION"]
    runs = " ".join(a for s, i, a in _dockerfile() if s == "build" and i == "RUN")
    assert '-DPOPBRIDGE_REVISION="${REVISION}"' in runs
    assert '"popbridge ${VERSION} (revision ${REVISION})"' in runs


def test_dockerfile_apt_can_use_a_local_mirror():
    """Each stage's apt-get runs after deploy/debian-mirror with the mirror build
    arguments (empty by default: nothing changes), and the runtime stage puts the image's
    own apt sources back."""
    for stage in ("build", "runtime"):
        args = _stage_args(stage)
        assert {"DEBIAN_MIRROR", "DEBIAN_SECURITY_MIRROR"} <= set(args), stage
        assert not args["DEBIAN_MIRROR"] and not args["DEBIAN_SECURITY_MIRROR"], "the mirror is opt-in"
        copies = [a.split() for s, i, a in _dockerfile() if s == stage and i == "COPY"]
        assert ["deploy/debian-mirror", "/usr/local/sbin/debian-mirror"] in copies, stage
        for s, i, a in _dockerfile():
            if s != stage or i != "RUN" or "apt-get" not in a:
                continue
            steps = [seg.strip() for seg in a.split("&&")]
            mirror = next(n for n, seg in enumerate(steps)
                          if seg == 'sh /usr/local/sbin/debian-mirror "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR"')
            update = next(n for n, seg in enumerate(steps) if seg == "apt-get update")
            assert mirror < update, f"{stage}: apt-get update runs before debian-mirror"
            if stage == "runtime":
                restore = next(n for n, seg in enumerate(steps) if seg == "sh /usr/local/sbin/debian-mirror --restore")
                assert restore > update, "the runtime image keeps the build's mirror in its apt sources"


# deb822 sources as in the debian:bookworm and bookworm-slim images.
BOOKWORM_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _apt_uris(etc: str, lists: str) -> list[str]:
    """The index URIs apt would download with the sources under etc (nothing fetched)."""
    r = _run(["apt-get", "-o", f"Dir::Etc::SourceList={etc}/sources.list",
              "-o", f"Dir::Etc::SourceParts={etc}/sources.list.d", "-o", f"Dir::State::Lists={lists}",
              "--print-uris", "update"], timeout=60)
    assert r.returncode == 0, r.stderr
    return re.findall(r"^'([^']+)'", r.stdout, re.M)


def test_debian_mirror_script_points_apt_at_the_mirror_and_back():
    """deploy/debian-mirror on a copy of the bookworm image's apt sources (deb822 and a
    one-line sources.list), checked by apt itself: the URIs it would fetch."""
    d = tempdirs.make("debian-mirror")
    try:
        etc = os.path.join(d, "etc")
        lists = os.path.join(d, "lists")
        os.makedirs(os.path.join(etc, "sources.list.d"))
        os.makedirs(os.path.join(lists, "partial"))
        with open(os.path.join(etc, "sources.list.d", "debian.sources"), "w") as f:
            f.write(BOOKWORM_SOURCES)
        one_line = "deb [arch=amd64] http://deb.debian.org/debian-security/ bookworm-security contrib\n"
        with open(os.path.join(etc, "sources.list"), "w") as f:
            f.write(one_line)

        def mirror(*args: str) -> subprocess.CompletedProcess:
            return _run(["sh", DEBIAN_MIRROR, *args], timeout=30, env={**os.environ, "APT_ETC": etc})

        original = _apt_uris(etc, lists)
        assert original and all(u.startswith("http://deb.debian.org/") for u in original), original
        # No mirror given (the Dockerfile's default): nothing changes.
        assert mirror().returncode == 0 and mirror("", "").returncode == 0
        assert _apt_uris(etc, lists) == original
        # A mirror, with characters sed would take as special.
        main, security = "http://apt.example.internal:3142/deb&ian", "http://sec.example.internal/debian-security"
        r = mirror(main + "/", security)
        assert r.returncode == 0, r.stderr
        uris = _apt_uris(etc, lists)
        assert len(uris) == len(original)
        assert all(u.startswith((main + "/dists/", security + "/dists/")) for u in uris), uris
        assert any(u.startswith(security + "/dists/bookworm-security/") for u in uris)
        assert any(u.startswith(main + "/dists/bookworm-updates/") for u in uris)
        assert not any("/dists/bookworm-security/" in u and u.startswith(main + "/") for u in uris)
        # The security mirror defaults to the mirror + "-security".
        assert mirror("--restore").returncode == 0
        assert _apt_uris(etc, lists) == original
        assert mirror("http://snapshot.example.internal/debian").returncode == 0
        assert any(u.startswith("http://snapshot.example.internal/debian-security/dists/bookworm-security/")
                   for u in _apt_uris(etc, lists))
        # --restore: byte for byte what was there, and no leftovers apt might read.
        assert mirror("--restore").returncode == 0
        with open(os.path.join(etc, "sources.list.d", "debian.sources")) as f:
            assert f.read() == BOOKWORM_SOURCES
        with open(os.path.join(etc, "sources.list")) as f:
            assert f.read() == one_line
        assert sorted(os.listdir(etc)) == ["sources.list", "sources.list.d"]
        assert os.listdir(os.path.join(etc, "sources.list.d")) == ["debian.sources"]
        # No sources at all: an error, not a build that silently uses the Internet.
        os.remove(os.path.join(etc, "sources.list"))
        os.remove(os.path.join(etc, "sources.list.d", "debian.sources"))
        r = mirror(main)
        assert r.returncode != 0 and "no apt sources" in r.stderr
    finally:
        tempdirs.remove(d)


def test_dockerfile_build_copies_what_cmake_reads_and_installs_the_dev_packages():
    copies = {a.split()[0].rstrip("/") for s, i, a in _dockerfile() if s == "build" and i == "COPY"}
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        cmake = f.read()
    needed = {"CMakeLists.txt"} | set(re.findall(r"add_subdirectory\((\w+)\)", cmake)) - {"tests"}
    needed |= {os.path.dirname(p) for p in re.findall(r"include\(([\w/.-]+\.cmake)\)", cmake)}
    assert needed <= copies, f"the build stage does not COPY {sorted(needed - copies)}"
    runs = " ".join(a for s, i, a in _dockerfile() if s == "build" and i == "RUN")
    assert "-DPOPBRIDGE_TESTS=OFF" in runs and "cmake --build" in runs
    # The library -dev packages of scripts/install-deps' main list (what the build
    # needs), and no others; not the test libraries, nor libssl-dev (the OpenSSL build,
    # which this image does not make: it builds the default, BoringSSL).
    with open(os.path.join(REPO, "scripts", "install-deps")) as f:
        block = re.search(r"packages=\((.*?)\n\s*\)", f.read(), re.S)
    assert block, "no packages=( ... ) in scripts/install-deps"
    listed = {w for line in block.group(1).splitlines() for w in line.split("#")[0].split()}
    test_only = {"libgtest-dev", "libgmock-dev", "libbenchmark-dev", "libssl-dev"}
    assert "-DPOPBRIDGE_TLS=openssl" not in runs
    wanted = {p for p in listed if p.endswith("-dev")} - test_only
    built = {p for p in _apt_packages("build") if p.endswith("-dev")}
    assert built == wanted, (f"build stage -dev packages differ from scripts/install-deps: "
                             f"missing {sorted(wanted - built)}, extra {sorted(built - wanted)}")
    assert {"g++", "cmake", "make", "pkg-config"} <= set(_apt_packages("build"))


def _apt_cache(*args: str) -> subprocess.CompletedProcess:
    return _run(["apt-cache", *args], timeout=60)


def test_dockerfile_packages_exist_in_debian_12():
    with open("/etc/os-release") as f:
        release = f.read()
    assert "VERSION_CODENAME=bookworm" in release, "this check reads Debian 12's package lists: run it on Debian 12"
    wanted = {pkg: stage for stage in ("build", "runtime") for pkg in _apt_packages(stage)}
    # One call (each call loads the whole cache); names it does not know are left out
    # of its output.
    r = _apt_cache("show", "--no-all-versions", *sorted(wanted))
    found = set(re.findall(r"^Package: (\S+)$", r.stdout, re.M))
    missing = [f"{stage}: {pkg}" for pkg, stage in sorted(wanted.items()) if pkg not in found]
    assert not missing, f"not in Debian 12's package lists (did apt-get update run?): {missing}"


def _owners(paths: list[str]) -> dict[str, str]:
    """{path: Debian package owning it}, trying each path's /usr-merged aliases."""
    aliases: dict[str, str] = {}
    for path in paths:
        for p in (path, os.path.realpath(path)):
            aliases[p] = path
            if p.startswith("/usr/lib/"):
                aliases[p[len("/usr"):]] = path
            elif p.startswith(("/lib/", "/lib64/")):
                aliases["/usr" + p] = path
    r = _run(["dpkg-query", "-S", *sorted(aliases)], timeout=60)
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        if ": " not in line or line.startswith("diversion"):
            continue
        pkgs, path = line.split(": ", 1)
        if path.strip() in aliases:
            out[aliases[path.strip()]] = pkgs.split(",")[0].split(":")[0].strip()
    return out


def _slim_image_packages() -> set[str]:
    """What debian:bookworm-slim holds, as Debian's images are made (debootstrap's minbase
    variant): the packages of priority required or Essential, and apt, with everything
    they depend on (the first of each set of alternatives), from Debian 12's package lists."""
    r = _apt_cache("dumpavail")
    assert r.returncode == 0 and r.stdout, f"apt-cache dumpavail: {r.stderr}"
    packages: dict[str, dict[str, str]] = {}
    for block in r.stdout.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Priority|Essential|Depends|Pre-Depends): (.*)$", block, re.M))
        if "Package" in fields:
            packages[fields["Package"]] = fields
    todo = [p for p, f in packages.items() if f.get("Priority") == "required" or f.get("Essential") == "yes"]
    todo.append("apt")
    base: set[str] = set()
    while todo:
        name = todo.pop()
        if name in base or name not in packages:
            continue
        base.add(name)
        for key in ("Pre-Depends", "Depends"):
            for alternatives in packages[name].get(key, "").split(","):
                if alternatives.strip():
                    todo.append(alternatives.split("|")[0].split()[0].split(":")[0])
    return base


def test_dockerfile_runtime_libraries_are_what_the_binary_links(popbridge_bin):
    r = _run(["ldd", popbridge_bin], timeout=30)
    assert r.returncode == 0, r.stderr
    libs: dict[str, str] = {}  # path -> soname
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line) or re.match(r"\s*((/\S+)) \(", line)
        if m and not re.search(r"lib(a|ub|l|t)san|libclang_rt", m.group(1)):
            libs[m.group(2)] = m.group(1)  # (sanitizer runtimes of a test build are skipped)
    owners = _owners(list(libs))
    unowned = sorted(set(libs) - set(owners))
    needed = {owners[path]: soname for path, soname in libs.items() if path in owners}
    assert not unowned, f"libraries no Debian package owns: {unowned}"
    base = _slim_image_packages()
    assert {"libc6", "libstdc++6", "libgcc-s1"} <= base, sorted(base)
    runtime = set(_apt_packages("runtime"))
    missing = {p: so for p, so in needed.items() if p not in runtime and p not in base}
    assert not missing, f"the runtime stage does not install {missing} (package: soname)"
    unused = runtime - set(needed) - {"ca-certificates"}
    assert not unused, f"the runtime stage installs packages the binary does not link: {sorted(unused)}"
    assert "ca-certificates" in runtime, "upstream.ca_file defaults to /etc/ssl/certs/ca-certificates.crt"


# =============================================================== Grafana (static)

def _dashboard() -> dict:
    with open(DASHBOARD) as f:
        return json.load(f)


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])  # collapsed rows keep their panels inside
    return out


def _targets(dash: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query."""
    return [(p["title"], t["expr"]) for p in _panels(dash) for t in p.get("targets", [])]


def test_grafana_dashboard_matches_grafanas_schema(schema_report):
    """@grafana/schema's Dashboard type: no unknown or misspelt field, right types."""
    errors = [e for e in schema_report["errors"] if e.startswith(os.path.relpath(DASHBOARD, REPO))]
    assert not errors, "\n".join(errors)


def test_grafana_dashboard_is_importable_and_uses_the_datasource_variable():
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert dash.get("id") is None, "an exported id would clash on import"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        assert "label_values(" in json.dumps(v["query"])
    ids, cells = set(), set()
    for p in _panels(dash):
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']}: off the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"{p['title']}: no query"
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == "${datasource}", p["title"]
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], \
                f"{p['title']}: {t['expr']} ignores the job/instance variables"
    # No datasource is named by a concrete uid anywhere (it would break the import).
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dash)))
    assert uids <= {"${datasource}", "-- Grafana --", dash["uid"]}, uids


def test_grafana_dashboard_has_the_required_panels():
    exprs = " ".join(e for _, e in _targets(_dashboard()))
    shown = {_family(n) for n in _metric_names(exprs)}
    assert shown == METRICS, f"metrics on no panel: {sorted(METRICS - shown)}"
    for needed in [
        "popbridge_connections_active", "popbridge_connections_accepted_total",
        "popbridge_connections_rejected_total", "popbridge_auth_attempts_total",
        "histogram_quantile(0.5, sum by (command, le) (rate(popbridge_command_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (command, le) (rate(popbridge_command_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (command, le) (rate(popbridge_command_duration_seconds_bucket",
        'popbridge_commands_total{job=~"$job", instance=~"$instance", result="error"}',
        "popbridge_upstream_errors_total", "popbridge_upstream_connect_duration_seconds_bucket",
        "popbridge_bytes_total", "popbridge_messages_retrieved_total", "popbridge_messages_deleted_total",
        "popbridge_tls_handshakes_total", "popbridge_certificate_expiry_timestamp_seconds",
        "popbridge_retrieve_size_mismatch_total", "popbridge_build_info",
    ]:
        assert needed in exprs, f"no dashboard query uses {needed}"


# ==================================== live: Prometheus scraping a running popbridge

def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Prometheus:
    """A Prometheus server (Debian's binary) on a free loopback port, scraping one target
    every second and evaluating the alert rules every second."""

    START_TIMEOUT = 30.0

    def __init__(self, target: str):
        self.binary = _tool("prometheus", "prometheus")
        self.port = free_port()
        self.dir = tempdirs.make("prometheus")
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }
        self.config_path = os.path.join(self.dir, "prometheus.yml")
        with open(self.config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = procs.register(subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, cwd=self.dir,
            start_new_session=True, close_fds=True, preexec_fn=procs.die_with_parent()))

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with status {self.proc.returncode}\n{self.log_tail()}")
            try:
                return _http_get(f"{self.url}/-/ready", 1.0)[0] == 200
            except OSError:
                return False

        wait_until(ready, self.START_TIMEOUT, f"prometheus to be ready on port {self.port}", on_timeout=self.log_tail)

    def close(self) -> None:
        try:
            if self.proc is not None:
                procs.stop_group(self.proc, term_timeout=10.0)
        finally:
            if self.proc is not None:
                self._log.close()
            tempdirs.remove(self.dir)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "--- prometheus log (tail) ---\n" + "\n".join(
                    f.read().decode("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def api(self, path: str, **params: str) -> dict:
        status, body = _http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return {"status": "error", "error": f"HTTP {status}: {body[:200]!r}"}

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)


@pytest.fixture(scope="module")
def admin_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(admin_port: int) -> Iterator[Prometheus]:
    p = Prometheus(f"127.0.0.1:{admin_port}")
    try:
        p.start()
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def monitored_gateway(pki, dovecot, popbridge_bin, admin_port) -> Iterator[Gateway]:
    """popbridge with its admin endpoint on admin_port; fails (not hangs) without one."""
    g = Gateway(pki, dovecot, {"metrics": {"address": f"127.0.0.1:{admin_port}"}}, binary=popbridge_bin)
    g.start()
    try:
        deadline = time.monotonic() + 10 * TIME_FACTOR
        last = "no answer"
        while True:
            try:
                status, body = _http_get(f"http://127.0.0.1:{admin_port}/healthz", 2.0)
                if status == 200:
                    break
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:
                last = repr(e)
            if time.monotonic() >= deadline or not g.running:
                pytest.fail(f"popbridge does not serve its admin endpoint: GET /healthz on "
                            f"127.0.0.1:{admin_port} (metrics.address) gave {last}. These checks need "
                            f"the endpoint (/metrics, /healthz, /readyz) in the binary under test "
                            f"({popbridge_bin}).\n{g.diagnostics()}", pytrace=False)
            time.sleep(0.1)
        yield g
    finally:
        g.close()


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, monitored_gateway: Gateway, dovecot, ctx) -> Prometheus:
    """Prometheus after it has scraped popbridge following a POP3 session (a failed
    login, then STAT, LIST, UIDL, RETR, TOP, NOOP, DELE, QUIT), so metrics have moved."""
    account = dovecot.add_user()
    dovecot.append_many(account.name, [simple(1), simple(2)])
    bad = pop3_ssl(monitored_gateway.pop3s_port, ctx)
    try:
        bad.user(account.name)
        with pytest.raises(poplib.error_proto):
            bad.pass_("not-the-password")
    finally:
        bad.close()
    c = pop3_ssl(monitored_gateway.pop3s_port, ctx)
    try:
        c.user(account.name)
        c.pass_(account.password)
        c.stat()
        c.list()
        c.uidl()
        c.retr(1)
        c.top(2, 0)
        c.noop()
        c.dele(2)
        c.quit()
    except BaseException:
        c.close()
        raise

    def moved() -> bool:
        # The session's metrics are in, popbridge reports ready, and there are enough
        # samples for rate() and increase() over them.
        r = prometheus.query(f'sum(popbridge_messages_deleted_total{{job="{JOB}"}}) >= 1 '
                             f'and on() (sum(up{{job="{JOB}"}}) == 1) '
                             f'and on() (min(popbridge_ready{{job="{JOB}"}}) == 1) '
                             f'and on() (count_over_time(up{{job="{JOB}"}}[1m]) >= 3)')
        return r.get("status") == "success" and bool(r["data"]["result"])

    def context() -> str:
        targets = prometheus.api("targets").get("data", {}).get("activeTargets", [])
        return (f"scrape targets: {[(t.get('scrapeUrl'), t.get('health'), t.get('lastError')) for t in targets]}\n"
                f"{prometheus.log_tail()}")

    wait_until(moved, 20 * TIME_FACTOR, "Prometheus to scrape popbridge (up == 1, ready) with the session's metrics",
               on_timeout=context)
    prometheus.scraped_at = time.time()
    return prometheus


def _grafana_substitutions(instance: str) -> dict[str, str]:
    return {
        "${__rate_interval}": "1m", "$__rate_interval": "1m",
        "${__interval}": "15s", "$__interval": "15s",
        "${__range}": "5m", "$__range": "5m",
        "${job}": JOB, "$job": JOB,
        "${instance}": instance, "$instance": instance,
    }


def _substitute(expr: str, subst: dict[str, str]) -> str:
    for k in sorted(subst, key=len, reverse=True):
        expr = expr.replace(k, subst[k])
    assert "$" not in expr, f"unsubstituted template variable in {expr}"
    return expr


def _unix_time(rfc3339: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, Z) as Unix time; 0 if unparsable."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    if not m:
        return 0.0
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    whole = datetime.datetime.fromisoformat(m.group(1) + zone).timestamp()
    return whole + float(m.group(2) or 0)


def _rule_exprs() -> list[tuple[str, str]]:
    return [(r.get("alert") or r.get("record"), r["expr"])
            for g in _yaml_file(RULES)["groups"] for r in g["rules"]]


def test_promql_of_dashboard_and_rules_is_valid(prometheus: Prometheus, admin_port: int):
    """Every expression parses and evaluates in a real Prometheus (before any data)."""
    subst = _grafana_substitutions(f"127.0.0.1:{admin_port}")
    bad = []
    for title, expr in _targets(_dashboard()) + _rule_exprs():
        q = _substitute(expr, subst)
        r = prometheus.query(q)
        if r.get("status") != "success":
            bad.append(f"{title}: {q}\n    {r.get('errorType')}: {r.get('error')}")
    assert not bad, "invalid PromQL:\n" + "\n".join(bad)


def test_alert_rules_load_and_evaluate_on_real_metrics(scraped: Prometheus):
    """Prometheus loaded the rule file, evaluates every rule without error on popbridge's
    real series, and fires nothing for a healthy gateway, except the certificate alert:
    the test certificate is only valid for 2 days, so that one must be pending."""
    wanted = {name for name, _ in _rule_exprs()}

    def evaluated() -> Optional[list[dict]]:
        """The rules, once each was evaluated after the session's metrics were scraped."""
        groups = scraped.api("rules").get("data", {}).get("groups", [])
        rules = [r for g in groups for r in g["rules"]]
        done = [r for r in rules if _unix_time(r.get("lastEvaluation", "")) > scraped.scraped_at]
        return rules if {r["name"] for r in done} >= wanted else None

    rules = wait_until(evaluated, 15 * TIME_FACTOR, "every alert rule to be evaluated on the scraped metrics")
    assert {r["name"] for r in rules} == wanted
    errors = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
    assert not errors, errors
    active = {r["name"]: [a["labels"] for a in r.get("alerts", [])] for r in rules if r.get("alerts")}
    assert set(active) == {"PopbridgeCertificateExpiringSoon"}, active
    (cert_alert,) = active["PopbridgeCertificateExpiringSoon"]
    assert cert_alert["job"] == JOB and cert_alert["certificate"]


def test_dashboard_queries_return_data_from_popbridge(scraped: Prometheus, admin_port: int):
    """Every dashboard query finds series in popbridge's real metrics (so names and
    labels match what the binary exposes), and the template variables find the target."""
    instance = f"127.0.0.1:{admin_port}"
    subst = _grafana_substitutions(instance)
    empty = []
    for title, expr in _targets(_dashboard()):
        q = _substitute(expr, subst)
        r = scraped.query(q)
        assert r.get("status") == "success", f"{title}: {q}: {r}"
        if not r["data"]["result"]:
            empty.append(f"{title}: {q}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    for v in _dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        text = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        assert m, text
        r = scraped.query(f"group by ({m.group(2)}) ({_substitute(m.group(1), subst)})")
        values = {s["metric"].get(m.group(2)) for s in r["data"]["result"]}
        assert {"job": JOB, "instance": instance}[v["name"]] in values, (v["name"], values)
    # Units: the certificate panel shows days, and the test certificate has 2 days left.
    (days,) = [e for t, e in _targets(_dashboard()) if t == "Certificate expiry"]
    value = float(scraped.query(_substitute(days, subst))["data"]["result"][0]["value"][1])
    assert 1.0 < value <= 2.01, f"certificate expiry panel shows {value} days, expected about 2"


def test_metrics_exposition_has_every_referenced_family(monitored_gateway: Gateway, admin_port: int):
    status, body = _http_get(f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200
    exposed = {_family(line.split("{")[0].split()[0]) for line in body.decode().splitlines()
               if line and not line.startswith("#")}
    with open(RULES) as f:
        used = {_family(n) for n in _metric_names(f.read())}
    with open(DASHBOARD) as f:
        used |= {_family(n) for n in _metric_names(f.read())}
    missing = used - exposed
    assert not missing, f"referenced by the dashboard or rules, but not in /metrics: {sorted(missing)}"


def test_image_healthcheck_script(monitored_gateway: Gateway, admin_port: int):
    """deploy/popbridge-healthcheck (the image's HEALTHCHECK) against the real endpoint."""
    def check(*args: str, **env: str) -> subprocess.CompletedProcess:
        return _run(["bash", HEALTHCHECK, *args], timeout=30, env={**os.environ, **env})

    assert os.access(HEALTHCHECK, os.X_OK), "deploy/popbridge-healthcheck must be executable"
    address = f"127.0.0.1:{admin_port}"
    ok = check(address)
    assert ok.returncode == 0, ok.stderr
    assert check(address, "/readyz").returncode == 0
    assert check(POPBRIDGE_ADMIN_ADDRESS=address).returncode == 0
    missing = check(address, "/no-such-page")
    assert missing.returncode == 1 and "404" in missing.stderr, missing.stderr
    refused = check(f"127.0.0.1:{free_port()}")
    assert refused.returncode == 1
    # Something that accepts but never answers: unhealthy after HEALTHCHECK_TIMEOUT.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        hung = check(f"127.0.0.1:{silent.getsockname()[1]}", HEALTHCHECK_TIMEOUT="1")
        assert hung.returncode == 1 and time.monotonic() - started < 10, hung.stderr


def _healthcheck(*args: str, **env: str) -> subprocess.CompletedProcess:
    """deploy/popbridge-healthcheck with the binary under test as its popbridge."""
    return _run(["bash", HEALTHCHECK, *args], timeout=30, env={**os.environ, **env})


def test_image_healthcheck_finds_the_admin_endpoint_in_the_running_configuration(
        monitored_gateway: Gateway, admin_port: int, popbridge_bin: str):
    """Without arguments (the image's HEALTHCHECK), the script takes the configuration
    from the running popbridge's --config (PID 1 in a container; here the gateway's
    process) and GETs /healthz on its metrics.address."""
    ok = _healthcheck(POPBRIDGE_PID=str(monitored_gateway.proc.pid), POPBRIDGE_BIN=popbridge_bin)
    assert ok.returncode == 0, ok.stderr
    assert f"GET /healthz on 127.0.0.1:{admin_port}: 200" in ok.stdout, ok.stdout
    # The same with the file named explicitly.
    ok = _healthcheck(POPBRIDGE_CONFIG=monitored_gateway.config_path, POPBRIDGE_BIN=popbridge_bin)
    assert ok.returncode == 0 and f"127.0.0.1:{admin_port}" in ok.stdout, ok.stderr
    # A configuration popbridge refuses is not healthy (and says why).
    d = tempdirs.make("healthcheck")
    try:
        bad = os.path.join(d, "popbridge.yaml")
        with open(bad, "w") as f:
            f.write("listeners: []\n")
        r = _healthcheck(POPBRIDGE_CONFIG=bad, POPBRIDGE_BIN=popbridge_bin)
        assert r.returncode == 1 and "cannot read the configuration" in r.stderr, r.stderr
    finally:
        tempdirs.remove(d)


def test_image_healthcheck_without_admin_endpoint_checks_a_listener(pki, dovecot, popbridge_bin):
    """The minimal configuration has no metrics.address: the script falls back to the
    POP3 greeting of the STLS listener, or, with only implicit-TLS listeners, to a TCP
    connect; with nothing listening it fails."""
    env = {"POPBRIDGE_BIN": popbridge_bin}
    with Gateway(pki, dovecot, binary=popbridge_bin) as g:
        assert "metrics" not in g.config
        r = _healthcheck(POPBRIDGE_PID=str(g.proc.pid), **env)
        assert r.returncode == 0, r.stderr
        assert f"POP3 greeting on listener pop3 (127.0.0.1:{g.pop3_port})" in r.stdout, r.stdout
        # popbridge saw a whole, polite session: greeting, QUIT.
        wait_until(lambda: "reason=quit" in g.log_text() or '"reason":"quit"' in g.log_text(),
                   5 * TIME_FACTOR, "the health check's session to end with QUIT", on_timeout=g.diagnostics)
        config = g.config_path
        shutil.copy(config, config + ".kept")
        g.stop()
        # Nothing listening any more: unhealthy.
        r = _healthcheck(POPBRIDGE_CONFIG=config + ".kept", **env)
        assert r.returncode == 1 and f"127.0.0.1:{g.pop3_port}" in r.stderr, r.stderr
    with Gateway(pki, dovecot, listeners=[("pop3s", "implicit")], binary=popbridge_bin) as g:
        r = _healthcheck(POPBRIDGE_CONFIG=g.config_path, **env)
        assert r.returncode == 0, r.stderr
        assert f"TCP connect to listener pop3s (127.0.0.1:{g.pop3s_port})" in r.stdout, r.stdout
        config = g.config_path
        shutil.copy(config, config + ".kept")
        g.stop()
        r = _healthcheck(POPBRIDGE_CONFIG=config + ".kept", **env)
        assert r.returncode == 1 and "cannot connect" in r.stderr, r.stderr


def test_image_healthcheck_fails_on_a_listener_that_never_greets(pki, popbridge_bin):
    """A POP3 listener that accepts but says nothing (a wedged event loop looks like
    this: the kernel accepts, nobody answers) is unhealthy within HEALTHCHECK_TIMEOUT."""
    d = tempdirs.make("healthcheck")
    try:
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            config = {
                "listeners": [{"name": "pop3", "address": f"127.0.0.1:{silent.getsockname()[1]}", "tls": "starttls"}],
                "tls": {"certificate": pki.cert, "private_key": pki.key},
                "upstream": {"address": "127.0.0.1:143", "tls": "none"},
            }
            path = os.path.join(d, "popbridge.yaml")
            with open(path, "w") as f:
                f.write(to_yaml(config) + "\n")
            started = time.monotonic()
            r = _healthcheck(POPBRIDGE_CONFIG=path, POPBRIDGE_BIN=popbridge_bin, HEALTHCHECK_TIMEOUT="1")
            assert r.returncode == 1 and "no POP3 greeting" in r.stderr, r.stderr
            assert time.monotonic() - started < 10
    finally:
        tempdirs.remove(d)
