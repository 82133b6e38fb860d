"""Group membership on Apache Kafka: stable worker slots (static membership), incremental rebalances, and a
worker whose consumer is fenced for good.

Processes, because a crash must run no clean-up at all (``kill -9``). Tansu has no static membership, so
these run on Apache Kafka (or an external cluster) only.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import unique_name
from tests.support.worker import (
    Replay,
    WorkerProcess,
    alert_sources,
    consume_covering,
    flow_values,
    metric_value,
    run_flags,
    wait_until,
    worker_settings,
)
from tests.support.worker import worker_topics as topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
PARTITIONS = 4


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "v1", version="v1")


def moved(worker: WorkerProcess) -> dict[str, float]:
    """The worker's partition changes so far, from its metrics."""
    exposition = worker.metrics()
    return {
        change: metric_value(exposition, "flowwarden_partition_changes_total", change=change) or 0.0
        for change in ("assigned", "revoked", "lost")
    }


def test_a_worker_killed_and_restarted_in_place_takes_its_partitions_back_and_the_other_keeps_its_own(
    apache_kafka_broker, new_topic, bundle_path, tmp_path
):
    bootstrap = apache_kafka_broker.bootstrap_servers
    names = topics(new_topic, partitions=PARTITIONS)
    group = unique_name("detector")

    def slot(name: str) -> list[str]:
        settings = worker_settings(
            bootstrap, **names, group_id=group, bundle=bundle_path, emit="all", max_batch=16, instance_id=name
        )
        return run_flags(settings)

    values = flow_values(generated_rows(8, scale=8))
    victim = WorkerProcess(slot("w1"), tmp_path / "w1.log")
    with WorkerProcess(slot("w0"), tmp_path / "w0.log") as survivor, victim:
        wait_until(
            lambda: survivor.assignment() and victim.assignment(),
            "the two workers to split the partitions",
            90,
            alive=lambda: survivor.alive() and victim.alive(),
            log=lambda: survivor.text()[-2000:] + victim.text()[-2000:],
        )
        kept, theirs = survivor.assignment(), victim.assignment()
        assert kept | theirs == set(range(PARTITIONS)) and not kept & theirs
        with Replay(bootstrap, names["input_topic"], values, partitions=PARTITIONS, chunk=16) as replay:
            wait_until(lambda: len(replay.where) >= len(values) // 4, "a quarter of the flows to be sent", 90)
            before, events_before = moved(survivor), len(survivor.events())
            victim.kill()
            assert replay.running, "the kill must land under load"
            with WorkerProcess(slot("w1"), tmp_path / "w1-restarted.log") as restarted:
                wait_until(
                    lambda: restarted.assignment() == theirs,
                    "the restarted worker to own its partitions again",
                    90,
                    alive=restarted.alive,
                    log=restarted.text,
                )
                where = replay.join()
                alerts = consume_covering(bootstrap, names["output_topic"], where, read_committed=True)
                after, later = moved(survivor), survivor.events()[events_before:]
                assert survivor.assignment() == kept
                assert restarted.terminate() == 0
        assert survivor.terminate() == 0

    changes = [e for e in later if e.get("assigned") or e.get("revoked") or e.get("lost")]
    assert changes == [], f"the survivor's partitions moved while the other worker restarted: {changes}"
    assert after == before, "no partition assigned, revoked or lost on the survivor (its metrics)"
    counts = Counter(alert_sources(alerts))
    assert set(counts) == set(where), "every flow has a verdict"
    duplicated = sorted(source for source, n in counts.items() if n > 1)
    assert not duplicated, f"exactly-once: {len(duplicated)} flows have two verdicts, e.g. {duplicated[:5]}"
