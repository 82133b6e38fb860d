"""Every manifest in deploy/ validates against its schema, offline; a schema violation fails.

* Kubernetes objects of the core API: the schemas the PyPI package ``kubernetes-validate`` ships, strict
  (an unknown field is an error, as ``kubectl apply --validate=strict`` makes it), for the oldest and the
  newest Kubernetes version the manifests claim to support.
* Custom resources (KEDA ``ScaledObject``/``TriggerAuthentication``, the Prometheus operator's ``ServiceMonitor``/
  ``PrometheusRule``): the CRDs' own ``openAPIV3Schema``, vendored in tests/deploy/schemas/ (their README says
  from which release), made strict the same way.
* compose.yaml: the Compose Specification's JSON schema, vendored there too.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSIONS = ("1.29.0", "1.34.0")  # the range deploy/README.md states


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file:kind/name, object) for every Kubernetes object under deploy/k8s (kustomizations aside)."""
    found = []
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and document.get("kind") != "Kustomization":
                name = f"{path.relative_to(DEPLOY / 'k8s')}:{document['kind']}/{document['metadata']['name']}"
                found.append((name, document))
    return found


def _custom_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(SCHEMAS.glob("*-*.json")):
        if path.name == "compose-spec.json":
            continue
        document = json.loads(path.read_text(encoding="utf-8"))
        schemas[(document["apiVersion"], document["kind"])] = _strict(document["schema"])
    return schemas


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema of a CRD as the API server applies it with strict field validation: an object with
    declared properties takes no others (unless it says it preserves unknown fields)."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


CUSTOM = _custom_schemas()
MANIFESTS = manifests()


def violations(document: dict[str, Any]) -> list[str]:
    """Every schema violation of one object (an object of no known kind is one)."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key in CUSTOM:
        validator = Draft202012Validator(CUSTOM[key])
        return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]
    problems = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.utils.SchemaNotFoundError:
            return [f"no schema for {key} (vendor its CRD schema in tests/deploy/schemas)"]
        except kubernetes_validate.ValidationError as error:
            problems.append(f"Kubernetes {version}: {list(error.path)}: {error.message}")
    return problems


def test_every_kind_deploy_uses_is_validated() -> None:
    kinds = {document["kind"] for _, document in MANIFESTS}
    expected = {"Namespace", "ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget"}
    expected |= {"PersistentVolumeClaim", "NetworkPolicy", "Job", "ScaledObject", "TriggerAuthentication"}
    expected |= {"ServiceMonitor", "PrometheusRule"}
    assert kinds == expected
    assert {kind for _, kind in CUSTOM} == {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize(("name", "document"), MANIFESTS, ids=[name for name, _ in MANIFESTS])
def test_manifest_validates_against_its_schema(name: str, document: dict[str, Any]) -> None:
    assert violations(document) == []


def _set(path: list[Any], value: Any):
    def mutate(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


BROKEN = {
    ("StatefulSet", "replicas as text"): _set(["spec", "replicas"], "3"),
    ("StatefulSet", "a probe's misspelt field"): _set(
        ["spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "pathh"], "/readyz"
    ),
    ("Service", "a port as text"): _set(["spec", "ports", 0, "port"], "9108"),
    ("NetworkPolicy", "an unknown policy type field"): _set(["spec", "policyType"], ["Ingress"]),
    ("Job", "restartPolicy under the wrong key"): _set(["spec", "template", "spec", "restartpolicy"], "Never"),
    ("ScaledObject", "replica count as text"): _set(["spec", "minReplicaCount"], "one"),
    ("ScaledObject", "a misspelt field"): _set(["spec", "scaleTargetRefs"], {}),
    ("ServiceMonitor", "endpoints as an object"): _set(["spec", "endpoints"], {"port": "metrics"}),
    ("PrometheusRule", "a rule without a name field"): _set(["spec", "groups", 0, "rules", 0, "alertname"], "x"),
    ("TriggerAuthentication", "a misspelt reference"): _set(["spec", "secretTargetRefs"], []),
}


@pytest.mark.parametrize(("kind", "case"), sorted(BROKEN), ids=[f"{k}: {c}" for k, c in sorted(BROKEN)])
def test_a_schema_violation_fails(kind: str, case: str) -> None:
    document = copy.deepcopy(next(document for _, document in MANIFESTS if document["kind"] == kind))
    BROKEN[(kind, case)](document)
    assert violations(document), f"{kind} with {case} passed validation"


# --- compose -------------------------------------------------------------------------------------------


def compose_violations(document: Any) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    validator = Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_validates_against_the_compose_specification() -> None:
    assert compose_violations(compose()) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["detector-0"].update(restart_policy="always"),
        lambda c: c["services"]["kafka"].update(healthcheck={"test": ["CMD"], "intervall": "10s"}),
        lambda c: c["services"]["grafana"].update(ports="3000:3000"),
        lambda c: c.update(volume={}),
    ],
    ids=["unknown service key", "misspelt healthcheck key", "ports as a string", "unknown top-level key"],
)
def test_a_compose_schema_violation_fails(mutate) -> None:
    document = compose()
    mutate(document)
    assert compose_violations(document)
