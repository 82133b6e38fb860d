"""One batch of Kafka messages → alerts (schema-valid, same labels as Scorer) and dead letters (original bytes)."""

from __future__ import annotations

import orjson
import pytest
import torch
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from detector.core.alerts import alert_key
from detector.core.bundle import load_bundle
from detector.core.cudagraphs import CudaGraphsBackend
from detector.core.decode import FlowDecoder
from detector.core.scorer import Scorer
from detector.stream.deadletter import MAX_VALUE_BYTES
from detector.stream.processor import PIPELINE_ROWS, BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows
from tests.support.worker import flow_values, schema_errors

TOPIC = "flows"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b", version="v1"))


def messages(values, partition=0, start=0, keys=None):
    return [
        Message(
            topic=TOPIC,
            partition=partition,
            offset=start + i,
            key=None if keys is None else keys[i],
            value=value,
            timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + i),
        )
        for i, value in enumerate(values)
    ]


def processor(bundle, emit="all", **kwargs):
    return BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit=emit, device="cpu", **kwargs)


def test_emit_all_gives_one_schema_valid_alert_per_flow_with_the_scorers_labels(bundle):
    rows = generated_rows(0)[:120]
    batch = processor(bundle).process(messages(flow_values(rows), partition=2, start=40))

    decoder = FlowDecoder(FEATURES)
    expected = Scorer(bundle, "cpu").score([decoder.decode_mapping(row) for row in rows])
    alerts = [orjson.loads(out.value) for out in batch.outputs]
    assert [out.topic for out in batch.outputs] == ["alerts"] * 120
    assert [a["label"] for a in alerts] == [v.label for v in expected]
    assert [a["is_attack"] for a in alerts] == [v.is_attack for v in expected]
    assert [a["source"]["offset"] for a in alerts] == list(range(40, 160))
    for alert, out in zip(alerts, batch.outputs, strict=True):
        assert schema_errors("alert.schema.json", alert) == []
        assert out.key == alert_key(alert["flow"], (TOPIC, 2, alert["source"]["offset"]))
        assert alert["model"] == {"name": bundle.name, "version": "v1", "bundle_sha256": bundle.sha256}
    # The fixture's classifier was fitted to these classes: its verdicts are the rows' classes.
    assert [a["label"] for a in alerts] == [a["ground_truth"] for a in alerts]
    assert [a["is_attack"] for a in alerts] == [a["label"] != "BENIGN" for a in alerts]
    assert {a["label"] for a in alerts} == {"BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS"}
    assert batch.next_offsets == {(TOPIC, 2): 160} and batch.first_offsets == {(TOPIC, 2): 40}
    assert sum(batch.verdicts.values()) == 120 and sum(batch.alerts.values()) == 120
    assert len(batch.alert_timestamps) == 120 and batch.alert_timestamps[0] == pytest.approx(1_700_000_000.0)


def test_emit_attacks_keeps_only_attack_verdicts_but_counts_every_verdict(bundle):
    rows = generated_rows(1)[:150]
    every = processor(bundle, "all").process(messages(flow_values(rows)))
    attacks = processor(bundle, "attacks").process(messages(flow_values(rows)))

    def essentials(alert):
        return alert["alert_id"], alert["label"], alert["probabilities"]

    expected = [essentials(a) for a in map(orjson.loads, (o.value for o in every.outputs)) if a["is_attack"]]
    emitted = [essentials(orjson.loads(o.value)) for o in attacks.outputs]
    assert emitted == expected
    attack_rows = [i for i, row in enumerate(rows) if row["Label"] != "BENIGN"]
    assert 0 < len(attack_rows) < len(rows)
    assert [orjson.loads(o.value)["source"]["offset"] for o in attacks.outputs] == attack_rows
    assert attacks.verdicts == every.verdicts
    attack_verdicts = sum(n for (_, is_attack), n in every.verdicts.items() if is_attack)
    assert sum(attacks.alerts.values()) == len(emitted) == attack_verdicts
    assert len(attacks.alert_timestamps) == len(emitted)


def test_bad_records_become_dead_letters_with_their_original_bytes_key_and_reason(bundle):
    good = flow_values(generated_rows(0)[:3])
    row = dict(generated_rows(0)[0])
    bad = {
        "not_json": b"\xff not json",
        "not_object": b"[1, 2]",
        "missing_features": orjson.dumps({k: v for k, v in row.items() if k != "Flow Duration"}),
        "wrong_type": orjson.dumps({**row, "Flow Duration": "fast"}),
        "schema_version": orjson.dumps({**row, "schema_version": 2}),
        "oversized": orjson.dumps({**row, "padding": "x" * 2000}),
        "empty": None,
    }
    values = [*good, *bad.values()]
    keys = [f"k{i}".encode() for i in range(len(values))]
    batch = processor(bundle, max_record_bytes=1024).process(messages(values, keys=keys, start=10))

    dead = [out for out in batch.outputs if out.topic == "dlq"]
    assert len(batch.outputs) - len(dead) == 3
    assert [out.value for out in dead] == list(bad.values())
    assert [out.key for out in dead] == keys[3:]
    for out, (code, _), offset in zip(dead, bad.items(), range(13, 20), strict=True):
        headers = {name: value.decode() for name, value in out.headers}
        assert schema_errors("dead-letter.schema.json", headers) == []
        assert headers["flowwarden.reason_code"] == code
        assert (headers["flowwarden.source_topic"], headers["flowwarden.source_partition"]) == (TOPIC, "0")
        assert headers["flowwarden.source_offset"] == str(offset)
    assert dict(batch.dead_letters) == dict.fromkeys(bad, 1)
    assert batch.next_offsets == {(TOPIC, 0): 20} and batch.records == 10


def test_dead_letters_explain_the_rejection_in_words_not_only_its_code(bundle):
    row = dict(generated_rows(0)[0])
    bad = [
        b"\xff not json",
        b"[1, 2]",
        orjson.dumps({k: v for k, v in row.items() if k != "Flow Duration"}),
        orjson.dumps({**row, "Flow Duration": "fast"}),
    ]
    dead = processor(bundle).process(messages(bad)).outputs
    decoder = FlowDecoder(FEATURES)
    expected = [decoder.decode_bytes(value) for value in bad]
    headers = [{name: value.decode() for name, value in out.headers} for out in dead]
    assert [h["flowwarden.reason"] for h in headers] == [r.reason for r in expected]
    assert [h["flowwarden.reason_code"] for h in headers] == [r.code for r in expected]
    assert all(h["flowwarden.reason"] != h["flowwarden.reason_code"] for h in headers)
    assert "Flow Duration" in headers[2]["flowwarden.reason"], "the reason names the missing feature"


def test_dead_letters_carry_the_detection_time_of_their_batch(bundle):
    values = [*flow_values(generated_rows(0)[:2]), b"nope", None]
    batch = processor(bundle).process(messages(values))
    alerts = [orjson.loads(out.value) for out in batch.outputs if out.topic == "alerts"]
    dead = [{name: value.decode() for name, value in out.headers} for out in batch.outputs if out.topic == "dlq"]
    assert len(alerts) == 2 and len(dead) == 2
    detected = {alert["detected_at"] for alert in alerts}
    assert len(detected) == 1, "one batch, one detection time"
    assert {h["flowwarden.detected_at"] for h in dead} == detected, "dead letters were stamped with another time"
    for headers in dead:
        assert schema_errors("dead-letter.schema.json", headers) == []


def test_a_batch_of_only_bad_records_needs_no_model(bundle):
    batch = processor(bundle).process(messages([b"nope", b"{}"]))
    assert [o.topic for o in batch.outputs] == ["dlq", "dlq"]
    assert batch.model_seconds == 0.0 and not batch.verdicts


def test_serve_swaps_the_model_for_later_batches(bundle, tmp_path):
    work = processor(bundle)
    other = load_bundle(make_bundle(tmp_path / "v2", seed=3, version="v2"))
    rows = generated_rows(0)[:20]
    before = [orjson.loads(out.value) for out in work.process(messages(flow_values(rows))).outputs]
    work.serve(other)
    after = [orjson.loads(out.value) for out in work.process(messages(flow_values(rows))).outputs]

    assert {a["model"]["version"] for a in after} == {"v2"}
    assert {a["model"]["bundle_sha256"] for a in after} == {other.sha256}
    flows = [FlowDecoder(FEATURES).decode_mapping(row) for row in rows]
    by_v2 = Scorer(other, "cpu").score(flows)
    assert [a["confidence"] for a in after] == [pytest.approx(v.confidence) for v in by_v2]
    assert [a["confidence"] for a in after] != [a["confidence"] for a in before]


def test_a_record_too_big_to_produce_is_dead_lettered_cut_to_size(bundle):
    huge = b'{"padding": "' + b"x" * (MAX_VALUE_BYTES + 5000) + b'"}'
    [out] = processor(bundle).process(messages([huge])).outputs
    headers = {name: value.decode() for name, value in out.headers}
    assert out.value == huge[:MAX_VALUE_BYTES]
    assert headers["flowwarden.reason_code"] == "oversized"
    assert headers["flowwarden.original_bytes"] == str(len(huge))
    assert schema_errors("dead-letter.schema.json", headers) == []


def test_an_asynchronous_scorer_gets_the_batch_in_parts_and_the_outputs_are_those_of_one_call(bundle):
    """On a GPU the processor hands the scorer every PIPELINE_ROWS decoded flows while it decodes the rest; the
    alerts, their order and the counts must be exactly those of scoring the batch in one call."""
    rows = (generated_rows(0) + generated_rows(1))[: 2 * PIPELINE_ROWS + 37]
    values = flow_values(rows)
    values[PIPELINE_ROWS - 1] = b"not json"  # a dead letter inside the first part, so parts count decoded flows
    batch = messages(values, partition=1)
    one_call = processor(bundle, backend="eager").process(batch)

    pipelined = processor(bundle, backend="eager")
    model, autoencoder = bundle.model, None
    parts = CudaGraphsBackend(model, autoencoder, torch.device("cpu"), torch.float32, (64, 256), "cuda-graphs")
    parts.asynchronous = True  # what it is on a GPU
    started = []
    original = parts.start
    parts.start = lambda matrix: started.append(len(matrix)) or original(matrix)
    pipelined.scorer.backend = parts
    result = pipelined.process(batch)

    assert started == [PIPELINE_ROWS, PIPELINE_ROWS, 36]
    assert [orjson.loads(o.value)["label"] for o in result.outputs if o.topic == "alerts"] == [
        orjson.loads(o.value)["label"] for o in one_call.outputs if o.topic == "alerts"
    ]
    assert [o.topic for o in result.outputs] == [o.topic for o in one_call.outputs]
    assert result.verdicts == one_call.verdicts and result.dead_letters == one_call.dead_letters
    assert result.model_seconds > 0
