"""Alert aggregation windows: at most one alert per (source IP, destination IP, label) per window.

Pure logic, no Kafka: :class:`PartitionWindows` holds the open windows of ONE input partition (the state of a
partition lives with the worker that owns it, so a rebalance moves it with the partition; see
:mod:`detector.stream.aggregate_state` for how it survives a crash).

Time is *event time*: the input record's Kafka timestamp (set by its producer, or the broker's log-append
time). It is in every record, and it is the same when a record is read again after a crash, so the window a
flow falls in, and with it the aggregate's id, does not depend on when the worker happened to score it.

* A window is ``[start, start + length)`` with ``start`` a multiple of ``length`` (epoch seconds).
* The partition's *watermark* is the greatest event time seen there. A window closes once the watermark
  reaches its end, i.e. when a later record of the partition arrives; :meth:`PartitionWindows.advance` lets
  a timer close windows of an idle partition (the worker moves the watermark to wall-clock time less one
  window length).
* A record older than the watermark's closed windows (out of order by more than the window) is counted in
  the window that holds the watermark, so a window is never opened again once closed: at most one
  aggregate per (partition, key, window start), and its id (:func:`aggregate_id`) is unique.
* Each window remembers the offset after the last record it counted (``next_offset``); a record below it was
  already counted (a redo after a crash under at-least-once, whose state was written ahead of the committed
  offsets) and is skipped.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["AggregateKey", "PartitionWindows", "Window", "aggregate_id", "rfc3339"]

#: (source IP, destination IP, label)
AggregateKey = tuple[str, str, str]
SAMPLES = 5


def aggregate_id(topic: str, partition: int, key: AggregateKey, start: float) -> str:
    """32 hex digits from the input partition, the key and the window start: the same after any redo."""
    text = "\x00".join((topic, str(partition), *key, repr(float(start))))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rfc3339(seconds: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds and a ``Z`` suffix (like ``detected_at``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Window:
    """One open aggregate: the first alert of the window stands for all of them (``alert``)."""

    key: AggregateKey
    start: float
    length: float
    alert: dict[str, Any]
    count: int = 0
    first_seen: float = math.inf
    last_seen: float = -math.inf
    next_offset: int = 0
    sample_alert_ids: list[str] = field(default_factory=list)
    sample_flow_ids: list[str] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.start + self.length

    def add(self, event_time: float, offset: int, alert: dict[str, Any]) -> None:
        self.count += 1
        self.first_seen = min(self.first_seen, event_time)
        self.last_seen = max(self.last_seen, event_time)
        self.next_offset = max(self.next_offset, offset + 1)
        if len(self.sample_alert_ids) < SAMPLES:
            self.sample_alert_ids.append(alert["alert_id"])
            flow_id = alert.get("flow", {}).get("flow_id")
            if flow_id and len(self.sample_flow_ids) < SAMPLES:
                self.sample_flow_ids.append(str(flow_id))

    def aggregated_alert(self, topic: str, partition: int) -> dict[str, Any]:
        """The alert to publish: the window's first alert, its id replaced by the aggregate's, plus ``aggregate``."""
        ident = aggregate_id(topic, partition, self.key, self.start)
        return {
            **self.alert,
            "alert_id": ident,
            "aggregate": {
                "id": ident,
                "count": self.count,
                "first_seen": rfc3339(self.first_seen),
                "last_seen": rfc3339(self.last_seen),
                "window_start": rfc3339(self.start),
                "window_end": rfc3339(self.end),
                "sample_alert_ids": list(self.sample_alert_ids),
                "sample_flow_ids": list(self.sample_flow_ids),
            },
        }

    def state(self) -> dict[str, Any]:
        """What the changelog keeps (JSON-ready); :meth:`from_state` reads it back."""
        return {
            "key": list(self.key),
            "start": self.start,
            "length": self.length,
            "alert": self.alert,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "next_offset": self.next_offset,
            "sample_alert_ids": self.sample_alert_ids,
            "sample_flow_ids": self.sample_flow_ids,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Window:
        src, dst, label = state["key"]
        return cls(
            key=(src, dst, label),
            start=float(state["start"]),
            length=float(state["length"]),
            alert=state["alert"],
            count=int(state["count"]),
            first_seen=float(state["first_seen"]),
            last_seen=float(state["last_seen"]),
            next_offset=int(state["next_offset"]),
            sample_alert_ids=list(state["sample_alert_ids"]),
            sample_flow_ids=list(state["sample_flow_ids"]),
        )


class PartitionWindows:
    """The open windows and the watermark of one input partition.

    Callers record which windows a batch changed (:attr:`changed`) and closed, to write them to the changelog
    with the batch (:meth:`take_changes`).
    """

    def __init__(self, length: float, *, watermark: float = -math.inf, windows: list[Window] | None = None) -> None:
        if length <= 0:
            raise ValueError("the window length must be positive")
        self.length = float(length)
        self.watermark = watermark
        self.windows: dict[tuple[AggregateKey, float], Window] = {(w.key, w.start): w for w in windows or []}
        self._changed: set[tuple[AggregateKey, float]] = set()
        self._watermark_changed = False

    def start_of(self, event_time: float) -> float:
        return math.floor(event_time / self.length) * self.length

    def add(self, key: AggregateKey, event_time: float, offset: int, alert: dict[str, Any]) -> bool:
        """Count one alert; False when the record was already counted (a redo below the window's offset)."""
        start = self.start_of(event_time)
        if self.watermark != -math.inf and start + self.length <= self.watermark:
            start = self.start_of(self.watermark)  # late for a closed window: counted in the current one
        window = self.windows.get((key, start))
        if window is None:
            window = self.windows[(key, start)] = Window(key, start, self.length, alert)
        elif offset < window.next_offset:
            return False
        window.add(event_time, offset, alert)
        self._changed.add((key, start))
        if event_time > self.watermark:
            self.watermark = event_time
            self._watermark_changed = True
        return True

    def advance(self, watermark: float) -> None:
        """Move the watermark forward (a timer, for an idle partition); never back."""
        if watermark > self.watermark:
            self.watermark = watermark
            self._watermark_changed = True

    def close(self) -> list[Window]:
        """Remove and return the windows the watermark has passed, oldest first."""
        due = [ident for ident, window in self.windows.items() if window.end <= self.watermark]
        closed = [self.windows.pop(ident) for ident in due]
        self._changed.update(due)
        return sorted(closed, key=lambda w: (w.start, w.key))

    def take_changes(self) -> tuple[list[Window], list[tuple[AggregateKey, float]], bool]:
        """(windows changed and still open, windows closed, whether the watermark moved) since the last call."""
        changed, self._changed = self._changed, set()
        moved, self._watermark_changed = self._watermark_changed, False
        open_ = [self.windows[ident] for ident in sorted(changed) if ident in self.windows]
        gone = sorted(ident for ident in changed if ident not in self.windows)
        return open_, gone, moved
