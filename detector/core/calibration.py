"""Calibrated confidence: the temperature that turns the classifier's softmax into probabilities one can read.

A network trained to a small loss is usually over-confident: among flows it calls DDoS with 0.99, fewer than
99 % are DDoS. Temperature scaling (Guo et al., ICML 2017) divides the logits by one number ``T`` fitted on
held-out rows (the trainer's validation split) so that the probabilities match the observed accuracy. The
largest logit stays the largest, so labels, accuracy and F1 do not change; only ``confidence`` and the
``probabilities`` of alerts do.

Serving applies it to the probabilities a backend computed (:meth:`TemperatureScaling.apply`: ``softmax(z / T)``
is ``p^(1/T)`` renormalised), so every serving backend, int8 and CUDA graphs included, is calibrated alike; the
trainer's exported predictions go through the same function.

The bundle stores it as ``calibration.json`` (covered by the manifest's checksums, like every file). A bundle
without one was written before calibration existed and is served with ``T = 1``: the raw softmax.

This module is imported by the detector at serving time; it must not import anything from trainer/.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

CALIBRATION_FILE = "calibration.json"
METHOD = "temperature"


@dataclass(frozen=True)
class TemperatureScaling:
    """``softmax(logits / temperature)``; what the trainer measured is kept beside it for the reader."""

    temperature: float
    fitted_rows: int = 0
    ece_before: float | None = None  # on the rows it was fitted on
    ece_after: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"{CALIBRATION_FILE}: temperature must be a positive number, got {self.temperature!r}")

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[N, classes]`` (float32) from the raw softmax ``probabilities``: each row's
        ``p^(1/T)``, renormalised, which is ``softmax(logits / T)``. Unchanged when ``T`` is 1. A probability
        that underflowed to 0 in float32 stays 0 (negligible for the temperatures fitted: 0.05 to 20)."""
        if self.temperature == 1.0 or not len(probabilities):
            return probabilities
        scaled = np.power(np.asarray(probabilities, dtype=np.float64), 1.0 / self.temperature)
        total = scaled.sum(axis=1, keepdims=True)
        calibrated: np.ndarray = (scaled / np.where(total > 0, total, 1.0)).astype(np.float32)
        return calibrated

    def to_json(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "temperature": self.temperature,
            "fitted_on": "validation split",
            "fitted_rows": self.fitted_rows,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
        }

    @classmethod
    def from_json(cls, data: Any) -> TemperatureScaling:
        """Raises ``ValueError`` naming what is wrong (another method, a temperature that is not positive)."""
        if not isinstance(data, dict):
            raise ValueError(f"{CALIBRATION_FILE} must hold an object")
        if data.get("method") != METHOD:
            raise ValueError(f"{CALIBRATION_FILE}: unknown calibration method {data.get('method')!r}")
        temperature = data.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ValueError(f"{CALIBRATION_FILE}: temperature must be a number, got {temperature!r}")
        rows = data.get("fitted_rows", 0)
        return cls(
            float(temperature), rows if isinstance(rows, int) else 0, data.get("ece_before"), data.get("ece_after")
        )


IDENTITY = TemperatureScaling(1.0)
