"""Getting a scored batch's outputs to Kafka and its input offsets committed, under one of two guarantees.

Both strategies share one small, non-blocking interface that the worker drives from its loop
(:meth:`submit` a batch, call :meth:`service` every iteration, :meth:`finish` inside a rebalance
callback), so the consumer keeps polling while deliveries are outstanding: the group session stays alive
and back-pressure is a matter of pausing partitions, not of blocking.

* :class:`AtLeastOnce`: an idempotent producer (``acks=all``); up to ``max_in_flight`` batches are in the
  producer at once. A batch's offsets (last offset + 1 per partition) are committed (asynchronously, see
  :mod:`detector.stream.commits`) once every message of that batch and of every earlier batch is acknowledged. A
  failed delivery commits nothing: the batch and every later one are abandoned and the consumer is rewound
  to their first offsets, so they are read, scored and produced again (duplicates carry the same ``alert_id``). The
  producer is replaced by a fresh one at the same time: after failed deliveries an idempotent producer
  may be left unable to produce (its epoch bump refused, as Tansu does), and a new one costs little.
* :class:`ExactlyOnce`: a transactional producer; one transaction per batch: ``begin_transaction`` →
  produce alerts and dead letters → ``send_offsets_to_transaction`` (with the consumer's group metadata,
  which fences a zombie of an older generation) → ``commit_transaction``. A retriable failure of a step
  is retried; one that requires an abort (or is not retriable) aborts the transaction and rewinds to the
  batch's first offsets; a fatal one (e.g. fenced by a newer producer with
  the same transactional id) raises :class:`DeliveryFatal`. An abort replaces the producer (see
  :meth:`ExactlyOnce._abort` for why) instead of calling ``abort_transaction``.
  ``send_offsets_to_transaction`` runs in a helper thread (:class:`_BackgroundCall`): librdkafka ignores its
  timeout while the group coordinator is out of reach (confluentinc/librdkafka#5456), and a loop blocked
  there would neither see its session expire nor stop on SIGTERM until the broker came back. An abort
  waits (up to ``orphan_wait``) for such a call to end before the successor producer starts: offsets that
  reached the group coordinator only after the abort could be applied by a later commit of the same
  producer id on a broker that does not check the epoch there.

Both commit plain offsets through :class:`~detector.stream.commits.OffsetCommitter`, whose results arrive through
the consumer's ``on_commit`` callback: the caller must route it to :meth:`on_commit` and keep polling the
consumer while :meth:`busy`.

Rewinding is reported to the caller (:attr:`DeliveryReport.rewind`), which owns the consumer's position and the
records buffered after the batch: it must seek those partitions back and drop what it buffered for them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from detector.stream.commits import OffsetCommitter, topic_partitions
from detector.stream.processor import ScoredBatch, TopicPartitionKey

TXN_CALL_TIMEOUT_S = 10.0
RETIRE_TIMEOUT_S = 2.0
# The longest an abort waits for the aborted transaction's offsets call: once the path to the coordinator
# works, librdkafka ends that call within socket.timeout.ms (60 s); this only guards against one that never ends.
ORPHAN_WAIT_S = 300.0
# How long one service() waits in line for the offsets of a transaction: they usually take a round trip or
# two, and waiting here keeps a batch's commit in the same loop iteration; past it the loop goes on.
OFFSETS_WAIT_S = 0.2
# An offsets call outstanding this long while brokers are reachable is taken as hung: librdkafka gives up an
# unanswered request on a live connection after socket.timeout.ms (60 s), but can keep waiting for good for a
# group coordinator whose broker was lost (confluentinc/librdkafka#5511, seen here after a broker's kill -9).
OFFSETS_STUCK_S = 90.0
ProducerFactory = Callable[[], Producer]
# librdkafka reports some fencing errors as abortable, but a fenced producer can never go on (and aborting
# may not even complete): treat them as fatal.
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


def _fatal(error: KafkaError) -> bool:
    return error.fatal() or error.code() in _FENCED


class DeliveryFatal(RuntimeError):
    """The producer cannot go on (fenced, or a fatal librdkafka error): the worker must exit non-zero."""


@dataclass
class DeliveryReport:
    """What happened since the last call: batches now delivered (and committed), partitions to rewind."""

    completed: list[ScoredBatch] = field(default_factory=list)
    rewind: dict[TopicPartitionKey, int] = field(default_factory=dict)

    def merge(self, other: DeliveryReport) -> None:
        self.completed.extend(other.completed)
        for tp, offset in other.rewind.items():
            self.rewind[tp] = min(offset, self.rewind.get(tp, offset))


class Delivery(Protocol):
    """The interface the worker drives; see the module docstring. A delivery owns its producer: the worker
    waits on it through :meth:`wait` and empties it through :meth:`close`."""

    name: str

    def start(self, timeout: float) -> None: ...
    def wait(self, timeout: float) -> None: ...
    def close(self, timeout: float) -> int: ...
    def can_accept(self) -> bool: ...
    def busy(self) -> bool: ...
    def submit(self, batch: ScoredBatch) -> None: ...
    def service(self) -> DeliveryReport: ...
    def finish(self, timeout: float) -> tuple[bool, DeliveryReport]: ...
    def forget(self, partitions: set[TopicPartitionKey]) -> DeliveryReport: ...
    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None: ...


class _InFlight:
    """One batch handed to the producer; its delivery reports arrive through :meth:`on_delivery`."""

    __slots__ = ("acked", "batch", "error", "sent")

    def __init__(self, batch: ScoredBatch) -> None:
        self.batch = batch
        self.sent = 0
        self.acked = 0
        self.error: KafkaError | None = None

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        self.acked += 1
        if error is not None and self.error is None:
            self.error = error

    @property
    def unsent(self) -> bool:
        return self.sent < len(self.batch.outputs)

    @property
    def done(self) -> bool:
        """Every message handed over and reported (delivered or failed)."""
        return not self.unsent and self.acked == self.sent


def _send(producer: Producer, flight: _InFlight) -> bool:
    """Hand the batch's remaining messages to the producer; False when its queue is full (try again later)."""
    outputs = flight.batch.outputs
    report = flight.on_delivery
    produce = producer.produce
    index = flight.sent
    try:
        while index < len(outputs):
            out = outputs[index]
            if out.partition is not None:
                produce(out.topic, out.value, out.key, partition=out.partition, on_delivery=report)
            elif out.headers is None:
                produce(out.topic, out.value, out.key, on_delivery=report)
            else:
                produce(out.topic, out.value, out.key, headers=out.headers, on_delivery=report)
            index += 1
    except BufferError:
        producer.poll(0)
        return False
    finally:
        flight.sent = index
    return True


class _BackgroundCall:
    """One blocking client call run in a daemon thread, for calls that may block past their own timeout.

    The caller checks :attr:`done` (or :meth:`wait`) and then :attr:`failure`; it must keep the client alive
    and unused by anything that could free it until the call is done.
    """

    def __init__(self, call: Callable[[], object], name: str) -> None:
        self.failure: BaseException | None = None
        self.started = time.monotonic()
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(call,), name=name, daemon=True).start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the owner's thread, which decides
            self.failure = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


@dataclass
class _Orphan:
    """A producer replaced by an abort while its offsets call was blocked; an abort waits for the call until
    ``wait_until`` (monotonic), and the producer is retired once the call ends."""

    producer: Producer
    call: _BackgroundCall
    wait_until: float


def _retire(producer: Producer, flush_timeout: float) -> None:
    """Drop what a replaced producer still holds (it belongs to abandoned work) and let it finish its requests."""
    producer.purge()
    producer.flush(flush_timeout)


class AtLeastOnce:
    """Idempotent producer, pipelined batches, offset commits after acknowledgement."""

    name = "at-least-once"

    def __init__(self, new_producer: ProducerFactory, consumer: Consumer, *, max_in_flight: int, log: Any) -> None:
        self._new_producer = new_producer
        self._producer = new_producer()
        self._max_in_flight = max_in_flight
        self._log = log
        self._queue: deque[_InFlight] = deque()
        self._commits = OffsetCommitter(consumer, log=log)

    def start(self, timeout: float) -> None:
        """Nothing to set up: an idempotent producer needs no handshake before the first message."""

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for delivery reports (they are collected by the next :meth:`service`)."""
        self._producer.poll(timeout)

    def close(self, timeout: float) -> int:
        """Flush the producer for up to ``timeout`` seconds; returns the messages still undelivered."""
        return int(self._producer.flush(timeout))

    def can_accept(self) -> bool:
        return len(self._queue) < self._max_in_flight and not (self._queue and self._queue[-1].unsent)

    def busy(self) -> bool:
        return bool(self._queue) or not self._commits.settled

    def submit(self, batch: ScoredBatch) -> None:
        flight = _InFlight(batch)
        self._queue.append(flight)
        _send(self._producer, flight)

    def service(self) -> DeliveryReport:
        self._producer.poll(0)
        for flight in self._queue:
            if flight.unsent and not _send(self._producer, flight):
                break
        progress = DeliveryReport()
        while self._queue and self._queue[0].done:
            head = self._queue[0]
            if head.error is not None:
                progress.rewind = self._abandon_queue()
                self._log.warning(
                    "delivery failed: rewinding to the batch's first offsets with a fresh producer",
                    error=head.error.str(),
                    rewind={f"{t}/{p}": o for (t, p), o in progress.rewind.items()},
                )
                self._replace_producer()
                break
            self._queue.popleft()
            self._commits.add(head.batch.next_offsets)
            progress.completed.append(head.batch)
        self._commits.service()
        return progress

    def finish(self, timeout: float) -> tuple[bool, DeliveryReport]:
        """Wait until every batch handed over is acknowledged (or ``timeout`` passes), then commit synchronously.

        For rebalance callbacks, which cannot poll the consumer for asynchronous commit results.
        """
        deadline = time.monotonic() + timeout
        total = DeliveryReport()
        while self._queue:
            total.merge(self.service())
            if total.rewind or time.monotonic() >= deadline:
                return False, total
            self._producer.poll(0.05)
        try:
            self._commits.commit_now()
        except KafkaException:
            return False, total
        return True, total

    def forget(self, partitions: set[TopicPartitionKey]) -> DeliveryReport:
        """Never commit offsets of ``partitions`` (revoked or lost); their batches may still be delivered."""
        self._commits.forget(partitions)
        for flight in self._queue:
            for tp in partitions:
                flight.batch.next_offsets.pop(tp, None)
                flight.batch.first_offsets.pop(tp, None)
        return DeliveryReport()

    def _replace_producer(self) -> None:
        retired, self._producer = self._producer, self._new_producer()
        _retire(retired, RETIRE_TIMEOUT_S)

    def _abandon_queue(self) -> dict[TopicPartitionKey, int]:
        positions: dict[TopicPartitionKey, int] = {}
        for flight in self._queue:
            for tp, offset in flight.batch.first_offsets.items():
                positions.setdefault(tp, offset)
        self._queue.clear()
        return positions

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._commits.on_commit(error, partitions)


class ExactlyOnce:
    """Transactional producer: one transaction per batch, offsets committed inside it."""

    name = "exactly-once"
    _IDLE, _OPEN, _COMMIT, _ABORT = "idle", "open", "commit", "abort"

    def __init__(
        self,
        new_producer: ProducerFactory,
        consumer: Consumer,
        *,
        log: Any,
        call_timeout: float = TXN_CALL_TIMEOUT_S,
        orphan_wait: float = ORPHAN_WAIT_S,
        stuck_after: float = OFFSETS_STUCK_S,
        brokers_reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        self._new_producer = new_producer
        self._stuck_after = stuck_after
        self._brokers_reachable = brokers_reachable
        self._producer = new_producer()
        self._successor_pending = False  # self._producer replaces an aborted one and is not initialised yet
        self._consumer = consumer
        self._commits = OffsetCommitter(consumer, log=log)
        self._log = log
        self._call_timeout = call_timeout
        self._orphan_wait = orphan_wait
        self._state = self._IDLE
        self._flight: _InFlight | None = None
        self._offsets_sent = False
        self._offsets_call: _BackgroundCall | None = None
        # Producers replaced by an abort while their offsets call was still blocked: retired when it returns.
        self._orphans: list[_Orphan] = []
        self._done: list[ScoredBatch] = []

    def start(self, timeout: float) -> None:
        r"""``init_transactions``: fences an older producer with the same transactional id. Raises KafkaException.
        Between attempts that time out, the caller :meth:`wait`\ s, which serves the producer's callbacks."""
        self._producer.init_transactions(timeout)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for delivery reports (they are collected by the next :meth:`service`)."""
        self._producer.poll(timeout)

    def close(self, timeout: float) -> int:
        """Flush the producer for up to ``timeout`` seconds; returns the messages still undelivered."""
        return int(self._producer.flush(timeout))

    def can_accept(self) -> bool:
        # A plain commit still outstanding could land after the next transaction's offsets and move the group
        # back: the next transaction waits for it.
        return self._state == self._IDLE and self._commits.settled

    def busy(self) -> bool:
        return self._state != self._IDLE or bool(self._done) or not self._commits.settled

    def submit(self, batch: ScoredBatch) -> None:
        if self._state != self._IDLE:
            raise RuntimeError("a transaction is still in progress")
        if not batch.outputs:
            self._commit_offsets_only(batch)
            return
        self._guard(self._producer.begin_transaction)
        self._flight = _InFlight(batch)
        self._offsets_sent = False
        self._state = self._OPEN
        self._send()

    def service(self) -> DeliveryReport:
        self._producer.poll(0)
        self._commits.service()
        self._retire_orphans()
        progress = DeliveryReport(completed=self._done)
        self._done = []
        if self._state == self._OPEN:
            flight = self._flight
            assert flight is not None
            if flight.unsent:
                self._send()
            if flight.done:
                if flight.error is not None and _fatal(flight.error):
                    raise DeliveryFatal(f"transactional producer fenced or failed: {flight.error.str()}")
                if flight.error is not None:
                    self._log.warning("delivery failed inside the transaction: aborting", error=flight.error.str())
                    self._state = self._ABORT
                else:
                    self._state = self._COMMIT
        if self._state == self._COMMIT:
            self._commit(progress)
        if self._state == self._ABORT:
            self._abort(progress)
        return progress

    def finish(self, timeout: float) -> tuple[bool, DeliveryReport]:
        """Complete the open transaction within ``timeout``, else abort it; commit a plain commit still
        outstanding synchronously (for rebalance callbacks, which cannot poll the consumer for its result).
        True when everything committed."""
        deadline = time.monotonic() + timeout
        total = DeliveryReport()
        while True:
            total.merge(self.service())
            if self._state == self._IDLE:
                try:
                    self._commits.commit_now()
                except KafkaException:
                    return False, total
                return not total.rewind, total
            if time.monotonic() >= deadline:
                if self._state in (self._OPEN, self._COMMIT):
                    self._log.warning("transaction not complete in time: aborting it", timeout_s=timeout)
                    self._state = self._ABORT
                    total.merge(self.service())
                return False, total
            self._producer.poll(0.05)

    def forget(self, partitions: set[TopicPartitionKey]) -> DeliveryReport:
        """Never commit ``partitions`` from here on: abort an open transaction that holds them (their new
        owner redoes that work); the rewind returned is for the partitions this worker keeps."""
        progress = DeliveryReport()
        self._commits.forget(partitions)
        flight = self._flight
        if flight is None or not partitions & flight.batch.next_offsets.keys():
            return progress
        if self._state in (self._OPEN, self._COMMIT):
            self._state = self._ABORT
        for tp in partitions:
            flight.batch.first_offsets.pop(tp, None)
        self._abort(progress)
        return progress

    def _send(self) -> None:
        assert self._flight is not None
        try:
            _send(self._producer, self._flight)
        except KafkaException as exc:
            self._classify(exc, "produce")

    def _commit(self, progress: DeliveryReport) -> None:
        flight = self._flight
        assert flight is not None
        if not self._offsets_sent and not self._send_offsets(flight):
            return
        try:
            self._producer.commit_transaction(self._call_timeout)
        except KafkaException as exc:
            self._classify(exc, "commit")
            return
        progress.completed.append(flight.batch)
        self._reset()

    def _send_offsets(self, flight: _InFlight) -> bool:
        """Add the batch's offsets to the transaction; False while that is under way or after it failed."""
        if self._offsets_call is None:
            producer, timeout = self._producer, self._call_timeout
            offsets = topic_partitions(flight.batch.next_offsets)
            metadata = self._consumer.consumer_group_metadata()
            self._offsets_call = _BackgroundCall(
                lambda: producer.send_offsets_to_transaction(offsets, metadata, timeout), "flowwarden-txn-offsets"
            )
        call = self._offsets_call
        if not call.wait(OFFSETS_WAIT_S):
            self._check_hung(call)
            return False
        self._offsets_call = None
        if isinstance(call.failure, KafkaException):
            self._classify(call.failure, "commit")
            return False
        if call.failure is not None:
            raise call.failure
        self._offsets_sent = True
        return True

    def _abort(self, progress: DeliveryReport) -> None:
        """Abort the open transaction by starting a successor producer with the same transactional id.

        Its ``init_transactions`` fences this producer and has the coordinator abort the open transaction, and
        it starts a new producer epoch. ``abort_transaction`` keeps the epoch, which is not safe enough:

        * when the batch's messages reached the broker but their acknowledgements were lost, librdkafka may
          number the redo's messages like the aborted ones; a broker that still holds those sequence numbers
          for the epoch takes the redo for duplicates, acknowledges it and writes nothing, and the redo's
          offsets then commit with no alert behind them (seen on Tansu after a session expiry);
        * when messages timed out, librdkafka must bump the epoch before the abort completes, and a broker
          that refuses the bump (Tansu answers UNKNOWN_SERVER_ERROR) leaves the abort unfinished for good.

        Before that, a ``send_offsets_to_transaction`` of this transaction that is still blocked must end
        (:data:`ORPHAN_WAIT_S`): its offsets could otherwise reach the group coordinator after the abort,
        stay pending there for this producer id and be committed by the successor's next transaction (Kafka
        before transaction verification keys pending offsets by producer id alone), moving the group past
        records that nobody redoes, e.g. of a partition this worker has lost meanwhile.

        A retriable failure (the coordinator unreachable) leaves the abort pending: the next call resumes it.
        """
        flight = self._flight
        assert flight is not None
        if not self._successor_pending:
            call, self._offsets_call = self._offsets_call, None
            if call is not None and not call.done:
                self._orphans.append(_Orphan(self._producer, call, time.monotonic() + self._orphan_wait))
                self._log.warning("abort: waiting for the transaction's offsets call to end before aborting")
            else:
                _retire(self._producer, 0)
            self._producer = self._new_producer()
            self._successor_pending = True
        for orphan in self._orphans:
            if not orphan.call.done:
                self._check_hung(orphan.call)
        if any(not orphan.call.done and time.monotonic() < orphan.wait_until for orphan in self._orphans):
            return
        try:
            self._producer.init_transactions(self._call_timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or not error.retriable():
                raise DeliveryFatal(f"cannot start a producer to abort the transaction: {error.str()}") from exc
            self._log.warning("abort: the successor producer cannot start yet; will retry", error=error.str())
            return
        self._successor_pending = False
        for tp, offset in flight.batch.first_offsets.items():
            progress.rewind[tp] = min(offset, progress.rewind.get(tp, offset))
        rewind = {f"{t}/{p}": o for (t, p), o in progress.rewind.items()}
        self._log.info("transaction aborted: rewinding", rewind=rewind)
        self._reset()

    def _check_hung(self, call: _BackgroundCall) -> None:
        """Raise :class:`DeliveryFatal` for an offsets call outstanding past ``stuck_after`` while brokers answer.

        librdkafka can wait for good for a group coordinator lost with its broker (confluentinc/librdkafka#5511:
        the decommissioned broker stays cached as coordinator; seen after a broker's kill -9). Neither a commit
        nor an abort can follow (an abort waits for the call), so the process exits: a restart in its slot
        aborts the transaction at once, and the call dies with this process.
        """
        waited = time.monotonic() - call.started
        if waited > self._stuck_after and self._brokers_reachable():
            raise DeliveryFatal(
                f"send_offsets_to_transaction has not returned for {waited:.0f} s although brokers are reachable "
                "(librdkafka#5511: a group coordinator lost with its broker can stay cached); exiting so that a "
                "restart aborts the transaction"
            )

    def _retire_orphans(self) -> None:
        blocked = []
        for orphan in self._orphans:
            if orphan.call.done:
                _retire(orphan.producer, 0)
            else:
                blocked.append(orphan)
        self._orphans = blocked

    def _classify(self, exc: KafkaException, during: str) -> None:
        error: KafkaError = exc.args[0]
        if _fatal(error):
            raise DeliveryFatal(f"transactional producer failed fatally during {during}: {error.str()}") from exc
        if error.retriable() and not error.txn_requires_abort():
            self._log.warning(f"{during} failed; will retry", error=error.str())
            return
        self._log.warning(f"{during} failed: aborting the transaction", error=error.str())
        self._state = self._ABORT

    def on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._commits.on_commit(error, partitions)

    def _commit_offsets_only(self, batch: ScoredBatch) -> None:
        """A batch that produced nothing has nothing to make atomic with its offsets: a plain commit will do.

        Until it is confirmed no transaction begins (see :meth:`can_accept`); a failed one is retried, and at
        worst these records are read again later and again produce nothing.
        """
        self._commits.add(batch.next_offsets)
        self._commits.service()
        self._done.append(batch)

    def _guard(self, call: Any) -> None:
        try:
            call()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            raise DeliveryFatal(f"cannot begin a transaction: {error.str()}") from exc

    def _reset(self) -> None:
        self._state = self._IDLE
        self._flight = None
        self._offsets_sent = False
