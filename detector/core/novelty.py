"""Novelty: how unlike the training data a flow is, by two signals, one of which decides ``is_novel``.

The classifier must put every flow in one of the classes it knows, so a flow unlike anything it was
trained on (an unknown attack, or flows from another flow meter) still gets a label. Two signals say how
far a flow is from what the model learnt:

* ``autoencoder``: the mean squared reconstruction error over the scaled inputs of the ResCAE autoencoder
  that stage 1 of training fits to the training rows. Its threshold is the ``quantile`` of the *validation*
  rows' errors, so about ``1 - quantile`` of flows like the training data are novel by construction. It
  sees the inputs, not the classes, so it also fires on flows from another meter (a drift alarm).
* ``max_probability``: ``-log`` of the classifier's largest probability (before the temperature). Its
  threshold is the ``1 - budget`` quantile over the *validation benign* rows, so about ``budget`` of benign
  flows like the training data are novel. ``trainer novelty`` measured it catching far more of an attack
  class held out of training than the autoencoder (README "Novelty"), so new bundles let it decide.

A flow's score for each signal is its value divided by that signal's threshold; above 1 it is novel by that
signal. ``NoveltyCalibration.flag`` names the signal that decides ``is_novel``; alerts carry both scores.
Bundles written before the choice existed have no ``flag`` and are decided by the autoencoder, as before.

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
CONFIDENCE_STATISTIC = "-log of the classifier's largest probability, before the temperature"
NOVEL_ABOVE = 1.0  # scores are value ÷ threshold: a flow above the threshold is novel
SIGNALS = ("autoencoder", "max_probability")


@dataclass(frozen=True)
class ConfidenceCalibration:
    """The ``max_probability`` signal's threshold, measured on the trainer's validation benign rows."""

    threshold: float
    budget: float  # the share of those rows above the threshold: the false-alarm budget it was set for
    calibration_rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": CONFIDENCE_STATISTIC,
            "threshold": self.threshold,
            "budget": self.budget,
            "calibration_rows": self.calibration_rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConfidenceCalibration:
        """Raises ``ValueError`` for a threshold that could not score anything sensibly."""
        threshold, budget = _threshold_and_share(data, "budget", "max_probability")
        return cls(threshold, budget, int(data.get("calibration_rows", 0)))


@dataclass(frozen=True)
class NoveltyCalibration:
    """What the trainer measured on its validation rows; stored in the bundle as ``novelty.json``."""

    threshold: float  # the autoencoder's (the top-level keys of novelty.json, as before the choice existed)
    quantile: float
    calibration_rows: int
    flag: str = "autoencoder"  # the signal that decides is_novel, one of SIGNALS
    max_probability: ConfidenceCalibration | None = None
    # Written by ``trainer adapt``: the site the autoencoder was fitted to (source files, rows, budget, the base
    # bundle); carried through unchanged. None for a bundle fitted by ``trainer fit``.
    site: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.flag not in SIGNALS:
            raise ValueError(f"{NOVELTY_CONFIG}: flag must be one of {', '.join(SIGNALS)}, got {self.flag!r}")
        if self.flag == "max_probability" and self.max_probability is None:
            raise ValueError(f"{NOVELTY_CONFIG}: flag is max_probability but there is no max_probability threshold")

    @property
    def expected_share(self) -> float:
        """The share of flows like the training data (benign ones, for ``max_probability``) that the deciding
        signal calls novel by construction."""
        if self.flag == "max_probability" and self.max_probability is not None:
            return self.max_probability.budget
        return 1 - self.quantile

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "statistic": STATISTIC,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "calibration_rows": self.calibration_rows,
            "flag": self.flag,
        }
        if self.max_probability is not None:
            data["max_probability"] = self.max_probability.to_json()
        if self.site is not None:
            data["site"] = self.site
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoveltyCalibration:
        """Raises ``ValueError`` for a calibration that could not score anything sensibly."""
        threshold, quantile = _threshold_and_share(data, "quantile", NOVELTY_CONFIG)
        confidence = data.get("max_probability")
        site = data.get("site")
        if site is not None and not isinstance(site, dict):
            raise ValueError(f"{NOVELTY_CONFIG}: site must be an object, got {type(site).__name__}")
        return cls(
            threshold,
            quantile,
            int(data.get("calibration_rows", 0)),
            str(data.get("flag", "autoencoder")),
            ConfidenceCalibration.from_json(confidence) if confidence is not None else None,
            site,
        )

    def signals(self, errors: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Each signal's score per row (value ÷ threshold) from the autoencoder's reconstruction ``errors`` and
        the classifier's raw (uncalibrated) ``probabilities``; the ``flag`` signal's scores decide."""
        scores = {"autoencoder": np.asarray(errors, dtype=np.float64) / self.threshold}
        if self.max_probability is not None:
            scores["max_probability"] = max_probability_signal(probabilities) / self.max_probability.threshold
        return scores


@dataclass(frozen=True)
class Novelty:
    """A calibrated autoencoder (eval mode, on the CPU until :meth:`to` moves it)."""

    autoencoder: ResCAE
    calibration: NoveltyCalibration

    def to(self, device: torch.device) -> Novelty:
        """This novelty model on ``device``: the autoencoder moves in place (as ``nn.Module.to``), the
        returned object shares it."""
        return Novelty(self.autoencoder.to(device).eval(), self.calibration)

    def signals(self, matrix: np.ndarray, probabilities: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
        """Every signal's score per row of a preprocessed matrix whose raw class ``probabilities`` are given
        (see :meth:`NoveltyCalibration.signals`)."""
        return self.calibration.signals(reconstruction_error(self.autoencoder, matrix, device), probabilities)

    def scores(self, matrix: np.ndarray, probabilities: np.ndarray, device: torch.device) -> np.ndarray:
        """The deciding signal's score per row (novel above :data:`NOVEL_ABOVE`)."""
        return self.signals(matrix, probabilities, device)[self.calibration.flag]


def reconstruction_error(autoencoder: ResCAE, matrix: np.ndarray, device: torch.device) -> np.ndarray:
    """Mean squared reconstruction error per row ``[N]`` (float64); the autoencoder must be in eval mode."""
    errors = in_batches(lambda x: ((autoencoder(x) - x) ** 2).mean(dim=1).double(), matrix, device)
    return np.concatenate(errors) if errors else np.zeros(0)


def _threshold_and_share(data: dict[str, Any], share: str, where: str) -> tuple[float, float]:
    """A stored signal's positive, finite ``threshold`` and its ``share`` key (a quantile or a budget) strictly
    between 0 and 1; ``ValueError`` naming ``where`` otherwise."""
    threshold, fraction = float(data["threshold"]), float(data[share])
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"{where}: threshold must be a positive number, got {data['threshold']!r}")
    if not 0 < fraction < 1:
        raise ValueError(f"{where}: {share} must be between 0 and 1, got {data[share]!r}")
    return threshold, fraction


def max_probability_signal(probabilities: np.ndarray) -> np.ndarray:
    """``-log`` of each row's largest probability ``[N]`` (float64), larger for flows the classifier is less sure
    of. Computed as ``-log1p(-others)`` from the sum of the *other* probabilities, which keeps its resolution
    where the largest one rounds to 1 in float32 (below about 6e-8 of doubt, common for confident flows)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0)
    others = p.copy()
    others[np.arange(len(p)), p.argmax(axis=1)] = 0.0
    values: np.ndarray = -np.log1p(-np.clip(others.sum(axis=1), 0.0, 1 - 1e-12))
    return values
