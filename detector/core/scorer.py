"""Scoring flows with a bundle: decoded flows → preprocessing → model → verdicts.

This is the one model path. The trainer evaluates with :func:`predict_proba` (the fp32 model as trained),
``detector score`` and the Kafka worker use :class:`Scorer`, which runs the same weights through a serving
backend (:mod:`detector.core.backends`: OpenVINO or int8 on the CPU, CUDA graphs on a GPU, or ``eager``, which is
exactly :func:`predict_proba`). ``make bench`` measures how often a backend's label differs from the fp32 model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from detector.core.backends import Backend, BackendError, Pending, build_backend
from detector.core.backends import predict_proba as predict_proba  # the fp32 model as trained: the trainer's path
from detector.core.bundle import Bundle
from detector.core.calibration import IDENTITY, TemperatureScaling
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.explain import Attribution, Explainer
from detector.core.novelty import NOVEL_ABOVE, NoveltyCalibration


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """The model's answer for one flow. ``novelty`` is None when the bundle has no novelty model; it is the score
    of the signal named ``novelty_signal``, the one that decides :attr:`is_novel`, and ``novelty_scores`` holds
    every signal's score (:mod:`detector.core.novelty`)."""

    label: str
    is_attack: bool
    confidence: float  # calibrated when the bundle has a temperature (detector.core.calibration)
    top: tuple[tuple[str, float], ...]
    novelty: float | None = None
    explanation: tuple[Attribution, ...] = ()  # with --explain K: the K features that pushed label most
    novelty_signal: str | None = None
    novelty_scores: tuple[tuple[str, float], ...] = ()

    @property
    def is_novel(self) -> bool:
        """The flow is unlike the training data (see :mod:`detector.core.novelty`)."""
        return self.novelty is not None and self.novelty > NOVEL_ABOVE


@dataclass(frozen=True, slots=True)
class Scores:
    """A batch's model outputs: class probabilities ``[N, classes]``, the deciding novelty signal's scores ``[N]``
    (or None) and every signal's scores by name (``signal`` names the deciding one)."""

    probabilities: np.ndarray
    novelty: np.ndarray | None
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    signal: str | None = None

    @classmethod
    def joined(cls, parts: Sequence[Scores]) -> Scores:
        """The scores of consecutive parts of a batch, as one."""
        if len(parts) == 1:
            return parts[0]
        novelties = [p.novelty for p in parts if p.novelty is not None]
        novelty = np.concatenate(novelties) if novelties else None
        signals = {name: np.concatenate([p.signals[name] for p in parts]) for name in parts[0].signals}
        return cls(np.concatenate([p.probabilities for p in parts]), novelty, signals, parts[0].signal)

    def take(self, rows: np.ndarray) -> Scores:
        return Scores(
            self.probabilities[rows],
            None if self.novelty is None else self.novelty[rows],
            {name: values[rows] for name, values in self.signals.items()},
            self.signal,
        )

    def ranked(self, top_k: int) -> np.ndarray:
        """Class indices ``[N, top_k]``, most probable first: the one ranking every verdict and count uses."""
        return np.argsort(-self.probabilities, axis=1)[:, :top_k]

    def novel(self) -> np.ndarray:
        """``[N]`` booleans: which flows :attr:`Verdict.is_novel` calls novel (none without a novelty model)."""
        if self.novelty is None:
            return np.zeros(len(self.probabilities), dtype=bool)
        return self.novelty > NOVEL_ABOVE


class PendingScores:
    """Scores being computed (on a GPU the caller may decode the next flows meanwhile); :meth:`wait` returns them,
    the probabilities calibrated by the bundle's temperature."""

    def __init__(
        self, pending: Pending, novelty: NoveltyCalibration | None, calibration: TemperatureScaling = IDENTITY
    ) -> None:
        self._pending = pending
        self._novelty = novelty
        self._calibration = calibration

    def wait(self) -> Scores:
        probabilities, errors = self._pending.wait()
        calibrated = self._calibration.apply(probabilities)
        if errors is None or self._novelty is None:
            return Scores(calibrated, None)
        signals = self._novelty.signals(errors, probabilities)
        return Scores(calibrated, signals[self._novelty.flag], signals, self._novelty.flag)


class Scorer:
    """A loaded bundle ready to score batches of decoded flows on one device, through one serving backend
    (``auto``: the fastest measured for the device; see :mod:`detector.core.backends`). Raises
    :class:`DeviceError` for a device or backend that cannot be used here."""

    def __init__(self, bundle: Bundle, device: str = "auto", top_k: int = 3, backend: str = "auto") -> None:
        self.bundle = bundle
        self.device = pick_device(device)
        self.model = bundle.model.to(self.device).eval()
        self.novelty = bundle.novelty.to(self.device) if bundle.novelty is not None else None
        try:
            self.backend: Backend = build_backend(
                backend, self.model, self.novelty.autoencoder if self.novelty is not None else None, self.device
            )
        except BackendError as exc:
            raise DeviceError(str(exc)) from None
        self.top_k = max(1, min(top_k, len(bundle.classes)))
        pre = bundle.preprocessor
        self.decoder = FlowDecoder(pre.numeric, tuple(pre.categories))
        self._class_names = tuple(str(name) for name in bundle.classes)
        self._benign = bundle.classes.index(bundle.benign_class)
        self._novelty_calibration = self.novelty.calibration if self.novelty is not None else None
        self._explainer: Explainer | None = None

    @property
    def asynchronous(self) -> bool:
        """Whether :meth:`start` returns before the device has finished (a GPU backend)."""
        return self.backend.asynchronous

    def start(self, flows: Sequence[DecodedFlow]) -> PendingScores:
        """Preprocess ``flows`` and begin scoring them; the scores come from :meth:`PendingScores.wait`."""
        return PendingScores(
            self.backend.start(self._matrix(flows)), self._novelty_calibration, self.bundle.calibration
        )

    def scores(self, flows: Sequence[DecodedFlow]) -> Scores:
        """Class probabilities (in the bundle's class order) and novelty for decoded flows: one
        preprocessing pass feeds both models."""
        return self.start(flows).wait()

    def score(self, flows: Sequence[DecodedFlow]) -> list[Verdict]:
        """One verdict per flow, in order."""
        return self.verdicts(self.scores(flows))

    def verdicts(self, scores: Scores) -> list[Verdict]:
        # Python lists, not numpy rows: indexing a numpy row per class costs more than the rest of a verdict.
        rows = scores.probabilities.tolist()
        order = scores.ranked(self.top_k).tolist()
        novelty = scores.novelty.tolist() if scores.novelty is not None else [None] * len(rows)
        names = tuple(scores.signals)
        by_signal = zip(*(scores.signals[name].tolist() for name in names), strict=True) if names else None
        classes, benign, signal = self._class_names, self._benign, scores.signal
        verdicts = []
        for row, ranked, novel in zip(rows, order, novelty, strict=True):
            best = ranked[0]
            top = tuple([(classes[c], round(row[c], 6)) for c in ranked])
            signal_scores = tuple(zip(names, next(by_signal), strict=True)) if by_signal is not None else ()
            verdicts.append(
                Verdict(
                    classes[best],
                    best != benign,
                    row[best],
                    top,
                    novel,
                    novelty_signal=signal,
                    novelty_scores=signal_scores,
                )
            )
        return verdicts

    def explain(self, flows: Sequence[DecodedFlow], classes: Sequence[int], k: int) -> list[tuple[Attribution, ...]]:
        """The ``k`` features that pushed each flow most towards class index ``classes[i]`` (its verdict's label),
        by integrated gradients on the bundle's fp32 model run eagerly on this scorer's device, whatever the serving
        backend (:mod:`detector.core.explain`). One backward pass per chunk: call it for the flows to explain
        only (alerts): it costs 20 to 100 times their scoring (README "Why this alert")."""
        if k <= 0 or not flows:
            return [() for _ in flows]
        if self._explainer is None:
            self._explainer = Explainer(
                self.model, self.bundle.preprocessor, self.device, self.bundle.calibration.temperature
            )
        raw = [[*flow.numeric.tolist(), *flow.categorical] for flow in flows]
        return self._explainer.explain(self._matrix(flows), np.asarray(classes, dtype=np.int64), raw, k)

    def explained(self, verdicts: Sequence[Verdict], flows: Sequence[DecodedFlow], k: int) -> list[Verdict]:
        """``verdicts`` (of ``flows``, in order) with their explanation (:meth:`explain`) when ``k`` > 0."""
        if k <= 0:
            return list(verdicts)
        classes = [self.bundle.classes.index(verdict.label) for verdict in verdicts]
        explanations = self.explain(flows, classes, k)
        return [replace(v, explanation=e) for v, e in zip(verdicts, explanations, strict=True)]

    def explained_attacks(self, verdicts: Sequence[Verdict], flows: Sequence[DecodedFlow], k: int) -> list[Verdict]:
        """``verdicts`` with the attack verdicts explained (:meth:`explain`); benign verdicts cost nothing."""
        result = list(verdicts)
        attacks = [i for i, verdict in enumerate(result) if verdict.is_attack]
        if k <= 0 or not attacks:
            return result
        chosen = self.explained([result[i] for i in attacks], [flows[i] for i in attacks], k)
        for i, verdict in zip(attacks, chosen, strict=True):
            result[i] = verdict
        return result

    def _matrix(self, flows: Sequence[DecodedFlow]) -> np.ndarray:
        pre = self.bundle.preprocessor
        numeric = np.stack([f.numeric for f in flows]) if flows else np.zeros((0, len(pre.numeric)))
        categorical = {name: [f.categorical[i] for f in flows] for i, name in enumerate(pre.categories)}
        return pre.transform(numeric, categorical)
