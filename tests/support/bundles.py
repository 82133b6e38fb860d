"""Tiny bundles for tests: generated rows, fitted preprocessing, a classifier fitted briefly to them.

They exercise the bundle format, loading and scoring paths; they say nothing about accuracy. The
classifier is fitted (a few seconds, cached per seed) so that it tells the generated classes apart: the
paths that only attacks take (alerts under ``--emit attacks``, ``is_attack``, alert counts by class) are
exercised by every test that uses a bundle, and two seeds give two models that score differently. With
``novelty=True`` the bundle also holds an autoencoder fitted briefly to generated flows and calibrated on
other generated flows, so that flows unlike them score as novel; ``novelty_flag="max_probability"`` also
calibrates the classifier's max-probability signal on those flows' benign rows and lets it decide.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import torch

from detector.core.backends import predict_proba
from detector.core.bundle import write_bundle
from detector.core.calibration import TemperatureScaling
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.drift import ReferenceHistograms
from detector.core.labels import normalize_label
from detector.core.model import ModelConfig, ResCAE, ResCAEBiGRU
from detector.core.novelty import Novelty, NoveltyCalibration
from detector.core.preprocess import Preprocessor
from tests.support.generated import FEATURES, generated_rows
from trainer.config import ModelSection, PretrainConfig
from trainer.novelty import calibrate
from trainer.progress import Reporter
from trainer.train import pretrain_autoencoder

CLASSES = ("BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS")
DRIFT_SCALE = 8


def decoded_generated_flows(seed: int = 0) -> list[DecodedFlow]:
    decoder = FlowDecoder(FEATURES)
    flows = [decoder.decode_mapping(row) for row in generated_rows(seed)]
    assert all(isinstance(f, DecodedFlow) for f in flows)
    return flows  # type: ignore[return-value]


def make_bundle(
    directory: Path,
    *,
    seed: int = 0,
    version: str | None = None,
    novelty: bool = False,
    temperature: float | None = None,
    drift: bool = True,
    novelty_flag: str = "autoencoder",
) -> Path:
    """Write a complete, valid bundle for the generated dialect into ``directory`` (with a confidence
    temperature when ``temperature`` is given; with the training histograms of drift.json unless ``drift`` is
    false, as in a bundle written before drift existed)."""
    preprocessor = fitted_preprocessor(seed)
    return write_bundle(
        directory,
        model=fitted_classifier(seed),
        preprocessor=preprocessor,
        classes=CLASSES,
        benign_class="BENIGN",
        version=version,
        training_data={"note": "generated test fixture"},
        novelty=fitted_novelty(seed, novelty_flag) if novelty else None,
        calibration=TemperatureScaling(temperature) if temperature is not None else None,
        drift=fitted_drift(seed) if drift else None,
    )


def fitted_drift(seed: int = 0) -> ReferenceHistograms:
    """The training histograms of generated rows of ``seed``: :data:`DRIFT_SCALE` times as many rows as the
    preprocessing is fitted on, so that a fresh sample of the same generator reads well below PSI 0.1 (sampling
    noise alone gives about (bins - 1) / rows on each side)."""
    decoder = FlowDecoder(FEATURES)
    flows = [decoder.decode_mapping(row) for row in generated_rows(seed, scale=DRIFT_SCALE)]
    return ReferenceHistograms.fit(np.stack([f.numeric for f in flows if isinstance(f, DecodedFlow)]), FEATURES)


def fitted_preprocessor(seed: int = 0) -> Preprocessor:
    flows = decoded_generated_flows(seed)
    return Preprocessor.fit(np.stack([f.numeric for f in flows]), FEATURES, log_scale=True)


def generated_labels(seed: int = 0) -> list[str]:
    """The class of each row of ``generated_rows(seed)``, spelled as the fixture bundles' classes."""
    return [normalize_label(str(row["Label"])) for row in generated_rows(seed)]


def fitted_classifier(seed: int = 0) -> ResCAEBiGRU:
    """A classifier fitted to the generated rows of ``seed``: it tells their classes apart (not a model of
    real traffic). Full-batch Adam on cross-entropy, seeded, so each seed always gives the same weights.
    Cached per seed: callers share it and must not change it."""
    return _fitted_classifier(seed)


@cache  # a few seconds of training; keyed on the seed alone (fitted_classifier() and (0) are one entry)
def _fitted_classifier(seed: int) -> ResCAEBiGRU:
    torch.manual_seed(seed)
    preprocessor = fitted_preprocessor(seed)
    model = ResCAEBiGRU(ModelConfig(n_features=preprocessor.width, n_classes=len(CLASSES)))
    inputs = torch.as_tensor(_scaled(preprocessor, seed), dtype=torch.float32)
    targets = torch.as_tensor([CLASSES.index(label) for label in generated_labels(seed)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.enable_grad():  # callers may be inside torch.no_grad()
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    return model.eval()


NOVELTY_QUANTILE = 0.95
NOVELTY_BUDGET = 0.05  # the max-probability signal's share of calibration benign rows flagged


def fitted_novelty(seed: int = 0, flag: str = "autoencoder") -> Novelty:
    """An autoencoder fitted to generated flows (seed), calibrated on other generated flows (seed + 100), with
    the max-probability signal calibrated on their benign rows; ``flag`` decides. Cached per seed: callers share
    it and must not change it."""
    autoencoder, calibration = _fitted_novelty(seed)
    return Novelty(autoencoder, replace(calibration, flag=flag))


@cache  # a few seconds of training; keyed on the seed alone
def _fitted_novelty(seed: int) -> tuple[ResCAE, NoveltyCalibration]:
    preprocessor = fitted_preprocessor(seed)
    fitted = _scaled(preprocessor, seed)
    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    # One full batch per epoch at a high rate: the trainer's own stage 1, sized for a few hundred rows.
    pretrained = pretrain_autoencoder(
        fitted,
        ModelSection(),
        PretrainConfig(batch_size=len(fitted), lr=1e-2),
        cpu,
        seed,
        Reporter(enabled=False),
        epochs=300,
        snapshot_epoch=None,
    )
    calibration_rows = _scaled(preprocessor, seed + 100)
    benign = calibration_rows[[label == "BENIGN" for label in generated_labels(seed + 100)]]
    probabilities = predict_proba(fitted_classifier(seed), benign, cpu)
    novelty = calibrate(pretrained.autoencoder, calibration_rows, NOVELTY_QUANTILE, cpu, probabilities, NOVELTY_BUDGET)
    return novelty.autoencoder, novelty.calibration


def _scaled(preprocessor: Preprocessor, seed: int) -> np.ndarray:
    return preprocessor.transform(np.stack([f.numeric for f in decoded_generated_flows(seed)]))
