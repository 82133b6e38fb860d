"""The streaming worker: consume → decode → score → produce → commit, one micro-batch at a time.

One thread drives everything (librdkafka's own threads do the network I/O). This module is the loop and its
lifecycle; the parts it coordinates live beside it: :mod:`~detector.stream.partitions` (what is assigned,
paused, committed), :mod:`~detector.stream.backpressure`, :mod:`~detector.stream.hotswap`,
:mod:`~detector.stream.clientevents` (errors and statistics), :mod:`~detector.stream.throughput` (metrics and
summaries), :mod:`~detector.stream.delivery` (the two guarantees). Each loop iteration:

1. ``delivery.service()``: hand queued messages to the producer, collect delivery reports, commit what is
   acknowledged (or the transaction), and rewind partitions whose batch failed;
2. when a batch is due (``max_batch`` records, or ``max_delay_ms`` after its first) and the delivery
   strategy can take one: decode + score + build outputs (:class:`~detector.stream.processor.BatchProcessor`)
   and submit them;
3. between batches, poll the bundle registry and hot-swap a newly verified model;
4. back-pressure: pause every assigned partition while ``2 × max_batch`` records wait (the producer is not
   keeping up: queue full, broker unreachable), resume below ``max_batch``;
5. ``consumer.consume`` (always, even paused: it runs the group protocol, rebalance callbacks, statistics
   and the results of the asynchronous offset commits, and keeps ``max.poll.interval.ms`` satisfied).

Nothing in the loop waits on the network without a bound, so a broker outage never stops it from serving
rebalances, health checks and SIGTERM (offset commits are asynchronous for that reason: see
:mod:`detector.stream.commits`).

Rebalances: ``on_revoke`` finishes the in-flight work (delivers and commits it, within
:data:`REVOKE_TIMEOUT_S`) or, failing that, makes sure it is never committed (at-least-once: its
offsets are forgotten; exactly-once: the transaction is aborted); records buffered but not yet scored for
the revoked partitions are dropped: they are uncommitted, so their new owner reads them. ``on_assign``
starts clean: the consumer resumes from the group's committed offsets. ``on_lost`` commits nothing.

:meth:`Worker.stop` (SIGTERM/SIGINT) stops consuming, scores and delivers what is buffered, commits,
closes the consumer (leaving the group) and flushes the producer, within :data:`SHUTDOWN_TIMEOUT_S` +
:data:`CLOSE_TIMEOUT_S` even when the broker is out of reach (exit status 1 then: the uncommitted records are
read again by the next owner).
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from detector.core.registry import RegistryWatcher
from detector.stream.aggregate_state import AggregateStateError
from detector.stream.backpressure import Backpressure
from detector.stream.batcher import Batcher
from detector.stream.clientevents import ClientEvents, is_fatal
from detector.stream.clients import consumer_config, producer_config, transactional_id, worker_slot
from detector.stream.delivery import AtLeastOnce, Delivery, DeliveryFatal, DeliveryReport, ExactlyOnce
from detector.stream.hotswap import HotSwap
from detector.stream.logs import get_logger, librdkafka_logger
from detector.stream.metrics import Health, MetricsServer, WorkerMetrics
from detector.stream.partitions import Partitions, names, topic_partitions
from detector.stream.processor import BatchProcessor, TopicPartitionKey
from detector.stream.settings import RunSettings, redact
from detector.stream.throughput import Throughput

__all__ = ["Worker", "WorkerError"]

IDLE_WAIT_S = 0.1
BUSY_WAIT_S = 0.02
REVOKE_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0
# One init_transactions attempt; a timed-out call resumes on the next. Short, so that a stop asked for while
# the cluster is unreachable is honoured within seconds.
INIT_TIMEOUT_S = 10.0


class WorkerError(RuntimeError):
    """The worker cannot continue safely (e.g. it could not rewind a partition); it exits non-zero."""


class Worker:
    """One detector worker: a consumer in ``settings.group_id``, a producer and a model.

    Build it with :func:`detector.stream.runner.build_worker` (which loads and verifies the bundle); call
    :meth:`run` in one thread and :meth:`stop` from any thread or a signal handler. ``run`` returns the
    process exit status: 0 after a clean stop, 1 after a fatal delivery error or an unclean stop.
    Constructing it raises ``KafkaException`` for invalid librdkafka settings.
    """

    def __init__(
        self,
        settings: RunSettings,
        processor: BatchProcessor,
        *,
        metrics: WorkerMetrics,
        health: Health,
        watcher: RegistryWatcher | None = None,
        server: MetricsServer | None = None,
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.metrics = metrics
        self.health = health
        self.server = server
        self.log = get_logger("worker")
        self.topic = settings.input_topic
        exactly_once = settings.guarantee == "exactly-once"
        self.transactional_id: str | None = transactional_id(settings) if exactly_once else None
        self.instance_id = worker_slot(settings)
        self.partitions = Partitions()
        self.events = ClientEvents(self.topic, self.partitions, metrics, health, self.log)
        self._producers_made = 0
        self._current_producer = 0
        self._consumer_config = consumer_config(settings)
        self._producer_config = producer_config(settings, self.transactional_id)
        self.consumer = Consumer(
            {
                **self._consumer_config,
                "error_cb": self._on_error,
                "stats_cb": self.events.on_stats,
                "on_commit": self._on_commit,
                "logger": librdkafka_logger("librdkafka.consumer"),
            }
        )
        self.delivery: Delivery = (
            ExactlyOnce(
                self._new_producer, self.consumer, log=self.log, brokers_reachable=lambda: self.health.broker_reachable
            )
            if exactly_once
            else AtLeastOnce(
                self._new_producer, self.consumer, max_in_flight=settings.max_in_flight_batches, log=self.log
            )
        )
        self.batcher: Batcher[Message] = Batcher(settings.max_batch, settings.max_delay_ms / 1000.0)
        self.backpressure = Backpressure(
            self.consumer, self.partitions, max_batch=settings.max_batch, gauge=metrics.paused_partitions, log=self.log
        )
        self.hotswap = (
            HotSwap(watcher, processor, metrics, self.log, settings.registry_poll_seconds)
            if watcher is not None
            else None
        )
        self.throughput = Throughput(metrics, self.log, settings.summary_seconds)
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._closing_hard = False

    def _new_producer(self) -> Producer:
        """A producer whose errors count like the consumer's, except the fatal error of one the delivery has
        already replaced."""
        serial = self._producers_made = self._producers_made + 1

        def on_error(error: KafkaError) -> None:
            if is_fatal(error) and serial != self._current_producer:
                self.events.on_replaced_producer_error(error)
                return
            self._on_error(error)

        producer = Producer(
            {**self._producer_config, "error_cb": on_error, "logger": librdkafka_logger("librdkafka.producer")}
        )
        self._current_producer = serial
        return producer

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def metrics_port(self) -> int | None:
        return self.server.port if self.server is not None else None

    @property
    def assignment(self) -> frozenset[TopicPartitionKey]:
        """The input partitions this worker owns now."""
        return frozenset(self.partitions.assigned)

    @property
    def paused(self) -> frozenset[TopicPartitionKey]:
        """The partitions paused for back-pressure now."""
        return frozenset(self.partitions.paused)

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit and exit (safe from signal handlers)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """The loop; returns the exit status. Closes the Kafka clients and the metrics server before returning."""
        try:
            self._start()
            while not self._stop.is_set():
                self._iterate()
            return self._shutdown()
        except (DeliveryFatal, WorkerError, AggregateStateError, KafkaException) as exc:
            # A KafkaException that reaches here is librdkafka reporting a fatal error from poll/flush (e.g. the
            # transactional producer was fenced): nothing more can be delivered or committed by this process.
            error = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            self.log.error("fatal: the worker stops without committing further", error=error)
            self._close_hard()
            return 1
        except BaseException:
            self._close_hard()
            raise
        finally:
            self.health.stopping = True
            if self.server is not None:
                self.server.close()

    def _start(self) -> None:
        bundle = self.processor.bundle
        self.log.info(
            "starting",
            input_topic=self.topic,
            output_topic=self.settings.output_topic,
            dlq_topic=self.settings.dlq_topic,
            group_id=self.settings.group_id,
            instance_id=self.instance_id,
            guarantee=self.delivery.name,
            transactional_id=self.transactional_id,
            emit=self.settings.emit,
            max_batch=self.settings.max_batch,
            max_delay_ms=self.settings.max_delay_ms,
            device=str(self.processor.scorer.device),
            model={"name": bundle.name, "version": bundle.version, "bundle_sha256": bundle.sha256},
            bundle=str(self.settings.bundle),
            registry=self.hotswap is not None,
            metrics_port=self.metrics_port,
            consumer_config=redact(self._consumer_config),
            producer_config=redact(self._producer_config),
        )
        self._init_delivery()
        self.consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _init_delivery(self) -> None:
        """``init_transactions`` (exactly-once) until it succeeds: the cluster may not be reachable yet.

        Between attempts both clients are polled, so that what librdkafka knows about the cause (a refused
        connection, failed authentication) is logged now, not at shutdown, and refused credentials end the
        start-up (see :meth:`_on_error`).
        """
        while not self._stop.is_set():
            self.health.beat()
            try:
                self.delivery.start(INIT_TIMEOUT_S)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal() or not error.retriable():
                    raise DeliveryFatal(f"cannot initialise the transactional producer: {error.str()}") from exc
                self.delivery.wait(0)
                self.consumer.poll(0)  # not subscribed yet: serves its callbacks, returns no record
                self._raise_fatal()
                last = self.events.last_error
                cause = last.str() if last is not None else None
                self.log.warning("cannot initialise transactions yet; retrying", error=error.str(), cause=cause)

    def _iterate(self) -> None:
        self.health.beat()
        self._absorb(self.delivery.service())
        if self.batcher.due() and self.delivery.can_accept():
            self._submit(self.batcher.take())
        if self.delivery.can_accept() and (closed := self.processor.flush_due()) is not None:
            self.delivery.submit(closed)  # aggregation windows closed by the clock (an idle partition's)
        if self.hotswap is not None:
            self.hotswap.poll_if_due()
        self.backpressure.apply(len(self.batcher), self.delivery.can_accept())
        self._consume()
        if self.throughput.due():
            self._summary()

    def _shutdown(self) -> int:
        self.health.stopping = True
        self.log.info("stopping: finishing the buffered records", buffered=len(self.batcher))
        self._pause_input()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        clean = True
        while True:
            self.health.beat()
            report = self.delivery.service()
            clean = clean and not report.rewind
            self._absorb(report)
            if len(self.batcher) and self.delivery.can_accept():
                self._submit(self.batcher.take())
                continue
            if not len(self.batcher) and not self.delivery.busy():
                break
            if time.monotonic() >= deadline:
                self.log.error("could not deliver and commit the last batches in time", timeout_s=SHUTDOWN_TIMEOUT_S)
                clean = False
                break
            self.delivery.wait(BUSY_WAIT_S)
            self._serve_consumer()
        # Leaving the group runs on_revoke: after a clean finish it finds nothing in flight; after a timeout it
        # must not wait again for what did not finish (an open transaction is aborted by its timeout).
        self._closing_hard = not clean
        closed = self._close_consumer()
        left = self.delivery.close(10 if clean else 1)
        clean = clean and closed and left == 0 and self._fatal is None
        self._summary()
        self.log.info("stopped", clean=clean, undelivered=left)
        return 0 if clean else 1

    def discard(self) -> None:
        """Release the clients and the metrics server of a worker that will not :meth:`run`."""
        self._close_hard()
        if self.server is not None:
            self.server.close()

    def _close_hard(self) -> None:
        self._closing_hard = True
        self._close_consumer()

    def _pause_input(self) -> None:
        """Stop fetching for good (shutdown): the loop still polls the consumer, for commit results only."""
        try:
            self.consumer.pause(topic_partitions(self.partitions.assigned))
        except KafkaException as exc:
            self.log.warning("could not pause the input for shutdown", error=str(exc))

    def _serve_consumer(self) -> None:
        """Serve the consumer's callbacks (commit results, rebalances) without taking input. A record fetched
        before the pause is left for the next reader: nothing at or after its offset is committed."""
        self.consumer.consume(self.backpressure.limit, 0)
        self._raise_fatal()

    def _raise_fatal(self) -> None:
        """Raise what a librdkafka callback recorded: callbacks must hand control back to librdkafka first."""
        if self._fatal is not None:
            fatal, self._fatal = self._fatal, None
            raise fatal

    def _close_consumer(self) -> bool:
        """Leave the group, waiting at most :data:`CLOSE_TIMEOUT_S`; False when that did not happen in time.

        ``Consumer.close`` waits for every outstanding commit, and a commit caught by a lost connection waits
        for the coordinator to come back (:mod:`detector.stream.commits`). So it runs in a helper thread; past the
        timeout the worker goes on without it and the group drops this member when its session expires.
        """
        failure: list[BaseException] = []

        def close() -> None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                failure.append(exc)

        closer = threading.Thread(target=close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            self.log.error("could not leave the consumer group in time", timeout_s=CLOSE_TIMEOUT_S)
            return False
        if failure:
            self.log.warning("closing the consumer failed", error=str(failure[0]))
            return False
        return True

    # --- the batch path ----------------------------------------------------------------------------------

    def _consume(self) -> None:
        until_due = self.batcher.seconds_until_due()
        wait = IDLE_WAIT_S if until_due is None else min(until_due, IDLE_WAIT_S)
        if self.delivery.busy():
            # Delivery reports arrive on the producer's queue: wait there, then take the input that is ready.
            self.delivery.wait(BUSY_WAIT_S)
            wait = 0.0
        room = max(1, self.backpressure.limit - len(self.batcher))
        messages = self.consumer.consume(room, wait)
        self._raise_fatal()
        if not messages:
            return
        records = [m for m in messages if m.error() is None]
        if len(records) != len(messages):
            for message in messages:
                if message.error() is not None:
                    self._on_error(message.error())
        self.batcher.add(records)
        self.throughput.records_in(len(records))

    def _submit(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        batch = self.processor.process(messages)
        self.delivery.submit(batch)
        self.throughput.submitted(batch, len(messages), time.perf_counter() - started)

    def _absorb(self, report: DeliveryReport) -> None:
        """Account for delivered batches and rewind partitions whose batch failed."""
        self.throughput.delivered(report.completed)
        for batch in report.completed:
            for tp, offset in batch.next_offsets.items():
                self.partitions.committed(tp, offset)
        if report.rewind:
            self._rewind(report.rewind)

    def _rewind(self, positions: dict[TopicPartitionKey, int]) -> None:
        dropped = self.batcher.drop_partitions(positions.keys())
        self.processor.forget_state(positions.keys())
        for (topic, partition), offset in positions.items():
            if (topic, partition) not in self.partitions.assigned:
                continue  # revoked meanwhile: its new owner starts from the committed offset
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                # Going on would skip the batch: exit and let the restart resume from the committed offsets.
                raise WorkerError(f"cannot rewind {topic}/{partition} to offset {offset}: {exc.args[0].str()}") from exc
        self.metrics.rewinds.inc()
        self.log.warning(
            "rewound for redelivery",
            positions={f"{t}/{p}": o for (t, p), o in positions.items()},
            dropped_buffered=dropped,
        )

    # --- librdkafka callbacks (run inside consume/poll, on this thread) -------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        fresh = {(tp.topic, tp.partition) for tp in partitions}
        self.batcher.drop_partitions(fresh)
        self.processor.forget_state(fresh)
        self.partitions.assign(fresh)
        self.metrics.partition_changes.labels(change="assigned").inc(len(fresh))
        self.health.joined = True
        self.log.info("partitions assigned", assigned=names(fresh), assignment=names(self.partitions.assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.metrics.partition_changes.labels(change="revoked").inc(len(revoked))
        if self._closing_hard:
            self.partitions.unassign(revoked)
            return
        try:
            finished, report = self.delivery.finish(REVOKE_TIMEOUT_S)
            self.partitions.unassign(revoked)
            if not finished:
                report.merge(self.delivery.forget(revoked))
            self._absorb(report)
        except BaseException as exc:  # raised again by _consume: librdkafka must get control back first
            self.partitions.unassign(revoked)
            self._fatal = exc
            return
        self._release(revoked)
        self.log.info(
            "partitions revoked",
            revoked=names(revoked),
            finished_in_flight=finished,
            assignment=names(self.partitions.assigned),
        )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.metrics.partition_changes.labels(change="lost").inc(len(lost))
        self.partitions.unassign(lost)
        self.health.joined = False
        if not self._closing_hard:
            try:
                self._absorb(self.delivery.forget(lost))
            except BaseException as exc:
                self._fatal = exc
        self._release(lost)
        self.log.warning(
            "partitions lost: their uncommitted work is left to the next owner",
            lost=names(lost),
            assignment=names(self.partitions.assigned),
        )

    def _release(self, partitions: set[TopicPartitionKey]) -> None:
        self.batcher.drop_partitions(partitions)
        self.processor.forget_state(partitions)
        self.backpressure.resume_before_release(partitions)
        self.partitions.forget(partitions)
        self.metrics.forget_partitions(partitions)

    def _on_error(self, error: KafkaError) -> None:
        failure = self.events.on_error(error)
        if failure is not None:
            self._fatal = failure  # the loop raises it at its next step and exits 1

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self.delivery.on_commit(error, partitions)

    def _summary(self) -> None:
        self.throughput.summary(
            model_version=self.processor.bundle.version,
            assigned=len(self.partitions.assigned),
            paused=len(self.partitions.paused),
            buffered=len(self.batcher),
        )
