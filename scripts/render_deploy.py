"""Render what deploy/ derives from its sources (`make deploy`); tests/unit/project/test_deploy.py
checks that the committed files are these renderings:

- deploy/daemonset.yaml: deploy/base as `kubectl kustomize` renders it, for `kubectl apply -f`;
- deploy/components/prometheus-operator/prometheusrule.yaml: deploy/prometheus-rules.yaml (the
  rules promtool tests) as a PrometheusRule object."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.harness.kubectl import kubectl  # noqa: E402 - the project's kubectl, from .cache/

DEPLOY = ROOT / "deploy"
RENDERED = DEPLOY / "daemonset.yaml"
RULES = DEPLOY / "prometheus-rules.yaml"
PROMETHEUS_RULE = DEPLOY / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# prepull-agent, rendered from deploy/base by `make deploy` (kubectl kustomize): do not edit,
# edit deploy/base (its comments explain each choice). kubectl apply -f deploy/daemonset.yaml
# Opt-in parts: kubectl apply -k deploy/overlays/<name> (see README, "Deploy").
"""
RULE_HEADER = """\
# Rendered from deploy/prometheus-rules.yaml by `make deploy`: do not edit, edit that file (it
# explains each rule, and promtool tests it).
"""


def render() -> str:
    """`kubectl kustomize deploy/base`, with the header above."""
    try:
        binary = kubectl()
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    output = subprocess.run(
        [binary, "kustomize", str(DEPLOY / "base")], capture_output=True, text=True, check=True
    ).stdout
    return HEADER + output


def render_rule() -> str:
    """The alert rules as the Prometheus Operator's PrometheusRule object."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "prepull-agent",
            "namespace": "prepull-system",
            "labels": {"app.kubernetes.io/name": "prepull-agent"},
        },
        "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]},
    }
    return RULE_HEADER + yaml.safe_dump(rule, sort_keys=False, width=100)


def main() -> None:
    PROMETHEUS_RULE.write_text(render_rule())
    RENDERED.write_text(render())
    for path in (RENDERED, PROMETHEUS_RULE):
        print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
