"""Focal Loss (Lin et al. 2017) for multi-class logits.

``FL(p_t) = -alpha_t · (1 - p_t)^gamma · log(p_t)``: the ``(1 - p_t)^gamma`` factor shrinks the loss of
flows the model already gets right, so the rare, hard classes (Infiltration, web attacks) keep
contributing gradient after the common ones are learned. ``gamma = 0`` and ``alpha = None`` is plain
cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError("focal loss gamma must be >= 0")
        self.gamma = gamma
        weights = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
        p = log_p.exp()
        loss = -((1.0 - p) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * (self.alpha if self.alpha.dim() == 0 else self.alpha[target])
        return loss.mean()
