#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yaml.

The rule file (for a plain Prometheus) is the source; the PrometheusRule manifest (for
the Prometheus Operator) embeds its `groups:` verbatim, comments included, under
`spec:`, so the two can never drift apart.

  deploy/prometheus/sync-rules.py          rewrite the manifest
  deploy/prometheus/sync-rules.py --check  exit 1 (with a diff) if it is out of date

Standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RULES = os.path.join(REPO, "deploy", "prometheus", "alerts.yaml")
MANIFEST = os.path.join(REPO, "deploy", "kubernetes", "prometheusrule.yaml")

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by deploy/prometheus/sync-rules.py:
# edit that file, then run the script (tests/integration/test_deploy.py fails when
# the two differ).
#
# popbridge's alert rules for the Prometheus Operator. Your Prometheus resource's
# ruleSelector must match this object's labels (kube-prometheus-stack's default
# wants release: <its Helm release name>).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: popbridge
  labels:
    app.kubernetes.io/name: popbridge
    app.kubernetes.io/component: metrics
spec:
"""


def render(rules_text: str) -> str:
    """The manifest for the given rule file: its lines from `groups:` on, indented
    two spaces under `spec:` (the header comment of the rule file is left out)."""
    lines = rules_text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.rstrip() == "groups:")
    except StopIteration:
        raise SystemExit(f"{RULES}: no top-level 'groups:' line") from None
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    while body and not body[-1]:
        body.pop()
    return HEADER + "\n".join(body) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the manifest is not up to date")
    args = parser.parse_args()
    with open(RULES, encoding="utf-8") as f:
        wanted = render(f.read())
    try:
        with open(MANIFEST, encoding="utf-8") as f:
            current = f.read()
    except FileNotFoundError:
        current = ""
    rel_manifest = os.path.relpath(MANIFEST, REPO)
    if args.check:
        if current == wanted:
            return 0
        diff = difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                    f"{rel_manifest} (current)", f"{rel_manifest} (from alerts.yaml)")
        sys.stdout.writelines(diff)
        print(f"\n{rel_manifest} is out of date: run deploy/prometheus/sync-rules.py", file=sys.stderr)
        return 1
    if current != wanted:
        with open(MANIFEST, "w", encoding="utf-8") as f:
            f.write(wanted)
        print(f"wrote {rel_manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
