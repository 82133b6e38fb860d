"""Tiny bundles for tests: generated rows, fitted preprocessing, an *untrained* model (random weights).

They exercise the bundle format, loading and scoring paths; they say nothing about accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detector.bundle import write_bundle
from detector.decode import DecodedFlow, FlowDecoder
from detector.model import ModelConfig, ResCAEBiGRU
from detector.preprocess import Preprocessor
from tests.support.generated import FEATURES, generated_rows

CLASSES = ("BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS")


def decoded_generated_flows(seed: int = 0) -> list[DecodedFlow]:
    decoder = FlowDecoder(FEATURES)
    flows = [decoder.decode_mapping(row) for row in generated_rows(seed)]
    assert all(isinstance(f, DecodedFlow) for f in flows)
    return flows  # type: ignore[return-value]


def make_bundle(directory: Path, *, seed: int = 0, version: str | None = None) -> Path:
    """Write a complete, valid bundle for the generated dialect into ``directory``."""
    torch.manual_seed(seed)
    flows = decoded_generated_flows(seed)
    preprocessor = Preprocessor.fit(np.stack([f.numeric for f in flows]), FEATURES, log_scale=True)
    model = ResCAEBiGRU(ModelConfig(n_features=preprocessor.width, n_classes=len(CLASSES))).eval()
    return write_bundle(
        directory,
        model=model,
        preprocessor=preprocessor,
        classes=CLASSES,
        benign_class="BENIGN",
        version=version,
        training_data={"note": "generated test fixture"},
    )
