"""The flows a replay sends, in the order it sends them.

Rows are read lazily and turned into encoded records at once (``orjson`` bytes are several times smaller
than a dict of 90 strings), so a shuffle buffer of tens of thousands of flows stays in the low hundreds of
MB. Orders:

* ``shuffle`` (default): a seeded, bounded shuffle buffer. The public sample files are grouped by class, so
  an unshuffled replay shows the detector one class at a time, which no real network does. An input that
  fits the buffer is shuffled uniformly; a larger one is shuffled within a window of ``buffer`` flows.
* ``file``: as read, file after file.
* ``time``: by flow timestamp (the whole input is held in memory to sort it; rows without a usable
  timestamp are skipped and counted).

Rows are never dropped silently: a row with fewer cells than its header, or without a usable timestamp
when one is needed, is counted under its reason; a file that breaks off (a truncated gzip, a malformed
CSV line) is reported with the number of rows read before the break.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from detector.core.csvfile import read_header, read_rows
from detector.core.flowrecord import layout_for, record_key, row_label, to_record
from detector.core.flowtime import flow_time

Order = Literal["shuffle", "file", "time"]
ORDERS: tuple[str, ...] = ("shuffle", "file", "time")
DEFAULT_SHUFFLE_BUFFER = 50_000
SHORT_ROW = "row has fewer cells than the header"
LONG_ROW = "row has more cells than the header"
NO_TIMESTAMP = "no usable flow timestamp"


class SourceError(ValueError):
    """The input cannot be replayed as asked (e.g. --order time on files without timestamps)."""


@dataclass(frozen=True, slots=True)
class OutgoingFlow:
    """One encoded flow record ready to produce, with what the replay reports about it."""

    key: bytes | None
    value: bytes
    label: str | None
    time: float | None


@dataclass
class SourceStats:
    """What reading found. ``rows_per_pass`` is known once a whole pass has been read."""

    rows_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    broken_files: list[str] = field(default_factory=list)
    rows_per_pass: int | None = None

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())


def check_timestamps(files: Sequence[Path]) -> None:
    """Raise :class:`SourceError` unless every file has a flow timestamp column (before connecting anywhere)."""
    for path in files:
        header = read_header(path)
        if header and layout_for(tuple(header)).timestamp_column is None:
            raise SourceError(_no_timestamp(path))


def read_flows(
    files: Sequence[Path], *, with_labels: bool, need_time: bool, stats: SourceStats
) -> Iterator[OutgoingFlow]:
    """Every usable row of ``files`` as an :class:`OutgoingFlow`, in file order."""
    for path in files:
        header = read_header(path)
        if not header:
            continue
        layout = layout_for(tuple(header))
        if need_time and layout.timestamp_column is None:
            raise SourceError(_no_timestamp(path))
        read = 0
        try:
            for row in read_rows(path):
                read += 1
                stats.rows_read += 1
                if len(row) != len(header):
                    stats.skipped[SHORT_ROW if len(row) < len(header) else LONG_ROW] += 1
                    continue
                moment = flow_time(row[layout.timestamp_column]) if layout.timestamp_column else None
                if need_time and moment is None:
                    stats.skipped[NO_TIMESTAMP] += 1
                    continue
                record = to_record(row, layout, with_labels=with_labels)
                yield OutgoingFlow(record_key(row, layout), orjson.dumps(record), row_label(row, layout), moment)
        except (csv.Error, OSError, EOFError, UnicodeError) as exc:
            stats.broken_files.append(f"{path}: unreadable after {read} rows ({exc})")


def shuffled(flows: Iterable[OutgoingFlow], buffer: int, rng: random.Random) -> Iterator[OutgoingFlow]:
    """A bounded-memory shuffle: a uniform permutation when the input fits ``buffer``, a windowed one else."""
    pool: list[OutgoingFlow] = []
    for flow in flows:
        if len(pool) < buffer:
            pool.append(flow)
            continue
        slot = rng.randrange(buffer)
        yield pool[slot]
        pool[slot] = flow
    rng.shuffle(pool)
    yield from pool


def ordered_flows(
    files: Sequence[Path],
    order: Order,
    *,
    with_labels: bool,
    need_time: bool = False,
    seed: int = 0,
    buffer: int = DEFAULT_SHUFFLE_BUFFER,
    loop: bool = False,
    stats: SourceStats | None = None,
) -> Iterator[OutgoingFlow]:
    """The flows to send, in ``order``; with ``loop`` the input repeats (reshuffled) until the caller stops."""
    stats = stats if stats is not None else SourceStats()
    rng = random.Random(seed)
    need_time = need_time or order == "time"
    while True:
        counted = _Counted(read_flows(files, with_labels=with_labels, need_time=need_time, stats=stats), stats)
        if order == "shuffle":
            stream: Iterable[OutgoingFlow] = shuffled(counted, max(1, buffer), rng)
        elif order == "time":
            stream = sorted(counted, key=lambda flow: flow.time or 0.0)
        else:
            stream = counted
        yield from stream
        if not loop or not counted.count:
            return


def _no_timestamp(path: Path) -> str:
    return f"{path} has no flow timestamp column (Timestamp, timestamp or Stime): --order time and --speedup need one"


class _Counted:
    """Counts the flows of one pass and records the total in ``stats`` when the pass is fully read."""

    def __init__(self, flows: Iterator[OutgoingFlow], stats: SourceStats) -> None:
        self._flows = flows
        self._stats = stats
        self.count = 0

    def __iter__(self) -> Iterator[OutgoingFlow]:
        for flow in self._flows:
            self.count += 1
            yield flow
        if self._stats.rows_per_pass is None:
            self._stats.rows_per_pass = self.count
