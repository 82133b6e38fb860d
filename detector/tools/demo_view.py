"""The demo's live view: what the worker's ``/metrics`` says, next to the replay's own progress.

The view reads the worker's Prometheus endpoint, the same numbers a dashboard would show, rather than
peeking into the worker: the demo thereby shows the metrics contract working. Latency quantiles are
estimated from histogram buckets the way Prometheus' ``histogram_quantile`` does (linear interpolation
inside the bucket), so they are as precise as the buckets, no more.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from detector.tools.replay import ReplayStats

Buckets = list[tuple[float, float]]


@dataclass
class Snapshot:
    """One scrape of a worker's metrics (zeros when the worker did not answer)."""

    taken_at: float = field(default_factory=time.monotonic)
    ok: bool = False
    records_in: float = 0.0
    verdicts: dict[tuple[str, bool], float] = field(default_factory=dict)
    alerts: dict[str, float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)
    novel: dict[str, float] = field(default_factory=dict)  # by predicted class
    end_to_end: Buckets = field(default_factory=list)
    batch: Buckets = field(default_factory=list)
    lag: float = 0.0

    @property
    def scored(self) -> float:
        return sum(self.verdicts.values())

    @property
    def dead(self) -> float:
        return sum(self.dead_letters.values())

    @property
    def alerts_out(self) -> float:
        return sum(self.alerts.values())


def parse_metrics(text: str) -> Snapshot:
    """A :class:`Snapshot` from Prometheus text exposition."""
    snap = Snapshot(ok=True)
    histograms: dict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name == "flowwarden_records_in_total":
                snap.records_in = value
            elif name == "flowwarden_verdicts_total":
                key = (labels.get("label", ""), labels.get("is_attack", "").lower() == "true")
                snap.verdicts[key] = value
            elif name == "flowwarden_alerts_out_total":
                snap.alerts[labels.get("label", "")] = value
            elif name == "flowwarden_dead_letters_total":
                snap.dead_letters[labels.get("reason_code", "")] = value
            elif name == "flowwarden_novel_flows_total":
                snap.novel[labels.get("label", "")] = value
            elif name == "flowwarden_consumer_lag":
                snap.lag += max(value, 0.0)
            elif name.endswith("_bucket") and name[: -len("_bucket")] in _HISTOGRAMS:
                histograms[name[: -len("_bucket")]][float(labels["le"])] = value
    snap.end_to_end = sorted(histograms["flowwarden_end_to_end_seconds"].items())
    snap.batch = sorted(histograms["flowwarden_batch_seconds"].items())
    return snap


_HISTOGRAMS = frozenset({"flowwarden_end_to_end_seconds", "flowwarden_batch_seconds"})


def scrape(url: str, timeout: float = 2.0) -> Snapshot:
    """Fetch and parse ``url``; a worker that does not answer gives an empty snapshot, not an error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return parse_metrics(response.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return Snapshot()


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram ``[(upper bound, count), ...]`` (None when empty)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound, as Prometheus answers
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def render(stats: ReplayStats, now: Snapshot, before: Snapshot | None, *, title: str, note: str) -> RenderableType:
    """The whole live view for one refresh."""
    return Panel(
        Group(_progress(stats, now), _worker_line(now, before), _classes(now), _dead_letters(now), note),
        title=title,
        title_align="left",
    )


def _progress(stats: ReplayStats, now: Snapshot) -> Table:
    total = stats.total or max(stats.produced, 1)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=9)
    grid.add_column(width=42)
    grid.add_column()
    grid.add_row(
        "replayed", ProgressBar(total=total, completed=stats.produced, width=40), _count(stats.produced, total)
    )
    scored = now.scored + now.dead
    grid.add_row("scored", ProgressBar(total=total, completed=scored, width=40), _count(int(scored), total))
    return grid


def _worker_line(now: Snapshot, before: Snapshot | None) -> str:
    if not now.ok:
        return "[yellow]worker metrics not answering yet[/yellow]"
    rate = 0.0
    if before is not None and before.ok and now.taken_at > before.taken_at:
        rate = (now.records_in - before.records_in) / (now.taken_at - before.taken_at)
    p50, p95 = histogram_quantile(now.end_to_end, 0.5), histogram_quantile(now.end_to_end, 0.95)
    batch95 = histogram_quantile(now.batch, 0.95)
    return (
        f"worker: [bold]{rate:,.0f}[/bold] flows/s · in {now.records_in:,.0f} · lag {now.lag:,.0f} · "
        f"end-to-end p50 [bold]{_ms(p50)}[/bold] p95 [bold]{_ms(p95)}[/bold] · batch p95 {_ms(batch95)}"
    )


def _classes(now: Snapshot) -> Table:
    table = Table(title="verdicts by predicted class (⚠ = attack alert)", title_justify="left", expand=False)
    table.add_column("class")
    table.add_column("verdicts", justify="right")
    table.add_column("alert?", justify="center")
    table.add_column("novel", justify="right")  # unlike the training data: the label is a guess
    for (label, attack), count in sorted(now.verdicts.items(), key=lambda item: -item[1]):
        novel = f"{now.novel.get(label, 0):,.0f}"
        table.add_row(f"[red]{label}[/red]" if attack else label, f"{count:,.0f}", "⚠" if attack else "", novel)
    return table


def _dead_letters(now: Snapshot) -> str:
    if not now.dead_letters or now.dead == 0:
        return "dead letters: 0"
    shown = ", ".join(f"{reason} {count:,.0f}" for reason, count in sorted(now.dead_letters.items()))
    return f"[yellow]dead letters: {now.dead:,.0f} ({shown})[/yellow]"


def _count(done: int, total: int) -> str:
    return f"{done:,} / {total:,}"


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:,.0f} ms"
