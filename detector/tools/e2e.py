"""The worker end to end: a ``detector run`` subprocess against a broker, its throughput, its own CPU time per
flow, and the latency from a record's timestamp to its verdict at half the measured capacity.

For each delivery guarantee, on fresh topics:

1. **capacity**: ``flows`` records are produced into a 3-partition input topic *before* the worker starts;
   the clock and the worker process's CPU time (``/proc/PID/stat``: the worker's own threads, not the broker's
   nor this process's) start when the worker logs its partition assignment and stop when its metrics count
   every record scored. ``flows_per_s`` and ``worker_cpu_ms_per_1000`` come from that window, and
   ``worker_cpu_ms_per_1000_by_thread`` splits the same CPU time between the worker's main thread (decoding,
   scoring, verdicts, alerts, the Python side of the Kafka calls), librdkafka's own threads, and the others
   (:func:`~detector.tools.measure.thread_cpu_seconds`). The metrics are
   read at a quarter of the time the rest should take at the rate so far (:func:`next_poll_s`), so a few
   dozen scrapes end within 20 ms of the last record: the worker's CPU time includes every scrape's
   rendering, and a fixed 20 ms poll (about 300 scrapes in a 6-second run) had cost it about a fifth of its
   own time (median 142.5 against 109 ms per 1,000 flows, five alternating runs each, 2026-12-05).
2. **latency**: the same worker then gets records at half that rate, each stamped with the time it was
   produced; a ``read_committed`` consumer (what a downstream reader sees, so exactly-once's commit is
   included) takes each verdict's arrival minus its record's timestamp. ``--emit all`` gives every record a
   verdict.

:func:`measure_group` measures the capacity of several workers in one consumer group on the same preloaded
topic (scale-out): from the moment every worker holds a partition until every record is scored.

``cpu_ratio_vs_model`` divides the worker's CPU per 1,000 flows by the model-only CPU per 1,000 flows that the
caller measured (``Scorer.scores`` at the same batch size, see :mod:`detector.tools.measure`): 1.0 would be a
worker that costs nothing beside its model.

Run alone (it starts an embedded broker unless ``--bootstrap-servers`` is given)::

    python -m detector.tools.e2e --bundle runs/q/bundle --csv runs/q/test_split.csv.gz [--flows 30000]

It prints one JSON object; ``make bench`` runs it as part of its line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from detector.core.csvfile import csv_files
from detector.stream.topics import ensure_topics
from detector.tools.broker import EmbeddedBroker
from detector.tools.measure import percentiles, process_cpu_seconds, thread_cpu_seconds
from detector.tools.replay_source import SourceStats, read_flows

GUARANTEES = ("exactly-once", "at-least-once")
PARTITIONS = 3
# Tansu answers a JoinGroup after about half the session timeout: a short one keeps start-up quick.
GROUP_OPTIONS = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
STARTUP_TIMEOUT_S = 120.0
POLL_S = 0.02
MAX_POLL_S = 0.5


def next_poll_s(done: float, total: float, elapsed: float) -> float:
    """How long to wait before reading a worker's scored count again: a quarter of the time the remaining
    ``total - done`` records should take at the rate so far, between :data:`POLL_S` and :data:`MAX_POLL_S`
    (:data:`MAX_POLL_S` / 5 before the first record is scored)."""
    if done <= 0 or elapsed <= 0:
        return MAX_POLL_S / 5
    remaining_s = max(total - done, 0) / (done / elapsed)
    return min(MAX_POLL_S, max(POLL_S, remaining_s / 4))


class E2EError(RuntimeError):
    """The worker did not start, died, or did not score every record in time; the message says which."""


@dataclass(frozen=True)
class E2EOptions:
    bundle: Path
    flows: int = 30_000
    latency_seconds: float = 10.0
    max_batch: int = 512
    device: str = "cpu"
    backend: str = "auto"
    threads: int | None = None
    timeout_s: float = 600.0


def records_from_csv(paths: Sequence[str | Path], limit: int | None = None) -> list[bytes]:
    """Flow records (JSON bytes, labels kept) as ``detector replay --with-labels`` sends them, in file order."""
    values = []
    for flow in read_flows(csv_files([str(p) for p in paths]), with_labels=True, need_time=False, stats=SourceStats()):
        values.append(flow.value)
        if limit is not None and len(values) >= limit:
            break
    return values


def cycled(values: Sequence[bytes], count: int) -> list[bytes]:
    """``count`` values, repeating ``values`` as often as needed."""
    if not values:
        raise E2EError("no flow records to send")
    return [values[i % len(values)] for i in range(count)]


def measure_worker(
    bootstrap: str, values: Sequence[bytes], guarantee: str, options: E2EOptions, model_cpu_ms_per_1000: float | None
) -> dict[str, Any]:
    """Capacity, the worker's CPU per flow, and latency at half capacity for one guarantee (see the module doc)."""
    topics = _fresh_topics(bootstrap)
    records = cycled(values, options.flows)
    _produce_all(bootstrap, topics["input"], records)
    with _Worker(bootstrap, topics, guarantee, options) as worker:
        worker.wait_assigned()
        threads0 = thread_cpu_seconds(worker.pid)
        cpu0, wall0 = process_cpu_seconds(worker.pid), time.perf_counter()
        worker.wait_scored(len(records), options.timeout_s)
        wall, cpu = time.perf_counter() - wall0, process_cpu_seconds(worker.pid) - cpu0
        threads = {name: seconds - threads0.get(name, 0.0) for name, seconds in thread_cpu_seconds(worker.pid).items()}
        capacity = len(records) / wall
        latencies = _latencies(bootstrap, topics, values, capacity / 2, options.latency_seconds, worker)
    cpu_ms = 1e6 * cpu / len(records)
    p = percentiles(latencies)
    result: dict[str, Any] = {
        "flows": len(records),
        "flows_per_s": round(capacity, 1),
        "worker_cpu_ms_per_1000": round(cpu_ms, 1),
        "cpu_ratio_vs_model": round(cpu_ms / model_cpu_ms_per_1000, 3) if model_cpu_ms_per_1000 else None,
        "worker_cpu_ms_per_1000_by_thread": {
            name: round(1e6 * seconds / len(records), 1) for name, seconds in threads.items()
        },
        "latency_rate_flows_per_s": round(capacity / 2, 1),
        "latency_samples": len(latencies),
        "latency_p50_ms": round(p[50], 1),
        "latency_p99_ms": round(p[99], 1),
        "max_batch": options.max_batch,
    }
    return result


def measure_group(
    bootstrap: str, values: Sequence[bytes], workers: int, guarantee: str, options: E2EOptions
) -> dict[str, Any]:
    """Capacity of ``workers`` worker processes in one group on a preloaded input topic of :data:`PARTITIONS`
    partitions: the clock starts once the group has settled (every worker holds at least one partition, the
    workers together all of them) and stops when the workers' metrics count every record scored; the records
    scored before it started are not counted. ``worker_cpu_ms_per_1000`` sums the workers' own CPU time."""
    if not 1 <= workers <= PARTITIONS:
        raise E2EError(f"{workers} workers on {PARTITIONS} partitions: at most one per partition is useful")
    topics = _fresh_topics(bootstrap)
    records = cycled(values, options.flows)
    _produce_all(bootstrap, topics["input"], records)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        crew = [stack.enter_context(_Worker(bootstrap, topics, guarantee, options, group)) for _ in range(workers)]
        _wait_settled(crew)
        before = sum(worker.scored() for worker in crew)
        cpu0, wall0 = sum(process_cpu_seconds(w.pid) for w in crew), time.perf_counter()
        deadline = time.monotonic() + options.timeout_s
        while (scored := sum(worker.scored() for worker in crew)) < len(records):
            for worker in crew:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise E2EError(f"{workers} workers scored {scored:.0f} of {len(records)} records in time")
            time.sleep(next_poll_s(scored - before, len(records) - before, time.perf_counter() - wall0))
        wall, cpu = time.perf_counter() - wall0, sum(process_cpu_seconds(w.pid) for w in crew) - cpu0
        assignment = [sorted(worker.assignment()) for worker in crew]
    timed = len(records) - before
    return {
        "workers": workers,
        "flows": len(records),
        "flows_timed": round(timed),
        "flows_per_s": round(timed / wall, 1) if timed > 0 else None,
        "worker_cpu_ms_per_1000": round(1e6 * cpu / timed, 1) if timed > 0 else None,
        "assignment": assignment,
        "max_batch": options.max_batch,
        "guarantee": guarantee,
    }


def _wait_settled(crew: Sequence[_Worker]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for worker in crew:
            worker.check_alive()
        held = [worker.assignment() for worker in crew]
        spread = all(held) and len(set().union(*held)) >= PARTITIONS and sum(map(len, held)) == PARTITIONS
        if spread and all(worker.metrics_port for worker in crew):
            return
        time.sleep(POLL_S * 5)
    raise E2EError(f"{len(crew)} workers did not share the {PARTITIONS} partitions within {STARTUP_TIMEOUT_S:g} s")


def _fresh_topics(bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    topics = {"input": f"bench-flows-{tag}", "output": f"bench-alerts-{tag}", "dlq": f"bench-dlq-{tag}"}
    ensure_topics(bootstrap, [topics["input"]], partitions=PARTITIONS)
    ensure_topics(bootstrap, [topics["output"], topics["dlq"]])
    return topics


def _produce_all(bootstrap: str, topic: str, values: Sequence[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000})
    for index, value in enumerate(values):
        _produce(producer, topic, value, index % PARTITIONS)
    if producer.flush(60):
        raise E2EError("could not preload the input topic within 60 s")


def _produce(producer: Producer, topic: str, value: bytes, partition: int, **extra: Any) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition, **extra)
            return
        except BufferError:
            producer.poll(0.05)


def _latencies(
    bootstrap: str, topics: dict[str, str], values: Sequence[bytes], rate: float, seconds: float, worker: _Worker
) -> list[float]:
    """Send ``rate`` records/s for ``seconds``; milliseconds from each record's timestamp to its verdict's arrival."""
    sent: dict[tuple[int, int], float] = {}

    def delivered(error: Any, message: Any) -> None:
        if error is None:
            sent[(message.partition(), message.offset())] = message.timestamp()[1] / 1000.0

    consumer = _verdict_reader(bootstrap, topics["output"])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    latencies: list[float] = []
    pending: list[tuple[tuple[int, int], float]] = []
    try:
        total = max(1, int(rate * seconds))
        started = time.time()
        for index in range(total):
            due = started + index / rate
            while (now := time.time()) < due:
                _collect(consumer, pending, 0.0)
                time.sleep(min(0.002, due - now))
            stamp = int(time.time() * 1000)
            value = values[index % len(values)]
            _produce(producer, topics["input"], value, index % PARTITIONS, timestamp=stamp, on_delivery=delivered)
            producer.poll(0)
        producer.flush(30)
        deadline = time.time() + 60
        while time.time() < deadline and not sent.keys() <= {source for source, _ in pending}:
            worker.check_alive()
            _collect(consumer, pending, 0.1)
    finally:
        consumer.close()
    for source, arrived in pending:
        if source in sent:
            latencies.append(1000.0 * (arrived - sent[source]))
    return latencies


def _verdict_reader(bootstrap: str, topic: str) -> Consumer:
    """A read_committed reader of the output topic from its current end (the capacity run's verdicts are past)."""
    reader = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    _, end = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    reader.assign([TopicPartition(topic, 0, end if end >= 0 else OFFSET_END)])
    return reader


def _collect(consumer: Consumer, pending: list[tuple[tuple[int, int], float]], timeout: float) -> None:
    for message in consumer.consume(1000, timeout):
        if message.error() is not None:
            continue
        arrived = time.time()
        source = orjson.loads(message.value())["source"]
        pending.append(((source["partition"], source["offset"]), arrived))


class _Worker:
    """``python -m detector.cli run`` with the JSON log in a file, metrics on a free local port."""

    def __init__(
        self, bootstrap: str, topics: dict[str, str], guarantee: str, options: E2EOptions, group: str | None = None
    ) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix="flowwarden-e2e-", suffix=".log")[1])
        argv = [
            sys.executable,
            "-m",
            "detector.cli",
            "run",
            *("--bootstrap-servers", bootstrap, "--bundle", str(options.bundle), "--guarantee", guarantee),
            *("--input-topic", topics["input"], "--output-topic", topics["output"], "--dlq-topic", topics["dlq"]),
            *("--group-id", group or f"bench-{uuid.uuid4().hex[:8]}", "--emit", "all", "--device", options.device),
            *("--backend", options.backend, "--max-batch", str(options.max_batch)),
            *("--metrics-port", "0", "--metrics-host", "127.0.0.1"),
        ]
        if options.threads:
            argv += ["--threads", str(options.threads)]
        for key, value in GROUP_OPTIONS.items():
            argv += ["--kafka-option", f"{key}={value}"]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        self.pid = self.process.pid
        self.metrics_port: int | None = None

    def events(self) -> Iterator[dict[str, Any]]:
        for line in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict):
                    yield event

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise E2EError(f"the worker exited with status {self.process.returncode}; log:\n{tail}")

    def assignment(self) -> set[str]:
        """The partitions the worker holds now, as its last rebalance event names them (and its metrics port)."""
        held: set[str] = set()
        for event in self.events():
            if event.get("event") == "starting":
                self.metrics_port = event.get("metrics_port")
            if "assignment" in event and str(event.get("event", "")).startswith("partitions"):
                held = {str(name) for name in event["assignment"]}
        return held

    def wait_assigned(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            for event in self.events():
                if event.get("event") == "starting":
                    self.metrics_port = event.get("metrics_port")
                if event.get("event") == "partitions assigned" and len(event.get("assignment", [])) >= PARTITIONS:
                    return
            time.sleep(POLL_S)
        raise E2EError(f"the worker was not assigned its partitions within {STARTUP_TIMEOUT_S:g} s")

    def scored(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith("flowwarden_verdicts_total")
        )

    def wait_scored(self, count: int, timeout: float) -> None:
        started = time.monotonic()
        while (scored := self.scored()) < count:
            self.check_alive()
            if time.monotonic() > started + timeout:
                raise E2EError(f"the worker scored {scored:.0f} of {count} records within {timeout:g} s")
            time.sleep(next_poll_s(scored, count, time.monotonic() - started))

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def broker(bootstrap: str | None = None) -> Iterator[str]:
    """``bootstrap`` when given, else an embedded broker's address for the duration."""
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap_servers


def run(
    values: Sequence[bytes],
    options: E2EOptions,
    guarantees: Sequence[str] = GUARANTEES,
    model_cpu_ms_per_1000: float | None = None,
    bootstrap: str | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`measure_worker` for each guarantee, on one broker: ``{guarantee: result}``."""
    with broker(bootstrap) as servers:
        return {g: measure_worker(servers, values, g, options, model_cpu_ms_per_1000) for g in guarantees}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.tools.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--csv", nargs="+", required=True, help="flows to send (CSV files or folders), cycled")
    parser.add_argument("--flows", type=int, default=E2EOptions.flows, help="records for the capacity run")
    parser.add_argument("--latency-seconds", type=float, default=E2EOptions.latency_seconds)
    parser.add_argument("--max-batch", type=int, default=E2EOptions.max_batch)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--guarantee", choices=(*GUARANTEES, "both"), default="both")
    parser.add_argument("--model-cpu-ms-per-1000", type=float, help="model-only CPU ms per 1,000 flows (for the ratio)")
    parser.add_argument("--bootstrap-servers", help="an existing broker (default: an embedded one)")
    args = parser.parse_args(argv)
    options = E2EOptions(
        args.bundle, args.flows, args.latency_seconds, args.max_batch, args.device, args.backend, args.threads
    )
    guarantees = GUARANTEES if args.guarantee == "both" else (args.guarantee,)
    values = records_from_csv(args.csv, limit=args.flows)
    result = run(values, options, guarantees, args.model_cpu_ms_per_1000, args.bootstrap_servers)
    sys.stdout.write(orjson.dumps({"e2e": result, "load_average": list(os.getloadavg())}).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
