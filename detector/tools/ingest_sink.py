"""The Kafka side of ``detector ingest``: whether a request's records may be taken, producing them, and
waiting for the broker's acknowledgement of each.

**Admission before production.** A request is turned away, with nothing of it produced, when no broker is
reachable (503) or when its records would take those awaiting acknowledgement over ``max_pending`` records
or the producer queue's bytes (429). A client that resends what was turned away therefore never writes a
record twice. Once admitted, every record is produced and the request waits until the broker acknowledged
it or librdkafka gave up on it (``message.timeout.ms``); the answer is 2xx only when every record was
acknowledged. A record whose delivery *failed* is reported as failed (503), but its fate is not certain:
librdkafka also reports a record as timed out when the broker wrote it and only the answer was lost. So a
client that resends failed records can write one twice; one that resends only what was turned away cannot.

**Idempotent producer, ``acks=all``.** librdkafka's own retries never duplicate or reorder a record, and an
acknowledgement means every in-sync replica has it (:func:`detector.stream.clients.acknowledged_writes`).

**Reachability.** librdkafka's "all brokers down" error and its statistics (a connection in state ``UP``)
say whether a broker is reachable; while none is, a metadata request every second probes for one, since an
idle producer may not reconnect by itself. A successful delivery also counts.

**Fresh producers.** After a failed delivery or a fatal error the producer is replaced by a new one (a new
producer id); the old one finishes its queue in the background. Apache Kafka would let the old producer go
on after bumping its epoch; Tansu fences it for good (docs/tansu.md, limitation 3). A fresh producer is
correct on both.

Threads: the event loop produces and settles; one thread serves every producer's callbacks (``poll``),
handing delivery reports to the loop with ``call_soon_threadsafe``. Counters are only written on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from detector.stream.clients import acknowledged_writes, producer_properties
from detector.stream.clientstats import any_broker_up, read_stats
from detector.stream.logs import get_logger, librdkafka_logger
from detector.tools.ingest_metrics import IngestHealth, IngestMetrics

# Ingest defaults; anything given with --kafka-option or [kafka] wins, except what acknowledged_writes requires.
PRODUCER_DEFAULTS = {
    "client.id": "flowwarden-ingest",
    # A meter posts one flow at a time and waits for the answer: any linger is added to every flow. Measured
    # here, one flow per POST: 0 ms carried 4-6x the flows/s of 2 ms; 1000-line batches were alike.
    "linger.ms": "0",
    "message.timeout.ms": "30000",
    "queue.buffering.max.kbytes": str(64 * 1024),
    "statistics.interval.ms": "1000",
}
PROBE_EVERY_S = 1.0
POLL_S = 0.05
# An answer is due when librdkafka reports; this much longer and the request stops waiting regardless.
ACK_GRACE_S = 5.0
BACKPRESSURE_RETRY_AFTER_S = 1
OUTAGE_RETRY_AFTER_S = 5


class TurnedAway(Exception):
    """The records were not taken and nothing of them was produced: answer ``status`` with ``Retry-After``."""

    def __init__(self, status: int, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    key: bytes | None
    value: bytes


def producer_config(kafka: Mapping[str, str]) -> dict[str, str]:
    """The ingest producer's librdkafka settings from the pass-through ones (bootstrap servers included)."""
    user = producer_properties(kafka)
    if "statistics.interval.ms" in kafka:  # a client-wide property the worker keeps off its producer
        user["statistics.interval.ms"] = kafka["statistics.interval.ms"]
    return {**PRODUCER_DEFAULTS, **user, **acknowledged_writes(user, "flows")}


def delivery_timeout_s(config: Mapping[str, str]) -> float:
    """How long librdkafka may take to report on a record (``message.timeout.ms`` or its alias)."""
    value = config.get("message.timeout.ms", config.get("delivery.timeout.ms", "300000"))
    return int(value) / 1000.0


class FlowSink:
    """Writes records to ``topic`` and tells each request when the broker has them. Call :meth:`start` on the
    event loop that will call :meth:`write`; :meth:`close` flushes."""

    def __init__(
        self,
        config: Mapping[str, str],
        topic: str,
        *,
        max_pending: int,
        health: IngestHealth,
        metrics: IngestMetrics,
    ) -> None:
        self.topic = topic
        self.max_pending = max_pending
        self.max_pending_bytes = int(config.get("queue.buffering.max.kbytes", "1048576")) * 1024
        self.ack_timeout_s = delivery_timeout_s(config) + ACK_GRACE_S
        self.health = health
        self.metrics = metrics
        self.pending = 0
        self.pending_bytes = 0
        self._config = dict(config)
        self._log = get_logger("ingest")
        self._lock = threading.Lock()  # guards the producers: the loop replaces them, the poller polls them
        self._generation = 0
        self._producer = self._new_producer(0)
        self._retiring: list[Producer] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ingest-producer", daemon=True)
        self._last_probe = 0.0

    def _new_producer(self, generation: int) -> Producer:
        return Producer(
            {
                **self._config,
                "error_cb": functools.partial(self._on_error, generation),
                "stats_cb": functools.partial(self._on_stats, generation),
                "logger": librdkafka_logger("librdkafka.producer"),
            }
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    # ------------------------------------------------------------------------------------------- the loop

    async def write(self, records: Sequence[OutgoingRecord]) -> list[str | None]:
        """Produce ``records`` and wait for the broker; per record None (acknowledged) or why it failed.

        Raises :class:`TurnedAway` when the records cannot be taken now; then nothing was produced.
        """
        size = sum(len(record.value) for record in records)
        self._admit(len(records), size)
        assert self._loop is not None, "start() the sink first"
        futures = []
        deadline = time.monotonic() + self.ack_timeout_s
        for record in records:
            future: asyncio.Future[str | None] = self._loop.create_future()
            futures.append(future)
            self.pending += 1
            self.pending_bytes += len(record.value)
            await self._produce(record, future, deadline)
        self.metrics.pending.set(self.pending)
        await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))  # cancels nothing
        return [
            future.result() if future.done() else f"no delivery report within {self.ack_timeout_s:g} s"
            for future in futures
        ]

    def _admit(self, count: int, size: int) -> None:
        if self.health.stopping:
            raise TurnedAway(503, "the intake is stopping", OUTAGE_RETRY_AFTER_S)
        if not self.health.broker_reachable:
            raise TurnedAway(503, "no Kafka broker reachable: nothing was written", OUTAGE_RETRY_AFTER_S)
        if self.pending + count > self.max_pending or self.pending_bytes + size > self.max_pending_bytes:
            raise TurnedAway(
                429,
                f"{self.pending:,} records await the broker's acknowledgement (limit {self.max_pending:,}): "
                "nothing was written",
                BACKPRESSURE_RETRY_AFTER_S,
            )

    async def _produce(self, record: OutgoingRecord, future: asyncio.Future[str | None], deadline: float) -> None:
        size = len(record.value)
        while True:
            with self._lock:
                producer, generation = self._producer, self._generation
            callback = functools.partial(self._delivered, future, generation, size)
            try:
                producer.produce(self.topic, value=record.value, key=record.key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    self._settle(future, generation, size, "the producer's queue stayed full")
                    return
                await asyncio.sleep(0.01)  # admission keeps this rare: the queue holds more than max_pending
            except KafkaException as exc:  # refused outright, e.g. larger than message.max.bytes
                self._settle(future, generation, size, exc.args[0].str())
                return

    def _settle(self, future: asyncio.Future[str | None], generation: int, size: int, error: str | None) -> None:
        self.pending -= 1
        self.pending_bytes -= size
        self.metrics.pending.set(self.pending)
        if error is None:
            self.health.broker_reachable = True
        elif generation == self._generation:
            self._replace(f"a delivery failed: {error}")
        if not future.done():
            future.set_result(error)

    def _replace(self, why: str) -> None:
        with self._lock:
            self._retiring.append(self._producer)
            self._generation += 1
            self._producer = self._new_producer(self._generation)
        self.metrics.producers_replaced.inc()
        self._log.warning("producer replaced by a fresh one", reason=why)

    def _replace_if_current(self, generation: int, why: str) -> None:
        if generation == self._generation:
            self._replace(why)

    # ------------------------------------------------------------------------------------------- the poller

    def _delivered(
        self,
        future: asyncio.Future[str | None],
        generation: int,
        size: int,
        error: KafkaError | None,
        message: Message | None,
    ) -> None:
        assert self._loop is not None
        text = None if error is None else error.str()
        # RuntimeError: the loop is closed, a report from the final flush with no request waiting for it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._settle, future, generation, size, text)

    def _on_error(self, generation: int, error: KafkaError) -> None:
        self.metrics.kafka_errors.labels(code=error.name()).inc()
        if generation != self._generation:
            return
        if error.code() == KafkaError._ALL_BROKERS_DOWN and self.health.broker_reachable:
            self.health.broker_reachable = False
            self._log.warning("no broker reachable: turning requests away (503) until one is", error=error.str())
        if error.fatal() and self._loop is not None:
            self._loop.call_soon_threadsafe(self._replace_if_current, generation, f"fatal error: {error.str()}")

    def _on_stats(self, generation: int, stats_json: str) -> None:
        up = any_broker_up(read_stats(stats_json))
        if generation == self._generation and up is not None:
            self._reachable(up)

    def _reachable(self, up: bool) -> None:
        if up != self.health.broker_reachable:
            self._log.info("a broker is reachable: taking requests" if up else "no broker reachable")
        self.health.broker_reachable = up

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                current, retiring = self._producer, list(self._retiring)
            current.poll(POLL_S)
            for producer in retiring:
                producer.poll(0)
            with self._lock:
                self._retiring = [p for p in self._retiring if len(p) > 0]
            if not self.health.broker_reachable:
                self._probe(current)
            self.health.beat()

    def _probe(self, producer: Producer) -> None:
        """A metadata request, at most once a second: it connects where an idle producer would not."""
        now = time.monotonic()
        if now - self._last_probe < PROBE_EVERY_S:
            return
        self._last_probe = now
        try:
            producer.list_topics(timeout=PROBE_EVERY_S)  # all topics: naming one may auto-create it
        except KafkaException:
            return
        self._reachable(True)

    def close(self, timeout: float) -> int:
        """Stop serving callbacks and flush every producer; returns the records still unsent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            producers = [self._producer, *self._retiring]
        deadline = time.monotonic() + timeout
        return sum(p.flush(max(0.0, deadline - time.monotonic())) for p in producers)
