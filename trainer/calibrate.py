"""Fitting the confidence's temperature on the validation rows and measuring calibration.

Temperature scaling (Guo et al., ICML 2017) was chosen over histogram binning or isotonic regression because
it has one parameter (the validation split holds one or two flows of the rarest classes, too few to fit
more), and because it cannot change a label: the evaluation's accuracy and F1 are the same with or without
it. ``T`` minimises the negative log-likelihood of the validation rows' labels under ``softmax(logits / T)``,
searched on ``log T`` (a bounded one-dimensional problem: deterministic, no learning rate to choose).

The expected calibration error (ECE) is the usual one: rows binned by confidence into equal-width bins, the
gap between each bin's mean confidence and its accuracy, weighted by the bin's share of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from detector.core.calibration import TemperatureScaling
from detector.core.model import ResCAEBiGRU, in_batches

_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def predict_logits(model: ResCAEBiGRU, matrix: np.ndarray, device: torch.device) -> np.ndarray:
    """The model's logits ``[N, classes]`` (float32) for a preprocessed matrix; the model must be in eval mode."""
    outputs = in_batches(lambda x: model(x).float(), matrix, device)
    return np.concatenate(outputs) if outputs else np.zeros((0, model.config.n_classes), dtype=np.float32)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row, in float64."""
    result: np.ndarray = softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return result


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean ``-log p(label)`` under ``softmax(logits / temperature)``."""
    log_p = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> TemperatureScaling:
    """The temperature that minimises the negative log-likelihood of ``labels`` (class indices), with the
    ECE of these rows before and after. Needs at least one row."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("temperature scaling needs validation rows")
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    temperature = round(float(np.exp(found.x)), 4)
    return TemperatureScaling(
        temperature,
        fitted_rows=len(labels),
        ece_before=expected_calibration_error(probabilities(logits), labels, bins),
        ece_after=expected_calibration_error(probabilities(logits, temperature), labels, bins),
    )


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin: the rows in it, their mean confidence and their accuracy (NaN where empty)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return 0.0
        filled = self.counts > 0
        gaps = np.abs(self.confidence[filled] - self.accuracy[filled])
        return float((gaps * self.counts[filled]).sum() / total)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Rows binned by their confidence (the top probability) into ``bins`` equal-width bins of [0, 1]."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == np.asarray(labels)) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct.astype(np.float64), minlength=bins) / counts
    return Reliability(edges, counts, mean_confidence, accuracy)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of ``probs`` ``[N, classes]`` against ``labels`` (class indices), ``bins`` equal-width bins."""
    return round(reliability(probs, labels, bins).ece, 6)


def calibration_summary(
    scaling: TemperatureScaling, logits: np.ndarray, labels: np.ndarray, bins: int, diagram: Path
) -> dict[str, Any]:
    """The report's ``calibration`` block: the temperature, and the ECE of ``logits`` (the test split's)
    before and after it, beside the ECE on the validation rows it was fitted on; draws the reliability
    diagram of both to ``diagram``."""
    from trainer.plots import plot_reliability  # matplotlib only when a report is written

    before = reliability(probabilities(logits), labels, bins)
    after = reliability(probabilities(logits, scaling.temperature), labels, bins)
    plot_reliability(
        {"raw softmax": before, f"temperature {scaling.temperature:g}": after},
        diagram,
        "Reliability on the test split",
    )
    return {
        "method": "temperature",
        "temperature": scaling.temperature,
        "fitted_on": "validation split",
        "fitted_rows": scaling.fitted_rows,
        "bins": bins,
        "measured_on": "test split",
        "ece_before": round(before.ece, 6),
        "ece_after": round(after.ece, 6),
        "nll_before": round(negative_log_likelihood(logits, labels, 1.0), 6),
        "nll_after": round(negative_log_likelihood(logits, labels, scaling.temperature), 6),
        "validation": {"ece_before": scaling.ece_before, "ece_after": scaling.ece_after},
        "diagram": diagram.name,
    }
