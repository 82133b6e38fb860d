"""What the worker did, counted: Prometheus metrics per batch and a periodic ``throughput`` log line.

The log line carries the counts since the previous one (records, scored, alerts, dead letters, batches) and
the record rate over that interval, so an operator reading logs alone sees the worker's pace.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import ScoredBatch


class Throughput:
    """Counts records in, batches submitted and batches delivered; logs a summary every ``every_s`` seconds."""

    def __init__(self, metrics: WorkerMetrics, log: Any, every_s: float) -> None:
        self.metrics = metrics
        self.log = log
        self.every_s = every_s
        self._totals = {"records": 0, "scored": 0, "alerts": 0, "dead_letters": 0, "batches": 0}
        self._base = dict(self._totals)
        self._next = time.monotonic() + every_s

    def records_in(self, count: int) -> None:
        self.metrics.records_in.inc(count)
        self._totals["records"] += count

    def submitted(self, batch: ScoredBatch, size: int, seconds: float) -> None:
        """A batch of ``size`` records was scored and handed to the delivery in ``seconds``."""
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.batch_size.observe(size)
        if batch.model_seconds:
            self.metrics.model_seconds.observe(batch.model_seconds)
        self._totals["batches"] += 1

    def delivered(self, batches: list[ScoredBatch]) -> None:
        """Batches whose outputs the broker acknowledged and whose offsets are committed."""
        if not batches:
            return
        now = time.time()
        m = self.metrics
        for batch in batches:
            for (label, is_attack), count in batch.verdicts.items():
                m.verdicts.labels(label=label, is_attack=str(is_attack).lower()).inc(count)
            for label, count in batch.alerts.items():
                m.alerts_out.labels(label=label).inc(count)
            for label, count in batch.aggregates.items():
                m.aggregates_out.labels(label=label).inc(count)
            for label, count in batch.novel.items():
                m.novel_flows.labels(label=label).inc(count)
            for code, count in batch.dead_letters.items():
                m.dead_letters.labels(reason_code=code).inc(count)
            stamps = batch.alert_timestamps
            if len(stamps):
                m.end_to_end_seconds.observe_many(np.maximum(now - stamps[~np.isnan(stamps)], 0.0))
            self._totals["scored"] += sum(batch.verdicts.values())
            self._totals["alerts"] += sum(batch.alerts.values())
            self._totals["dead_letters"] += sum(batch.dead_letters.values())

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def summary(self, **state: Any) -> None:
        """Log the counts since the last summary, with ``state`` (model version, assignment, buffer)."""
        now = time.monotonic()
        elapsed = max(1e-9, self.every_s - (self._next - now))
        delta = {key: value - self._base[key] for key, value in self._totals.items()}
        self.log.info("throughput", **delta, records_per_s=round(delta["records"] / elapsed, 1), **state)
        self._base = dict(self._totals)
        self._next = now + self.every_s
