"""Focal Loss (Lin et al. 2017) for multi-class logits.

``FL(p_t) = -alpha_t · (1 - p_t)^gamma · log(p_t)``: the ``(1 - p_t)^gamma`` factor shrinks the loss of
flows the model already gets right, so the rare, hard classes (Infiltration, web attacks) keep
contributing gradient after the common ones are learned. ``gamma = 0`` and ``alpha = None`` is plain
cross-entropy.

The paper writes ``alpha_t`` without saying how it is chosen; :func:`focal_alpha` derives per-class weights
from class counts by a documented rule, so that a config can name the rule instead of a list of numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """Mean focal loss over a batch.

    Parameters
    ----------
    gamma:
        Focusing parameter (≥ 0).
    alpha:
        ``None`` (every class weighs 1), a scalar applied to all classes, or one weight per class.
    label_smoothing:
        Share ``eps`` of each target spread evenly over the K classes: the loss of a row is
        ``sum_c q_c · alpha_c · (1 - p_c)^gamma · (-log p_c)`` with ``q = (1 - eps) · onehot + eps / K``,
        which is the plain focal loss when ``eps = 0``.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError("focal loss gamma must be >= 0")
        if not 0 <= label_smoothing < 1:
            raise ValueError("label smoothing must be in [0, 1)")
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        weights = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.label_smoothing:
            return self._smoothed(logits, target)
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        p = log_p.exp()
        loss = -((1.0 - p) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * (self.alpha if self.alpha.dim() == 0 else self.alpha[target])
        return loss.mean()

    def _smoothed(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1)
        per_class = -((1.0 - log_p.exp()) ** self.gamma) * log_p  # [N, K]
        if self.alpha is not None:
            per_class = per_class * self.alpha
        k = logits.shape[1]
        q = torch.full_like(per_class, self.label_smoothing / k)
        q.scatter_add_(1, target.unsqueeze(1), torch.full_like(q[:, :1], 1.0 - self.label_smoothing))
        return (q * per_class).sum(dim=1).mean()


def focal_alpha(rule: str, counts: Sequence[int], beta: float = 0.999) -> list[float]:
    """Per-class focal weights from the class counts ``counts`` of the rows the loss sees, mean 1.

    ``inverse_frequency``: ``alpha_c ∝ 1 / n_c`` (a class with a tenth of the rows weighs ten times as
    much). ``effective_number`` (Cui et al., CVPR 2019): ``alpha_c ∝ (1 - beta) / (1 - beta^n_c)``, which
    weighs like inverse frequency among small classes and flattens among large ones, where extra rows add
    less new information. Normalising to mean 1 keeps the loss on the scale the learning rate was chosen
    for. A class without rows gets weight 0 (it never appears as a target).
    """
    n = np.asarray(counts, dtype=np.float64)
    if rule == "inverse_frequency":
        raw = np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)
    elif rule == "effective_number":
        raw = np.divide(1.0 - beta, 1.0 - np.power(beta, n), out=np.zeros_like(n), where=n > 0)
    else:
        raise ValueError(f"unknown focal alpha rule {rule!r}")
    if not raw.any():
        raise ValueError("focal alpha needs at least one class with rows")
    return [float(v) for v in raw / raw.mean()]
