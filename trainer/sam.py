"""Sharpness-Aware Minimization (Foret et al. 2021) around any base optimizer.

SAM looks for weights whose whole neighbourhood has low loss: each step first climbs to the worst point
within an L2 ball of radius ``rho`` (``w + e(w)``, ``e = rho · g / ||g||``), takes the gradient there, then
applies the base optimizer's update to the original weights. It costs two forward/backward passes per
step. Flat minima generalise better, which matters for the rare classes the model sees only through
SMOTE's synthetic neighbours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


class SAM:
    """Wraps a base optimizer. Use :meth:`step` with a closure that computes the loss and calls backward.

    Batch-norm running statistics are frozen during the second pass (at the perturbed weights), so the
    statistics the bundle stores describe the real weights.
    """

    def __init__(self, params: Iterable[nn.Parameter], base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        if rho <= 0:
            raise ValueError("SAM rho must be > 0")
        self.params = [p for p in params if p.requires_grad]
        self.base = base
        self.rho = rho

    def zero_grad(self) -> None:
        self.base.zero_grad(set_to_none=True)

    def step(self, model: nn.Module, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One SAM update; ``closure`` must zero nothing, compute the loss, call ``backward`` and return it."""
        self.zero_grad()
        loss = closure()
        perturbations = self._ascend()
        self.zero_grad()
        with _FrozenBatchNorm(model):
            closure()
        self._descend(perturbations)
        self.base.step()
        return loss.detach()

    @torch.no_grad()
    def _ascend(self) -> list[torch.Tensor | None]:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return [None] * len(self.params)
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        scale = self.rho / (norm + 1e-12)
        perturbations: list[torch.Tensor | None] = []
        for p in self.params:
            if p.grad is None:
                perturbations.append(None)
                continue
            e = p.grad * scale
            p.add_(e)
            perturbations.append(e)
        return perturbations

    @torch.no_grad()
    def _descend(self, perturbations: list[torch.Tensor | None]) -> None:
        for p, e in zip(self.params, perturbations, strict=True):
            if e is not None:
                p.sub_(e)


class _FrozenBatchNorm:
    def __init__(self, model: nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.momenta: list[float | None] = []

    def __enter__(self) -> None:
        self.momenta = [m.momentum for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, momentum in zip(self.norms, self.momenta, strict=True):
            m.momentum = momentum
