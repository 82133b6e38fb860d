"""Calibrating the novelty signals (detector/core/novelty.py) and reporting what they say about a set of flows.

Both thresholds come from the *validation* rows, never the test split, at budgets chosen up front, not fitted
to any outcome: the autoencoder's is the ``quantile`` of the validation rows' reconstruction errors (0.995:
about one flow in 200 like the training data is novel), the classifier's max-probability signal's the
``1 - budget`` quantile over the validation *benign* rows (0.01: about one benign flow in 100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detector.core.model import ResCAE
from detector.core.novelty import (
    NOVEL_ABOVE,
    ConfidenceCalibration,
    Novelty,
    NoveltyCalibration,
    max_probability_signal,
    reconstruction_error,
)

_FLOOR = 1e-12  # a threshold of 0 (a perfect reconstruction of every row) would divide by zero


def calibrate(
    autoencoder: ResCAE,
    rows: np.ndarray,
    quantile: float,
    device: torch.device,
    benign_probabilities: np.ndarray | None = None,
    budget: float = 0.01,
    flag: str = "autoencoder",
) -> Novelty:
    """The novelty model whose autoencoder threshold is the ``quantile`` of the reconstruction errors of ``rows``
    and, given the classifier's raw probabilities of the validation benign rows, whose max-probability
    threshold flags ``budget`` of them; ``flag`` names the signal that decides."""
    if len(rows) == 0:
        raise ValueError("novelty calibration needs validation rows")
    errors = reconstruction_error(autoencoder.to(device).eval(), rows, device)
    threshold = max(float(np.quantile(errors, quantile)), _FLOOR)
    confidence = None
    if benign_probabilities is not None and len(benign_probabilities):
        values = max_probability_signal(benign_probabilities)
        confidence = ConfidenceCalibration(max(float(np.quantile(values, 1 - budget)), _FLOOR), budget, len(values))
    elif flag == "max_probability":
        raise ValueError("the max_probability signal needs validation benign rows to set its threshold on")
    return Novelty(autoencoder.cpu(), NoveltyCalibration(threshold, quantile, len(rows), flag, confidence))


def novelty_summary(labels: Sequence[str], scores: np.ndarray, calibration: NoveltyCalibration) -> dict[str, Any]:
    """The share of novel flows overall and per true class, with the calibration that decided it."""
    labels_array = np.asarray(labels, dtype=object)
    novel = scores > NOVEL_ABOVE
    by_class = {str(label): round(float(novel[labels_array == label].mean()), 6) for label in sorted(set(labels_array))}
    return {
        **calibration.to_json(),
        "novel_rate": round(float(novel.mean()), 6) if len(novel) else 0.0,
        "novel_flows": int(novel.sum()),
        "novel_rate_by_class": by_class,
    }
