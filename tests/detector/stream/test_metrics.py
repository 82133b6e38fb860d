"""Worker metrics (the names deploy/ depends on) and the /metrics, /healthz, /readyz endpoints."""

from __future__ import annotations

import http.client

import numpy as np

from detector.stream.metrics import Health, MetricsServer, WorkerMetrics
from tests.support.worker import http_get, metric_value

NAMES = (
    "flowwarden_records_in_total",
    "flowwarden_verdicts_total",
    "flowwarden_alerts_out_total",
    "flowwarden_dead_letters_total",
    "flowwarden_batch_size_bucket",
    "flowwarden_batch_seconds_bucket",
    "flowwarden_model_seconds_bucket",
    "flowwarden_end_to_end_seconds_bucket",
    "flowwarden_consumer_lag",
    "flowwarden_paused_partitions",
    "flowwarden_model_info",
    "flowwarden_model_swaps_total",
    "flowwarden_rewinds_total",
    "flowwarden_ready",
)


def test_every_named_metric_is_exported():
    metrics = WorkerMetrics()
    metrics.verdicts.labels(label="DoS", is_attack="true").inc()
    metrics.alerts_out.labels(label="DoS").inc()
    metrics.dead_letters.labels(reason_code="not_json").inc()
    metrics.consumer_lag.labels(topic="flows", partition="0").set(3)
    metrics.serve_model("rescae-bigru", "v1", "a" * 64)
    text = metrics.exposition().decode()
    missing = [name for name in NAMES if f"\n{name}" not in text]
    assert not missing
    assert metric_value(text, "flowwarden_model_swaps_total", result="rejected") == 0.0


def test_model_info_follows_the_served_model():
    metrics = WorkerMetrics()
    metrics.serve_model("m", "v1", "a" * 64)
    metrics.serve_model("m", "v2", "b" * 64)
    text = metrics.exposition().decode()
    assert metric_value(text, "flowwarden_model_info", version="v2") == 1.0
    assert metric_value(text, "flowwarden_model_info", version="v1") is None


def test_the_bulk_histogram_counts_like_a_histogram():
    metrics = WorkerMetrics()
    metrics.end_to_end_seconds.observe_many(np.array([0.001, 0.02, 0.02, 7.0, 1000.0]))
    metrics.end_to_end_seconds.observe_many(np.array([]))
    text = metrics.exposition().decode()
    assert metric_value(text, "flowwarden_end_to_end_seconds_bucket", le="0.005") == 1.0
    assert metric_value(text, "flowwarden_end_to_end_seconds_bucket", le="0.025") == 3.0
    assert metric_value(text, "flowwarden_end_to_end_seconds_bucket", le="10.0") == 4.0
    assert metric_value(text, "flowwarden_end_to_end_seconds_bucket", le="+Inf") == 5.0
    assert metric_value(text, "flowwarden_end_to_end_seconds_count") == 5.0
    assert metric_value(text, "flowwarden_end_to_end_seconds_sum") == 1007.041


def test_probes_follow_health_and_ready_follows_the_gauge():
    metrics, health = WorkerMetrics(), Health(stale_after_s=60)
    metrics.watch(health)
    server = MetricsServer(metrics, health, "127.0.0.1", 0).start()
    try:
        assert http_get(server.port, "/healthz")[0] == 200
        assert http_get(server.port, "/readyz") == (503, "no verified model loaded\n")
        health.model_loaded = True
        assert http_get(server.port, "/readyz") == (503, "not a member of the group yet\n")
        health.joined = True
        assert http_get(server.port, "/readyz")[0] == 200
        assert metric_value(http_get(server.port, "/metrics")[1], "flowwarden_ready") == 1.0
        health.broker_reachable = False
        status, body = http_get(server.port, "/readyz")
        assert (status, body) == (503, "no broker reachable (flowwarden_kafka_errors_total says why)\n")
        assert metric_value(http_get(server.port, "/metrics")[1], "flowwarden_ready") == 0.0
        health.broker_reachable = True
        health.fatal = "Broker: Static consumer fenced by other consumer with same group.instance.id"
        status, body = http_get(server.port, "/readyz")
        assert (status, body) == (503, f"fatal Kafka client error: {health.fatal}\n"), "never ready again"
        health.stopping = True
        assert http_get(server.port, "/readyz")[0] == 503
        health.stale_after_s = 0.0
        assert http_get(server.port, "/healthz")[0] == 503
        assert http_get(server.port, "/nope")[0] == 404
    finally:
        server.close()


def test_probes_answer_head_requests_without_a_body():
    metrics, health = WorkerMetrics(), Health(stale_after_s=60)
    server = MetricsServer(metrics, health, "127.0.0.1", 0).start()
    try:
        for path, status in (("/healthz", 200), ("/readyz", 503)):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == status and response.read() == b""
            assert int(response.getheader("Content-Length")) > 0
            connection.close()
        assert http_get(server.port, "/healthz") == (200, "alive\n")  # GET still has its body
    finally:
        server.close()
