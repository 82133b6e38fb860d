"""Prometheus metrics of a detector worker and the small HTTP server for ``/metrics``, ``/healthz``, ``/readyz``.

The metric names are a contract: ``deploy/`` dashboards and alert rules use them. Each worker has its own
:class:`~prometheus_client.CollectorRegistry` (not the process-global one), so two workers in one process
(tests) never share series.

* ``/healthz``: 200 while the worker's loop has iterated within :data:`STALE_AFTER_S` (liveness).
* ``/readyz``: 200 when a verified model is loaded, the consumer has joined its group and its last
  statistics showed a working connection to a broker (readiness); otherwise 503 with the reason.

:func:`probe_answer` is what every flowwarden server answers on those three paths (the worker's here,
``detector ingest``'s on its own event loop), so the probes mean the same for every process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from detector.stream.drift import DriftMonitor

STALE_AFTER_S = 60.0
PLAIN_TEXT = "text/plain; charset=utf-8"

BATCH_SIZE_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class BulkHistogram(Collector):
    """A label-less histogram fed a whole array at a time (one numpy call instead of one call per record)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)  # the last slot is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        slots = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(np.sum(values))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(_bound(b), float(c)) for b, c in zip(self._bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]


def _bound(value: float) -> str:
    return repr(float(value))


class WorkerMetrics:
    """Every metric a worker exports, on its own registry; ``drift_window`` flows for the drift metrics
    (:mod:`detector.stream.drift`; None: no drift metrics, ``drift`` is None)."""

    def __init__(self, registry: CollectorRegistry | None = None, drift_window: int | None = 10_000) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift = DriftMonitor(r, drift_window) if drift_window is not None else None
        self.records_in = Counter("flowwarden_records_in", "Records consumed from the input topic.", registry=r)
        self.verdicts = Counter(
            "flowwarden_verdicts", "Records scored, by predicted class.", ["label", "is_attack"], registry=r
        )
        self.alerts_out = Counter(
            "flowwarden_alerts_out", "Alerts produced, by predicted class.", ["label"], registry=r
        )
        self.aggregates_out = Counter(
            "flowwarden_aggregates_out",
            "Aggregated alerts produced (--aggregate-window-s), by predicted class: each stands for the per-flow "
            "alerts flowwarden_alerts_out counts.",
            ["label"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "flowwarden_alerts_suppressed",
            "Verdicts that would have been alerts, by predicted class and why they are not: below_threshold "
            "(--min-confidence, --class-threshold) or allowlist. Counted when the batch is scored.",
            ["label", "reason"],
            registry=r,
        )
        self.novel_flows = Counter(
            "flowwarden_novel_flows",
            "Records scored as unlike the training data (novelty > 1), by predicted class. A rising share of "
            "records in is the sign of an unknown attack or of flows from a meter the model was not trained on.",
            ["label"],
            registry=r,
        )
        self.dead_letters = Counter(
            "flowwarden_dead_letters", "Records sent to the dead-letter topic, by reason.", ["reason_code"], registry=r
        )
        self.batch_size = Histogram(
            "flowwarden_batch_size", "Records per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "flowwarden_batch_seconds", "Decode + model + produce time per batch.", buckets=SECONDS_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "flowwarden_model_seconds", "Model time per batch.", buckets=SECONDS_BUCKETS, registry=r
        )
        self.end_to_end_seconds = BulkHistogram(
            "flowwarden_end_to_end_seconds",
            "Kafka record timestamp to alert acknowledged by the broker.",
            LATENCY_BUCKETS,
            r,
        )
        self.consumer_lag = Gauge(
            "flowwarden_consumer_lag",
            "Records behind the end of each assigned partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.paused_partitions = Gauge(
            "flowwarden_paused_partitions", "Partitions paused for back-pressure.", registry=r
        )
        self.model_info = Gauge(
            "flowwarden_model_info",
            "The model being served (value 1).",
            ["name", "version", "bundle_sha256"],
            registry=r,
        )
        self.model_swaps = Counter(
            "flowwarden_model_swaps", "Hot swaps of the model, by result.", ["result"], registry=r
        )
        self.rewinds = Counter(
            "flowwarden_rewinds",
            "Rewinds to redo uncommitted batches (a failed delivery or an aborted transaction).",
            registry=r,
        )
        self.partition_changes = Counter(
            "flowwarden_partition_changes",
            "Input partitions this worker was given (assigned), gave up in a rebalance (revoked) or lost with its "
            "group session (lost). A restart in place of another worker changes none of this worker's.",
            ["change"],
            registry=r,
        )
        self.kafka_errors = Counter(
            "flowwarden_kafka_errors",
            "Errors the Kafka clients reported, by librdkafka code (e.g. _TRANSPORT: brokers unreachable).",
            ["code"],
            registry=r,
        )
        self.ready = Gauge("flowwarden_ready", "1 when the worker can score.", registry=r)
        for result in ("ok", "rejected"):
            self.model_swaps.labels(result=result)
        for change in ("assigned", "revoked", "lost"):
            self.partition_changes.labels(change=change)
        self._model_labels: tuple[str, str, str] | None = None

    def serve_model(self, name: str, version: str, bundle_sha256: str) -> None:
        """Point ``flowwarden_model_info`` at the model now served (the previous series is removed)."""
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
        self._model_labels = (name, version, bundle_sha256)
        self.model_info.labels(name=name, version=version, bundle_sha256=bundle_sha256).set(1)

    def count_suppressed(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Add a batch's suppressed verdicts, ``{(label, reason): count}``, to flowwarden_alerts_suppressed_total."""
        for (label, reason), count in counts.items():
            self.alerts_suppressed.labels(label=label, reason=reason).inc(count)

    def watch(self, health: Health) -> None:
        """Make ``flowwarden_ready`` read ``health.ready`` at every scrape."""
        self.ready.set_function(lambda: float(health.ready))

    def forget_partitions(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the lag series of partitions this worker no longer owns."""
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.consumer_lag.remove(topic, str(partition))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Heartbeat:
    """Liveness: alive while :meth:`beat` was called within ``stale_after_s`` (a stuck thread stops beating)."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S) -> None:
        self.stale_after_s = stale_after_s
        self._beat = time.monotonic()

    def beat(self) -> None:
        """The watched thread is alive: call once per iteration (and from long waits)."""
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._beat < self.stale_after_s


class Health(Heartbeat):
    """What ``/healthz`` and ``/readyz`` report; the worker updates it, the HTTP threads read it."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S) -> None:
        super().__init__(stale_after_s)
        self.model_loaded = False
        self.joined = False
        # From librdkafka's statistics: a cut path shows there within one statistics interval, while the
        # group membership ("joined") only ends when the session expires, tens of seconds later.
        self.broker_reachable = True
        self.stopping = False
        # A fatal Kafka client error: the worker is about to exit 1 and will never be ready again.
        self.fatal: str | None = None

    @property
    def ready(self) -> bool:
        return self.model_loaded and self.joined and self.broker_reachable and not self.stopping and not self.fatal

    @property
    def not_alive_because(self) -> str:
        """Why :attr:`alive` is false, for the ``/healthz`` body (empty when alive)."""
        return "" if self.alive else "the worker loop has not iterated recently"

    @property
    def not_ready_because(self) -> str:
        """Why :attr:`ready` is false, for the ``/readyz`` body (empty when ready)."""
        if self.fatal:
            return f"fatal Kafka client error: {self.fatal}"
        if self.stopping:
            return "stopping"
        if not self.model_loaded:
            return "no verified model loaded"
        if not self.joined:
            return "not a member of the group yet"
        if not self.broker_reachable:
            return "no broker reachable (flowwarden_kafka_errors_total says why)"
        return ""


class Probes(Protocol):
    """What ``/healthz`` and ``/readyz`` read: :class:`Health` for a worker, ingest's own for ``detector ingest``."""

    @property
    def alive(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def not_alive_because(self) -> str: ...

    @property
    def not_ready_because(self) -> str: ...


def probe_answer(path: str, exposition: Callable[[], bytes], probes: Probes) -> tuple[int, bytes, str]:
    """Status, body and content type of ``GET path`` (query string ignored) on a metrics server."""
    path = path.split("?", 1)[0]
    if path == "/metrics":
        return 200, exposition(), CONTENT_TYPE_LATEST
    if path == "/healthz":
        return _probe(probes.alive, "alive", probes.not_alive_because)
    if path == "/readyz":
        return _probe(probes.ready, "ready", probes.not_ready_because)
    return 404, b"not found\n", PLAIN_TEXT


def _probe(ok: bool, good: str, bad: str) -> tuple[int, bytes, str]:
    return (200 if ok else 503), f"{good if ok else bad}\n".encode(), PLAIN_TEXT


class MetricsServer:
    """A threaded HTTP server for one worker's metrics and probes; ``port=0`` binds a free port."""

    def __init__(self, metrics: WorkerMetrics, health: Health, host: str = "0.0.0.0", port: int = 0) -> None:
        handler = _handler(metrics, health)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics: WorkerMetrics, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            """Some load balancers and probes ask with HEAD: the same status and headers, no body."""
            self._head_only = True
            self.do_GET()

        def do_GET(self) -> None:
            self._send(*probe_answer(self.path, metrics.exposition, health))

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "_head_only", False):
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds are not worth a log line."""

    return Handler
