"""Two workers in one group: they split the partitions, and when one leaves the other takes over."""

from __future__ import annotations

import pytest

from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import unique_name
from tests.support.worker import (
    WorkerThread,
    alert_sources,
    consume_covering,
    flow_values,
    produce_spread,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4


def test_two_workers_split_the_partitions_and_the_survivor_takes_over_exactly_once(
    kafka_bootstrap, new_topic, tmp_path
):
    bundle = make_bundle(tmp_path / "v1", version="v1")
    values = flow_values(generated_rows(4, scale=2))
    thirds = [values[i::3] for i in range(3)]
    names = {
        "input_topic": new_topic(partitions=PARTITIONS, prefix="flows"),
        "output_topic": new_topic(prefix="alerts"),
        "dlq_topic": new_topic(prefix="dlq"),
    }
    settings = worker_settings(
        kafka_bootstrap, **names, group_id=unique_name("detector"), bundle=bundle, emit="all", max_batch=16
    )
    everything = set(range(PARTITIONS))
    where: set[tuple[int, int]] = set()

    def produce(part: list[bytes]) -> None:
        where.update(produce_spread(kafka_bootstrap, names["input_topic"], part, PARTITIONS))

    with WorkerThread(settings) as first:
        first.wait_until(lambda: {p for _, p in first.worker.assignment} == everything, "all partitions to one worker")
        produce(thirds[0])
        consume_covering(kafka_bootstrap, names["output_topic"], where, idle_after=0)

        with WorkerThread(settings) as second:
            a, b = first.worker.assignment, second.worker.assignment

            def split() -> bool:
                nonlocal a, b
                a, b = first.worker.assignment, second.worker.assignment
                return bool(a) and bool(b) and not a & b and {p for _, p in a | b} == everything

            wait_until(
                split, "the partitions split between the two workers", 60, alive=lambda: first.alive and second.alive
            )
            produce(thirds[1])
            consume_covering(kafka_bootstrap, names["output_topic"], where, idle_after=0)
            assert second.stop() == 0, "a leaving worker finishes its batch, commits and exits 0"

        first.wait_until(lambda: {p for _, p in first.worker.assignment} == everything, "the survivor to take over")
        produce(thirds[2])
        alerts = consume_covering(kafka_bootstrap, names["output_topic"], where, idle_after=2.0)
        assert first.stop() == 0

    sources = alert_sources(alerts)
    assert len(where) == len(values)
    assert sorted(sources) == sorted(where), "every flow scored exactly once across the rebalances"
