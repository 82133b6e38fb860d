"""Hot swap off the loop: while a new version is being loaded (a slow bundle read, a backend compile), the
worker loop's calls between batches return at once and batches keep being scored by the current model; the
new one is served at the first call after it is ready."""

from __future__ import annotations

import threading

import orjson
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from prometheus_client import generate_latest

from detector.core.bundle import load_bundle
from detector.core.registry import RegistryWatcher, publish, resolve_bundle_path
from detector.stream.hotswap import HotSwap
from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import BatchProcessor
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows
from tests.support.worker import flow_values, metric_value

GUARD_S = 60  # only so that a regression fails instead of hanging: nothing here waits this long when it works


class Log:
    def __init__(self):
        self.lines = []

    def error(self, event, **fields):
        self.lines.append(("error", event, fields))

    def info(self, event, **fields):
        self.lines.append(("info", event, fields))


class SlowWatcher(RegistryWatcher):
    """A registry whose new versions take until ``release`` is set to load (a slow disk, a long compile)."""

    def __init__(self, registry, current):
        super().__init__(registry, current)
        self.loading = threading.Event()
        self.release = threading.Event()

    def poll(self):
        bundle = super().poll()
        if bundle is not None:
            self.loading.set()
            self.release.wait(GUARD_S)
        return bundle


def versions_served(processor: BatchProcessor, start: int) -> set[str]:
    values = flow_values(generated_rows(0)[:10])
    messages = [
        Message(topic="flows", partition=0, offset=start + i, value=v, timestamp=(TIMESTAMP_CREATE_TIME, i))
        for i, v in enumerate(values)
    ]
    outputs = processor.process(messages).outputs
    assert outputs, "every record gets a verdict (--emit all)"
    return {orjson.loads(output.value)["model"]["version"] for output in outputs}


def test_batches_are_scored_by_the_current_model_while_a_slow_new_version_loads(tmp_path):
    registry = tmp_path / "registry"
    publish(make_bundle(tmp_path / "v1", seed=0, version="v1"), registry)
    processor = BatchProcessor(
        load_bundle(resolve_bundle_path(registry)), output_topic="alerts", dlq_topic="dlq", emit="all", device="cpu"
    )
    watcher, metrics, log = SlowWatcher(registry, "v1"), WorkerMetrics(), Log()
    hotswap = HotSwap(watcher, processor, metrics, log, every_s=0)
    publish(make_bundle(tmp_path / "v2", seed=0, version="v2"), registry)  # the same model, a new version

    hotswap.poll_if_due()  # the loop's call between batches: starts the load and returns
    assert watcher.loading.wait(GUARD_S), "the new version's load began"
    assert not watcher.release.is_set(), "poll_if_due returned while the load was still blocked"
    for round_ in range(3):  # the loop goes on: more calls between batches, batches scored by v1
        hotswap.poll_if_due()
        assert hotswap.loading and versions_served(processor, 10 * round_) == {"v1"}

    watcher.release.set()
    assert hotswap.settle(timeout=GUARD_S)
    assert not hotswap.loading and versions_served(processor, 100) == {"v2"}
    swaps = metric_value(generate_latest(metrics.registry).decode(), "flowwarden_model_swaps_total", result="ok")
    assert swaps == 1.0 and log.lines[-1][1] == "model swapped" and log.lines[-1][2]["version"] == "v2"
