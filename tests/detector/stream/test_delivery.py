"""The two delivery strategies against a real Kafka-protocol broker: what is committed, when, and on failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

from detector.stream.delivery import AtLeastOnce, DeliveryFatal, DeliveryReport, ExactlyOnce
from detector.stream.logs import get_logger
from detector.stream.processor import Output, ScoredBatch
from detector.stream.topics import ensure_topics
from tests.support.kafka import (
    EMBEDDED,
    CommitRoute,
    ProxiedBroker,
    client_config,
    consume_exactly,
    consume_until_idle,
    group_consumer,
    unique_name,
    values_of,
)
from tests.support.tcpproxy import PRODUCE_API_KEY, TXN_OFFSET_COMMIT_API_KEY, TcpProxy
from tests.support.worker import committed_offsets

pytestmark = pytest.mark.kafka
LOG = get_logger("test")


def batch(source: str, offsets: range, sink: str, outputs: int | None = None, *, tag: bytes = b"out") -> ScoredBatch:
    count = len(offsets) if outputs is None else outputs
    return ScoredBatch(
        outputs=[Output(sink, None, b"%s-%d" % (tag, offsets.start + i)) for i in range(count)],
        next_offsets={(source, 0): offsets.stop},
        first_offsets={(source, 0): offsets.start},
        records=len(offsets),
        alert_timestamps=np.empty(0),
    )


def drive(delivery, consumer: Consumer, until, timeout: float = 30.0) -> DeliveryReport:
    """Call ``service`` and poll the consumer (for commit results) as the worker's loop does, until ``until``."""
    total = DeliveryReport()
    deadline = time.monotonic() + timeout
    while not until(total):
        assert time.monotonic() < deadline, f"delivery made no such progress in {timeout:g} s: {total}"
        total.merge(delivery.service())
        consumer.poll(0.02)
    return total


def wired(delivery_class, new_producer, bootstrap: str, group: str, *, read_committed: bool = False, **kwargs):
    """A delivery and its consumer, the consumer's commit results routed to it as the worker routes them."""
    route = CommitRoute()
    consumer = group_consumer(bootstrap, group, read_committed=read_committed, config={"on_commit": route})
    route.target = delivery_class(new_producer, consumer, **kwargs)
    return route.target, consumer


def idempotent(bootstrap: str, **extra) -> Callable[[], Producer]:
    return lambda: Producer({**client_config(bootstrap), "acks": "all", "enable.idempotence": True, **extra})


def transactional(bootstrap: str, transactional_id: str, **extra) -> Callable[[], Producer]:
    return lambda: Producer({**client_config(bootstrap), "transactional.id": transactional_id, **extra})


def redo(delivery, consumer: Consumer, source: str, offsets: range, sink: str) -> None:
    """Submit the redo of an aborted batch (outputs tagged ``redo``) and drive it until it is committed."""
    delivery.submit(batch(source, offsets, sink, tag=b"redo"))
    drive(delivery, consumer, lambda p: len(p.completed) == 1 and not delivery.busy())


def committed_outputs_but_aborted(bootstrap: str, sink: str) -> list[bytes]:
    """What a read_committed reader sees of ``sink``, less the aborted batch's outputs (tagged ``aborted``):
    Tansu shows aborted messages to read_committed readers too (docs/tansu.md)."""
    visible = values_of(consume_until_idle(bootstrap, sink, read_committed=True))
    return [value for value in visible if not value.startswith(b"aborted")]


def test_at_least_once_commits_each_batch_after_its_messages_are_acknowledged(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source"), new_topic(prefix="sink")
    group = unique_name("alo")
    delivery, consumer = wired(
        AtLeastOnce, idempotent(kafka_bootstrap), kafka_bootstrap, group, max_in_flight=2, log=LOG
    )
    try:
        delivery.submit(batch(source, range(0, 5), sink))
        delivery.submit(batch(source, range(5, 9), sink))
        assert not delivery.can_accept(), "two batches in flight is the limit"
        progress = drive(delivery, consumer, lambda p: len(p.completed) == 2 and not delivery.busy())
        assert [b.next_offsets for b in progress.completed] == [{(source, 0): 5}, {(source, 0): 9}]
        assert not progress.rewind
    finally:
        consumer.close()
    assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: 9}
    assert values_of(consume_exactly(kafka_bootstrap, sink, 9)) == [b"out-%d" % i for i in range(9)]


def test_at_least_once_commits_no_batch_before_every_earlier_batch_is_acknowledged(proxied_broker: ProxiedBroker):
    bootstrap = proxied_broker.bootstrap_servers
    source, sink = unique_name("source"), unique_name("sink")
    ensure_topics(bootstrap, [source, sink])
    group = unique_name("alo-order")
    delivery, consumer = wired(AtLeastOnce, idempotent(bootstrap), bootstrap, group, max_in_flight=2, log=LOG)
    proxy = proxied_broker.proxy
    try:
        proxy.hold_next(PRODUCE_API_KEY)  # the first batch's acknowledgements are late
        delivery.submit(batch(source, range(0, 5), sink))
        progress = drive(delivery, consumer, lambda p: proxy.held_requests > 0)
        # A later batch with nothing to produce (all benign under --emit attacks) is complete at once:
        delivery.submit(batch(source, range(5, 9), sink, outputs=0))
        for _ in range(5):
            progress.merge(delivery.service())
            consumer.poll(0.02)
        assert not progress.completed, "a batch was committed before an earlier batch's messages were acknowledged"
        assert delivery.busy()

        proxy.release()
        progress.merge(drive(delivery, consumer, lambda p: len(p.completed) == 2 and not delivery.busy()))
        assert [b.next_offsets for b in progress.completed] == [{(source, 0): 5}, {(source, 0): 9}]
        assert not progress.rewind
    finally:
        proxy.release()
        consumer.close()
    assert committed_offsets(bootstrap, group, source, 1) == {0: 9}
    assert values_of(consume_exactly(bootstrap, sink, 5)) == [b"out-%d" % i for i in range(5)]


def test_at_least_once_never_commits_the_offsets_of_forgotten_partitions(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source", partitions=2), new_topic(prefix="sink")
    group = unique_name("alo-forget")
    delivery, consumer = wired(
        AtLeastOnce, idempotent(kafka_bootstrap), kafka_bootstrap, group, max_in_flight=2, log=LOG
    )
    both = ScoredBatch(
        outputs=[Output(sink, None, b"out-%d" % i) for i in range(3)],
        next_offsets={(source, 0): 4, (source, 1): 6},
        first_offsets={(source, 0): 0, (source, 1): 2},
        records=8,
        alert_timestamps=np.empty(0),
    )
    try:
        delivery.submit(both)
        delivery.forget({(source, 1)})  # partition 1 revoked before the batch's messages were acknowledged
        drive(delivery, consumer, lambda p: len(p.completed) == 1 and not delivery.busy())
    finally:
        consumer.close()
    assert committed_offsets(kafka_bootstrap, group, source, 2) == {0: 4, 1: -1001}, "partition 1 is its new owner's"
    assert values_of(consume_exactly(kafka_bootstrap, sink, 3)) == [b"out-0", b"out-1", b"out-2"]


def test_exactly_once_commits_outputs_and_offsets_in_one_transaction(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source"), new_topic(prefix="sink")
    group = unique_name("eos")
    new_producer = transactional(kafka_bootstrap, unique_name("txn"))
    delivery, consumer = wired(ExactlyOnce, new_producer, kafka_bootstrap, group, read_committed=True, log=LOG)
    try:
        delivery.start(15)
        delivery.submit(batch(source, range(0, 4), sink))
        assert not delivery.can_accept(), "one transaction at a time"
        drive(delivery, consumer, lambda p: len(p.completed) == 1)
        assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: 4}

        # A batch that produced nothing (all benign under --emit attacks) commits its offsets without a
        # transaction: nothing needs to be atomic with them (and Tansu drops offsets-only transactions).
        delivery.submit(batch(source, range(4, 10), sink, outputs=0))
        assert not delivery.can_accept(), "no transaction begins before the plain commit is confirmed"
        progress = drive(delivery, consumer, lambda p: len(p.completed) == 1 and not delivery.busy())
        assert progress.completed[0].next_offsets == {(source, 0): 10}
        assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: 10}
    finally:
        consumer.close()
    outputs = consume_exactly(kafka_bootstrap, sink, 4, read_committed=True, idle_after=1.0)
    assert values_of(outputs) == [b"out-%d" % i for i in range(4)]


def test_a_fenced_exactly_once_producer_is_fatal(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source"), new_topic(prefix="sink")
    transactional_id = unique_name("txn")
    new_producer = transactional(kafka_bootstrap, transactional_id)
    zombie, consumer = wired(ExactlyOnce, new_producer, kafka_bootstrap, unique_name("fenced"), log=LOG)
    try:
        zombie.start(15)
        zombie.submit(batch(source, range(0, 2), sink))
        successor = Producer({**client_config(kafka_bootstrap), "transactional.id": transactional_id})
        successor.init_transactions(15)
        with pytest.raises(DeliveryFatal, match="fatal"):
            drive(zombie, consumer, lambda p: False, timeout=20)
    finally:
        consumer.close()


@pytest.mark.parametrize("how", ["the messages time out", "the batch is abandoned"])
def test_exactly_once_redoes_a_batch_whose_acknowledgements_were_lost(proxied_broker: ProxiedBroker, how: str):
    # The batch's messages reach the broker but their acknowledgements do not (a connection dying at the wrong
    # moment), so the transaction is aborted: because the messages timed out, or because the batch was given up
    # (a revoke that could not wait). The redo must really be written: librdkafka could number its messages
    # like the aborted ones, which a broker that still holds them takes for duplicates, acknowledges and never
    # writes; the offsets would commit with no output behind them. And the abort must finish, even where the
    # broker refuses the epoch bump that librdkafka asks for after a timeout.
    bootstrap = proxied_broker.bootstrap_servers
    source, sink = unique_name("source"), unique_name("sink")
    ensure_topics(bootstrap, [source, sink])
    group = unique_name("eos-lost-acks")
    timeouts = {"message.timeout.ms": 2000, "request.timeout.ms": 1500} if how == "the messages time out" else {}
    new_producer = transactional(bootstrap, unique_name("txn"), **timeouts)
    delivery, consumer = wired(ExactlyOnce, new_producer, bootstrap, group, log=LOG, call_timeout=2.0)
    proxy = proxied_broker.proxy
    try:
        delivery.start(15)
        delivery.submit(batch(source, range(0, 3), sink))
        drive(delivery, consumer, lambda p: len(p.completed) == 1)
        proxy.drop_responses(PRODUCE_API_KEY)
        delivery.submit(batch(source, range(3, 6), sink, tag=b"aborted"))
        drive(delivery, consumer, lambda p: proxy.dropped_responses > 0)
        if how == "the messages time out":
            progress = drive(delivery, consumer, lambda p: bool(p.rewind))
        else:
            finished, progress = delivery.finish(timeout=0.5)
            assert not finished
            proxy.cut()  # the connection dies with the acknowledgements in it
            proxy.drop_responses(None)
            proxy.restore()
            progress.merge(drive(delivery, consumer, lambda p: not delivery.busy()))
        assert progress.rewind == {(source, 0): 3} and not progress.completed
        proxy.drop_responses(None)

        redo(delivery, consumer, source, range(3, 6), sink)
        assert committed_offsets(bootstrap, group, source, 1) == {0: 6}
    finally:
        proxy.drop_responses(None)
        proxy.restore()
        consumer.close()
    assert committed_outputs_but_aborted(bootstrap, sink) == [
        b"out-0",
        b"out-1",
        b"out-2",
        b"redo-3",
        b"redo-4",
        b"redo-5",
    ], "the redo's outputs are committed together with its offsets"


class HeldOffsets(NamedTuple):
    delivery: ExactlyOnce
    consumer: Consumer
    proxy: TcpProxy
    source: str
    sink: str
    group: str


@contextmanager
def offsets_held_back(proxied_broker: ProxiedBroker, group: str, **options) -> Iterator[HeldOffsets]:
    """An exactly-once delivery whose first batch (offsets 0-2 of ``source``, outputs tagged ``aborted``) waits
    in ``send_offsets_to_transaction``: the proxy holds its TxnOffsetCommit back until ``proxy.release()``."""
    bootstrap = proxied_broker.bootstrap_servers
    source, sink = unique_name("source"), unique_name("sink")
    ensure_topics(bootstrap, [source, sink])
    group = unique_name(group)
    new_producer = transactional(bootstrap, unique_name("txn"))
    delivery, consumer = wired(ExactlyOnce, new_producer, bootstrap, group, log=LOG, call_timeout=2.0, **options)
    proxy = proxied_broker.proxy
    try:
        delivery.start(15)
        proxy.hold_next(TXN_OFFSET_COMMIT_API_KEY)
        delivery.submit(batch(source, range(0, 3), sink, tag=b"aborted"))
        drive(delivery, consumer, lambda p: proxy.held_requests > 0)
        yield HeldOffsets(delivery, consumer, proxy, source, sink, group)
    finally:
        proxy.release()
        consumer.close()


def test_exactly_once_keeps_serving_while_its_offsets_wait_for_the_coordinator(proxied_broker: ProxiedBroker):
    # librdkafka's send_offsets_to_transaction() ignores its timeout while the group coordinator does not answer
    # (confluentinc/librdkafka#5456). A delivery blocked there would stop the worker's loop: no session expiry
    # seen, no rebalance served, no stop. The loop must go on, and losing the partitions must abort the batch,
    # but only once the blocked call has ended: offsets reaching the coordinator after the abort could be
    # committed later on a broker that does not check the producer epoch there.
    bootstrap = proxied_broker.bootstrap_servers
    with offsets_held_back(proxied_broker, "eos-offsets-unanswered") as held:
        delivery, consumer, proxy, source, sink, group = held
        unanswered_for = time.monotonic()
        for _ in range(5):
            assert not delivery.service().completed
        # librdkafka answers the blocked call itself only after socket.timeout.ms (60 s): well beyond this.
        assert time.monotonic() - unanswered_for < 30, "service() waited for the unanswered offsets"
        assert delivery.busy() and not delivery.can_accept()

        progress = delivery.forget({(source, 0)})  # the session expired: the partition is gone
        for _ in range(5):
            progress.merge(delivery.service())
        assert delivery.busy(), "the abort went ahead while the transaction's offsets could still land"
        proxy.release()  # the offsets reach the coordinator, inside the transaction still open
        progress.merge(drive(delivery, consumer, lambda p: not delivery.busy()))
        assert progress.rewind == {} and not progress.completed, "a lost partition is its new owner's to redo"

        redo(delivery, consumer, source, range(0, 3), sink)
        assert committed_offsets(bootstrap, group, source, 1) == {0: 3}
    assert committed_outputs_but_aborted(bootstrap, sink) == [b"redo-0", b"redo-1", b"redo-2"]


def test_an_exactly_once_abort_stops_waiting_for_an_offsets_call_that_never_ends(proxied_broker: ProxiedBroker):
    bootstrap = proxied_broker.bootstrap_servers
    with offsets_held_back(proxied_broker, "eos-offsets-never", orphan_wait=1.0) as held:
        delivery, consumer, _, source, sink, group = held
        finished, progress = delivery.finish(timeout=0.5)  # a revoke that cannot wait: abort
        assert not finished
        progress.merge(drive(delivery, consumer, lambda p: not delivery.busy()))
        assert progress.rewind == {(source, 0): 0}
        redo(delivery, consumer, source, range(0, 3), sink)
        assert committed_offsets(bootstrap, group, source, 1) == {0: 3}
    assert committed_outputs_but_aborted(bootstrap, sink) == [b"redo-0", b"redo-1", b"redo-2"]


@pytest.mark.parametrize("reachable", [True, False])
def test_an_offsets_call_that_never_ends_while_brokers_answer_is_fatal(proxied_broker: ProxiedBroker, reachable):
    # librdkafka can wait for good for a group coordinator lost with its broker (librdkafka#5511; seen after a
    # broker's kill -9 on a 3-node Apache Kafka): no abort can follow, since an abort waits for the call. The
    # worker then exits for a restart in its slot to abort the transaction. While no broker is reachable the
    # call is an outage being waited out, not a hang.
    options = {"stuck_after": 1.0, "brokers_reachable": lambda: reachable}
    with offsets_held_back(proxied_broker, "eos-offsets-stuck", **options) as held:
        delivery, consumer = held.delivery, held.consumer
        if reachable:
            with pytest.raises(DeliveryFatal, match="send_offsets_to_transaction has not returned for"):
                drive(delivery, consumer, lambda p: False, timeout=10)
        else:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                assert not delivery.service().completed
                consumer.poll(0.05)
            assert delivery.busy(), "still waiting for the offsets: an outage, not a hang"


def test_at_least_once_rewinds_instead_of_committing_when_delivery_fails(proxied_broker: ProxiedBroker):
    bootstrap = proxied_broker.bootstrap_servers
    source, sink = unique_name("source"), unique_name("sink")
    ensure_topics(bootstrap, [source, sink])
    group = unique_name("alo-fail")
    new_producer = idempotent(bootstrap, **{"message.timeout.ms": 1500})
    delivery, consumer = wired(AtLeastOnce, new_producer, bootstrap, group, max_in_flight=4, log=LOG)
    try:
        delivery.submit(batch(source, range(0, 3), sink))
        drive(delivery, consumer, lambda p: len(p.completed) == 1 and not delivery.busy())
        proxied_broker.proxy.cut()
        delivery.submit(batch(source, range(3, 6), sink))
        delivery.submit(batch(source, range(6, 8), sink))
        progress = drive(delivery, consumer, lambda p: bool(p.rewind), timeout=20)
        assert progress.rewind == {(source, 0): 3}, "both failed batches are redone from the first one's start"
        assert not progress.completed and not delivery.busy()
        proxied_broker.proxy.restore()
        assert committed_offsets(bootstrap, group, source, 1) == {0: 3}, "a failed delivery must not commit"

        # The redo goes through a fresh producer: on Tansu the old one's epoch bump leaves it fenced for good.
        delivery.submit(batch(source, range(3, 8), sink))
        drive(delivery, consumer, lambda p: len(p.completed) == 1 and not delivery.busy())
        assert committed_offsets(bootstrap, group, source, 1) == {0: 8}
    finally:
        proxied_broker.proxy.restore()
        consumer.close()


@pytest.mark.xfail(
    EMBEDDED,
    strict=True,
    reason="Tansu limitation: once an idempotent producer's messages time out, librdkafka bumps its epoch and Tansu "
    "answers every later produce with PRODUCER_FENCED; hence AtLeastOnce redoes a failed batch with a fresh producer",
)
def test_an_idempotent_producer_keeps_producing_after_its_messages_timed_out(proxied_broker: ProxiedBroker):
    bootstrap = proxied_broker.bootstrap_servers
    topic = unique_name("epoch")
    ensure_topics(bootstrap, [topic])
    producer = idempotent(bootstrap, **{"message.timeout.ms": 1500})()
    errors: list[str] = []

    def report(error, message):
        if error is not None:
            errors.append(error.name())

    producer.produce(topic, b"before", on_delivery=report)
    assert producer.flush(10) == 0 and not errors
    proxied_broker.proxy.cut()
    producer.produce(topic, b"lost", on_delivery=report)
    producer.flush(5)
    assert errors == ["_MSG_TIMED_OUT"]
    proxied_broker.proxy.restore()
    errors.clear()
    for attempt in range(3):
        producer.produce(topic, b"after-%d" % attempt, on_delivery=report)
        producer.flush(10)
    assert errors.count("PRODUCER_FENCED") == 0, errors
