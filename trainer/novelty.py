"""Calibrating the novelty model (detector/core/novelty.py) and reporting what it says about a set of flows.

The threshold is a quantile of the reconstruction errors of the *validation* rows: rows the autoencoder
was not trained on, drawn like the training data, never the test split. The quantile is chosen up front
as an alert budget (0.995: about one flow in 200 like the training data is called novel), not fitted to
any outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detector.core.model import ResCAE
from detector.core.novelty import NOVEL_ABOVE, Novelty, NoveltyCalibration, reconstruction_error

_FLOOR = 1e-12  # a threshold of 0 (a perfect reconstruction of every row) would divide by zero


def calibrate(autoencoder: ResCAE, rows: np.ndarray, quantile: float, device: torch.device) -> Novelty:
    """The novelty model whose threshold is the ``quantile`` of the reconstruction errors of ``rows``."""
    if len(rows) == 0:
        raise ValueError("novelty calibration needs validation rows")
    errors = reconstruction_error(autoencoder.to(device).eval(), rows, device)
    threshold = max(float(np.quantile(errors, quantile)), _FLOOR)
    return Novelty(autoencoder.cpu(), NoveltyCalibration(threshold, quantile, len(rows)))


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
