"""The streaming worker end to end through a real broker: verdicts, dead letters, commits, metrics.

The worker runs in-process in a thread (``stop()`` is what SIGTERM triggers in ``detector run``); the
subprocess tests (signals, kill -9, exit statuses) are in test_worker_process.py.
"""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from detector.core.bundle import load_bundle
from detector.core.decode import FlowDecoder
from detector.core.scorer import Scorer
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows, unlike_training
from tests.support.kafka import client_config, consume_exactly, unique_name
from tests.support.worker import (
    WorkerThread,
    alert_sources,
    committed_offsets,
    dead_letter_header_map,
    flow_values,
    http_get,
    metric_value,
    produce_spread,
    schema_errors,
    wait_until,
    worker_settings,
)
from tests.support.worker import (
    worker_topics as topics,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "v1", version="v1")


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_every_flow_gets_exactly_one_verdict_equal_to_the_scorers(kafka_bootstrap, new_topic, bundle_path, guarantee):
    rows = generated_rows(0)
    names = topics(new_topic)
    where = produce_spread(kafka_bootstrap, names["input_topic"], flow_values(rows), partitions=3)
    group = unique_name("detector")
    settings = worker_settings(
        kafka_bootstrap, **names, group_id=group, bundle=bundle_path, emit="all", guarantee=guarantee, max_batch=64
    )
    with WorkerThread(settings) as worker:
        messages = consume_exactly(
            kafka_bootstrap, names["output_topic"], len(rows), read_committed=True, timeout=120, idle_after=1.0
        )
        assert worker.stop() == 0

    sources = alert_sources(messages)
    assert sorted(sources) == sorted(where), "one verdict per input offset, none missing, none twice"
    decoder = FlowDecoder(FEATURES)
    expected = Scorer(load_bundle(bundle_path), "cpu").score([decoder.decode_mapping(row) for row in rows])
    for message, source in zip(messages, sources, strict=True):
        alert = orjson.loads(message.value())
        verdict = expected[where[source]]
        assert (alert["label"], alert["is_attack"]) == (verdict.label, verdict.is_attack)
        assert alert["ground_truth"] == rows[where[source]]["Label"].replace("\u2013", "-")
        assert schema_errors("alert.schema.json", alert) == []
    ends = {p: 1 + max(o for q, o in where if q == p) for p in range(3)}
    assert committed_offsets(kafka_bootstrap, group, names["input_topic"], 3) == ends


def test_bad_records_go_to_the_dead_letter_topic_and_the_worker_keeps_scoring(kafka_bootstrap, new_topic, bundle_path):
    rows = generated_rows(1)[:120]
    row = dict(rows[0])
    bad = {
        b"{not json": "not_json",
        orjson.dumps({k: v for k, v in row.items() if k not in ("Flow Duration", "Flow IAT Mean")}): "missing_features",
        orjson.dumps({**row, "Flow Duration": "quick", "Protocol": "tcp"}): "wrong_type",
        orjson.dumps({**row, "padding": "x" * 100_000}): "oversized",
        orjson.dumps({**row, "schema_version": 7}): "schema_version",
        b"": "empty",
        b"42": "not_object",
    }
    values = flow_values(rows)
    mixed = values[:40] + list(bad)[:4] + values[40:80] + list(bad)[4:] + values[80:]
    names = topics(new_topic, partitions=2)
    where = produce_spread(kafka_bootstrap, names["input_topic"], mixed, partitions=2)
    group = unique_name("detector")
    settings = worker_settings(
        kafka_bootstrap, **names, group_id=group, bundle=bundle_path, guarantee="at-least-once", max_batch=32
    )
    with WorkerThread(settings) as worker:
        dead = consume_exactly(kafka_bootstrap, names["dlq_topic"], len(bad), timeout=120, idle_after=0.5)
        ends = {p: 1 + max(o for q, o in where if q == p) for p in range(2)}
        worker.wait_until(
            lambda: committed_offsets(kafka_bootstrap, group, names["input_topic"], 2) == ends, "offsets at the end"
        )
        assert worker.alive and http_get(worker.worker.metrics_port, "/healthz")[0] == 200
        exposition = http_get(worker.worker.metrics_port, "/metrics")[1]
        assert worker.stop() == 0

    seen = {}
    for message in dead:
        headers = dead_letter_header_map(message)
        assert schema_errors("dead-letter.schema.json", headers) == []
        source = (int(headers["flowwarden.source_partition"]), int(headers["flowwarden.source_offset"]))
        assert headers["flowwarden.source_topic"] == names["input_topic"]
        assert mixed[where[source]] == message.value(), "a dead letter carries the original bytes"
        seen[message.value()] = headers["flowwarden.reason_code"]
    assert seen == {value: code for value, code in bad.items()}
    scored = sum(
        metric_value(exposition, "flowwarden_verdicts_total", label=label, is_attack=attack) or 0.0
        for label in ("BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS")
        for attack in ("true", "false")
    )
    assert scored == len(rows), "every valid record is scored"
    for code in set(bad.values()):
        expected = sum(1 for c in bad.values() if c == code)
        assert metric_value(exposition, "flowwarden_dead_letters_total", reason_code=code) == expected
    attacks = sum(
        metric_value(exposition, "flowwarden_alerts_out_total", label=label) or 0.0
        for label in ("DoS Hulk", "Portscan", "Web Attack - XSS")
    )
    assert metric_value(exposition, "flowwarden_alerts_out_total", label="BENIGN") is None, "--emit attacks"
    assert attacks == sum(1 for r in rows if r["Label"] != "BENIGN"), "the fixture model tells attacks apart"
    assert attacks == sum(
        metric_value(exposition, "flowwarden_verdicts_total", label=label, is_attack="true") or 0.0
        for label in ("DoS Hulk", "Portscan", "Web Attack - XSS")
    )


def test_emit_flagged_streams_attacks_and_novel_flows_and_counts_the_novel_ones(kafka_bootstrap, new_topic, tmp_path):
    bundle = make_bundle(tmp_path / "novelty", version="n1", novelty=True)
    rows = generated_rows(3)[:100] + unlike_training(generated_rows(4)[:40])
    decoder = FlowDecoder(FEATURES)
    expected = Scorer(load_bundle(bundle), "cpu").score([decoder.decode_mapping(row) for row in rows])
    flagged = {i for i, verdict in enumerate(expected) if verdict.is_attack or verdict.is_novel}
    novel = sum(verdict.is_novel for verdict in expected)
    assert any(v.is_novel and not v.is_attack for v in expected), "the check needs novel flows called benign"
    names = topics(new_topic, partitions=2)
    where = produce_spread(kafka_bootstrap, names["input_topic"], flow_values(rows), partitions=2)
    settings = worker_settings(
        kafka_bootstrap, **names, group_id=unique_name("detector"), bundle=bundle, emit="flagged", max_batch=32
    )
    with WorkerThread(settings) as worker:
        alerts = consume_exactly(kafka_bootstrap, names["output_topic"], len(flagged), read_committed=True, timeout=120)
        worker.wait_until(
            lambda: novel_counted(http_get(worker.worker.metrics_port, "/metrics")[1]) == novel,
            "flowwarden_novel_flows_total to count every novel flow",
        )
        assert worker.stop() == 0

    assert {where[source] for source in alert_sources(alerts)} == flagged
    for message in alerts:
        alert = orjson.loads(message.value())
        verdict = expected[where[(alert["source"]["partition"], alert["source"]["offset"])]]
        assert alert["novelty"]["is_novel"] is verdict.is_novel


def novel_counted(exposition: str) -> float:
    return sum(
        metric_value(exposition, "flowwarden_novel_flows_total", label=label) or 0.0
        for label in ("BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS")
    )


def test_metrics_and_probes_of_a_running_worker(kafka_bootstrap, new_topic, bundle_path):
    rows = generated_rows(2)[:100]
    names = topics(new_topic, partitions=2)
    produce_spread(kafka_bootstrap, names["input_topic"], flow_values(rows), partitions=2)
    settings = worker_settings(
        kafka_bootstrap, **names, group_id=unique_name("detector"), bundle=bundle_path, emit="all", max_batch=16
    )
    worker = WorkerThread(settings)
    port = worker.worker.metrics_port
    assert http_get(port, "/healthz")[0] == 200, "alive as soon as it serves"
    assert http_get(port, "/readyz") == (503, "not a member of the group yet\n")
    with worker:
        consume_exactly(kafka_bootstrap, names["output_topic"], len(rows), read_committed=True, timeout=120)
        worker.wait_until(lambda: http_get(port, "/readyz")[0] == 200, "readiness")
        worker.wait_until(
            lambda: metric_value(http_get(port, "/metrics")[1], "flowwarden_consumer_lag", partition="1") == 0.0,
            "a consumer lag of 0 from the librdkafka statistics",
            timeout=30,
        )
        text = http_get(port, "/metrics")[1]
        assert worker.stop() == 0
    assert metric_value(text, "flowwarden_records_in_total") == len(rows)
    assert metric_value(text, "flowwarden_ready") == 1.0
    assert metric_value(text, "flowwarden_paused_partitions") == 0.0
    assert metric_value(text, "flowwarden_model_info", version="v1") == 1.0
    assert metric_value(text, "flowwarden_batch_size_count") >= len(rows) / 16
    assert metric_value(text, "flowwarden_batch_size_sum") == len(rows)
    assert metric_value(text, "flowwarden_model_seconds_count") >= 1
    assert metric_value(text, "flowwarden_batch_seconds_count") == metric_value(text, "flowwarden_batch_size_count")
    assert metric_value(text, "flowwarden_end_to_end_seconds_count") == len(rows)
    assert metric_value(text, "flowwarden_model_swaps_total", result="ok") == 0.0
    assert sum(1 for e in worker.events("partitions assigned")) >= 1
    assert worker.events("starting")[0]["model"]["version"] == "v1"


def test_a_fenced_worker_exits_1_with_a_clear_log_line(kafka_bootstrap, new_topic, bundle_path):
    names = topics(new_topic, partitions=1)
    values = flow_values(generated_rows(3)[:40])
    transactional_id = unique_name("worker-0")
    settings = worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=bundle_path,
        emit="all",
        max_batch=8,
        transactional_id=transactional_id,
    )
    with WorkerThread(settings) as worker:
        produce_spread(kafka_bootstrap, names["input_topic"], values[:20], partitions=1)
        consume_exactly(kafka_bootstrap, names["output_topic"], 20, read_committed=True, timeout=120)
        successor = Producer({**client_config(kafka_bootstrap), "transactional.id": transactional_id})
        successor.init_transactions(15)  # e.g. a second worker started with the same id
        produce_spread(kafka_bootstrap, names["input_topic"], values[20:], partitions=1)
        wait_until(lambda: not worker.alive, "the fenced worker to exit", timeout=60)
    assert worker.error is None and worker.exit_code == 1, worker.error
    fatal = worker.events("fatal: the worker stops without committing further")
    assert len(fatal) == 1 and "fence" in fatal[0]["error"].lower(), fatal
