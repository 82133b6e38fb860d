"""Committing consumer offsets without ever stalling the worker's loop.

A synchronous ``Consumer.commit`` can block for as long as the group coordinator is out of reach: when the
connection drops while the OffsetCommit request is in flight, librdkafka retries the request with no
deadline and the call returns only once the coordinator answers again (measured here: a 30 s cut, a 30 s
call; the same holds with ``socket.timeout.ms`` lowered). A loop stuck in that call serves no rebalance
callback (the lost partitions stay "ours"), answers no SIGTERM and beats no health check.

:class:`OffsetCommitter` therefore commits asynchronously, one request at a time, and learns each result
from the consumer's ``on_commit`` callback, which librdkafka serves inside ``consume``/``poll`` on the
loop's own thread. The caller must

* pass :meth:`OffsetCommitter.on_commit` as the consumer's ``on_commit`` setting (or forward to it), and
* keep polling the consumer while it waits for :attr:`OffsetCommitter.settled`.

Only :meth:`OffsetCommitter.commit_now` blocks, for the one place that cannot poll: a rebalance callback,
where librdkafka expects the revoked partitions' offsets to be committed before it returns.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from detector.stream.processor import TopicPartitionKey

COMMIT_RETRY_S = 1.0


class OffsetCommitter:
    """Offsets of acknowledged work, committed asynchronously in order; failed commits are retried."""

    def __init__(self, consumer: Consumer, *, log: Any, retry_after: float = COMMIT_RETRY_S) -> None:
        self._consumer = consumer
        self._log = log
        self._retry_after = retry_after
        self._pending: dict[TopicPartitionKey, int] = {}  # to commit, not yet requested
        self._in_flight: dict[TopicPartitionKey, int] = {}  # requested, result not yet seen
        self._retry_at = 0.0

    @property
    def settled(self) -> bool:
        """Nothing waits to be committed and no commit's result is outstanding."""
        return not self._pending and not self._in_flight

    def add(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit ``offsets`` (next offset to read, per partition) at the next :meth:`service`."""
        self._pending.update(offsets)

    def service(self) -> None:
        """Send what is pending when no request is outstanding (and a failed one's back-off has passed)."""
        if not self._pending or self._in_flight or time.monotonic() < self._retry_at:
            return
        request, self._pending = self._pending, {}
        try:
            self._consumer.commit(offsets=topic_partitions(request), asynchronous=True)
        except KafkaException as exc:
            self._failed(request, exc.args[0])
            return
        self._in_flight = request

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's ``on_commit`` callback: the result of an earlier request."""
        keyed = {(tp.topic, tp.partition): tp for tp in partitions}
        answered = {key: tp for key, tp in keyed.items() if self._in_flight.get(key) == tp.offset}
        if not answered:
            return  # a request whose partitions were forgotten, or one that commit_now superseded
        failed: dict[TopicPartitionKey, int] = {}
        first_error = error
        for key, tp in answered.items():
            del self._in_flight[key]
            if error is not None or tp.error is not None:
                failed[key] = tp.offset
                first_error = first_error or tp.error
        if failed:
            self._failed(failed, first_error)

    def commit_now(self) -> None:
        """Commit everything pending or in flight synchronously; raises ``KafkaException`` when it fails.

        It blocks until the coordinator answers, however long that takes: only for rebalance callbacks, which
        cannot serve asynchronous results and run while the coordinator has just been reachable.
        """
        request = {**self._in_flight, **self._pending}
        if not request:
            return
        self._pending, self._in_flight = {}, {}
        try:
            results = self._consumer.commit(offsets=topic_partitions(request), asynchronous=False) or []
        except KafkaException as exc:
            self._failed(request, exc.args[0])
            raise
        for tp in results:
            if tp.error is not None:
                self._failed(request, tp.error)
                raise KafkaException(tp.error)

    def forget(self, partitions: set[TopicPartitionKey]) -> None:
        """Never commit ``partitions`` again (revoked or lost): their next owner commits them."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._in_flight.pop(tp, None)

    def _failed(self, offsets: dict[TopicPartitionKey, int], error: KafkaError | None) -> None:
        for tp, offset in offsets.items():
            self._pending.setdefault(tp, offset)  # a newer offset already pending supersedes this one
        self._retry_at = time.monotonic() + self._retry_after
        self._log.warning("offset commit failed; will retry", error=error.str() if error is not None else None)


def topic_partitions(offsets: dict[TopicPartitionKey, int]) -> list[TopicPartition]:
    """librdkafka's form of per-partition offsets."""
    return [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
