"""The ResCAE-BiGRU network: a residual convolutional encoder, its pre-training decoder, and the
bidirectional-GRU classifier that reads the encoder's output as a sequence.

Shapes follow the paper's method (README). A flow is a vector of F scaled features, seen as an image of one
row: ``[N, 1, 1, F]``. Every convolution slides along the feature axis only, so kernels are ``(1, k)``.

The paper's table gives the shortcut path kernel 1, stride 2, padding 1 and the main path kernel 3,
stride 2, padding 1. With those numbers the two paths produce different widths (for F=80: 41 vs 40)
and the residual sum does not type-check. We keep the kernels and strides and drop the shortcut's
padding, so both paths give ``floor((F - 1) / 2) + 1`` positions and can be added.

Where ReLU goes is a choice (``ModelConfig.activation``): ``resnet`` is the standard residual block (He et al.
2016: ReLU after the first convolution and after the sum); ``every_conv`` follows the paper's Table 1, which
lists a ReLU after every convolution, the shortcut's included (the sum of two non-negative paths needs no
further ReLU). Both have the same weights, so the choice changes the function, not the bundle's files.

This module is imported by the detector at serving time; it must not import anything from trainer/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters that fix the network's shape; stored in the bundle as JSON."""

    n_features: int
    n_classes: int
    filters: tuple[int, int] = (16, 32)
    gru_hidden: int = 64
    gru_layers: int = 2
    dropout: float = 0.5
    activation: str = "resnet"

    def to_json(self) -> dict[str, Any]:
        """The fields as JSON; ``activation`` only when it is not the default, so that a detector from before
        the field existed still reads the bundles it can serve."""
        data = asdict(self)
        if data["activation"] == "resnet":
            del data["activation"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        """Read ``model.json``; raises ``ValueError`` naming the field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError("model.json must hold an object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"model.json has unknown field(s): {', '.join(unknown)}")
        values = dict(data)
        filters = values.get("filters", (16, 32))
        if not isinstance(filters, list | tuple) or len(filters) != 2 or not all(_positive_int(f) for f in filters):
            raise ValueError(f"model.json: filters must be two positive integers, got {filters!r}")
        values["filters"] = tuple(filters)
        for name in ("n_features", "n_classes", "gru_hidden", "gru_layers"):
            if name in values and not _positive_int(values[name]):
                raise ValueError(f"model.json: {name} must be a positive integer, got {values[name]!r}")
        activation = values.get("activation", "resnet")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.json: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        dropout = values.get("dropout", 0.5)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"model.json: dropout must be a number in [0, 1), got {dropout!r}")
        try:
            return cls(**values)
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"model.json: {exc}") from None


ACTIVATIONS = ("resnet", "every_conv")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def encoded_length(n_features: int, n_blocks: int = 2) -> int:
    """Width of the encoder's output for ``n_features`` inputs (each block halves it, rounding up)."""
    width = n_features
    for _ in range(n_blocks):
        width = (width - 1) // 2 + 1
    return width


class ResidualBlock(nn.Module):
    """conv(1x3, stride 2) → BN → ReLU → conv(1x3) → BN, plus a conv(1x1, stride 2) → BN shortcut, then ReLU
    of the sum (``activation="resnet"``); with ``"every_conv"`` the second convolution and the shortcut end
    in a ReLU of their own instead (the paper's Table 1)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str = "resnet") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        every_conv = activation == "every_conv"
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, 3), stride=(1, 2), padding=(0, 1), bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (1, 3), stride=(1, 1), padding=(0, 1), bias=False),
            nn.BatchNorm2d(out_channels),
            *([nn.ReLU()] if every_conv else []),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, 1), stride=(1, 2), padding=0, bias=False),
            nn.BatchNorm2d(out_channels),
            *([nn.ReLU()] if every_conv else []),
        )
        self.every_conv = every_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.main(x) + self.shortcut(x)
        return total if self.every_conv else torch.relu(total)


class Encoder(nn.Module):
    """Two residual blocks: ``[N, 1, 1, F]`` → ``[N, filters[1], 1, L]``."""

    def __init__(self, filters: tuple[int, int] = (16, 32), activation: str = "resnet") -> None:
        super().__init__()
        self.rb1 = ResidualBlock(1, filters[0], activation)
        self.rb2 = ResidualBlock(filters[0], filters[1], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded: torch.Tensor = self.rb2(self.rb1(x))
        return encoded


class ResCAE(nn.Module):
    """The convolutional autoencoder used for unsupervised pre-training (MSE on the F inputs)."""

    def __init__(self, n_features: int, filters: tuple[int, int] = (16, 32), activation: str = "resnet") -> None:
        super().__init__()
        self.n_features = n_features
        self.encoder = Encoder(filters, activation)
        self.up1 = nn.ConvTranspose2d(filters[1], filters[0], (1, 3), stride=(1, 2), padding=(0, 1))
        self.up2 = nn.ConvTranspose2d(filters[0], 1, (1, 3), stride=(1, 2), padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x`` of shape ``[N, F]`` (or ``[N, 1, 1, F]``); returns ``[N, F]``."""
        image = as_image(x)
        n = image.shape[0]
        hidden = self.encoder(image)
        middle = encoded_length(self.n_features, 1)
        hidden = torch.relu(self.up1(hidden, output_size=(1, middle)))
        out = torch.sigmoid(self.up2(hidden, output_size=(1, self.n_features)))
        return out.reshape(n, self.n_features)


class ResCAEBiGRU(nn.Module):
    """Encoder → sequence ``[N, L, 32]`` → 2-layer BiGRU → Dropout → Linear (logits).

    The classifier reads the final hidden state of both directions of the top GRU layer. ``forward``
    returns logits; use :meth:`predict_proba` for softmax probabilities.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.filters, config.activation)
        self.gru = nn.GRU(
            input_size=config.filters[1],
            hidden_size=config.gru_hidden,
            num_layers=config.gru_layers,
            batch_first=True,
            bidirectional=True,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.gru_hidden, config.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.encoder(as_image(x))  # [N, C, 1, L]
        sequence = encoded.squeeze(2).permute(0, 2, 1)  # [N, L, C]
        _, hidden = self.gru(sequence)  # [layers * 2, N, H]
        last = torch.cat([hidden[-2], hidden[-1]], dim=1)  # forward and backward of the top layer
        logits: torch.Tensor = self.head(self.dropout(last))
        return logits

    @torch.inference_mode()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a batch ``[N, F]``; the caller must have called ``eval()``."""
        return torch.softmax(self(x), dim=1)


def as_image(x: torch.Tensor) -> torch.Tensor:
    """``[N, F]`` → ``[N, 1, 1, F]``; an input already 4-D is returned unchanged."""
    if x.dim() == 4:
        return x
    return x.reshape(x.shape[0], 1, 1, x.shape[-1])


INFERENCE_BATCH = 4096


@torch.inference_mode()
def in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    matrix: np.ndarray,
    device: torch.device,
    batch_size: int = INFERENCE_BATCH,
) -> list[np.ndarray]:
    """``fn`` applied to a float32 matrix ``batch_size`` rows at a time on ``device``, each result back on the CPU.

    One array per batch (none for an empty matrix): inference memory stays bounded whatever the input size.
    Modules ``fn`` calls must be in eval mode.
    """
    results = []
    for start in range(0, len(matrix), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(matrix[start : start + batch_size], dtype=np.float32))
        results.append(fn(chunk.to(device)).cpu().numpy())
    return results
