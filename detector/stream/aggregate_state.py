"""Where open aggregation windows survive a crash: a compacted changelog topic, written with the batch.

Every batch that changes a partition's windows writes, with its alerts and in the same transaction as its
input offsets (exactly-once), one changelog record per changed window (its state as JSON), a tombstone per
window it closed, and, when it closed one, the partition's watermark. The records of input partition ``p``
go to partition ``p`` of the changelog topic (which needs at least as many partitions as the input), so a
worker that gets ``p`` reads only that partition back: :class:`ChangelogReader` replays it from the
beginning with ``read_committed`` up to its end before ``p``'s first batch is aggregated. Under exactly-once
the state read back is exactly the state as of the committed offsets; an aborted batch's changes are never
read.

:class:`Aggregator` is the per-worker map of partition → :class:`~detector.stream.aggregate.PartitionWindows`
that the batch processor folds alerts into.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from detector.stream.aggregate import AggregateKey, PartitionWindows, Window, rfc3339
from detector.stream.logs import get_logger

__all__ = ["AggregateStateError", "Aggregator", "ChangelogReader", "Folded", "StateRecord", "window_key"]

TopicPartitionKey = tuple[str, int]
READ_TIMEOUT_S = 60.0


class AggregateStateError(RuntimeError):
    """The changelog could not be read back: the worker must not aggregate that partition from scratch."""


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One changelog message: partition (= the input partition), key, value (None: a tombstone)."""

    partition: int
    key: bytes
    value: bytes | None


def window_key(topic: str, partition: int, key: AggregateKey, start: float) -> bytes:
    return orjson.dumps(["w", topic, partition, *key, start])


def watermark_key(topic: str, partition: int) -> bytes:
    return orjson.dumps(["p", topic, partition])


@dataclass(slots=True)
class Folded:
    """What closing windows produced: ``closed`` (with their input partition) and the changelog records."""

    closed: list[tuple[TopicPartitionKey, Window]] = field(default_factory=list)
    changelog: list[StateRecord] = field(default_factory=list)


Loader = Callable[[str, int], PartitionWindows]


class Aggregator:
    """Open windows of the partitions this worker owns, loaded from the changelog on first use.

    ``positions`` is, per partition, the offset after the last record folded: a batch of closed windows only
    (:meth:`flush`) commits it again, and rewinds to it if its transaction is aborted.
    """

    def __init__(self, length: float, load: Loader) -> None:
        self.length = length
        self._load = load
        self.partitions: dict[TopicPartitionKey, PartitionWindows] = {}
        self.positions: dict[TopicPartitionKey, int] = {}
        self._touched: set[TopicPartitionKey] = set()

    def windows(self, tp: TopicPartitionKey) -> PartitionWindows:
        """The partition's windows, read back from the changelog the first time (raises AggregateStateError)."""
        windows = self.partitions.get(tp)
        if windows is None:
            windows = self.partitions[tp] = self._load(*tp)
            get_logger("aggregate").info(
                "aggregation state read back",
                partition=f"{tp[0]}/{tp[1]}",
                open_windows=len(windows.windows),
                alerts_in_open_windows=sum(w.count for w in windows.windows.values()),
                watermark=rfc3339(windows.watermark) if math.isfinite(windows.watermark) else None,
            )
        self._touched.add(tp)
        return windows

    def add(
        self, tp: TopicPartitionKey, key: AggregateKey, event_time: float, offset: int, alert: dict[str, Any]
    ) -> bool:
        return self.windows(tp).add(key, event_time, offset, alert)

    def seen(self, tp: TopicPartitionKey, event_time: float, next_offset: int) -> None:
        """A batch read ``tp`` up to ``next_offset``; its latest record's event time moves the watermark."""
        windows = self.windows(tp)
        if not math.isnan(event_time):
            windows.advance(event_time)
        self.positions[tp] = next_offset

    def advance(self, watermark: float) -> None:
        """A timer: move the watermark of every partition with a window ending by ``watermark`` there (so an
        idle partition's windows close); partitions with nothing to close are left alone (nothing to write)."""
        for tp, windows in self.partitions.items():
            if tp in self.positions and any(w.end <= watermark for w in windows.windows.values()):
                windows.advance(watermark)
                self._touched.add(tp)

    def pending(self) -> frozenset[TopicPartitionKey]:
        """The partitions changed since the last :meth:`take`."""
        return frozenset(self._touched)

    def take(self) -> Folded:
        """Close what the watermarks passed and collect the changelog records of every partition touched."""
        folded = Folded()
        touched, self._touched = self._touched, set()
        for tp in sorted(touched):
            windows = self.partitions.get(tp)
            if windows is None:
                continue
            topic, partition = tp
            folded.closed.extend((tp, window) for window in windows.close())
            open_, gone, _moved = windows.take_changes()
            # The watermark only matters once it has closed a window (a record older than a closed window must
            # not open it again after a restart), so it is written with closures, not with every batch: a batch
            # that changes no window then produces nothing and commits without a transaction.
            if gone:
                value = orjson.dumps({"watermark": windows.watermark})
                folded.changelog.append(StateRecord(partition, watermark_key(topic, partition), value))
            for window in open_:
                value = orjson.dumps(window.state())
                folded.changelog.append(
                    StateRecord(partition, window_key(topic, partition, window.key, window.start), value)
                )
            for key, start in gone:
                folded.changelog.append(StateRecord(partition, window_key(topic, partition, key, start), None))
        return folded

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Drop the in-memory state of ``partitions`` (revoked, lost, or rewound): read back when next needed."""
        for tp in partitions:
            self.partitions.pop(tp, None)
            self.positions.pop(tp, None)
            self._touched.discard(tp)


class ChangelogReader:
    """Reads one input partition's windows back from the changelog topic (``read_committed``, to its end)."""

    def __init__(self, config: dict[str, Any], topic: str, length: float, timeout: float = READ_TIMEOUT_S) -> None:
        self.topic = topic
        self.length = length
        self.timeout = timeout
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"flowwarden-changelog-reader-{topic}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )

    def load(self, input_topic: str, partition: int) -> PartitionWindows:
        """The state of ``input_topic``/``partition`` as of the last committed write (raises AggregateStateError).

        Reads until the consumer meets the partition's end (partition EOF) at or past the high watermark that
        ListOffsets gave: with ``read_committed`` the end stops short while a transaction is open there (e.g.
        the previous owner's, until it is aborted or completes), so this waits for it, up to ``timeout``. Not
        the high watermark alone: the embedded Tansu answers ListOffsets with its last batch's first offset + 1
        (docs/tansu.md), so a position past it can still leave that batch's later records unread.
        """
        deadline = time.monotonic() + self.timeout
        tp = TopicPartition(self.topic, partition, OFFSET_BEGINNING)
        try:
            _low, high = self._consumer.get_watermark_offsets(tp, timeout=self.timeout)
        except KafkaException as exc:
            raise AggregateStateError(f"cannot read {self.topic}/{partition}: {exc.args[0].str()}") from exc
        windows: dict[bytes, dict[str, Any]] = {}
        watermark = -math.inf
        if high > 0:
            self._consumer.assign([tp])
            try:
                position, at_end = 0, False
                while not at_end:
                    if time.monotonic() > deadline:
                        raise AggregateStateError(
                            f"reading {self.topic}/{partition} back did not reach offset {high} within "
                            f"{self.timeout:.0f} s (stopped at {position}: a transaction still open there?)"
                        )
                    for message in self._consumer.consume(1000, 0.2):
                        error = message.error()
                        if error is None:
                            watermark = self._apply(
                                message.key(), message.value(), input_topic, partition, windows, watermark
                            )
                        elif error.code() == KafkaError._PARTITION_EOF and message.offset() >= high:
                            at_end = True
                    got = self._consumer.position([TopicPartition(self.topic, partition)])[0].offset
                    position = max(position, got)
            finally:
                self._consumer.unassign()
        restored = [Window.from_state(orjson.loads(value)) for value in windows.values()]
        return PartitionWindows(self.length, watermark=watermark, windows=restored)

    @staticmethod
    def _apply(
        key: bytes | None,
        value: bytes | None,
        input_topic: str,
        partition: int,
        windows: dict[bytes, Any],
        watermark: float,
    ) -> float:
        if key is None:
            return watermark
        parts = orjson.loads(key)
        if parts[1] != input_topic or parts[2] != partition:
            return watermark
        if parts[0] == "p":
            return float(orjson.loads(value)["watermark"]) if value is not None else watermark
        if value is None:
            windows.pop(key, None)
        else:
            windows[key] = value
        return watermark

    def close(self) -> None:
        self._consumer.close()
