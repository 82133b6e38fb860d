"""Exactly-once's two Tansu workarounds against Apache Kafka's standard paths (Apache Kafka only; never in
``make test``)::

    .venv/bin/python -m pytest -s -p no:cacheprovider -o python_files='bench_*.py' tests/bench/bench_kafka_paths.py

docs/worker.md, "The Tansu workarounds on Apache Kafka", holds the numbers and the decision. Printed here:

* aborting: ``abort_transaction()`` on the same producer vs a successor producer with the same
  transactional id (what the worker does): whether the lost-acknowledgements scenario of test_delivery.py
  recovers with each, and the cost of one abort;
* a batch that produced nothing: an offsets-only transaction vs a plain ``commit()`` (what the worker does).
"""

from __future__ import annotations

import statistics
import time

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

import tests.detector.stream.test_delivery as delivery_tests
from detector.stream.delivery import DeliveryFatal, ExactlyOnce
from tests.support.kafka import client_config, group_consumer, unique_name

pytestmark = pytest.mark.kafka
ROUNDS = 30


@pytest.fixture(autouse=True)
def _apache_kafka_only(apache_kafka_broker):
    """Skips on the embedded broker, whose limitations these paths work around."""


class AbortingExactlyOnce(ExactlyOnce):
    """Kafka's standard path: ``abort_transaction`` on the same producer (same epoch)."""

    def _abort(self, progress):
        flight = self._flight
        call, self._offsets_call = self._offsets_call, None
        if call is not None:
            call.wait(self._orphan_wait)
        try:
            self.producer.abort_transaction(self._call_timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if error.retriable() and not error.fatal():
                self._log.warning("abort_transaction failed; will retry", error=error.str())
                return
            raise DeliveryFatal(f"abort_transaction failed: {error.str()}") from exc
        for tp, offset in flight.batch.first_offsets.items():
            progress.rewind[tp] = min(offset, progress.rewind.get(tp, offset))
        self._reset()


@pytest.mark.parametrize("how", ["the messages time out", "the batch is abandoned"])
@pytest.mark.parametrize("path", ["abort_transaction", "successor"])
def test_bench_a_batch_whose_acknowledgements_were_lost_is_redone(proxied_broker, how, path, monkeypatch):
    if path == "abort_transaction":
        monkeypatch.setattr(delivery_tests, "ExactlyOnce", AbortingExactlyOnce)
    try:
        delivery_tests.test_exactly_once_redoes_a_batch_whose_acknowledgements_were_lost(proxied_broker, how)
        outcome = "redone, committed once"
    except AssertionError as exc:
        outcome = f"FAILED: {str(exc).splitlines()[0]}"
    print(f"\nlost acknowledgements, {how}, {path}: {outcome}")


def test_bench_the_cost_of_an_abort(kafka_bootstrap, new_topic):
    topic, base = new_topic(), client_config(kafka_bootstrap)
    transactional_id = unique_name("abort-cost")
    producer = Producer({**base, "transactional.id": transactional_id})
    producer.init_transactions(15)
    costs: dict[str, list[float]] = {"abort_transaction": [], "successor": []}
    for path in costs:
        for _ in range(ROUNDS):
            producer.begin_transaction()
            producer.produce(topic, b"x")
            producer.flush(10)
            started = time.perf_counter()
            if path == "abort_transaction":
                producer.abort_transaction(15)
            else:
                successor = Producer({**base, "transactional.id": transactional_id})
                successor.init_transactions(15)
                producer.purge()
                producer, successor = successor, producer
            costs[path].append(time.perf_counter() - started)
    for path, seconds in costs.items():
        ordered = sorted(seconds)
        print(
            f"\none abort by {path}: median {statistics.median(ordered) * 1000:.1f} ms, "
            f"p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f} ms ({ROUNDS} rounds)"
        )


def test_bench_the_cost_of_committing_a_batch_that_produced_nothing(kafka_bootstrap, new_topic):
    source, group = new_topic(), unique_name("offsets-cost")
    consumer = group_consumer(kafka_bootstrap, group)
    producer = Producer({**client_config(kafka_bootstrap), "transactional.id": unique_name("offsets-cost")})
    producer.init_transactions(15)
    plain, transaction = [], []
    try:
        for i in range(ROUNDS):
            started = time.perf_counter()
            consumer.commit(offsets=[TopicPartition(source, 0, i + 1)], asynchronous=False)
            plain.append(time.perf_counter() - started)
        for i in range(ROUNDS):
            started = time.perf_counter()
            producer.begin_transaction()
            offsets = [TopicPartition(source, 0, ROUNDS + i + 1)]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 15)
            producer.commit_transaction(15)
            transaction.append(time.perf_counter() - started)
    finally:
        consumer.close()
    print(
        f"\ncommit of a batch without output: plain commit median {statistics.median(plain) * 1000:.1f} ms, "
        f"offsets-only transaction median {statistics.median(transaction) * 1000:.1f} ms ({ROUNDS} rounds)"
    )
