"""Micro-batching consumed records: flush at ``max_batch`` records or ``max_delay`` after the first one.

The model is far cheaper per record on a batch than one record at a time, so the worker scores in
micro-batches; the delay bounds how long a record waits for company when traffic is light. A batch is
*due* when it holds ``max_batch`` records or its oldest record has waited ``max_delay`` seconds, whichever
comes first. The batcher may hold more than ``max_batch`` records (the worker keeps consuming while a
batch is being delivered); :meth:`Batcher.take` then hands them out ``max_batch`` at a time, oldest
first, and each remainder keeps the arrival time of its own oldest record.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Generic, Protocol, TypeVar


class _Record(Protocol):
    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...


RecordT = TypeVar("RecordT", bound=_Record)


class Batcher(Generic[RecordT]):
    """Accumulates records (confluent-kafka ``Message`` objects) in arrival order. Not thread-safe."""

    def __init__(self, max_batch: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.max_delay_s = max(0.0, max_delay_s)
        self._clock = clock
        self._chunks: deque[tuple[float, list[RecordT]]] = deque()  # (arrival time, records), oldest first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, records: Sequence[RecordT]) -> None:
        """Append records that arrived now."""
        if records:
            self._chunks.append((self._clock(), list(records)))
            self._size += len(records)

    def seconds_until_due(self) -> float | None:
        """0 when a batch is due now, the wait until the oldest record's deadline, or None when empty."""
        if not self._size:
            return None
        if self._size >= self.max_batch:
            return 0.0
        return max(0.0, self._chunks[0][0] + self.max_delay_s - self._clock())

    def due(self) -> bool:
        return self.seconds_until_due() == 0.0

    def take(self) -> list[RecordT]:
        """Remove and return up to ``max_batch`` of the oldest records (whether or not a batch is due)."""
        batch: list[RecordT] = []
        while self._chunks and len(batch) < self.max_batch:
            arrived, records = self._chunks[0]
            room = self.max_batch - len(batch)
            if len(records) <= room:
                batch.extend(records)
                self._chunks.popleft()
            else:
                batch.extend(records[:room])
                self._chunks[0] = (arrived, records[room:])
        self._size -= len(batch)
        return batch

    def drop_partitions(self, partitions: Collection[tuple[str, int]]) -> int:
        """Forget the records of ``partitions`` (revoked, or rewound to an earlier offset); returns how many."""
        if not partitions or not self._size:
            return 0
        wanted = set(partitions)
        kept: deque[tuple[float, list[RecordT]]] = deque()
        for arrived, records in self._chunks:
            remaining = [r for r in records if (r.topic(), r.partition()) not in wanted]
            if remaining:
                kept.append((arrived, remaining))
        dropped = self._size - sum(len(records) for _, records in kept)
        self._chunks, self._size = kept, self._size - dropped
        return dropped
