"""What librdkafka's callbacks tell the worker: client errors and statistics.

Errors are counted by code and logged at most every :data:`ERROR_LOG_EVERY_S` per code (a broker outage
reports the same error many times a second). A fatal error, and refused credentials before the worker ever
joined its group, end the worker: the callback records the cause, and the loop raises it at its next step
(a callback must hand control back to librdkafka first). Statistics set readiness (is any broker reachable)
and the consumer-lag gauge, measured from this worker's own committed positions.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError

from detector.stream.clientstats import any_broker_up, partition_ends, read_stats
from detector.stream.delivery import DeliveryFatal
from detector.stream.metrics import Health, WorkerMetrics
from detector.stream.partitions import Partitions

ERROR_LOG_EVERY_S = 10.0


class ClientEvents:
    """The error and statistics callbacks of one worker's clients, on the worker's thread."""

    def __init__(self, topic: str, partitions: Partitions, metrics: WorkerMetrics, health: Health, log: Any) -> None:
        self.topic = topic
        self.partitions = partitions
        self.metrics = metrics
        self.health = health
        self.log = log
        self.last_error: KafkaError | None = None
        self._logged_at: dict[int, float] = {}

    def on_error(self, error: KafkaError) -> DeliveryFatal | None:
        """Count and log ``error``; return the failure that must end the worker, if it is one."""
        self.last_error = error
        self.metrics.kafka_errors.labels(code=error.name()).inc()
        failure: DeliveryFatal | None = None
        if is_fatal(error):
            # Not ready from now on. Only the first cause counts.
            if self.health.fatal is None:
                cause = fatal_cause(error)
                self.health.fatal = cause
                failure = DeliveryFatal(f"fatal Kafka client error: {cause}")
        elif error.code() == KafkaError._AUTHENTICATION and not self.health.joined:
            # Wrong credentials do not fix themselves: stop (an orchestrator shows why) instead of retrying forever.
            # Once the worker has served, a failure is more likely a rotation in report: librdkafka retries.
            failure = DeliveryFatal(f"the cluster refused the credentials: {error.str()}")
        now = time.monotonic()
        if now - self._logged_at.get(error.code(), -ERROR_LOG_EVERY_S) >= ERROR_LOG_EVERY_S:
            self._logged_at[error.code()] = now
            self.log.warning("kafka client error", code=error.name(), error=error.str())
        return failure

    def on_replaced_producer_error(self, error: KafkaError) -> None:
        """The fatal error of a producer the delivery already replaced: counted, not a reason to stop (the
        successor that aborts a transaction fences its predecessor on purpose)."""
        self.metrics.kafka_errors.labels(code=error.name()).inc()
        self.log.info("a replaced producer reports a fatal error; ignored", error=error.str())

    def on_stats(self, stats_json: str) -> None:
        stats = read_stats(stats_json)
        reachable = any_broker_up(stats)
        if reachable is not None and reachable != self.health.broker_reachable:
            self.health.broker_reachable = reachable
            if reachable:
                self.log.info("a broker is reachable again: ready")
            else:
                self.log.warning("no broker reachable: not ready until one is")
        for partition, (end, committed) in partition_ends(stats, self.topic).items():
            tp = (self.topic, partition)
            if tp not in self.partitions.assigned:
                continue
            position = self.partitions.position(tp, committed)
            if position >= 0:
                self.metrics.consumer_lag.labels(topic=self.topic, partition=str(partition)).set(max(0, end - position))


def is_fatal(error: KafkaError) -> bool:
    """librdkafka's fatal errors: the client can do nothing more. The error callback and the consumer's error
    messages carry them with the code ``_FATAL`` and ``fatal()`` False (only errors raised by a call have the
    flag): the underlying error is in the text."""
    return error.fatal() or error.code() == KafkaError._FATAL


def fatal_cause(error: KafkaError) -> str:
    """The text of a fatal error without librdkafka's ``Fatal error: `` prefix, on one line."""
    text = " ".join(error.str().split())
    return text.removeprefix("Fatal error: ") or error.name()
