"""Model hot swap: poll the bundle registry, make a newly verified version ready off the loop, serve it
between batches.

Loading a new version (reading and verifying its files, building its backend: an OpenVINO compile with
``--backend auto`` takes seconds) runs on a thread of its own, so the worker loop keeps polling Kafka,
scoring with the current model and answering its heartbeats meanwhile; the loop only swaps the prepared
model in, between two batches. Whatever is wrong with a new version (a checksum, another feature set, a
device error), the current model keeps serving and the refusal is logged and counted
(``flowwarden_model_swaps_total{result="rejected"}``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from detector.core.bundle import BundleError
from detector.core.registry import RegistryWatcher
from detector.core.scorer import DeviceError
from detector.stream.metrics import WorkerMetrics
from detector.stream.processor import BatchProcessor, PreparedModel


class _Preparation:
    """One registry poll, and the load of the version it found, on a daemon thread (a worker stopping
    mid-load does not wait for it)."""

    def __init__(self, watcher: RegistryWatcher, processor: BatchProcessor) -> None:
        self.prepared: PreparedModel | None = None
        self.error: Exception | None = None
        self._watcher = watcher
        self._processor = processor
        self._thread = threading.Thread(target=self._run, name="flowwarden-hotswap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            bundle = self._watcher.poll()
            if bundle is not None:
                self.prepared = self._processor.prepare(bundle)
        except Exception as exc:  # handed to the loop's thread, which logs and counts it
            self.error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None) -> bool:
        self._thread.join(timeout)
        return self.done()


class HotSwap:
    """Polls ``watcher`` every ``every_s`` seconds and hands a new bundle to ``processor``.

    :meth:`poll_if_due` never waits for a load: it starts one when a poll is due, and serves its result at
    the first call after it is ready. One poll or load runs at a time.
    """

    def __init__(
        self, watcher: RegistryWatcher, processor: BatchProcessor, metrics: WorkerMetrics, log: Any, every_s: float
    ) -> None:
        self.watcher = watcher
        self.processor = processor
        self.metrics = metrics
        self.log = log
        self.every_s = every_s
        self._next = time.monotonic() + every_s
        self._pending: _Preparation | None = None

    @property
    def loading(self) -> bool:
        """Whether a poll or the load of a new version is in progress."""
        return self._pending is not None and not self._pending.done()

    def poll_if_due(self) -> None:
        """Between batches: serve a version made ready since the last call, or start a due poll."""
        if self._pending is not None:
            if self._pending.done():
                self._finish(self._pending)
            return
        if time.monotonic() < self._next:
            return
        self._pending = _Preparation(self.watcher, self.processor)

    def settle(self, timeout: float | None = None) -> bool:
        """Start a poll if one is due and none is running, wait up to ``timeout`` s for it (and the load of
        what it found) and serve its result: for callers that are not a loop (tests, tools). False when it is
        still running."""
        if self._pending is None:
            self.poll_if_due()
        pending = self._pending
        if pending is None:
            return True
        if not pending.join(timeout):
            return False
        self._finish(pending)
        return True

    def _finish(self, done: _Preparation) -> None:
        self._pending = None
        self._next = time.monotonic() + self.every_s
        old = self.processor.bundle
        try:
            if done.error is not None:
                raise done.error
            if done.prepared is None:
                return
            self.processor.install(done.prepared)
        except Exception as exc:  # whatever is wrong with the new version, the current one keeps serving
            self.metrics.model_swaps.labels(result="rejected").inc()
            error = str(exc) if isinstance(exc, BundleError | DeviceError) else f"{type(exc).__name__}: {exc}"
            self.log.error("new model refused; still serving the current one", serving=old.version, error=error)
            return
        bundle = done.prepared.bundle
        self.metrics.serve_model(bundle.name, bundle.version, bundle.sha256)
        self.metrics.model_swaps.labels(result="ok").inc()
        self.log.info("model swapped", previous=old.version, version=bundle.version, bundle_sha256=bundle.sha256)
