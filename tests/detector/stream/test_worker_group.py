"""Two workers in one group: they split the partitions, and when one leaves the other takes over.

Records keep arriving throughout, so both rebalances (a member joining, a member leaving on SIGTERM)
happen with batches in flight: ``on_revoke`` must finish them (commit the transaction) or abort them, so
that a partition's new owner neither skips a record nor, with exactly-once, scores one twice.
"""

from __future__ import annotations

import pytest

from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import unique_name
from tests.support.worker import (
    Replay,
    WorkerThread,
    alert_sources,
    consume_covering,
    flow_values,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4


def test_two_workers_split_the_partitions_and_the_survivor_takes_over_exactly_once(
    kafka_bootstrap, new_topic, tmp_path
):
    values = flow_values(generated_rows(4, scale=16))  # more than needed: the replay is stopped after the rebalances
    names = {
        "input_topic": new_topic(partitions=PARTITIONS, prefix="flows"),
        "output_topic": new_topic(prefix="alerts"),
        "dlq_topic": new_topic(prefix="dlq"),
    }
    settings = worker_settings(
        kafka_bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=make_bundle(tmp_path / "v1", version="v1"),
        emit="all",
        max_batch=16,
    )
    everything = set(range(PARTITIONS))

    def owns(worker: WorkerThread) -> set[int]:
        return {partition for _, partition in worker.worker.assignment}

    with WorkerThread(settings) as first:
        first.wait_until(lambda: owns(first) == everything, "all partitions to the first worker")
        with Replay(kafka_bootstrap, names["input_topic"], values, partitions=PARTITIONS, chunk=16) as replay:
            with WorkerThread(settings) as second:
                wait_until(
                    lambda: owns(first) and owns(second) and owns(first) | owns(second) == everything,
                    "the partitions split between the two workers",
                    60,
                    alive=lambda: first.alive and second.alive,
                )
                assert not owns(first) & owns(second)
                joined_while_busy = replay.running
                assert second.stop() == 0, "a leaving worker finishes its batch, commits and exits 0"
            first.wait_until(lambda: owns(first) == everything, "the survivor to take over")
            left_while_busy = replay.running
            where = replay.stop()
        alerts = consume_covering(kafka_bootstrap, names["output_topic"], where, idle_after=2.0)
        assert first.stop() == 0

    assert joined_while_busy and left_while_busy, "both rebalances must happen while records keep arriving"
    assert sorted(alert_sources(alerts)) == sorted(where), "every flow scored exactly once across the rebalances"
    revokes = [e for e in first.events("partitions revoked") if e["revoked"]]
    assert revokes and all(e["finished_in_flight"] for e in revokes), revokes
