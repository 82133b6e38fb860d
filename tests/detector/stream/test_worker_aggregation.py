"""Alert aggregation end to end: 10,000 attack flows of one (source, destination, class) → one aggregated alert
per input partition and window, counts summing to 10,000; also across a kill -9 of the worker (exactly-once).

The flows are generated DoS Hulk rows (the test bundle labels them so) with one source and destination; their
event time is their Kafka timestamp, i.e. when this test produced them, so they fall into one or two windows
per partition, and the windows close on the worker's timer once wall-clock time is one window past their end.
"""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from tests.detector.stream.test_processor_aggregation import dos_rows
from tests.support.bundles import make_bundle
from tests.support.kafka import reader, unique_name
from tests.support.worker import (
    WorkerProcess,
    WorkerThread,
    flow_values,
    produce_spread,
    run_flags,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

FLOWS = 10_000
PARTITIONS = 2
WINDOW_S = 6.0
KILL_WINDOW_S = 20.0  # longer than the first worker needs to score a third: it leaves open windows behind


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "v1", version="v1")


@pytest.fixture(scope="module")
def flows() -> list[bytes]:
    return flow_values(dos_rows(FLOWS))


def aggregation_settings(kafka_bootstrap, new_topic, bundle_path, guarantee, **overrides):
    names = {
        "input_topic": new_topic(partitions=PARTITIONS, prefix="flows"),
        "output_topic": new_topic(prefix="alerts"),
        "dlq_topic": new_topic(prefix="dlq"),
    }
    state = new_topic(partitions=PARTITIONS, prefix="state", config={"cleanup.policy": "compact"})
    return worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=bundle_path,
        guarantee=guarantee,
        aggregate_state_topic=state,
        **{"max_batch": 500, "aggregate_window_s": WINDOW_S, **overrides},
    )


def read_aggregates(bootstrap: str, topic: str, total: int, timeout: float = 150.0) -> list[dict]:
    """Aggregated alerts (read_committed) until their counts reach ``total``, then 3 s more (to see extras)."""
    found: list[dict] = []
    with reader(bootstrap, topic, read_committed=True) as consumer:
        deadline = time.monotonic() + timeout
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:
            counted = sum(a["aggregate"]["count"] for a in found)
            if quiet_until is None and counted >= total:
                quiet_until = time.monotonic() + 3.0
            if quiet_until is None and time.monotonic() > deadline:
                raise AssertionError(f"aggregates count {counted} of {total} flows after {timeout:g} s")
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                found.append(orjson.loads(message.value()))
    return found


def check(aggregates: list[dict], where: dict[tuple[int, int], int]) -> None:
    """Counts sum to every flow, per partition too; one aggregate per (partition, window); ids unique."""
    ids = Counter(a["alert_id"] for a in aggregates)
    assert not [i for i, n in ids.items() if n > 1], "an aggregate was published twice"
    windows = Counter((a["source"]["partition"], a["aggregate"]["window_start"]) for a in aggregates)
    assert all(n == 1 for n in windows.values()), windows
    assert {(a["flow"]["src_ip"], a["flow"]["dst_ip"], a["label"]) for a in aggregates} == {
        ("172.16.0.1", "192.168.10.50", "DoS Hulk")
    }
    per_partition = Counter()
    for a in aggregates:
        per_partition[a["source"]["partition"]] += a["aggregate"]["count"]
    assert per_partition == Counter(p for p, _ in where), "every flow counted once, in its own partition"
    assert sum(per_partition.values()) == FLOWS


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_ten_thousand_flows_of_one_pair_make_one_alert_per_window(
    kafka_bootstrap, new_topic, bundle_path, flows, guarantee
):
    settings = aggregation_settings(kafka_bootstrap, new_topic, bundle_path, guarantee)
    where = produce_spread(kafka_bootstrap, settings.input_topic, flows, partitions=PARTITIONS)
    with WorkerThread(settings) as worker:
        aggregates = read_aggregates(kafka_bootstrap, settings.output_topic, FLOWS)
        assert worker.stop() == 0
        registry = worker.worker.metrics.registry
    check(aggregates, where)
    assert registry.get_sample_value("flowwarden_aggregates_out_total", {"label": "DoS Hulk"}) == len(aggregates)
    assert len(aggregates) <= 2 * PARTITIONS + 2  # produced within a few seconds: a window or two per partition


def test_a_kill_9_in_the_middle_loses_and_doubles_nothing_under_exactly_once(
    apache_kafka_broker, kafka_bootstrap, new_topic, bundle_path, flows, tmp_path
):
    # Apache Kafka only: on the embedded broker read_committed readers see aborted transactions (docs/tansu.md),
    # so the killed worker's open transaction would show, and the promise there is at-least-once's.
    # A stable slot: the restart fences the killed worker's producer and aborts its open transaction at once.
    settings = aggregation_settings(
        kafka_bootstrap,
        new_topic,
        bundle_path,
        "exactly-once",
        transactional_id=unique_name("worker-0"),
        max_batch=250,
        aggregate_window_s=KILL_WINDOW_S,
    )
    where = produce_spread(kafka_bootstrap, settings.input_topic, flows, partitions=PARTITIONS)
    with WorkerProcess(run_flags(settings), tmp_path / "killed.log") as first:
        wait_until(
            lambda: _verdicts_so_far(first) >= FLOWS // 3,
            "a third of the flows scored",
            120,
            alive=first.alive,
            log=first.text,
        )
        scored_before = _verdicts_so_far(first)
        first.kill()
    assert scored_before < FLOWS, "the kill must land in the middle"
    with WorkerProcess(run_flags(settings), tmp_path / "restarted.log") as second:
        aggregates = read_aggregates(kafka_bootstrap, settings.output_topic, FLOWS)
        assert second.terminate() == 0, second.text()[-3000:]
        read_back = [e for e in second.events() if e["event"] == "aggregation state read back"]
    check(aggregates, where)
    assert sorted(e["partition"] for e in read_back) == [f"{settings.input_topic}/{p}" for p in range(PARTITIONS)]
    assert sum(e["alerts_in_open_windows"] for e in read_back) > 0, "the kill left open windows to carry on"


def _verdicts_so_far(worker: WorkerProcess) -> float:
    try:
        exposition = worker.metrics()
    except OSError:
        return 0.0
    return sum(
        float(line.rpartition(" ")[2])
        for line in exposition.splitlines()
        if line.startswith("flowwarden_verdicts_total{")
    )


def test_a_changelog_with_fewer_partitions_than_the_input_is_refused_at_start_up(
    kafka_bootstrap, new_topic, bundle_path, tmp_path
):
    settings = aggregation_settings(kafka_bootstrap, new_topic, bundle_path, "exactly-once")
    narrow = new_topic(partitions=1, prefix="state", config={"cleanup.policy": "compact"})
    argv = run_flags(settings.model_copy(update={"aggregate_state_topic": narrow}))
    with WorkerProcess(argv, tmp_path / "worker.log") as worker:
        assert worker.wait(90) == 2
        text = worker.text()
    [line] = [line for line in text.splitlines() if line.startswith("detector run: error:")]
    assert line.startswith("detector run: error: the aggregation state topic") and "fewer than the input" in line
