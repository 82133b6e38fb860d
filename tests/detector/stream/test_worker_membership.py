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
FENCED = "fatal: the worker stops without committing further"


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


def test_a_worker_fenced_by_another_with_its_slot_exits_1_with_the_cause_in_one_line(
    apache_kafka_broker, new_topic, bundle_path, tmp_path
):
    # Two workers given one --instance-id (a misconfiguration): the group coordinator fences the older member
    # for good (librdkafka raises a fatal error). At-least-once, so that only the consumer is fenced: under
    # exactly-once the derived transactional id would fence the producer too.
    bootstrap = apache_kafka_broker.bootstrap_servers
    names = topics(new_topic, partitions=2)
    settings = worker_settings(
        bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=bundle_path,
        guarantee="at-least-once",
        instance_id="the-same-slot",
    )
    with WorkerProcess(run_flags(settings), tmp_path / "first.log") as first:
        first.wait_for_event("partitions assigned", timeout=90)
        with WorkerProcess(run_flags(settings), tmp_path / "second.log") as second:
            second.wait_for_event("partitions assigned", timeout=90)
            assert first.wait(10) == 1, "the fenced worker must stop within 10 s of being fenced"
            assert second.alive()
            fatal = [e for e in first.events() if e.get("event") == FENCED]
            assert second.terminate() == 0
    assert len(fatal) == 1, first.text()[-3000:]
    cause = fatal[0]["error"]
    assert "group.instance.id" in cause and "fenced" in cause and "\n" not in cause, cause
