"""The deployment artifacts in deploy/, checked offline.

- Prometheus rules: `promtool check rules` and `promtool test rules`; the PrometheusRule
  manifest is generated from the rule file and must not drift from it.
- Kubernetes manifests: schema validation against the Kubernetes and prometheus-operator
  models (tests/deploy/validate.mjs, node), then the cross-references that a
  schema cannot see: probes against the admin port, container ports against the
  listeners, the grace period against the drain deadline, selectors, security settings.
- Configuration files (the image's, the ConfigMaps'): `popbridge --check-config`.
- Dockerfile: static, as no container engine is available here: its packages exist in
  Debian 12, its runtime libraries are what the built binary links, its build copies what
  CMake reads.
- Grafana dashboard: Grafana's dashboard schema (@grafana/schema, same script), the
  datasource and job/instance variables, the layout.
- Dashboard and alert expressions: a real Prometheus server (Debian's) scrapes a
  real popbridge (in front of the harness's Dovecot) after a POP3 session, and every
  PromQL expression of the dashboard and the rules is run through its HTTP API.

Needs (Debian 12 packages): prometheus (promtool and the server), python3-yaml; node and
npm (tests/deploy/node_modules is installed with `npm ci` when missing).
"""

from __future__ import annotations

import datetime
import fnmatch
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
from harness.clients import pop3_ssl
from harness.gateway import REPO, Gateway, check_config, to_yaml
from harness.messages import simple
from harness.ports import free_port
from harness.wait import TIME_FACTOR, wait_until

DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
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
    "PopbridgeRetrieveSizeMismatch",
}


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


def _manifest_files() -> list[str]:
    out = []
    for root, _, files in os.walk(K8S):
        out += [os.path.join(root, f) for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(out)


def _objects() -> list[tuple[str, dict]]:
    """(file, object) for every Kubernetes object in deploy/kubernetes (not kustomizations)."""
    out = []
    for path in _manifest_files():
        for doc in _yaml_docs(path):
            if not str(doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
                out.append((path, doc))
    return out


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
        for key in ("summary", "description", "runbook"):
            assert rule.get("annotations", {}).get(key), f"{name}: annotation {key} missing"
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
    """tests/deploy/validate.mjs over every manifest and the dashboard (one node run)."""
    files = _manifest_files() + [DASHBOARD]
    r = _run([node_tools, os.path.join(NODE_TOOLS, "validate.mjs"), *files], timeout=120, cwd=REPO)
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
                   ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")]:
        assert wanted in kinds, f"no {wanted[1]} ({wanted[0]}) in deploy/kubernetes"


def test_kustomizations_list_every_manifest():
    for root, _, files in os.walk(K8S):
        if "kustomization.yaml" not in files:
            continue
        k = _yaml_file(os.path.join(root, "kustomization.yaml"))
        resources = k.get("resources", [])
        for res in resources:
            assert os.path.exists(os.path.join(root, res)), f"{root}/kustomization.yaml: {res} does not exist"
            assert not res.startswith(".."), f"{root}: kustomize refuses files outside the kustomization's folder: {res}"
        present = {f for f in files if f.endswith(".yaml") and f != "kustomization.yaml"}
        # The example Secret holds placeholders; applying it would overwrite a real one.
        unlisted = present - set(resources) - {"secret-example.yaml"}
        assert not unlisted, f"{root}/kustomization.yaml does not list {sorted(unlisted)}"
        assert "secret-example.yaml" not in resources
        images = {i["name"] for i in k.get("images", [])}
        for res in resources:
            for doc in _yaml_docs(os.path.join(root, res)):
                for c in _pod_containers(doc):
                    if c["name"] == "popbridge":
                        assert c["image"].split(":")[0] in images, f"{res}: image {c['image']} not in images:"


def _pod_spec(obj: dict) -> Optional[dict]:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    return None


def _pod_containers(obj: dict) -> list[dict]:
    spec = _pod_spec(obj)
    if not spec:
        return []
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _popbridge_config(objects: list[tuple[str, dict]], pod: dict, container: dict) -> dict:
    """The popbridge configuration a container runs with: its --config path resolved
    through its volume mounts to a ConfigMap key."""
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
            return yaml.safe_load(cm["data"][key])
    raise AssertionError(f"--config {config_path} is on no volume mount")


def _workloads() -> list[tuple[str, dict, dict, dict]]:
    """(file, workload, pod spec, popbridge container) for every workload running popbridge."""
    out = []
    for path, obj in _objects():
        for c in _pod_containers(obj):
            if c["name"] == "popbridge":
                out.append((path, obj, _pod_spec(obj), c))
    return out


def test_kubernetes_workloads_fit_popbridge():
    objects = _objects()
    workloads = _workloads()
    assert {w[1]["kind"] for w in workloads} == {"Deployment", "StatefulSet"}
    for path, obj, pod, c in workloads:
        where = f"{os.path.relpath(path, REPO)} {obj['kind']}/{obj['metadata']['name']}"
        config = _popbridge_config(objects, pod, c)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        # Container ports are the configured listeners and the admin endpoint.
        assert sorted(ports.values()) == sorted([_port(l["address"]) for l in config["listeners"]]
                                                + [_port(config["metrics"]["address"])]), where
        assert ports["metrics"] == _port(config["metrics"]["address"]), where
        for listener in config["listeners"]:
            assert ports[listener["name"]] == _port(listener["address"]), f"{where}: port name {listener['name']}"
        assert all(p >= 1024 for p in ports.values()), f"{where}: a non-root process needs high ports"
        # Probes: liveness /healthz, readiness /readyz, on the admin port.
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
        for probe in ("livenessProbe", "readinessProbe"):
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
        # The TLS files named in the config are on a Secret volume, mounted as a directory
        # (a subPath mount would never see a renewed certificate).
        for key in ("certificate", "private_key"):
            file = config["tls"][key]
            mount = next((m for m in c["volumeMounts"] if file.startswith(m["mountPath"].rstrip("/") + "/")), None)
            assert mount and not mount.get("subPath"), f"{where}: {file} is not on a directory mount"
            volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
            assert volume["secret"]["secretName"] == "popbridge-tls", where
            # popbridge (uid/gid 10001, not the files' owner root) can read the key.
            mode = volume["secret"].get("defaultMode", 0o644)
            group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
            readable = mode & 0o004 or (mode & 0o040 and pod_sc.get("fsGroup") is not None
                                        and pod_sc.get("fsGroup") == group)
            assert readable, f"{where}: {file} (mode {mode:o}) is not readable by popbridge"
        # The selector selects the Pod template.
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), where


def test_kubernetes_configs_agree_with_the_image_config():
    """The standalone ConfigMap runs the image's own default configuration."""
    cm = next(o for _, o in _objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "popbridge-config")
    assert yaml.safe_load(cm["data"]["popbridge.yaml"]) == _yaml_file(IMAGE_CONFIG)


def test_sidecar_reaches_its_imap_server_on_loopback():
    objects = _objects()
    (path, obj, pod, c), = [w for w in _workloads() if w[1]["kind"] == "StatefulSet"]
    config = _popbridge_config(objects, pod, c)
    assert config["upstream"]["address"] == "127.0.0.1:143"
    imap = [i for i in pod.get("initContainers", []) if i["name"] != "popbridge"]
    # The IMAP server is a native sidecar, so it outlives popbridge's drain.
    assert imap and all(i.get("restartPolicy") == "Always" for i in imap)


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
        assert {s["metadata"]["name"] for s in services} >= {"popbridge-metrics", "mail-metrics"}
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
    for path, obj in _objects():
        if obj["kind"] == "ConfigMap" and "popbridge.yaml" in obj.get("data", {}):
            name = f"{os.path.relpath(path, REPO)} ConfigMap/{obj['metadata']['name']}"
            out.append(pytest.param(name, yaml.safe_load(obj["data"]["popbridge.yaml"]),
                                    id=f"configmap-{obj['metadata']['name']}"))
    return out


@pytest.mark.parametrize("name,config", _configs_to_check())
def test_deploy_configs_pass_check_config(name, config, pki, popbridge_bin):
    """The shipped configurations are valid for this popbridge (with the test PKI's files
    in place of the mounted certificate and key)."""
    config = json.loads(json.dumps(config))
    config["tls"]["certificate"] = pki.cert
    config["tls"]["private_key"] = pki.key
    config["upstream"]["ca_file"] = pki.ca
    d = tempdirs.make("deploy-config")
    try:
        path = os.path.join(d, "popbridge.yaml")
        with open(path, "w") as f:
            f.write(to_yaml(config) + "\n")
        status, out = check_config(path, binary=popbridge_bin)
        assert status == 0, f"{name}: popbridge --check-config failed:\n{out}"
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


def _stages() -> list[tuple[str, str]]:
    return [(stage, args.split()[0]) for stage, instr, args in _dockerfile() if instr == "FROM"]


def test_dockerfile_is_a_bookworm_multi_stage_build():
    stages = _stages()
    assert [s for s, _ in stages] == ["build", "runtime"], stages
    assert dict(stages) == {"build": "debian:bookworm", "runtime": "debian:bookworm-slim"}
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
    # HEALTHCHECK runs the script that is copied into the image, against the admin port.
    health = re.search(r"CMD\s+(\[.*\])", instr["HEALTHCHECK"])
    assert health, instr["HEALTHCHECK"]
    argv = json.loads(health.group(1))
    assert ["deploy/popbridge-healthcheck", argv[0]] in copies
    assert argv[1] == f"127.0.0.1:{_port(config['metrics']['address'])}" and argv[2] == "/healthz"
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


def test_dockerfile_build_copies_what_cmake_reads_and_installs_the_dev_packages():
    copies = {a.split()[0].rstrip("/") for s, i, a in _dockerfile() if s == "build" and i == "COPY"}
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        cmake = f.read()
    needed = {"CMakeLists.txt"} | set(re.findall(r"add_subdirectory\((\w+)\)", cmake)) - {"tests"}
    needed |= {os.path.dirname(p) for p in re.findall(r"include\(([\w/.-]+\.cmake)\)", cmake)}
    assert needed <= copies, f"the build stage does not COPY {sorted(needed - copies)}"
    runs = " ".join(a for s, i, a in _dockerfile() if s == "build" and i == "RUN")
    assert "-DPOPBRIDGE_TESTS=OFF" in runs and "cmake --build" in runs
    # The library -dev packages of scripts/install-deps, and no others.
    with open(os.path.join(REPO, "scripts", "install-deps")) as f:
        block = re.search(r"packages=\((.*?)\n\)", f.read(), re.S).group(1)
    listed = {w for line in block.splitlines() for w in line.split("#")[0].split()}
    test_only = {"libgtest-dev", "libgmock-dev", "libbenchmark-dev"}
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
        'popbridge_commands_total{job=~"$job", instance=~"$instance", result="err"}',
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
