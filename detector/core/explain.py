"""Why this alert: the features that pushed a flow towards its predicted class (integrated gradients).

For each explained flow the attribution of model input ``i`` is integrated gradients (Sundararajan et al. 2017)
from the all-zero input: ``x_i · mean_a ∂s/∂x_i (a·x)`` over :data:`STEPS` points ``a`` of the straight path from
0 to ``x`` (midpoint rule). ``x`` is the flow's preprocessed feature vector (:mod:`detector.core.preprocess`:
scaled to [0, 1], one-hot categories), so 0 is "every feature at its training minimum, no known category"; ``s`` is
the predicted class's calibrated log-odds against all other classes, ``(z_c - logsumexp_{j≠c} z_j) / T`` (logits
``z``, the bundle's temperature ``T``). Log-odds, not the probability: a probability of 0.999 has almost no
gradient left, its log-odds still do. The one-hot columns of a categorical feature are summed, so every entry
names a feature of the flow record itself (``Flow Duration``, ``proto``), with the record's raw value.

Why not plain gradient × input (``x_i · ∂s/∂x_i`` at ``x`` alone, one pass): the network is not linear enough
for one gradient. On the quick bundle's test split (600 attack verdicts, ``python -m tests.bench.explain_check``),
setting each flow's top feature to 0 lowered its log-odds by 1.72 on average when gradient × input chose the
feature, 2.65 when integrated gradients with 4 steps did (2.60 with 8 steps; a random feature: 0.16); its top 3
features: 4.49, 4.96, 5.09 (random: 0.48). (Zeroing favours integrated gradients a little: 0 is its reference.)
The steps share one forward and one backward pass (the path points are stacked as rows), which costs about
:data:`STEPS` times one forward and backward pass of the flows; README "Why this alert" has the measured cost.

What it means: integrated gradients is still a *local, linear* reading of the model: the attributions add up
to ``s(x) - s(0)`` (up to the sum's discretisation), the model's log-odds of this flow against a flow of all
minima. It says which inputs moved the model's output from that reference to this flow; it is not a causal
account of the verdict and not a counterfactual ("without this feature the flow would be benign"). A feature at
its training minimum gets 0 whatever its importance.

Attributions always come from the bundle's **fp32 weights run eagerly**, whatever backend serves the verdicts
(int8, OpenVINO, CUDA graphs in bf16): those backends cannot differentiate, and the fp32 model is the one the
trainer evaluated. The class explained is the verdict's label (the serving backend's), so an explanation always
explains the label it is attached to. Callers explain the flows that need it only (alerts, not every verdict).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from detector.core.model import ResCAEBiGRU
from detector.core.preprocess import Preprocessor

STEPS = 4  # points on the path from 0 to the flow (integrated gradients' Riemann sum)
EXPLAIN_BATCH = 256  # flows per backward pass (times STEPS rows): bounds the memory the autograd graph holds


@dataclass(frozen=True, slots=True)
class Attribution:
    """One feature's share in a verdict: its canonical name, the flow's raw value (a number, a category, or
    None where the meter wrote NaN or an infinity) and its attribution in log-odds of the predicted class."""

    feature: str
    value: float | str | None
    attribution: float

    def to_json(self) -> dict[str, float | str | None]:
        return {"feature": self.feature, "value": self.value, "attribution": self.attribution}


class Explainer:
    """Integrated-gradients attributions of one bundle's fp32 classifier on one device (see the module docstring)."""

    def __init__(
        self, model: ResCAEBiGRU, preprocessor: Preprocessor, device: torch.device, temperature: float = 1.0
    ) -> None:
        self.model = model
        self.device = device
        self.temperature = temperature
        self.features = preprocessor.input_features
        # [model inputs, features]: column i of the model's input belongs to feature j (one-hot blocks summed)
        owner = list(range(len(preprocessor.numeric)))
        for position, (_, values) in enumerate(preprocessor.categories.items()):
            owner.extend([len(preprocessor.numeric) + position] * len(values))
        self._fold = np.zeros((len(owner), len(self.features)), dtype=np.float32)
        self._fold[np.arange(len(owner)), owner] = 1.0

    def attributions(self, matrix: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``[N, features]`` attributions of preprocessed rows ``matrix`` ``[N, inputs]`` towards class indices
        ``targets`` ``[N]``, one-hot blocks summed into their feature."""
        parts = [
            self._per_input(matrix[start : start + EXPLAIN_BATCH], targets[start : start + EXPLAIN_BATCH])
            for start in range(0, len(matrix), EXPLAIN_BATCH)
        ]
        per_input = np.concatenate(parts) if parts else np.zeros((0, len(self._fold)), dtype=np.float32)
        folded: np.ndarray = per_input @ self._fold
        return folded

    def explain(
        self, matrix: np.ndarray, targets: np.ndarray, raw: Sequence[Sequence[float | str]], k: int
    ) -> list[tuple[Attribution, ...]]:
        """The ``k`` features with the largest attribution towards each row's target class, largest first (fewer
        only when the bundle has fewer features). ``raw`` holds each row's values in :attr:`features` order."""
        if k <= 0 or not len(matrix):
            return [() for _ in range(len(matrix))]
        scores = self.attributions(matrix, targets)
        k = min(k, len(self.features))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [
            tuple(Attribution(self.features[j], _plain(values[j]), round(float(row[j]), 6)) for j in ranked.tolist())
            for row, ranked, values in zip(scores, order, raw, strict=True)
        ]

    def _per_input(self, matrix: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``[N, inputs]`` integrated gradients of each row's target log-odds, one backward pass for all steps."""
        x = torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32)).to(self.device)
        target = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=self.device).repeat(STEPS)
        alphas = (torch.arange(STEPS, dtype=torch.float32, device=self.device) + 0.5) / STEPS
        # cuDNN's RNN backward refuses eval mode; the native GRU kernels compute the same function
        cudnn_off = torch.backends.cudnn.flags(enabled=False) if self.device.type == "cuda" else nullcontext()
        with torch.inference_mode(False), torch.enable_grad(), cudnn_off:
            path = (alphas[:, None, None] * x[None]).reshape(-1, x.shape[1]).requires_grad_(True)
            logits = self.model(path) / self.temperature
            chosen = logits.gather(1, target[:, None]).squeeze(1)
            others = logits.scatter(1, target[:, None], float("-inf")).logsumexp(dim=1)
            (gradient,) = torch.autograd.grad((chosen - others).sum(), path)
        mean_gradient = gradient.reshape(STEPS, *x.shape).mean(dim=0)
        result: np.ndarray = (mean_gradient * x).detach().cpu().numpy()
        return result


def _plain(value: float | str) -> float | str | None:
    if isinstance(value, str):
        return value
    number = float(value)
    return number if np.isfinite(number) else None
