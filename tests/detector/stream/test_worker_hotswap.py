"""Hot swap: a worker following a registry switches to a newly published bundle between batches, without
losing or repeating a record, and refuses a bad one while the current model keeps serving."""

from __future__ import annotations

import os
import tempfile

import orjson
import pytest

from detector.core.bundle import load_bundle
from detector.core.decode import FlowDecoder
from detector.core.registry import LATEST, VERSIONS, publish
from detector.core.scorer import Scorer
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows
from tests.support.kafka import unique_name
from tests.support.worker import (
    WorkerThread,
    consume_covering,
    flow_values,
    http_get,
    metric_value,
    produce_spread,
    worker_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


def point_latest_at(registry, version: str) -> None:
    """What a buggy or hostile publisher could do: LATEST names a version that does not verify."""
    handle, temporary = tempfile.mkstemp(dir=registry)
    with os.fdopen(handle, "w") as out:
        out.write(version + "\n")
    os.replace(temporary, registry / LATEST)


def swaps(port: int, result: str) -> float | None:
    return metric_value(http_get(port, "/metrics")[1], "flowwarden_model_swaps_total", result=result)


def test_a_new_version_is_swapped_in_between_batches_and_a_tampered_one_is_refused(
    kafka_bootstrap, new_topic, tmp_path
):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "b1", seed=0, version="v1"), registry)
    rows = generated_rows(5)
    values = flow_values(rows)
    parts = [values[:90], values[90:180], values[180:]]
    names = {
        "input_topic": new_topic(partitions=2, prefix="flows"),
        "output_topic": new_topic(prefix="alerts"),
        "dlq_topic": new_topic(prefix="dlq"),
    }
    # The fp32 model: the confidences below identify the model that scored, and int8's depend on the batch.
    settings = worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=registry,
        emit="all",
        max_batch=16,
        backend="eager",
    )
    where: dict[tuple[int, int], int] = {}
    versions: dict[int, str] = {}
    confidences: dict[int, list[float]] = {}  # part -> the served alerts' confidences, in row order

    def score(index: int) -> None:
        landed = produce_spread(kafka_bootstrap, names["input_topic"], parts[index], partitions=2)
        where.update(landed)
        alerts = consume_covering(kafka_bootstrap, names["output_topic"], where, idle_after=0.5)
        seen = {}
        for message in alerts:
            alert = orjson.loads(message.value())
            source = (alert["source"]["partition"], alert["source"]["offset"])
            assert source not in seen, f"record {source} scored twice"
            seen[source] = (alert["model"]["version"], alert["confidence"])
        assert seen.keys() == where.keys(), "no record lost"
        versions[index] = {seen[s][0] for s in landed}
        row_of = {row: source for source, row in landed.items()}
        confidences[index] = [seen[row_of[row]][1] for row in range(len(parts[index]))]

    with WorkerThread(settings) as worker:
        port = worker.worker.metrics_port
        score(0)
        assert versions[0] == {"v1"}

        v2 = make_bundle(tmp_path / "b2", seed=1, version="v2")
        publish(v2, registry)
        worker.wait_until(lambda: swaps(port, "ok") == 1.0, "the swap to v2")
        score(1)
        assert versions[1] == {"v2"}, "verdicts after the swap come from v2"
        decoder = FlowDecoder(FEATURES)
        by_v2 = Scorer(load_bundle(v2), "cpu", backend="eager").score([decoder.decode_mapping(r) for r in rows[90:180]])
        assert confidences[1] == [pytest.approx(v.confidence, abs=1e-6) for v in by_v2], "and the v2 model scored them"

        tampered = make_bundle(registry / VERSIONS / "v3", seed=2, version="v3")
        (tampered / "model.safetensors").write_bytes(b"tampered weights")
        point_latest_at(registry, "v3")
        worker.wait_until(lambda: swaps(port, "rejected") == 1.0, "v3 to be refused")
        score(2)
        assert versions[2] == {"v2"}, "the refused v3 leaves v2 serving"

        text = http_get(port, "/metrics")[1]
        assert metric_value(text, "flowwarden_model_info", version="v2") == 1.0
        assert metric_value(text, "flowwarden_model_info", version="v1") is None
        assert worker.stop() == 0
    refused = worker.events("new model refused; still serving the current one")
    assert len(refused) == 1 and "checksum mismatch" in refused[0]["error"] and refused[0]["serving"] == "v2"
    assert worker.events("model swapped")[0]["version"] == "v2"
