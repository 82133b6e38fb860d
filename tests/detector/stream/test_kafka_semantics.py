"""The Kafka behaviour flowwarden relies on, pinned against the embedded Tansu broker (or a real cluster).

Where Tansu falls short of Apache Kafka the test is ``xfail(strict=True)`` on the embedded broker only
(so a fixed Tansu is noticed) and runs normally against ``KAFKA_BOOTSTRAP_SERVERS``; see docs/tansu.md.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from detector.stream.topics import ensure_topics
from tests.support.kafka import (
    EMBEDDED,
    ProxiedBroker,
    client_config,
    consume_exactly,
    drain,
    group_consumer,
    produce_values,
    unique_name,
    values_of,
)
from tests.support.worker import committed_offsets

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]
TXN_TIMEOUT_S = 15.0


def tansu_limitation(reason: str) -> pytest.MarkDecorator:
    """xfail on the embedded broker only: the behaviour is Kafka's contract and must hold on a real cluster."""
    return pytest.mark.xfail(EMBEDDED, reason=f"Tansu limitation (docs/tansu.md): {reason}", strict=True)


def wait_for_assignment(consumers: list[Consumer], done, timeout: float = 30.0) -> None:
    """Poll every consumer (group protocol runs inside poll) until ``done()`` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"no such assignment within {timeout:g} s: {assigned(consumers)}"
        for consumer in consumers:
            consumer.poll(0.1)


def assigned(consumers: list[Consumer]) -> list[set[int]]:
    return [{tp.partition for tp in consumer.assignment()} for consumer in consumers]


def transactional_producer(bootstrap: str) -> Producer:
    producer = Producer({**client_config(bootstrap), "transactional.id": unique_name("txn")})
    producer.init_transactions(TXN_TIMEOUT_S)
    return producer


# --- topics, produce, consume ---------------------------------------------------------------------------


def test_a_topic_with_several_partitions_keeps_order_within_each_partition(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=3)
    for partition in range(3):
        produce_values(kafka_bootstrap, topic, [f"{partition}-{i}".encode() for i in range(5)], partition=partition)
    messages = consume_exactly(kafka_bootstrap, topic, 15)
    for partition in range(3):
        in_partition = [m for m in messages if m.partition() == partition]
        assert values_of(in_partition) == [f"{partition}-{i}".encode() for i in range(5)]
        assert [m.offset() for m in in_partition] == list(range(5))


@tansu_limitation("ListOffsets answers a partition's end with its last batch's first offset + 1")
def test_list_offsets_gives_the_end_of_a_partition_written_in_several_batches(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=1)
    produce_values(kafka_bootstrap, topic, [b"first"] * 10, partition=0)
    produce_values(kafka_bootstrap, topic, [b"second"] * 5, partition=0)
    consumer = Consumer({**client_config(kafka_bootstrap), "group.id": unique_name("ends")})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 15)
    finally:
        consumer.close()


def test_a_group_resumes_from_its_committed_offsets_after_the_consumer_closes(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=2)
    group = unique_name("resume")
    produce_values(kafka_bootstrap, topic, [b"first-%d" % i for i in range(6)])
    consumer = group_consumer(kafka_bootstrap, group)
    consumer.subscribe([topic])
    try:
        assert sorted(values_of(drain(consumer, 6))) == sorted(b"first-%d" % i for i in range(6))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()

    produce_values(kafka_bootstrap, topic, [b"second-%d" % i for i in range(4)])
    consumer = group_consumer(kafka_bootstrap, group)
    consumer.subscribe([topic])
    try:
        resumed = drain(consumer, 4, idle_after=1.0)
    finally:
        consumer.close()
    assert sorted(values_of(resumed)) == sorted(b"second-%d" % i for i in range(4))


def test_two_members_split_the_partitions_and_the_survivor_takes_all_after_one_leaves(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=4)
    group = unique_name("rebalance")
    first, second = group_consumer(kafka_bootstrap, group), group_consumer(kafka_bootstrap, group)
    try:
        first.subscribe([topic])
        wait_for_assignment([first], lambda: assigned([first]) == [{0, 1, 2, 3}])
        second.subscribe([topic])
        both = [first, second]
        wait_for_assignment(both, lambda: all(assigned(both)) and sum(map(len, assigned(both))) == 4)
        a, b = assigned(both)
        assert a.isdisjoint(b) and a | b == {0, 1, 2, 3}

        second.close()
        wait_for_assignment([first], lambda: assigned([first]) == [{0, 1, 2, 3}])
        for partition in range(4):
            produce_values(kafka_bootstrap, topic, [b"p%d" % partition], partition=partition)
        assert sorted(m.partition() for m in drain(first, 4)) == [0, 1, 2, 3]
    finally:
        first.close()
        second.close()


# --- transactions ----------------------------------------------------------------------------------------


def test_a_committed_transaction_publishes_its_records_and_the_group_offsets_together(kafka_bootstrap, new_topic):
    source, sink = new_topic(partitions=2, prefix="source"), new_topic(partitions=2, prefix="sink")
    group = unique_name("txn-group")
    # Both partitions get records: a partition the consumer has read nothing from may still have no
    # position (OFFSET_INVALID) when the transaction commits, which would make the offsets undecidable.
    for partition in (0, 1):
        produce_values(
            kafka_bootstrap,
            source,
            [b"in-%d" % i for i in range(4 * partition, 4 * partition + 4)],
            partition=partition,
        )
    consumer = group_consumer(kafka_bootstrap, group, read_committed=True)
    consumer.subscribe([source])
    producer = transactional_producer(kafka_bootstrap)
    try:
        inputs = drain(consumer, 8)
        producer.begin_transaction()
        for message in inputs:
            producer.produce(sink, value=b"out-" + message.value())
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TXN_TIMEOUT_S)
        producer.commit_transaction(TXN_TIMEOUT_S)
    finally:
        consumer.close()

    outputs = consume_exactly(kafka_bootstrap, sink, 8, read_committed=True, idle_after=1.0)
    assert sorted(values_of(outputs)) == sorted(b"out-in-%d" % i for i in range(8))
    expected = {tp.partition: tp.offset for tp in positions}
    assert expected == {0: 4, 1: 4}
    assert committed_offsets(kafka_bootstrap, group, source, 2) == expected


def test_read_committed_does_not_see_an_open_transaction(kafka_bootstrap, new_topic):
    topic = new_topic()
    producer = transactional_producer(kafka_bootstrap)
    producer.begin_transaction()
    producer.produce(topic, value=b"pending")
    assert producer.flush(10) == 0
    consume_exactly(kafka_bootstrap, topic, 0, read_committed=True, idle_after=2.0)
    assert values_of(consume_exactly(kafka_bootstrap, topic, 1)) == [b"pending"]
    producer.commit_transaction(TXN_TIMEOUT_S)
    assert values_of(consume_exactly(kafka_bootstrap, topic, 1, read_committed=True)) == [b"pending"]


@tansu_limitation("a transaction left open never times out: read_committed readers wait behind it for good")
def test_a_transaction_left_open_is_aborted_once_it_times_out(kafka_bootstrap, new_topic):
    # A worker that dies inside a transaction, with no successor taking over its transactional.id, leaves the
    # transaction open: the coordinator must abort it after transaction.timeout.ms, or every read_committed
    # reader of its partitions waits behind it. Kafka looks for such transactions every 10 s by default.
    topic = new_topic()
    abandoned = Producer(
        {**client_config(kafka_bootstrap), "transactional.id": unique_name("abandoned"), "transaction.timeout.ms": 3000}
    )
    abandoned.init_transactions(TXN_TIMEOUT_S)
    abandoned.begin_transaction()
    abandoned.produce(topic, value=b"abandoned")
    assert abandoned.flush(10) == 0
    producer = transactional_producer(kafka_bootstrap)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(TXN_TIMEOUT_S)
    assert values_of(consume_exactly(kafka_bootstrap, topic, 1, read_committed=True, timeout=25)) == [b"committed"]


@tansu_limitation("fetch responses carry no aborted-transaction list, so read_committed delivers aborted records")
def test_read_committed_does_not_see_an_aborted_transaction(kafka_bootstrap, new_topic):
    topic = new_topic()
    producer = transactional_producer(kafka_bootstrap)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    assert producer.flush(10) == 0
    producer.abort_transaction(TXN_TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(TXN_TIMEOUT_S)
    assert values_of(consume_exactly(kafka_bootstrap, topic, 1, read_committed=True, idle_after=1.0)) == [b"committed"]


def test_an_aborted_transaction_does_not_move_the_group_offsets(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source"), new_topic(prefix="sink")
    group = unique_name("abort-group")
    metadata = group_consumer(kafka_bootstrap, group)
    producer = transactional_producer(kafka_bootstrap)
    try:
        producer.begin_transaction()
        producer.produce(sink, value=b"x")
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 5)], metadata.consumer_group_metadata(), TXN_TIMEOUT_S
        )
        producer.abort_transaction(TXN_TIMEOUT_S)
    finally:
        metadata.close()
    assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: -1001}


@tansu_limitation("an aborted transaction's offsets stay pending and commit with the producer's next transaction")
def test_an_aborted_transactions_offsets_never_commit_later(kafka_bootstrap, new_topic):
    # Tansu finishes a transaction only once no other open transaction overlaps it on an output partition
    # (here: another producer's). Until then an aborted transaction keeps its offsets, and the same producer's
    # next commit applies them. (The worker aborts by starting a new producer epoch, which keeps them apart.)
    source, sink = new_topic(partitions=2, prefix="source"), new_topic(prefix="sink")
    group = unique_name("abort-overlap")
    metadata = group_consumer(kafka_bootstrap, group)
    producer, neighbour = transactional_producer(kafka_bootstrap), transactional_producer(kafka_bootstrap)
    try:
        neighbour.begin_transaction()
        neighbour.produce(sink, value=b"open")
        assert neighbour.flush(10) == 0
        producer.begin_transaction()
        producer.produce(sink, value=b"aborted")
        assert producer.flush(10) == 0
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 5)], metadata.consumer_group_metadata(), TXN_TIMEOUT_S
        )
        producer.abort_transaction(TXN_TIMEOUT_S)
        producer.begin_transaction()
        producer.produce(sink, value=b"committed")
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 1, 3)], metadata.consumer_group_metadata(), TXN_TIMEOUT_S
        )
        producer.commit_transaction(TXN_TIMEOUT_S)
        neighbour.abort_transaction(TXN_TIMEOUT_S)
    finally:
        metadata.close()
    assert committed_offsets(kafka_bootstrap, group, source, 2) == {0: -1001, 1: 3}


@tansu_limitation("offsets of a transaction without records commit only in a producer's first transaction")
def test_a_transaction_with_only_offsets_commits_them(kafka_bootstrap, new_topic):
    source, sink = new_topic(prefix="source"), new_topic(prefix="sink")
    group = unique_name("offsets-only")
    metadata = group_consumer(kafka_bootstrap, group)
    producer = transactional_producer(kafka_bootstrap)
    try:
        producer.begin_transaction()
        producer.produce(sink, value=b"alert")
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 3)], metadata.consumer_group_metadata(), TXN_TIMEOUT_S
        )
        producer.commit_transaction(TXN_TIMEOUT_S)
        assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: 3}

        producer.begin_transaction()  # a batch that produced nothing (e.g. all flows benign)
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 7)], metadata.consumer_group_metadata(), TXN_TIMEOUT_S
        )
        producer.commit_transaction(TXN_TIMEOUT_S)
    finally:
        metadata.close()
    assert committed_offsets(kafka_bootstrap, group, source, 1) == {0: 7}


def test_a_new_producer_with_the_same_transactional_id_fences_the_old_one(kafka_bootstrap, new_topic):
    topic = new_topic()
    transactional_id = unique_name("fence")
    config = {**client_config(kafka_bootstrap), "transactional.id": transactional_id}
    zombie = Producer(config)
    zombie.init_transactions(TXN_TIMEOUT_S)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie-1")
    assert zombie.flush(10) == 0

    successor = Producer(config)
    successor.init_transactions(TXN_TIMEOUT_S)
    with pytest.raises(KafkaException) as fenced:
        zombie.produce(topic, value=b"zombie-2")
        zombie.flush(10)
        zombie.commit_transaction(TXN_TIMEOUT_S)
    assert fenced.value.args[0].code() in {KafkaError.PRODUCER_FENCED, KafkaError._FENCED}

    successor.begin_transaction()
    successor.produce(topic, value=b"successor")
    successor.commit_transaction(TXN_TIMEOUT_S)


# --- outages (a TCP proxy cut; the embedded broker only) ----------------------------------------------------


def test_a_producer_keeps_its_messages_across_a_cut_and_delivers_them_after_restore(
    proxied_broker: ProxiedBroker,
):
    bootstrap = proxied_broker.bootstrap_servers
    topic = unique_name("outage")
    ensure_topics(bootstrap, [topic])
    delivered: list[bytes] = []
    errors: list[KafkaError] = []

    def on_delivery(error, message):
        if error is not None:
            errors.append(error)
        else:
            delivered.append(message.value())

    producer = Producer({**client_config(bootstrap), "enable.idempotence": True, "linger.ms": 5})
    producer.produce(topic, value=b"before", on_delivery=on_delivery)
    assert producer.flush(10) == 0

    proxied_broker.proxy.cut()
    for i in range(5):
        producer.produce(topic, value=b"during-%d" % i, on_delivery=on_delivery)
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        producer.poll(0.1)
    assert delivered == [b"before"], "the cut must hold messages back: is the client bypassing the proxy?"

    proxied_broker.proxy.restore()
    assert producer.flush(30) == 0, "messages still queued 30 s after the path came back"
    assert errors == []
    expected = [b"before"] + [b"during-%d" % i for i in range(5)]
    assert delivered == expected
    assert values_of(consume_exactly(bootstrap, topic, 6, idle_after=1.0)) == expected


def test_a_group_member_keeps_consuming_after_a_cut(proxied_broker: ProxiedBroker):
    bootstrap = proxied_broker.bootstrap_servers
    topic = unique_name("outage")
    ensure_topics(bootstrap, [topic], partitions=2)
    produce_values(bootstrap, topic, [b"a", b"b"])
    consumer = group_consumer(bootstrap, unique_name("outage-group"))
    consumer.subscribe([topic])
    try:
        assert sorted(values_of(drain(consumer, 2))) == [b"a", b"b"]
        consumer.commit(asynchronous=False)  # what a worker does; uncommitted records may be re-delivered
        proxied_broker.proxy.cut()
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            message = consumer.poll(0.1)
            assert message is None or message.error() is not None, "a message arrived through a cut path"
        proxied_broker.proxy.restore()
        produce_values(bootstrap, topic, [b"c", b"d"], timeout=30)
        assert sorted(values_of(drain(consumer, 2, timeout=30, idle_after=1.0))) == [b"c", b"d"]
    finally:
        consumer.close()
