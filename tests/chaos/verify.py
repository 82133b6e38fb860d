"""Checking a chaos run from what reached the output and dead-letter topics (read_committed).

Every input offset must have exactly one verdict or dead letter (exactly-once) or at least one
(at-least-once); every hostile record a dead letter with its reason; every verdict the label that
``detector score`` gives its row with the bundle version the verdict names. Stalls are read from the output
messages' timestamps: per fault, the longest gap between verdicts of one input partition after it (see
:func:`stalls` for how a gap that outlasts its fault is attributed), summed up by :func:`stall_summary`.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.chaos.faults import LOST, Fault
from tests.support.kafka import reader


@dataclass
class Outcome:
    """What the output topics hold, per input ``(partition, offset)``."""

    verdicts: Counter[tuple[int, int]] = field(default_factory=Counter)
    labels: dict[tuple[int, int], set[tuple[str, str]]] = field(default_factory=dict)  # {(version, label)}
    output_ms: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # partition -> timestamps
    first_output_ms: dict[tuple[int, int], int] = field(default_factory=dict)
    dead: Counter[tuple[int, int]] = field(default_factory=Counter)
    dead_reasons: dict[tuple[int, int], str] = field(default_factory=dict)


def read_outcome(
    bootstrap: str, output_topic: str, dlq_topic: str, wanted: set[tuple[int, int]], timeout: float, idle: float = 3.0
) -> Outcome:
    """Read both topics from the start until every ``wanted`` input record has a verdict or a dead letter (or
    ``timeout`` s pass), then ``idle`` s more for late duplicates."""
    outcome = Outcome()
    missing = set(wanted)
    with reader(bootstrap, output_topic, True) as alerts, reader(bootstrap, dlq_topic, True) as dead:
        deadline = time.monotonic() + timeout
        quiet_until: float | None = None
        while time.monotonic() < (quiet_until or deadline):
            got = 0
            for message in alerts.consume(500, 0.2):
                if message.error() is not None:
                    continue
                got += 1
                alert = orjson.loads(message.value())
                source = (alert["source"]["partition"], alert["source"]["offset"])
                outcome.verdicts[source] += 1
                outcome.labels.setdefault(source, set()).add((alert["model"]["version"], alert["label"]))
                stamp = message.timestamp()[1]
                outcome.output_ms[source[0]].append(stamp)
                outcome.first_output_ms.setdefault(source, stamp)
                missing.discard(source)
            for message in dead.consume(500, 0.05):
                if message.error() is not None:
                    continue
                got += 1
                headers = {name: value.decode() for name, value in message.headers() or []}
                source = (int(headers["flowwarden.source_partition"]), int(headers["flowwarden.source_offset"]))
                outcome.dead[source] += 1
                outcome.dead_reasons[source] = (
                    headers.get("flowwarden.reason_code", "") + ": " + headers.get("flowwarden.reason", "")
                )
                missing.discard(source)
            if not missing and quiet_until is None:
                quiet_until = time.monotonic() + idle
    return outcome


def check(
    outcome: Outcome,
    where: dict[tuple[int, int], int],
    hostile: set[int],
    expected: dict[str, dict[int, str]],
) -> dict[str, int]:
    """Counts of what went wrong: lost, duplicated, hostile not dead-lettered, scoreable dead-lettered, and
    verdicts whose label differs from ``expected[version][index]`` (or that name an unknown version)."""
    lost = duplicated = hostile_missing = wrongly_dead = mismatched = 0
    for source, index in where.items():
        verdicts, dead = outcome.verdicts[source], outcome.dead[source]
        if verdicts + dead == 0:
            lost += 1
        elif verdicts + dead > 1:
            duplicated += 1
        if index in hostile:
            if dead == 0 or not outcome.dead_reasons.get(source, "").strip(": "):
                hostile_missing += 1
            continue
        if dead:
            wrongly_dead += 1
        for version, label in outcome.labels.get(source, ()):
            if expected.get(version, {}).get(index) != label:
                mismatched += 1
    return {
        "lost": lost,
        "duplicated": duplicated,
        "hostile_not_dead_lettered": hostile_missing,
        "flows_dead_lettered": wrongly_dead,
        "mismatched_verdicts": mismatched,
    }


def latency_p99_ms(outcome: Outcome, sent_at_ms: dict[tuple[int, int], int]) -> float | None:
    """99th percentile of (first verdict's timestamp - input record's timestamp)."""
    delays = sorted(outcome.first_output_ms[s] - sent for s, sent in sent_at_ms.items() if s in outcome.first_output_ms)
    return float(delays[min(len(delays) - 1, int(0.99 * len(delays)))]) if delays else None


def _longest_gap(stamps: list[int], start_ms: int, end_ms: int) -> float:
    inside = [s for s in stamps if start_ms < s <= end_ms]
    points = [start_ms, *inside, end_ms]
    return max(b - a for a, b in itertools.pairwise(points)) / 1000.0


def _first_after(stamps: list[int], ms: int) -> int | None:
    at = bisect.bisect_right(stamps, ms)
    return stamps[at] if at < len(stamps) else None


def _silent(stamps: list[int], after_ms: int, until_ms: int) -> bool:
    """Whether the partition has no verdict in (after_ms, until_ms]."""
    first = _first_after(stamps, after_ms)
    return first is None or first > until_ms


@dataclass(frozen=True)
class Stall:
    """A fault's longest verdict gap over every input partition (``all``) and over the partitions the worker
    it hit did not own (``survivors``; None for a fault that hits no single worker: a broker, a hot swap)."""

    all: float
    survivors: float | None


SINGLE_WORKER_KINDS = ("worker_kill9", "worker_sigterm", "worker_added", "network_cut", "slow_output", "worker_lost")


def stalls(outcome: Outcome, faults: list[Fault], partitions: int) -> list[Stall]:
    """Per fault, the longest gap between verdicts (output timestamps) of one input partition after it.

    A fault's window runs from its start to the next fault's start (the last fault's: to the last verdict),
    and a gap is measured from the fault's start or a verdict to the next verdict. A partition still silent
    from the previous fault, with no verdict since that fault returned (a removed worker's partitions waiting
    for its session timeout, a broker's failover), is not this fault's: its gap is measured whole for the
    previous fault, up to the partition's first verdict, and for this fault only from that verdict on. So
    each number is the stall that followed its own fault, whichever fault came next. Nothing is measured past
    a partition's last verdict: the replay is over there (a record never answered is a loss, :func:`check`'s).
    """
    stamps = {p: sorted(outcome.output_ms.get(p, [])) for p in range(partitions)}
    last_ms = max((s[-1] for s in stamps.values() if s), default=0)
    starts = [int(f.started * 1000) for f in faults]
    ends = [int(f.ended * 1000) for f in faults]
    result = []
    for i, fault in enumerate(faults):
        nominal_end = min(starts[i + 1], last_ms) if i + 1 < len(faults) else last_ms
        gaps: dict[int, float] = {}
        for p, times in stamps.items():
            begin = starts[i]
            if i > 0 and _silent(times, ends[i - 1], starts[i]):  # still the previous fault's stall
                begin = _first_after(times, starts[i]) or last_ms
            end = nominal_end
            if i + 1 < len(faults) and _silent(times, ends[i], starts[i + 1]):  # this fault's stall goes on
                end = max(nominal_end, _first_after(times, starts[i + 1]) or last_ms)
            end = min(end, times[-1]) if times else end  # after its last verdict a partition has no records left
            gaps[p] = _longest_gap(times, begin, end) if end > begin else 0.0
        survivors = [gap for p, gap in gaps.items() if p not in fault.affected]
        single = fault.kind in SINGLE_WORKER_KINDS
        result.append(Stall(max(gaps.values(), default=0.0), (max(survivors, default=0.0) if single else None)))
    return result


RESTARTS_IN_PLACE = ("worker_kill9", "worker_sigterm")


def _worst(stalls: list[Stall]) -> dict[str, float | None]:
    survivors = [s.survivors for s in stalls if s.survivors is not None]
    return {
        "survivors": round(max(survivors), 2) if survivors else None,
        "all": round(max((s.all for s in stalls), default=0.0), 2),
    }


def stall_summary(faults: list[Fault], per_fault: list[Stall], session_timeout_s: float) -> dict[str, Any]:
    """The stall keys of the chaos JSON line, from the faults that were injected (failed ones left out):

    * ``max_stall_s``: ``restarts_in_place`` (kill -9 and SIGTERM, the worker back in its slot) and
      ``other_faults`` (every other kind but the loss for good), each ``{"survivors", "all"}`` in seconds;
    * ``stall_by_fault``: per kind, ``{"count", "survivors", "all"}`` (survivors None for broker and hot swap);
    * ``lost_for_good``: the ``worker_lost`` fault's stall (``all``: its partitions, which wait for the
      session timeout; ``survivors``: the other worker's), ``moved_after_s`` (until the other worker owned
      them) and ``session_timeout_s`` in force; None when the run had no such fault.
    """
    done = [(f, s) for f, s in zip(faults, per_fault, strict=True) if f.error is None]
    restarts = [s for f, s in done if f.kind in RESTARTS_IN_PLACE]
    others = [s for f, s in done if f.kind not in RESTARTS_IN_PLACE and f.kind != LOST]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({f.kind for f, _ in done}):
        of_kind = [s for f, s in done if f.kind == kind]
        by_kind[kind] = {"count": len(of_kind), **_worst(of_kind)}
    lost = next(((f, s) for f, s in done if f.kind == LOST), None)
    return {
        "max_stall_s": {"restarts_in_place": _worst(restarts), "other_faults": _worst(others)},
        "stall_by_fault": by_kind,
        "lost_for_good": None
        if lost is None
        else {
            "all": round(lost[1].all, 2),
            "survivors": round(lost[1].survivors or 0.0, 2),
            "moved_after_s": round(lost[0].ended - lost[0].started, 2),
            "session_timeout_s": session_timeout_s,
        },
    }
