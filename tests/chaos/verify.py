"""Checking a chaos run from what reached the output and dead-letter topics (read_committed).

Every input offset must have exactly one verdict or dead letter (exactly-once) or at least one
(at-least-once); every hostile record a dead letter with its reason; every verdict the label that
``detector score`` gives its row with the bundle version the verdict names. Stalls are read from the output
messages' timestamps: per fault, the longest gap between verdicts of one input partition from the fault's
start until the next fault (or the end of the replay).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson

from tests.chaos.faults import Fault
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


def stalls(outcome: Outcome, faults: list[Fault], partitions: int) -> list[dict[str, float]]:
    """Per fault: the longest verdict gap over every input partition ("all") and over the partitions the
    fault's worker did not own ("survivors"), from the fault's start until the next fault starts or the last
    verdict, whichever comes first (a stall outlasting the replay is measured whole, the quiet after it is not)."""
    stamps = {p: sorted(outcome.output_ms.get(p, [])) for p in range(partitions)}
    last_ms = max((s[-1] for s in stamps.values() if s), default=0)
    result = []
    for i, fault in enumerate(faults):
        start_ms = int(fault.started * 1000)
        end_ms = min(int(faults[i + 1].started * 1000), last_ms) if i + 1 < len(faults) else last_ms
        if end_ms <= start_ms:
            result.append({"all": 0.0, "survivors": 0.0})
            continue
        gaps = {p: _longest_gap(stamps[p], start_ms, end_ms) for p in range(partitions)}
        survivors = [gap for p, gap in gaps.items() if p not in fault.affected]
        result.append({"all": max(gaps.values()), "survivors": max(survivors) if survivors else 0.0})
    return result
