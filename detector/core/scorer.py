"""Scoring flows with a bundle: decoded flows → preprocessing → model → verdicts.

This is the one model path. The trainer evaluates with :func:`predict_proba`, ``detector score`` and the
Kafka worker use :class:`Scorer`; so offline scores, evaluation and the stream cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from detector.core.bundle import Bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.model import INFERENCE_BATCH, ResCAEBiGRU, in_batches
from detector.core.novelty import NOVEL_ABOVE


class DeviceError(ValueError):
    """``--device cuda`` was asked for on a machine without a usable GPU."""


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one; ``cuda`` without one is an error, not a silent CPU run."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was requested but no CUDA GPU is available (use auto or cpu)")
    if requested not in {"cpu", "cuda"}:
        raise DeviceError(f"unknown device {requested!r}: choose auto, cpu or cuda")
    return torch.device(requested)


def predict_proba(
    model: ResCAEBiGRU, matrix: np.ndarray, device: torch.device, batch_size: int = INFERENCE_BATCH
) -> np.ndarray:
    """Softmax probabilities ``[N, classes]`` for a preprocessed matrix; the model must be in eval mode."""
    outputs = in_batches(lambda x: torch.softmax(model(x), dim=1).float(), matrix, device, batch_size)
    if not outputs:
        return np.zeros((0, model.config.n_classes), dtype=np.float32)
    return np.concatenate(outputs)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one flow. ``novelty`` is None when the bundle has no novelty model."""

    label: str
    is_attack: bool
    confidence: float
    top: tuple[tuple[str, float], ...]
    novelty: float | None = None

    @property
    def is_novel(self) -> bool:
        """The flow is unlike the training data (see :mod:`detector.core.novelty`)."""
        return self.novelty is not None and self.novelty > NOVEL_ABOVE


@dataclass(frozen=True, slots=True)
class Scores:
    """A batch's model outputs: class probabilities ``[N, classes]`` and novelty ``[N]`` (or None)."""

    probabilities: np.ndarray
    novelty: np.ndarray | None

    def take(self, rows: np.ndarray) -> Scores:
        return Scores(self.probabilities[rows], None if self.novelty is None else self.novelty[rows])

    def ranked(self, top_k: int) -> np.ndarray:
        """Class indices ``[N, top_k]``, most probable first: the one ranking every verdict and count uses."""
        return np.argsort(-self.probabilities, axis=1)[:, :top_k]

    def novel(self) -> np.ndarray:
        """``[N]`` booleans: which flows :attr:`Verdict.is_novel` calls novel (none without a novelty model)."""
        if self.novelty is None:
            return np.zeros(len(self.probabilities), dtype=bool)
        return self.novelty > NOVEL_ABOVE


class Scorer:
    """A loaded bundle ready to score batches of decoded flows on one device."""

    def __init__(self, bundle: Bundle, device: str = "auto", top_k: int = 3) -> None:
        self.bundle = bundle
        self.device = pick_device(device)
        self.model = bundle.model.to(self.device).eval()
        self.novelty = bundle.novelty.to(self.device) if bundle.novelty is not None else None
        self.top_k = max(1, min(top_k, len(bundle.classes)))
        pre = bundle.preprocessor
        self.decoder = FlowDecoder(pre.numeric, tuple(pre.categories))
        self._classes = np.asarray(bundle.classes, dtype=object)
        self._benign = bundle.classes.index(bundle.benign_class)

    def scores(self, flows: Sequence[DecodedFlow]) -> Scores:
        """Class probabilities (in the bundle's class order) and novelty for decoded flows: one
        preprocessing pass feeds both models."""
        matrix = self._matrix(flows)
        probabilities = predict_proba(self.model, matrix, self.device)
        novelty = self.novelty.scores(matrix, self.device) if self.novelty is not None else None
        return Scores(probabilities, novelty)

    def score(self, flows: Sequence[DecodedFlow]) -> list[Verdict]:
        """One verdict per flow, in order."""
        return self.verdicts(self.scores(flows))

    def verdicts(self, scores: Scores) -> list[Verdict]:
        probabilities = scores.probabilities
        order = scores.ranked(self.top_k)
        novelty = scores.novelty.tolist() if scores.novelty is not None else [None] * len(probabilities)
        verdicts = []
        for row, ranked, novel in zip(probabilities, order, novelty, strict=True):
            best = int(ranked[0])
            top = tuple((str(self._classes[i]), round(float(row[i]), 6)) for i in ranked)
            verdicts.append(Verdict(str(self._classes[best]), best != self._benign, float(row[best]), top, novel))
        return verdicts

    def _matrix(self, flows: Sequence[DecodedFlow]) -> np.ndarray:
        pre = self.bundle.preprocessor
        numeric = np.stack([f.numeric for f in flows]) if flows else np.zeros((0, len(pre.numeric)))
        categorical = {name: [f.categorical[i] for f in flows] for i, name in enumerate(pre.categories)}
        return pre.transform(numeric, categorical)
