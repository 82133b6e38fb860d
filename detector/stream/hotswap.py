"""Model hot swap: between batches, poll the bundle registry and serve a newly verified version.

Whatever is wrong with a new version (a checksum, another feature set, a device error), the current model
keeps serving and the refusal is logged and counted (``flowwarden_model_swaps_total{result="rejected"}``).
"""

from __future__ import annotations

import time
from typing import Any

from detector.core.bundle import BundleError
from detector.core.registry import RegistryWatcher
from detector.core.scorer import DeviceError
from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import BatchProcessor


class HotSwap:
    """Polls ``watcher`` every ``every_s`` seconds and hands a new bundle to ``processor``."""

    def __init__(
        self, watcher: RegistryWatcher, processor: BatchProcessor, metrics: WorkerMetrics, log: Any, every_s: float
    ) -> None:
        self.watcher = watcher
        self.processor = processor
        self.metrics = metrics
        self.log = log
        self.every_s = every_s
        self._next = time.monotonic() + every_s

    def poll_if_due(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every_s
        old = self.processor.bundle
        try:
            bundle = self.watcher.poll()
            if bundle is None:
                return
            self.processor.serve(bundle)
        except Exception as exc:  # whatever is wrong with the new version, the current one keeps serving
            self.metrics.model_swaps.labels(result="rejected").inc()
            error = str(exc) if isinstance(exc, BundleError | DeviceError) else f"{type(exc).__name__}: {exc}"
            self.log.error("new model refused; still serving the current one", serving=old.version, error=error)
            return
        self.metrics.serve_model(bundle.name, bundle.version, bundle.sha256)
        self.metrics.model_swaps.labels(result="ok").inc()
        self.log.info("model swapped", previous=old.version, version=bundle.version, bundle_sha256=bundle.sha256)
