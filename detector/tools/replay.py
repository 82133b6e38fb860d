"""``detector replay``: stream flow CSVs into a Kafka topic as the JSON records a flow meter would send.

This is how users test a deployment with real, labelled traffic (CICIDS2017, UNSW-NB15, any CICFlowMeter
output) and how the demo feeds its worker. Records are keyed by flow (so one flow's records stay in order),
paced by a token bucket (``--rate``) or the recorded inter-flow times (``--speedup``), and every record is
accounted for: delivered, failed (the exit status is then non-zero) or skipped with a reason.

:func:`replay` is the engine (the demo runs it in a thread with a stop event); :func:`run_command` is the
CLI around it: settings, a progress bar and a summary on stderr.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from detector.core.csvfile import CsvSourceError, csv_files, read_header
from detector.core.process import ExitCode, sigterm_interrupts
from detector.core.settings import redact
from detector.stream.logs import console_librdkafka_logger
from detector.stream.topics import TopicError, ensure_configured_topics
from detector.tools.pacing import TimelinePacer, TokenBucket
from detector.tools.replay_follow import FollowedFiles, followable, is_followed_name
from detector.tools.replay_source import (
    Order,
    OutgoingFlow,
    SourceError,
    SourceStats,
    check_timestamps,
    ordered_flows,
)
from detector.tools.settings import ReplaySettings

FLUSH_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 0.2
# Replay defaults; anything given with --kafka-option or [kafka] wins.
PRODUCER_DEFAULTS = {"linger.ms": "10", "enable.idempotence": "true", "client.id": "flowwarden-replay"}


class ReplayError(ValueError):
    """Options that contradict each other or cannot be served; the message says which."""


@dataclass
class ReplayStats:
    """Everything the summary reports. Counters are only written by the replaying thread."""

    topic: str
    with_labels: bool = False
    partitions: int = 0
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)
    source: SourceStats = field(default_factory=SourceStats)
    total: int | None = None
    interrupted: bool = False
    started: float = field(default_factory=time.monotonic)
    first_send: float | None = None
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def achieved_rate(self) -> float:
        """Delivered records per second, from the first send to the end of the flush."""
        if self.first_send is None:
            return 0.0
        span = (self.finished or time.monotonic()) - self.first_send
        return self.delivered / span if span > 0 else 0.0


class _Stopped(Exception):
    """The stop event was set while pacing."""


def effective_order(settings: ReplaySettings) -> Order:
    """The order to replay in; raises :class:`ReplayError` for contradicting options."""
    if settings.rate is not None and settings.speedup is not None:
        raise ReplayError("--rate and --speedup exclude each other: pace by a fixed rate or by recorded times")
    if settings.follow:
        clash = [
            flag
            for flag, given in (
                ("--speedup", settings.speedup is not None),
                (f"--order {settings.order}", settings.order not in (None, "file")),
                ("--loop", settings.loop),
            )
            if given
        ]
        if clash:
            raise ReplayError(f"--follow sends rows as they are written, in file order: it excludes {', '.join(clash)}")
        return "file"
    if settings.speedup is not None:
        if settings.order not in (None, "time"):
            raise ReplayError(
                f"--speedup replays recorded inter-flow times, so it needs --order time (not {settings.order})"
            )
        return "time"
    return settings.order or "shuffle"


def producer_config(settings: ReplaySettings) -> dict[str, str]:
    return {**PRODUCER_DEFAULTS, **settings.librdkafka()}


def replay(
    files: Sequence[Path],
    settings: ReplaySettings,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[ReplayStats], None] | None = None,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Replay ``files`` into ``settings.topic``; returns when done, at the limit, on ``stop`` or on Ctrl-C.

    The topic is created when missing. The producer is always flushed before returning; records still
    queued when the flush times out count as failed. Pass ``stats`` to watch progress from another thread.
    """
    order = effective_order(settings)
    stats = stats if stats is not None else ReplayStats(settings.topic, settings.with_labels)
    stats.partitions = ensure_configured_topics(
        settings, [settings.topic], logger=console_librdkafka_logger("librdkafka.admin")
    )[settings.topic]
    # librdkafka's lines thinned out: an unreachable broker would otherwise print 20 of them a second.
    producer = Producer({**producer_config(settings), "logger": console_librdkafka_logger("librdkafka.producer")})
    pace = _pacer(settings, stop)
    flows: Generator[OutgoingFlow, None, None]
    if settings.follow:
        followed = FollowedFiles(
            files, with_labels=settings.with_labels, stats=stats.source, from_end=settings.follow_from == "end"
        )
        flows = followed.flows(functools.partial(_idle, producer, stop), settings.poll_seconds)
    else:
        flows = ordered_flows(
            files,
            order,
            with_labels=settings.with_labels,
            need_time=settings.speedup is not None,
            seed=settings.seed,
            buffer=settings.shuffle_buffer,
            loop=settings.loop,
            stats=stats.source,
        )
    limit = settings.limit
    last_report = 0.0
    try:
        for flow in flows:
            if stop is not None and stop.is_set():
                raise _Stopped
            pace(flow.time)
            on_delivery = functools.partial(_delivered, stats, flow.label)
            _produce(producer, settings.topic, flow.key, flow.value, on_delivery)
            producer.poll(0)  # serve delivery callbacks as they come, so the counts stay current
            stats.produced += 1
            if stats.first_send is None:
                stats.first_send = time.monotonic()
            if limit is not None and stats.produced >= limit:
                break
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                stats.total = _expected_total(settings, stats.source)
                if on_progress is not None:
                    on_progress(stats)
    except (KeyboardInterrupt, _Stopped):
        stats.interrupted = True
    finally:
        flows.close()
        _flush(producer, stats)
        stats.finished = time.monotonic()
        stats.total = _expected_total(settings, stats.source)
        if on_progress is not None:
            on_progress(stats)
    return stats


def _idle(producer: Producer, stop: threading.Event | None, seconds: float) -> None:
    """Wait for a followed file to grow, serving delivery reports meanwhile (in short polls: Ctrl-C gets in)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        producer.poll(min(0.1, left))
        if stop is not None and stop.is_set():
            raise _Stopped


def _pacer(settings: ReplaySettings, stop: threading.Event | None) -> Callable[[float | None], None]:
    def sleep(seconds: float) -> None:
        if stop is None:
            time.sleep(seconds)
        elif stop.wait(seconds):
            raise _Stopped

    if settings.rate is not None:
        bucket = TokenBucket(settings.rate, sleep=sleep)
        return lambda _moment: bucket.acquire()
    if settings.speedup is not None:
        timeline = TimelinePacer(settings.speedup, sleep=sleep)
        return lambda moment: timeline.wait_for(moment or 0.0)
    return lambda _moment: None


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes, callback: Callable[..., None]) -> None:
    """Hand one record to the producer; a record it refuses outright (e.g. too large) fails like a delivery."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)  # the local queue is full: let deliveries drain it
        except KafkaException as exc:
            callback(exc.args[0], None)
            return


def _delivered(stats: ReplayStats, label: str | None, error: KafkaError | None, message: Message | None) -> None:
    if error is not None:
        stats.failed += 1
        stats.failures[error.str()] += 1
        return
    stats.delivered += 1
    if label is not None:
        stats.labels[label] += 1


def _flush(producer: Producer, stats: ReplayStats) -> None:
    try:
        left = producer.flush(FLUSH_TIMEOUT_S)
    except KeyboardInterrupt:
        stats.interrupted = True
        left = len(producer)
    if left:
        stats.failed += left
        stats.failures[f"still queued when the flush ended ({FLUSH_TIMEOUT_S:g} s)"] += left


def _expected_total(settings: ReplaySettings, source: SourceStats) -> int | None:
    """How many records this replay will send, when that is known (for the ETA)."""
    if settings.loop or settings.follow:
        return settings.limit
    if source.rows_per_pass is None:
        return settings.limit
    return source.rows_per_pass if settings.limit is None else min(settings.limit, source.rows_per_pass)


def exit_status(stats: ReplayStats, *, follow: bool = False) -> int:
    """0 when everything sent was delivered; 130 when interrupted, except when following, which only ends so."""
    if stats.failed:
        return ExitCode.FAILURE
    return ExitCode.INTERRUPTED if stats.interrupted and not follow else ExitCode.OK


def summary_lines(stats: ReplayStats, *, follow: bool = False) -> list[str]:
    """The final report, one fact per line (plain text: it also goes to logs)."""
    verb = ("stopped after" if follow else "interrupted after") if stats.interrupted else "done:"
    lead = (stats.first_send - stats.started) if stats.first_send is not None else 0.0
    reading = f", the first {lead:.1f} s spent reading the input" if lead >= 0.1 else ""
    lines = [
        f"replay {verb} {stats.delivered:,} records delivered to topic {stats.topic!r} "
        f"({stats.partitions} partitions) in {stats.elapsed:.1f} s{reading}; "
        f"{stats.achieved_rate:,.1f} flows/s while sending",
    ]
    if stats.labels:
        shown = " · ".join(f"{label} {count:,}" for label, count in stats.labels.most_common())
        sent = "" if stats.with_labels else " (in the files; not sent without --with-labels)"
        lines.append(f"labels{sent}: {shown}")
    source = stats.source
    lines.append(f"rows read: {source.rows_read:,}; rows skipped: {source.rows_skipped:,}")
    lines.extend(f"  skipped {count:,}: {reason}" for reason, count in source.skipped.most_common())
    lines.extend(f"  file cut short: {problem}" for problem in source.broken_files)
    lines.append(f"delivery failures: {stats.failed:,}")
    lines.extend(f"  {count:,} × {reason}" for reason, count in stats.failures.most_common())
    return lines


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} flows/s" if speed else "– flows/s", style="progress.data.speed")


def run_command(settings: ReplaySettings) -> int:
    """``detector replay`` from its settings; returns the exit status."""
    console = Console(stderr=True)
    try:
        order = effective_order(settings)
        files = _followed_paths(settings.csv) if settings.follow else csv_files(settings.csv)
        for path in _existing_files(files):
            read_header(path)  # refuses a pcap, a gzip file without .gz or UTF-16 text up front
        if order == "time":
            check_timestamps(files)
    except (CsvSourceError, ReplayError, SourceError) as exc:
        console.print(f"detector replay: error: {exc}", markup=False, soft_wrap=True)
        return ExitCode.USAGE
    what = f"following {len(files)} path(s)" if settings.follow else f"replaying {len(files)} file(s)"
    console.print(
        f"{what} to {settings.topic!r} on {settings.bootstrap_servers} "
        f"({order} order{_pace_text(settings)}); client settings {redact(producer_config(settings))}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    columns = (
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    try:
        with sigterm_interrupts(), Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("replay", total=settings.limit)

            def show(stats: ReplayStats) -> None:
                bar.update(task, completed=stats.produced, total=stats.total)

            stats = replay(files, settings, on_progress=show)
    except KeyboardInterrupt:
        console.print("detector replay: interrupted before the first record was sent", markup=False)
        return ExitCode.INTERRUPTED
    except (TopicError, SourceError, ReplayError) as exc:
        console.print(f"detector replay: error: {exc}", markup=False, soft_wrap=True)
        return ExitCode.USAGE
    except KafkaException as exc:
        console.print(f"detector replay: Kafka error: {exc.args[0].str()}", markup=False, soft_wrap=True)
        return ExitCode.USAGE
    for line in summary_lines(stats, follow=settings.follow):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if not stats.interrupted and stats.source.rows_read == 0:
        console.print("detector replay: the files hold no data rows", markup=False, soft_wrap=True)
        return ExitCode.FAILURE
    return exit_status(stats, follow=settings.follow)


def _followed_paths(paths: list[Path]) -> list[Path]:
    """The folders and ``.csv`` files to follow (a file may appear later); raises :class:`CsvSourceError`."""
    problem = followable(paths)
    if problem:
        raise CsvSourceError(problem)
    return [Path(path) for path in paths]


def _existing_files(paths: list[Path]) -> list[Path]:
    """The CSV files ``paths`` hold now: followed folders' ``.csv`` files, and the files named."""
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(child for child in path.iterdir() if is_followed_name(child) and child.is_file()))
        elif path.is_file():
            found.append(path)
    return found


def _pace_text(settings: ReplaySettings) -> str:
    if settings.rate is not None:
        return f", {settings.rate:g} flows/s"
    if settings.speedup is not None:
        return f", {settings.speedup:g}× recorded time"
    return ", as fast as possible"
