"""Novelty: how unlike the training data a flow is, from the pre-training autoencoder's reconstruction error.

The classifier must put every flow in one of the classes it knows, so a flow unlike anything it was
trained on (an unknown attack, or flows from another flow meter) still gets a confident label; our own
measurements show a SYN scan from another meter labelled 100 % benign. The ResCAE autoencoder that
stage 1 of training fits to the training rows answers a different question: how well can this flow be
reconstructed? Its mean squared reconstruction error over the scaled inputs is small for flows like
the training data and large for others.

The trainer calibrates a threshold on the *validation* rows (never the test split): the ``quantile``
of their reconstruction errors, so about ``1 - quantile`` of flows like the training data are novel by
construction. A flow's novelty score is its error divided by that threshold; above 1 it is novel.

This module is imported by the detector at serving time; it must not import anything from trainer/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from detector.core.model import ResCAE, in_batches

NOVELTY_WEIGHTS = "novelty.safetensors"
NOVELTY_CONFIG = "novelty.json"
STATISTIC = "mean squared reconstruction error of the scaled inputs"
NOVEL_ABOVE = 1.0  # scores are error ÷ threshold: a flow above the threshold is novel


@dataclass(frozen=True)
class NoveltyCalibration:
    """What the trainer measured on its validation rows; stored in the bundle as ``novelty.json``."""

    threshold: float
    quantile: float
    calibration_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": STATISTIC,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "calibration_rows": self.calibration_rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoveltyCalibration:
        """Raises ``ValueError`` for a calibration that could not score anything sensibly."""
        threshold, quantile = float(data["threshold"]), float(data["quantile"])
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"{NOVELTY_CONFIG}: threshold must be a positive number, got {data['threshold']!r}")
        if not 0 < quantile < 1:
            raise ValueError(f"{NOVELTY_CONFIG}: quantile must be between 0 and 1, got {data['quantile']!r}")
        return cls(threshold, quantile, int(data.get("calibration_rows", 0)))


@dataclass(frozen=True)
class Novelty:
    """A calibrated autoencoder (eval mode, on the CPU until :meth:`to` moves it)."""

    autoencoder: ResCAE
    calibration: NoveltyCalibration

    def to(self, device: torch.device) -> Novelty:
        """This novelty model on ``device``: the autoencoder moves in place (as ``nn.Module.to``), the
        returned object shares it."""
        return Novelty(self.autoencoder.to(device).eval(), self.calibration)

    def scores(self, matrix: np.ndarray, device: torch.device) -> np.ndarray:
        """Novelty score per row of a preprocessed matrix: reconstruction error ÷ threshold (novel above
        :data:`NOVEL_ABOVE`)."""
        return reconstruction_error(self.autoencoder, matrix, device) / self.calibration.threshold


def reconstruction_error(autoencoder: ResCAE, matrix: np.ndarray, device: torch.device) -> np.ndarray:
    """Mean squared reconstruction error per row ``[N]`` (float64); the autoencoder must be in eval mode."""
    errors = in_batches(lambda x: ((autoencoder(x) - x) ** 2).mean(dim=1).double(), matrix, device)
    return np.concatenate(errors) if errors else np.zeros(0)
