"""The worker's drift metrics: the Population Stability Index of each feature over the last flows decoded.

Every batch's decoded flows are counted into the served bundle's training histograms
(:class:`~detector.core.drift.DriftWindow`: bin counts only, no flow is kept); at every scrape the PSI of each
numeric feature is computed from the window's counts and exported as ``flowwarden_feature_psi{feature}``, with
the window's size as ``flowwarden_drift_window_records``. PSI is exported once the window holds
:data:`MIN_RECORDS` flows (or the whole window, when it is smaller): over fewer, sampling noise alone reads as
drift. A bundle without ``drift.json`` (written before drift existed) exports no PSI; the worker says so once
in its log. A hot swap starts a new window against the new bundle's histograms.

A batch redone after a failed delivery is counted again, as ``flowwarden_records_in`` is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from detector.core.drift import DriftWindow
from detector.stream.logs import get_logger

if TYPE_CHECKING:  # the bundle module imports torch; ingest's metrics import this module's neighbours without it
    from detector.core.bundle import Bundle

MIN_RECORDS = 1000
PSI_HELP = (
    "Population Stability Index of each numeric feature between the bundle's training histogram and the last "
    "--drift-window decoded flows (0.1: moderate change, 0.25: significant shift of the meter or the network)."
)
WINDOW_HELP = "Decoded flows in the drift window (flowwarden_feature_psi is exported once it holds enough)."


class DriftMonitor(Collector):
    """Counts decoded flows into the served bundle's histograms and exports their PSI on ``registry``."""

    def __init__(self, registry: CollectorRegistry, window: int) -> None:
        self.size = window
        self.min_records = min(window, MIN_RECORDS)
        self._window: DriftWindow | None = None
        self._lock = threading.Lock()
        registry.register(self)

    def serve(self, bundle: Bundle) -> None:
        """Measure later flows against ``bundle``'s histograms (a new, empty window)."""
        with self._lock:
            self._window = DriftWindow(bundle.drift, self.size) if bundle.drift is not None else None
        if bundle.drift is None:
            get_logger("drift").warning(
                "feature drift unavailable: the bundle has no drift.json (written before drift existed); "
                "no flowwarden_feature_psi",
                version=bundle.version,
            )

    def observe(self, numeric: np.ndarray) -> None:
        """Count one batch's decoded numeric values ``[flows, features]`` (the bundle's numeric order)."""
        if self._window is None or not len(numeric):
            return
        with self._lock:
            if self._window is not None:
                self._window.add(numeric)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily("flowwarden_feature_psi", PSI_HELP, labels=["feature"])
        records = GaugeMetricFamily("flowwarden_drift_window_records", WINDOW_HELP)
        with self._lock:
            window = self._window
            rows = window.rows if window is not None else 0
            values = window.psi() if window is not None and rows >= self.min_records else None
        records.add_metric([], float(rows))
        if values is not None and window is not None:
            for feature, value in zip(window.reference.features, values.tolist(), strict=True):
                psi.add_metric([feature], value)
        yield psi
        yield records

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("flowwarden_feature_psi", PSI_HELP, labels=["feature"]),
            GaugeMetricFamily("flowwarden_drift_window_records", WINDOW_HELP),
        ]
