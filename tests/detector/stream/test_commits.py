"""Asynchronous offset commits against a real Kafka-protocol broker: confirmed, retried, forgotten, never stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from detector.stream.commits import OffsetCommitter
from detector.stream.logs import get_logger
from detector.stream.topics import ensure_topics
from tests.support.kafka import CommitRoute, ProxiedBroker, group_consumer, unique_name
from tests.support.tcpproxy import OFFSET_COMMIT_API_KEY
from tests.support.worker import committed_offsets

pytestmark = pytest.mark.kafka


class RecordingLog:
    """The structlog calls the committer makes, kept for the test to read (and passed on to the real log)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._log = get_logger("test")

    def warning(self, event: str, **fields: object) -> None:
        self.warnings.append(event)
        self._log.warning(event, **fields)


class CommitRequests:
    """The consumer as the committer uses it: each commit request is recorded, then sent by the real consumer."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.sent: list[dict[tuple[str, int], int]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> object:
        self.sent.append({(tp.topic, tp.partition): tp.offset for tp in offsets})
        return self.consumer.commit(offsets=offsets, asynchronous=asynchronous)


class PartitionResult(NamedTuple):
    """One partition of a commit result as ``on_commit`` reads it: a ``TopicPartition`` whose ``error`` is set
    (confluent-kafka's own cannot be built with one)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


@contextmanager
def committing(bootstrap: str, group: str) -> Iterator[tuple[OffsetCommitter, Consumer, RecordingLog, CommitRequests]]:
    """A committer and its consumer, the consumer's commit results routed to it as the worker routes them,
    its log and the commit requests it made of the consumer; the consumer is closed on the way out."""
    route = CommitRoute()
    consumer = group_consumer(bootstrap, group, config={"on_commit": route, "reconnect.backoff.max.ms": 500})
    log = RecordingLog()
    requests = CommitRequests(consumer)
    route.target = OffsetCommitter(requests, log=log, retry_after=0.2)
    try:
        yield route.target, consumer, log, requests
    finally:
        consumer.close()


def settle(committer: OffsetCommitter, consumer: Consumer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not committer.settled:
        assert time.monotonic() < deadline, f"the commits did not settle in {timeout:g} s"
        committer.service()
        consumer.poll(0.02)


def test_offsets_added_are_committed_and_confirmed(kafka_bootstrap, new_topic):
    topic, group = new_topic(partitions=2), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, _, _):
        committer.add({(topic, 0): 5})
        committer.service()
        committer.add({(topic, 0): 9, (topic, 1): 2})  # while the first request is outstanding
        assert not committer.settled
        settle(committer, consumer)
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == {0: 9, 1: 2}


def test_forgotten_partitions_are_not_committed(kafka_bootstrap, new_topic):
    topic, group = new_topic(partitions=2), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, _, _):
        committer.add({(topic, 0): 4, (topic, 1): 7})
        committer.forget({(topic, 1)})
        settle(committer, consumer)
        committer.commit_now()  # nothing left to commit: returns at once
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == {0: 4, 1: -1001}


def test_a_failed_commit_is_retried(kafka_bootstrap, new_topic):
    topic, group = new_topic(), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, log, _):
        committer.add({(topic, 0): 8})
        committer.service()
        # What librdkafka reports when the coordinator moved while the request was on its way:
        committer.on_commit(KafkaError(KafkaError.NOT_COORDINATOR), [TopicPartition(topic, 0, 8)])
        assert log.warnings == ["offset commit failed; will retry"]
        assert not committer.settled, "the failed offsets wait for another try"
        settle(committer, consumer)
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 8}


def test_a_failed_commit_never_replaces_newer_offsets_added_meanwhile(kafka_bootstrap, new_topic):
    topic, group = new_topic(), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, _, requests):
        committer.add({(topic, 0): 5})
        committer.service()
        committer.add({(topic, 0): 9})  # more work acknowledged while the first request is outstanding
        committer.on_commit(KafkaError(KafkaError.NOT_COORDINATOR), [TopicPartition(topic, 0, 5)])
        settle(committer, consumer)
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 9}, "the group offset must never move back"
    assert requests.sent == [{(topic, 0): 5}, {(topic, 0): 9}], "the retry commits the newer offset, not the failed one"


def test_a_commit_refused_for_one_partition_is_retried_for_that_partition(kafka_bootstrap, new_topic):
    topic, group = new_topic(partitions=2), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, log, requests):
        committer.add({(topic, 0): 3, (topic, 1): 8})
        committer.service()
        # The request as a whole succeeded, but the coordinator refused one partition's offset:
        refused = KafkaError(KafkaError.REQUEST_TIMED_OUT)
        committer.on_commit(None, [PartitionResult(topic, 0, 3, None), PartitionResult(topic, 1, 8, refused)])
        assert log.warnings == ["offset commit failed; will retry"]
        assert not committer.settled, "the refused offset waits for another try"
        settle(committer, consumer)
    assert requests.sent == [{(topic, 0): 3, (topic, 1): 8}, {(topic, 1): 8}], "only the refused partition is retried"
    assert committed_offsets(kafka_bootstrap, group, topic, 2) == {0: 3, 1: 8}


def test_newer_offsets_wait_until_the_outstanding_commit_is_answered(kafka_bootstrap, new_topic):
    # Two requests in flight at once could be answered (or retried by librdkafka) out of order and move the
    # group back: the committer sends one request at a time.
    topic, group = new_topic(), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, _, requests):
        committer.add({(topic, 0): 5})
        committer.service()
        committer.add({(topic, 0): 9})
        for _ in range(3):
            committer.service()  # the consumer is not polled: the first request's answer is not served yet
        assert requests.sent == [{(topic, 0): 5}], "a second commit request went out while the first was unanswered"
        settle(committer, consumer)
    assert requests.sent == [{(topic, 0): 5}, {(topic, 0): 9}]
    assert committed_offsets(kafka_bootstrap, group, topic, 1) == {0: 9}


def test_forgetting_a_partition_drops_its_commit_in_flight(kafka_bootstrap, new_topic):
    topic, group = new_topic(), unique_name("commits")
    with committing(kafka_bootstrap, group) as (committer, consumer, _, requests):
        committer.add({(topic, 0): 4})
        committer.service()
        committer.forget({(topic, 0)})  # revoked while its commit is outstanding
        assert committer.settled, "a revoked partition's commit is nothing to wait for: its next owner commits it"
        # Not even a failed answer brings it back:
        committer.on_commit(KafkaError(KafkaError.NOT_COORDINATOR), [TopicPartition(topic, 0, 4)])
        assert committer.settled
        for _ in range(10):  # past the committer's retry back-off (0.2 s)
            committer.service()
            consumer.poll(0.05)
    assert requests.sent == [{(topic, 0): 4}], "a forgotten partition's offset was committed again"


def test_a_commit_whose_answer_is_lost_blocks_nothing_until_the_coordinator_is_back(proxied_broker: ProxiedBroker):
    # librdkafka retries such a request until the coordinator answers, however long: a synchronous commit
    # would block as long as the outage lasts.
    bootstrap = proxied_broker.bootstrap_servers
    proxy = proxied_broker.proxy
    topic, group = unique_name("commits"), unique_name("commits")
    ensure_topics(bootstrap, [topic])
    with committing(bootstrap, group) as (committer, consumer, _, _):
        try:
            proxy.drop_responses(OFFSET_COMMIT_API_KEY)
            committer.add({(topic, 0): 6})
            committer.service()
            deadline = time.monotonic() + 30
            while proxy.dropped_responses == 0:
                assert time.monotonic() < deadline, "the commit never reached the broker"
                consumer.poll(0.05)
            proxy.cut()
            polling = threading.Thread(target=lambda: [committer.service() or consumer.poll(0.1) for _ in range(30)])
            polling.start()
            polling.join(60)
            assert not polling.is_alive(), "serving the committer blocked while its request was caught by the outage"
            assert not committer.settled
            proxy.drop_responses(None)
            proxy.restore()
            settle(committer, consumer, timeout=60)
        finally:
            proxy.drop_responses(None)
            proxy.restore()
    assert committed_offsets(bootstrap, group, topic, 1) == {0: 6}
