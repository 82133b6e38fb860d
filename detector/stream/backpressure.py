"""Back-pressure: stop fetching while the output cannot keep up, start again once the buffer drained.

A full buffer alone is the normal state of a backlog (each consume fills it, the next batch empties it): only
a delivery that cannot accept another batch is a reason to pause. The input is paused while ``2 × max_batch``
records wait and the delivery is full, and resumed below ``max_batch``. A backlog may still pause and resume
every few batches, so a pause is logged at most once a minute (with the count since), and its resume with
it; ``flowwarden_paused_partitions`` shows every one.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaException
from prometheus_client import Gauge

from detector.stream.partitions import Partitions, names, topic_partitions
from detector.stream.processor import TopicPartitionKey

PAUSE_LOG_EVERY_S = 60.0
PAUSED_EVENT = "output not keeping up: input paused"


class Backpressure:
    """Pauses and resumes the assigned partitions of ``consumer``; ``limit`` records is a full buffer."""

    def __init__(self, consumer: Consumer, partitions: Partitions, *, max_batch: int, gauge: Gauge, log: Any) -> None:
        self.consumer = consumer
        self.partitions = partitions
        self.max_batch = max_batch
        self.limit = 2 * max_batch
        self.gauge = gauge
        self.log = log
        self._log_at = -PAUSE_LOG_EVERY_S
        self._unlogged = 0
        self._logged = False

    def apply(self, waiting: int, delivery_can_accept: bool) -> None:
        """Pause or resume for ``waiting`` buffered records; call once per loop iteration."""
        paused = self.partitions.paused
        if waiting >= self.limit and not delivery_can_accept:
            fresh = self.partitions.assigned - paused
            if fresh:
                self.consumer.pause(topic_partitions(fresh))
                paused |= fresh
                self._log_pause(waiting)
        elif paused and waiting < self.max_batch:
            self.consumer.resume(topic_partitions(paused & self.partitions.assigned))
            if self._logged:
                self.log.info("partitions resumed", resumed=len(paused), buffered=waiting)
                self._logged = False
            paused.clear()
        self.gauge.set(len(paused))

    def resume_before_release(self, released: set[TopicPartitionKey]) -> None:
        """Undo the pause of partitions being revoked or lost.

        librdkafka keeps a partition's pause flag across a rebalance: one paused when it was revoked or lost
        would stay silent when it comes back. The rebalance callbacks run while the partitions are still
        assigned, so a resume there is the last moment it is guaranteed to apply.
        """
        partitions = released & self.partitions.paused
        if not partitions:
            return
        try:
            self.consumer.resume(topic_partitions(partitions))
        except KafkaException as exc:
            self.log.warning("could not resume released partitions", partitions=names(partitions), error=str(exc))

    def _log_pause(self, waiting: int) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._log_at < PAUSE_LOG_EVERY_S:
            return
        self.log.warning(
            PAUSED_EVENT, paused=len(self.partitions.paused), buffered=waiting, pauses_since_last_log=self._unlogged
        )
        self._log_at, self._unlogged, self._logged = now, 0, True
