"""Every alert format the worker emits, through a real broker: attack, flagged-novel and benign verdicts each
validate against their schema, thresholds and the allowlist hold, and alert_id is the native one.

One worker per format (``--emit all``, so benign verdicts are published too) on a bundle with a novelty model,
fed the fixture's classes and flows unlike any of them.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from detector.core.alerts import alert_id
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, unlike_training
from tests.support.kafka import consume_exactly, unique_name
from tests.support.worker import (
    WorkerThread,
    flow_values,
    http_get,
    metric_value,
    produce_spread,
    schema_errors,
    worker_settings,
)
from tests.support.worker import worker_topics as topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

SCHEMA = {"native": "alert.schema.json", "ecs": "alert-ecs.schema.json", "ocsf": "alert-ocsf.schema.json"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("formats") / "n1", version="n1", novelty=True)


def kind_of(fmt: str, document: dict) -> tuple[str, str, bool]:
    """(alert_id, kind of verdict, is it an alert) read the way a SIEM would read the format."""
    if fmt == "native":
        novel = document.get("novelty", {}).get("is_novel", False)
        kind = "attack" if document["is_attack"] else "novel" if novel else "benign"
        return document["alert_id"], kind, document["is_attack"] or novel
    native = document["flowwarden"] if fmt == "ecs" else document["unmapped"]["flowwarden"]
    novel = native.get("novelty", {}).get("is_novel", False)
    kind = "attack" if native["is_attack"] else "novel" if novel else "benign"
    is_alert = document["event"]["kind"] == "alert" if fmt == "ecs" else document["is_alert"]
    assert is_alert is native["is_alert"]
    return (document["event"]["id"] if fmt == "ecs" else document["finding_info"]["uid"]), kind, is_alert


@pytest.mark.parametrize("fmt", ["native", "ecs", "ocsf"])
def test_the_worker_emits_every_verdict_kind_valid_in_its_format(kafka_bootstrap, new_topic, bundle_path, fmt):
    rows = generated_rows(0)[:120] + unlike_training(generated_rows(2)[:30], factor=40.0)
    rows = [{**row, "Src IP": f"10.9.{i % 2}.{i % 200 + 1}", "Dst IP": "192.168.7.7"} for i, row in enumerate(rows)]
    names = topics(new_topic)
    where = produce_spread(kafka_bootstrap, names["input_topic"], flow_values(rows), partitions=3)
    settings = worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("formats"),
        bundle=bundle_path,
        emit="all",
        alert_format=fmt,
        meter_timezone="America/Halifax",
        allow_networks=["10.9.1.0/24"],
        max_batch=64,
    )
    with WorkerThread(settings) as worker:
        messages = consume_exactly(kafka_bootstrap, names["output_topic"], len(rows), read_committed=True, timeout=180)
        status, exposition = http_get(worker.worker.server.port, "/metrics")
        assert worker.stop() == 0

    kinds: Counter[tuple[str, bool]] = Counter()
    ids = set()
    for message in messages:
        document = orjson.loads(message.value())
        assert schema_errors(SCHEMA[fmt], document) == [], document
        identity, kind, is_alert = kind_of(fmt, document)
        kinds[(kind, is_alert)] += 1
        ids.add(identity)
    expected_ids = {alert_id(names["input_topic"], partition, offset) for partition, offset in where}
    assert ids == expected_ids, "one message per record, its id the native alert_id of its offset"
    assert kinds[("attack", True)] and kinds[("benign", False)] and kinds[("novel", True)], kinds
    if fmt != "native":  # the native format does not say which verdicts are alerts; the others do
        assert kinds[("attack", False)], "attacks from the allowlisted network are verdicts, not alerts"
    assert status == 200
    allowed = metric_value(exposition, "flowwarden_alerts_suppressed_total", reason="allowlist")
    assert allowed is not None and allowed > 0
