"""``--explain K`` / ``explain=K``: ``detector score``, the Python API and the worker explain the same flow the
same way, only the verdicts they should, and K=0 leaves every output as it was."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

import detector
from detector.cli import main
from detector.core.bundle import load_bundle
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows, write_generated_csv
from tests.support.worker import flow_values, schema_errors

ROWS = generated_rows(seed=7)
K = 3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("explain") / "bundle")


@pytest.fixture(scope="module")
def flows(tmp_path_factory) -> Path:
    return write_generated_csv(tmp_path_factory.mktemp("explain") / "flows.csv", ROWS)


def score(bundle: Path, flows: Path, out: Path, *extra: str) -> list[dict]:
    assert main(["score", "--bundle", str(bundle), str(flows), "--out", str(out), "--backend", "int8", *extra]) == 0
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def explained(bundle, flows, tmp_path_factory) -> list[dict]:
    return score(bundle, flows, tmp_path_factory.mktemp("explain") / "k.jsonl", "--explain", str(K))


def assert_same_explanation(got: list[dict], expected: list[dict]) -> None:
    assert [e["feature"] for e in got] == [e["feature"] for e in expected]
    assert [e["value"] for e in got] == [e["value"] for e in expected]
    assert [e["attribution"] for e in got] == pytest.approx([e["attribution"] for e in expected], abs=1e-4)


def test_score_explains_attack_verdicts_only_with_k_real_features(explained) -> None:
    attacks = [line for line in explained if line["is_attack"]]
    assert attacks and len(attacks) < len(explained)
    for line in explained:
        if not line["is_attack"]:
            assert "explanation" not in line
            continue
        assert len(line["explanation"]) == K
        assert {entry["feature"] for entry in line["explanation"]} <= set(FEATURES)
        row = ROWS[line["source"]["row"] - 1]
        for entry in line["explanation"]:
            assert entry["value"] == pytest.approx(float(row[entry["feature"]]))  # type: ignore[arg-type]


def test_k_zero_changes_nothing_and_k_only_adds_the_explanation(bundle, flows, explained, tmp_path) -> None:
    plain = score(bundle, flows, tmp_path / "plain.jsonl")
    assert score(bundle, flows, tmp_path / "zero.jsonl", "--explain", "0") == plain
    assert [{k: v for k, v in line.items() if k != "explanation"} for line in explained] == plain


def test_the_api_explains_as_score_does(bundle, explained) -> None:
    results = detector.load(bundle, device="cpu", backend="int8", explain=K).predict_rows(ROWS)
    for result, line in zip(results, explained, strict=True):
        assert result["label"] == line["label"]
        if "explanation" not in line:
            assert result["explanation"] is None
            continue
        assert_same_explanation(result["explanation"], line["explanation"])
    plain = detector.load(bundle, device="cpu", backend="int8").predict_rows(ROWS)
    assert [r["explanation"] for r in plain] == [None] * len(ROWS)


def messages(values: list[bytes]) -> list[Message]:
    return [
        Message(topic="flows", partition=0, offset=i, value=v, timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000))
        for i, v in enumerate(values)
    ]


@pytest.mark.parametrize("emit", ["attacks", "all"])
def test_the_worker_explains_what_it_publishes_as_score_does(bundle, explained, emit) -> None:
    processor = BatchProcessor(
        load_bundle(bundle), output_topic="alerts", dlq_topic="dlq", emit=emit, device="cpu", backend="int8", explain=K
    )
    alerts = [orjson.loads(out.value) for out in processor.process(messages(flow_values(ROWS))).outputs]
    assert len(alerts) == (len(ROWS) if emit == "all" else sum(line["is_attack"] for line in explained))
    for alert in alerts:
        assert schema_errors("alert.schema.json", alert) == []
        line = explained[alert["source"]["offset"]]
        assert alert["label"] == line["label"]
        assert len(alert["explanation"]) == K  # with --emit all the benign verdicts it publishes too
        if "explanation" in line:
            assert_same_explanation(alert["explanation"], line["explanation"])
