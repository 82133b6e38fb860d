"""What ``detector ingest`` exports to Prometheus and answers on ``/healthz`` and ``/readyz``.

The probes mean what they mean for a worker (:func:`detector.stream.metrics.probe_answer` answers both):

* ``/healthz``: 200 while the thread that serves the producer's delivery reports has run within
  :data:`~detector.stream.metrics.STALE_AFTER_S` (the event loop answering the probe at all is the rest of
  liveness);
* ``/readyz``: 200 while a broker is reachable and the server is not stopping; 503 with the reason otherwise,
  so a load balancer in front of several ingest processes sends meters to one that can write.

Metric names are a contract, as the worker's are (``deploy/`` may use them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from detector.stream.metrics import LATENCY_BUCKETS, STALE_AFTER_S, Heartbeat

#: Outcomes of one record (``flowwarden_ingest_records_total{outcome}``).
ACKNOWLEDGED, REFUSED, FAILED, TURNED_AWAY = "acknowledged", "refused", "failed", "turned_away"


class IngestHealth(Heartbeat):
    """Liveness and readiness of one ingest server; the producer's threads write it, probes read it."""

    def __init__(self, stale_after_s: float = STALE_AFTER_S) -> None:
        super().__init__(stale_after_s)
        self.broker_reachable = False  # until the first statistics or delivery report say otherwise
        self.stopping = False

    @property
    def ready(self) -> bool:
        return self.broker_reachable and not self.stopping

    @property
    def not_alive_because(self) -> str:
        return "" if self.alive else "the producer's delivery reports have not been served recently"

    @property
    def not_ready_because(self) -> str:
        if self.stopping:
            return "stopping"
        if not self.broker_reachable:
            return "no broker reachable (flowwarden_kafka_errors_total says why)"
        return ""


class IngestMetrics:
    """Every metric an ingest server exports, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "flowwarden_ingest_requests", "HTTP requests to the intake, by answer status.", ["status"], registry=r
        )
        self.records = Counter(
            "flowwarden_ingest_records",
            "Flow records received, by outcome: acknowledged (the broker has them), refused (not a JSON object, "
            "too large), failed (produced, delivery failed), turned_away (back-pressure or no broker: not produced).",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "flowwarden_ingest_pending_records",
            "Records produced and awaiting the broker's acknowledgement.",
            registry=r,
        )
        self.ack_seconds = Histogram(
            "flowwarden_ingest_ack_seconds",
            "Request received to every record of it acknowledged by the broker.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.producers_replaced = Counter(
            "flowwarden_ingest_producers_replaced",
            "Producers replaced by a fresh one after a failed delivery or a fatal error.",
            registry=r,
        )
        self.kafka_errors = Counter(
            "flowwarden_kafka_errors",
            "Errors the Kafka client reported, by librdkafka code (e.g. _TRANSPORT: brokers unreachable).",
            ["code"],
            registry=r,
        )
        self.ready = Gauge("flowwarden_ready", "1 when the intake can write to the broker.", registry=r)
        for outcome in (ACKNOWLEDGED, REFUSED, FAILED, TURNED_AWAY):
            self.records.labels(outcome=outcome)

    def watch(self, health: IngestHealth) -> None:
        """Make ``flowwarden_ready`` read ``health.ready`` at every scrape."""
        self.ready.set_function(lambda: float(health.ready))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
