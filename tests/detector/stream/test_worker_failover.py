"""A broker lost mid-stream: a 3-node Apache Kafka cluster (replication factor 3, ``min.insync.replicas=2``)
loses the leader of an input partition to ``kill -9`` while an exactly-once worker streams, and gets it back.

Leadership fails over to the other replicas and every record of the input topic still has exactly one verdict
for a read_committed reader, and no verdict names a record that is not there. The input topic itself, read to its
end, says which records those are: the test's producer is not idempotent, so a batch it retried across the killed
leader can be in the log twice while its delivery report names one copy, and the worker rightly scores both.

The worker runs as a supervised process, restarted in its slot whenever it exits, as an orchestrator
would: librdkafka can wait for good for a group coordinator lost with its broker (librdkafka#5511), and the
worker then exits 1 so that its restart aborts the transaction (docs/worker.md). Any other exit fails the test.
Skipped where Apache Kafka cannot run (the cluster is started for this module only).
"""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from detector.stream.topics import ensure_topics
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.kafka import consume_until_idle, read_to_end, unique_name
from tests.support.worker import (
    Replay,
    Supervised,
    alert_sources,
    consume_covering,
    flow_values,
    run_flags,
    wait_until,
    worker_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(480)]
PARTITIONS = 3
FATAL = "fatal: the worker stops without committing further"
HUNG_OFFSETS = "send_offsets_to_transaction has not returned for"


def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[partition].leader


def test_a_broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing(kafka_cluster, tmp_path):
    bootstrap = kafka_cluster.bootstrap_servers
    names = {name: unique_name(name.removesuffix("_topic")) for name in ("input_topic", "output_topic", "dlq_topic")}
    ensure_topics(bootstrap, [names["input_topic"], names["output_topic"]], partitions=PARTITIONS)
    ensure_topics(bootstrap, [names["dlq_topic"]])
    settings = worker_settings(
        bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=make_bundle(tmp_path / "bundle"),
        emit="all",
        max_batch=16,
        transactional_id=unique_name("worker-0"),
        # Longer than the group coordinator's failover (the broker's 3 s session, then an election): with the
        # suite's 6 s the consumer's session could expire first, and a static member whose session expires on
        # its own side is fenced by its rejoin (librdkafka#3437), which is not what this test is about.
        kafka={"session.timeout.ms": "20000", "heartbeat.interval.ms": "1000"},
    )
    values = flow_values(generated_rows(9, scale=6))
    worker = Supervised(run_flags(settings), tmp_path)
    try:
        worker.current.wait_for_event("partitions assigned", timeout=90)
        with Replay(bootstrap, names["input_topic"], values, partitions=PARTITIONS, chunk=24) as replay:
            wait_until(lambda: len(replay.where) >= len(values) // 4, "a quarter of the flows to be sent", 90)
            victim = leader_of(bootstrap, names["input_topic"], 0)
            kafka_cluster.kill(victim)
            assert replay.running, "the broker must die while flows keep arriving"
            wait_until(
                lambda: leader_of(bootstrap, names["input_topic"], 0) not in {victim, -1},
                "another replica to lead the partition",
                60,
            )
            kafka_cluster.restart(victim)
            where = replay.join()
        written = {(m.partition(), m.offset()) for m in read_to_end(bootstrap, names["input_topic"])}
        assert set(where) <= written, "every acknowledged flow is in the input topic"
        alerts = consume_covering(bootstrap, names["output_topic"], written, read_committed=True, timeout=300)
        dead = consume_until_idle(bootstrap, names["dlq_topic"], read_committed=True)
        assert worker.stop() == 0
        exits = list(worker.exits)
    finally:
        worker.close()

    for code, process in exits:
        causes = [e.get("error", "") for e in process.events() if e.get("event") == FATAL]
        assert code == 1 and any(HUNG_OFFSETS in cause for cause in causes), (
            f"the worker exited {code} for another reason; its log:\n{process.text()[-3000:]}"
        )
    assert not dead, f"every flow is scoreable, yet {len(dead)} were dead-lettered"
    counts = Counter(alert_sources(alerts))
    lost, unknown = sorted(written - set(counts)), sorted(set(counts) - written)
    assert not lost, f"{len(lost)} records of the input topic have no verdict, e.g. {lost[:5]}"
    assert not unknown, f"{len(unknown)} verdicts name records that are not in the input topic, e.g. {unknown[:5]}"
    duplicated = sorted(source for source, n in counts.items() if n > 1)
    assert not duplicated, f"exactly-once: {len(duplicated)} flows have two verdicts, e.g. {duplicated[:5]}"
