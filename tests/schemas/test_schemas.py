"""The JSON Schemas in schemas/: valid draft 2020-12, examples that validate, and contracts that hold.

The schemas are data; these tests keep them honest against the code that reads and writes the same
shapes (detector.core.features / detector.core.values / detector.core.decode / detector.core.bundle).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from detector.core import decode, features, values
from detector.core.bundle import write_bundle
from detector.core.drift import ReferenceHistograms
from detector.core.model import ModelConfig, ResCAEBiGRU
from detector.core.preprocess import Preprocessor

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = SCHEMAS / "examples"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

CASES = ("attack", "flagged-novel", "benign-verdict")  # each alert format has an example of each verdict
# example file -> the schema it must satisfy
EXAMPLE_SCHEMA = {
    "flow-record.cic.json": "flow-record.schema.json",
    "flow-record.python-cicflowmeter.json": "flow-record.schema.json",
    "flow-record.unsw.json": "flow-record.schema.json",
    "alert.attack.json": "alert.schema.json",
    "alert.benign-verdict.json": "alert.schema.json",
    "alert.with-ground-truth.json": "alert.schema.json",
    "alert.flagged-novel.json": "alert.schema.json",
    "alert.aggregated.json": "alert.schema.json",
    "alert.explained.json": "alert.schema.json",
    **{f"alert-{fmt}.{case}.json": f"alert-{fmt}.schema.json" for fmt in ("ecs", "ocsf") for case in CASES},
    "dead-letter-headers.json": "dead-letter.schema.json",
    "bundle-manifest.json": "bundle-manifest.schema.json",
}
SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def validator(schema_name: str) -> Draft202012Validator:
    schema = load(SCHEMAS / schema_name)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(schema_name: str, instance: Any) -> list[str]:
    return [e.message for e in validator(schema_name).iter_errors(instance)]


def test_the_expected_schemas_exist() -> None:
    assert SCHEMA_FILES == [
        "alert-ecs.schema.json",
        "alert-ocsf.schema.json",
        "alert.schema.json",
        "bundle-manifest.schema.json",
        "dead-letter.schema.json",
        "flow-record.schema.json",
    ]


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load(SCHEMAS / name)
    assert schema["$schema"] == DRAFT_2020_12
    Draft202012Validator.check_schema(schema)
    assert schema.get("description"), f"{name} must say what it is for"


def test_every_example_has_a_schema() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXAMPLE_SCHEMA)


@pytest.mark.parametrize(("example", "schema"), sorted(EXAMPLE_SCHEMA.items()))
def test_example_validates(example: str, schema: str) -> None:
    assert errors(schema, load(EXAMPLES / example)) == []


# --- alert -----------------------------------------------------------------------------------------


def _alert() -> dict[str, Any]:
    return load(EXAMPLES / "alert.attack.json")


def _without(key: str):
    def mutate(alert: dict[str, Any]) -> None:
        del alert[key]

    return mutate


def _set(*path_and_value: Any):
    *path, value = path_and_value

    def mutate(alert: dict[str, Any]) -> None:
        target = alert
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


BROKEN_ALERTS = {
    "missing label": _without("label"),
    "missing alert_id": _without("alert_id"),
    "confidence 1.5": _set("confidence", 1.5),
    "negative confidence": _set("confidence", -0.1),
    "extra top-level property": _set("severity", "high"),
    "alert_id upper case": _set("alert_id", "860BEC8ADECDFB3B4BBCCC583D665CC3"),
    "alert_id too short": _set("alert_id", "860bec8adecdfb3b"),
    "alert_id not hex": _set("alert_id", "z" * 32),
    "schema_version 2": _set("schema_version", 2),
    "is_attack as text": _set("is_attack", "true"),
    "four probabilities": _set("probabilities", [{"label": f"c{i}", "probability": 0.25} for i in range(4)]),
    "no probabilities": _set("probabilities", []),
    "negative partition": _set("source", "partition", -1),
    "offset as text": _set("source", "offset", "1042"),
    "short bundle sha256": _set("model", "bundle_sha256", "abc123"),
    "detected_at not UTC": _set("detected_at", "2025-11-27T11:41:07+01:00"),
    "detected_at not a date-time": _set("detected_at", "yesterday"),
    "unknown flow field": _set("flow", "vlan", 7),
    "flow value as object": _set("flow", "src_ip", {"v4": "10.0.0.1"}),
    "empty ground_truth": _set("ground_truth", ""),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ALERTS))
def test_broken_alert_is_rejected(case: str) -> None:
    alert = _alert()
    BROKEN_ALERTS[case](alert)
    assert errors("alert.schema.json", alert), f"alert with {case} was accepted"


def test_minimal_alert_is_accepted() -> None:
    """No flow identity and no ground truth is still a valid alert (a record may carry neither)."""
    alert = _alert()
    alert["flow"] = {}
    alert["probabilities"] = alert["probabilities"][:1]
    assert errors("alert.schema.json", alert) == []


def test_example_alerts_are_consistent() -> None:
    """confidence is the first probability, probabilities descend, and bundle_sha256 is the example manifest's."""
    manifest = EXAMPLES / "bundle-manifest.json"
    manifest_sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
    classes = load(manifest)["classes"]
    benign = load(manifest)["benign_class"]
    for path in sorted(EXAMPLES.glob("alert.*.json")):  # the native ones (alert-ecs.* and alert-ocsf.* are built)
        alert = load(path)
        probabilities = [p["probability"] for p in alert["probabilities"]]
        assert probabilities == sorted(probabilities, reverse=True), path.name
        assert alert["probabilities"][0] == {"label": alert["label"], "probability": alert["confidence"]}, path.name
        assert alert["is_attack"] == (alert["label"] != benign), path.name
        assert {p["label"] for p in alert["probabilities"]} <= set(classes), path.name
        assert alert["model"]["bundle_sha256"] == manifest_sha, path.name
        assert alert["model"]["version"] == load(manifest)["model"]["version"], path.name
    assert "ground_truth" in load(EXAMPLES / "alert.with-ground-truth.json")
    assert load(EXAMPLES / "alert.benign-verdict.json")["is_attack"] is False
    explanation = load(EXAMPLES / "alert.explained.json")["explanation"]
    assert {entry["feature"] for entry in explanation} <= set(load(manifest)["features"])
    attributions = [entry["attribution"] for entry in explanation]
    assert attributions == sorted(attributions, reverse=True)


# --- dead letter -----------------------------------------------------------------------------------

REASON_CODES = {
    "empty",
    "oversized",
    "not_json",
    "not_object",
    "schema_version",
    "missing_features",
    "wrong_type",
    "decoder_error",
}


def test_dead_letter_reason_codes_are_the_contract() -> None:
    schema = load(SCHEMAS / "dead-letter.schema.json")
    assert set(schema["properties"]["flowwarden.reason_code"]["enum"]) == REASON_CODES


def test_dead_letter_reason_codes_match_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every code the decoder can produce is in the schema (the decoder is the source of the codes)."""
    decoder = decode.FlowDecoder(["Flow Duration"], max_record_bytes=64)
    produced = {
        decoder.decode_bytes(None).code,
        decoder.decode_bytes(b"x" * 65).code,
        decoder.decode_bytes(b"{not json").code,
        decoder.decode_bytes(b"[1, 2]").code,
        decoder.decode_bytes(b'{"schema_version": 2, "Flow Duration": 1}').code,
        decoder.decode_bytes(b'{"Dst Port": 80}').code,
        decoder.decode_bytes(b'{"Flow Duration": "fast"}').code,
    }

    def decoder_bug(value: object) -> float:
        raise RuntimeError("a bug")

    monkeypatch.setattr(decode, "parse_number", decoder_bug)
    produced.add(decoder.decode_bytes(b'{"Flow Duration": 1}').code)
    assert produced == REASON_CODES


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.pop("flowwarden.reason_code"),
        lambda h: h.update({"flowwarden.reason_code": "bad_vibes"}),
        lambda h: h.update({"flowwarden.source_offset": "-1"}),
        lambda h: h.update({"flowwarden.source_partition": 2}),
        lambda h: h.update({"some.other.header": 1}),
    ],
    ids=["missing reason_code", "unknown reason_code", "negative offset", "partition not text", "non-text header"],
)
def test_broken_dead_letter_headers_are_rejected(mutate) -> None:
    headers = load(EXAMPLES / "dead-letter-headers.json")
    mutate(headers)
    assert errors("dead-letter.schema.json", headers)


# --- flow record -----------------------------------------------------------------------------------


def _record() -> dict[str, Any]:
    return load(EXAMPLES / "flow-record.cic.json")


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("Flow Bytes/s", "Infinity", True),
        ("Flow Bytes/s", "-Infinity", True),
        ("Flow Bytes/s", "inf", True),
        ("Flow Bytes/s", "NaN", True),
        ("Flow Bytes/s", "", True),
        ("Flow Bytes/s", None, True),
        ("Flow Bytes/s", "1.5e3", True),
        ("Flow Bytes/s", "fast", False),
        ("Flow Bytes/s", True, False),
        ("Flow Bytes/s", [1], False),
        ("schema_version", 1, True),
        ("schema_version", 2, False),
        ("Label", "DDoS", True),
        ("Src IP", 17, False),
    ],
)
def test_flow_record_values(field: str, value: Any, ok: bool) -> None:
    record = _record()
    record[field] = value
    assert (errors("flow-record.schema.json", record) == []) is ok


def test_flow_record_must_be_a_non_empty_object() -> None:
    assert errors("flow-record.schema.json", {})
    assert errors("flow-record.schema.json", [_record()])
    assert errors("flow-record.schema.json", {"vendor_field": "kept"}) == []


@pytest.mark.parametrize(
    "text",
    [
        "80", " 80 ", "-3", "+3", "1.", ".5", "1e6", "1.5E-3", "0x000b", "-0x1F",
        "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "INF", "infinity", "NaN", "nan", "null", "", "  ",
        "fast", "1,5", "0x", "1e", "Inf inity", "NaNa", "--1", "0b101", "true",
    ],
)  # fmt: skip
def test_numeric_feature_text_matches_the_detector(text: str) -> None:
    """The schema accepts exactly the text that detector.core.values.parse_number accepts (no drift)."""
    try:
        values.parse_number(text)
        accepted = True
    except ValueError:
        accepted = False
    record = {"Flow Duration": text}
    assert (errors("flow-record.schema.json", record) == []) is accepted


def test_flow_record_spellings_match_the_feature_vocabulary() -> None:
    """Every listed spelling means what the detector takes it for, and every canonical feature is listed."""
    schema = load(SCHEMAS / "flow-record.schema.json")
    properties = schema["properties"]
    by_ref: dict[str, list[str]] = {}
    for name, spec in properties.items():
        by_ref.setdefault(spec.get("$ref", "").rsplit("/", 1)[-1], []).append(name)

    numeric = by_ref["numericFeature"]
    categorical = by_ref["categoricalFeature"]
    plan = features.resolve_columns(numeric + categorical)
    assert plan.unknown == ()
    for column in plan.columns:
        assert column.role in (features.Role.FEATURE, features.Role.IGNORED), column
        is_categorical = column.canonical in features.CATEGORICAL_FEATURES
        assert is_categorical == (column.source in categorical), column.source

    listed = {features.column_key(name) for name in properties}
    for canonical in features.CIC_FEATURES + features.UNSW_FEATURES:
        assert features.column_key(canonical) in listed, f"{canonical} is not in flow-record.schema.json"

    identity = by_ref["flowText"] + by_ref["port"] + by_ref["timestamp"]
    assert all(c.role is features.Role.FLOW for c in features.resolve_columns(identity).columns)
    for spelling in by_ref["label"]:  # each on its own: in one header a second label column is a duplicate
        assert [c.role for c in features.resolve_columns([spelling]).columns] == [features.Role.LABEL], spelling


@pytest.mark.parametrize(
    ("example", "label"),
    [
        ("flow-record.cic.json", "DDoS"),
        ("flow-record.python-cicflowmeter.json", None),
        ("flow-record.unsw.json", "Exploits"),
    ],
)
def test_flow_record_examples_decode_and_fill_an_alert(example: str, label: str | None) -> None:
    """The examples are records the detector scores, and what it copies into an alert fits the alert schema."""
    raw = (EXAMPLES / example).read_bytes()
    plan = features.resolve_columns(list(json.loads(raw)))
    categorical = [name for name in plan.features if name in features.CATEGORICAL_FEATURES]
    numeric = [name for name in plan.features if name not in features.CATEGORICAL_FEATURES]
    decoded = decode.FlowDecoder(numeric, categorical).decode_bytes(raw)
    assert isinstance(decoded, decode.DecodedFlow), decoded
    assert decoded.label == label
    assert decoded.flow, "the example carries flow identity"

    alert = _alert()
    alert["flow"] = decoded.flow
    alert.pop("ground_truth", None)
    if label is not None:
        alert["ground_truth"] = label
    assert errors("alert.schema.json", alert) == []


# --- bundle manifest -------------------------------------------------------------------------------


def test_manifest_written_by_write_bundle_validates(tmp_path: Path) -> None:
    """The schema describes what detector.core.bundle.write_bundle really writes."""
    rng = np.random.default_rng(0)
    values = rng.random((20, 4))
    pre = Preprocessor.fit(values, ["dur", "spkts", "dpkts", "sbytes"], {"proto": ["tcp", "udp"] * 10})
    model = ResCAEBiGRU(ModelConfig(n_features=pre.width, n_classes=3))
    out = write_bundle(
        tmp_path / "bundle",
        model=model,
        preprocessor=pre,
        classes=["BENIGN", "DoS", "Exploits"],
        benign_class="BENIGN",
        training_data={"rows": 20},
        metrics={"accuracy": 0.5},
        drift=ReferenceHistograms.fit(values, pre.numeric),
    )
    manifest = load(out / "manifest.json")
    assert "drift.json" in manifest["files"]
    assert errors("bundle-manifest.schema.json", manifest) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.update({"format_version": 2}),
        lambda m: m.update({"format": "something.else"}),
        lambda m: m.pop("files"),
        lambda m: m["files"].pop("model.safetensors"),
        lambda m: m["files"]["model.json"].update({"sha256": "00"}),
        lambda m: m["files"].update({"../escape": {"sha256": "0" * 64, "bytes": 1}}),
        lambda m: m.update({"extra": True}),
    ],
    ids=["format_version 2", "wrong format", "no files", "no weights", "short sha256", "path escape", "extra key"],
)
def test_broken_manifest_is_rejected(mutate) -> None:
    manifest = copy.deepcopy(load(EXAMPLES / "bundle-manifest.json"))
    mutate(manifest)
    assert errors("bundle-manifest.schema.json", manifest)
