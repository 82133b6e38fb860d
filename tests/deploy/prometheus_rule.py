"""Write deploy/k8s/prometheus-operator/prometheusrule.yaml from deploy/prometheus/alerts.yml (one source of rules).

    python -m tests.deploy.prometheus_rule

tests/deploy/test_deploy_files.py fails when the two differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
OUT = DEPLOY / "k8s" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# The alert rules of ../../prometheus/alerts.yml for the Prometheus operator: the same groups, word for word
# (tests/deploy/test_deploy_files.py keeps them equal: edit alerts.yml, then regenerate this file with
# `python -m tests.deploy.prometheus_rule`). Your Prometheus must select it (kube-prometheus-stack: the
# `release: <name>` label, as for the ServiceMonitor). The rules expect the job name the ServiceMonitor sets.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block scalars, as alerts.yml writes them."""


def _text(dumper: yaml.SafeDumper, value: str) -> Any:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def render() -> str:
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "flowwarden-detector",
            "labels": {"app.kubernetes.io/name": "flowwarden", "app.kubernetes.io/component": "detector"},
        },
        "spec": yaml.safe_load(RULES.read_text(encoding="utf-8")),
    }
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
