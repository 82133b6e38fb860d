"""Measuring the detector's parts side by side: model-only throughput, decoding against JSON parsing, serving
backends against the fp32 model, and a process's own CPU time.

Used by ``make bench`` (tests/bench/bench.py) and by :mod:`detector.tools.e2e`; nothing here asserts a time.
Throughputs are the best of ``repeat`` runs, interleaved between the things compared, because this machine is
shared: a slow run says something about the neighbours, the best run about the code. CPU seconds are the
process's own (all its threads), taken over the same runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch

from detector.core.bundle import Bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.scorer import Scorer

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads) so far; ``None``: this process.

    Another process's time is read from ``/proc/PID/stat`` (Linux), so a benchmark can charge a worker
    subprocess for its own CPU and not for the broker's or the load generator's beside it.
    """
    if pid is None or pid == os.getpid():
        return time.process_time()
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return _cpu_seconds(handle.read())


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of a process (Linux), split by thread: ``main`` (the thread that runs Python's main
    loop), ``librdkafka`` (the Kafka clients' own threads, which name themselves ``rdk:…``), ``other`` (the
    model's worker threads, Python's helper threads), and ``ended`` (threads that have exited: the kernel
    keeps their time in the process's total only, so it is the total less the live threads').

    It splits a worker's CPU between its own Python work and the Kafka clients' C threads, which a Python
    profiler does not see. The groups sum to :func:`process_cpu_seconds` read at about the same moment.
    """
    groups = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:  # the thread ended after the listing: its time is in "ended"
            continue
        name = raw[raw.index(b"(") + 1 : raw.rindex(b")")]
        group = "main" if int(task) == pid else "librdkafka" if name.startswith(b"rdk:") else "other"
        groups[group] += _cpu_seconds(raw)
    groups["ended"] = max(0.0, process_cpu_seconds(pid) - sum(groups.values()))
    return groups


def _cpu_seconds(stat: bytes) -> float:
    """utime + stime (fields 14 and 15) of a ``/proc/…/stat`` line, in seconds."""
    fields = stat.rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass(frozen=True)
class Rate:
    """The best of several timed runs over ``items`` things."""

    items: int
    seconds: float  # wall, best run
    cpu_seconds: float  # this process's CPU in the best run

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_ms_per_1000(self) -> float:
        """CPU milliseconds per 1,000 items."""
        return 1e6 * self.cpu_seconds / self.items if self.items else 0.0


def best_rates(runs: dict[str, tuple[Callable[[], Any], int]], repeat: int = 3) -> dict[str, Rate]:
    """Each ``name: (function, items)`` timed ``repeat`` times, interleaved, after one warm-up call each; the
    fastest run of each. Runs on a thread of its own, like the worker's scoring (torch's OpenMP threading
    differs between the main thread and others)."""
    best: dict[str, Rate] = {}

    def measure() -> None:
        for function, _ in runs.values():
            function()
        for _ in range(repeat):
            for name, (function, items) in runs.items():
                cpu, wall = time.process_time(), time.perf_counter()
                function()
                rate = Rate(items, time.perf_counter() - wall, time.process_time() - cpu)
                if name not in best or rate.seconds < best[name].seconds:
                    best[name] = rate

    on_thread(measure)
    return best


def on_thread(function: Callable[[], Any]) -> Any:
    """``function()`` run on a new thread; its result, or its exception re-raised here."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="measure")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def model_only(
    scorers: dict[str, Scorer], flows: Sequence[DecodedFlow], batch_sizes: Sequence[int], repeat: int = 3
) -> dict[str, dict[int, Rate]]:
    """``Scorer.scores`` (preprocessing, classifier, novelty model) on flows decoded beforehand, in batches of
    each size, for each named scorer: ``{name: {batch: Rate}}``."""
    runs: dict[str, tuple[Callable[[], Any], int]] = {}
    for name, scorer in scorers.items():
        for size in batch_sizes:
            parts = chunks(flows, size)
            runs[f"{name}/{size}"] = (lambda s=scorer, p=parts: [s.scores(part) for part in p], len(flows))
    rates = best_rates(runs, repeat)
    return {name: {size: rates[f"{name}/{size}"] for size in batch_sizes} for name in scorers}


def decode_against_parse(
    decoder: FlowDecoder, values: Sequence[bytes], repeat: int = 3, batch: int = 512
) -> dict[str, Rate]:
    """``FlowDecoder.decode_many`` in batches of ``batch`` (parse, then the numbers the bundle needs, as the
    worker decodes a batch) against ``orjson.loads`` alone on the same message values: how much decoding adds
    to the JSON parse every consumer of JSON pays anyway. ``decode_one`` is ``FlowDecoder.decode_bytes`` per
    record (the careful path, which every record the fast one refuses takes)."""
    loads, decode, many = orjson.loads, decoder.decode_bytes, decoder.decode_many
    parts = chunks(values, batch)
    return best_rates(
        {
            "parse": (lambda: [loads(v) for v in values], len(values)),
            "decode": (lambda: [many(part) for part in parts], len(values)),
            "decode_one": (lambda: [decode(v) for v in values], len(values)),
        },
        repeat,
    )


def compare_backends(
    bundle: Bundle, flows: Sequence[DecodedFlow], names: Sequence[str], device: str, reference: Scorer
) -> dict[str, dict[str, Any]]:
    """Each backend's labels and novelty flags on ``flows`` against ``reference`` (the fp32 model): the share
    of identical labels and flags, and the largest probability difference. A backend that cannot be built
    here reports its error instead. ``reference`` must not share ``bundle``'s modules when ``device`` differs
    from its own (a Scorer moves its bundle's modules to its device)."""
    expected = reference.scores(flows)
    labels, flags = expected.ranked(1)[:, 0], expected.novel()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            scores = Scorer(bundle, device, backend=name).scores(flows)
        except Exception as exc:  # a backend this torch or machine cannot run: reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        results[name] = {
            "label_agreement": float(np.mean(scores.ranked(1)[:, 0] == labels)) if len(labels) else 1.0,
            "novelty_flag_agreement": float(np.mean(scores.novel() == flags)) if len(flags) else 1.0,
            "max_probability_difference": float(np.abs(scores.probabilities - expected.probabilities).max())
            if len(labels)
            else 0.0,
            "rows": len(labels),
        }
    return results


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 99)) -> dict[float, float]:
    """``{p: value}`` for each percentile point of ``values`` (NaN when there are none)."""
    if not len(values):
        return {p: float("nan") for p in points}
    found = np.percentile(np.asarray(values, dtype=np.float64), list(points))
    return {p: float(v) for p, v in zip(points, found, strict=True)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on: cores, torch threads, load average at the time."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": [round(v, 2) for v in load],
    }
