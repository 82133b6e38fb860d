"""``trainer fit``: the training steps of docs/architecture.md in order, each one a call into its own module.

load → split (before anything is fitted) → Isolation-Forest cleaning of benign training rows →
min-max scaling fitted on the training split → SMOTE-Tomek on the training split → autoencoder
pre-training → ResCAE-BiGRU fine-tuning → temperature scaling of the confidence on the validation rows →
evaluation on the untouched test split → bundle.

:func:`prepare` stops before the model, so ``trainer baselines`` and ``trainer ablate`` reuse the very
same split, cleaning, scaling and resampling as ``trainer fit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.core.bundle import write_bundle
from detector.core.calibration import TemperatureScaling
from detector.core.drift import ReferenceHistograms
from detector.core.labels import BENIGN
from detector.core.model import ResCAEBiGRU
from detector.core.novelty import Novelty
from detector.core.preprocess import Preprocessor
from detector.core.scorer import pick_device, predict_proba
from trainer.calibrate import fit_temperature, predict_logits
from trainer.config import ConfigError, FinetuneConfig, TrainConfig
from trainer.load import DataError, FlowTable
from trainer.novelty import calibrate
from trainer.outliers import remove_benign_outliers
from trainer.progress import Reporter
from trainer.resample import smote_tomek
from trainer.select import select_features
from trainer.split import Split, stratified_split, temporal_split
from trainer.train import (
    History,
    Pretrained,
    build_model,
    finetune,
    pretrain_autoencoder,
    resolve_alpha,
    seed_everything,
)


@dataclass
class PreparedData:
    """Model-ready arrays. Labels are indices into ``classes``; ``test_rows`` index the FlowTable."""

    classes: tuple[str, ...]
    benign_class: str
    preprocessor: Preprocessor
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_rows: np.ndarray
    pretrain_x: np.ndarray  # the cleaned, scaled training rows before resampling (no labels needed)
    steps: dict[str, Any] = field(default_factory=dict)
    drift: ReferenceHistograms | None = None  # raw-value histograms of the rows the scaling was fitted on
    held_out: HeldOut | None = None  # the class left out of training (``trainer novelty``), scaled

    def names(self, indices: np.ndarray) -> list[str]:
        """The class names of label indices (e.g. ``test_y`` or a model's predictions)."""
        return [self.classes[int(i)] for i in indices]


@dataclass(frozen=True)
class HeldOut:
    """A class kept out of training and validation, its rows scaled as the model sees them: the ones the
    split put in validation and those it put in test (row positions into the FlowTable beside them)."""

    name: str
    val_x: np.ndarray
    test_x: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray


@dataclass
class FitResult:
    prepared: PreparedData
    model: ResCAEBiGRU
    history: History
    test_predictions: np.ndarray  # class indices on the test split
    test_probabilities: np.ndarray  # calibrated when ``calibration`` is set (the argmax is the same)
    device: str
    seconds: float
    novelty: Novelty | None = None
    test_novelty: np.ndarray | None = None  # novelty scores of the test split
    calibration: TemperatureScaling | None = None
    test_logits: np.ndarray | None = None


def prepare(table: FlowTable, config: TrainConfig, reporter: Reporter, held_out: str | None = None) -> PreparedData:
    """Split, clean, scale and resample; the test split is only ever transformed, never fitted on.

    ``held_out`` names a class to train without, as if it were an attack nobody has seen: the split is made
    exactly as without it (so every other row lands where ``trainer fit`` puts it), then that class's rows
    leave training, validation and test, and come back scaled in ``held_out`` (validation-split and test-split
    rows apart); the model's classes do not include it.
    """
    with reporter.stage("split"):
        table = select_features(table, config.features)
        classes = _classes(table, held_out)
        _check_focal_alpha(config, classes)
        steps: dict[str, Any] = {"features": _feature_summary(table)}
        labels = _Labels(table.labels.to_numpy(dtype=object), classes)
        split = _split(table, config)
    if split.test_only_classes:
        reporter.warn(
            f"no training rows for {', '.join(split.test_only_classes)}: the model cannot learn these classes, "
            "and their test rows will all be misclassified"
        )
    with reporter.stage("split"):
        train_rows, val_rows = _carve_validation(split.train, labels.names, config)
        unseen = _HeldOutRows.of(held_out, labels.names, val_rows, split.test)
        train_rows, val_rows, test_rows = (
            unseen.without(train_rows),
            unseen.without(val_rows),
            unseen.without(split.test),
        )
        steps["split"] = _split_summary(split, len(val_rows), config)
        if held_out is not None:
            steps["split"]["held_out"] = unseen.summary(split.train)
        columns = _Columns.of(table)
    with reporter.stage("outliers"):
        train_rows = _clean(train_rows, labels.names, columns, config, steps, reporter)
    with reporter.stage("scaling"):
        preprocessor = columns.fit_preprocessor(train_rows, config)
        train_x, train_y = columns.transform(preprocessor, train_rows), labels.indices(train_rows)
        val_x, test_x = columns.transform(preprocessor, val_rows), columns.transform(preprocessor, test_rows)
        drift = _drift_reference(train_rows, labels.names, columns, preprocessor)
    pretrain_x = train_x
    if config.resample.enabled:
        with reporter.stage("resample"):
            train_x, train_y = _resample(train_x, train_y, classes, config, steps, reporter)

    return PreparedData(
        classes=classes,
        benign_class=BENIGN,
        preprocessor=preprocessor,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=labels.indices(val_rows),
        test_x=test_x,
        test_y=labels.indices(test_rows),
        test_rows=test_rows,
        pretrain_x=pretrain_x,
        steps=steps,
        drift=drift,
        held_out=unseen.scaled(columns, preprocessor),
    )


@dataclass(frozen=True)
class _HeldOutRows:
    """Row positions of the held-out class on each side of the split (empty without one)."""

    name: str | None
    labels: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @classmethod
    def of(cls, name: str | None, labels: np.ndarray, val_rows: np.ndarray, test_rows: np.ndarray) -> _HeldOutRows:
        if name is None:
            empty = np.array([], dtype=np.int64)
            return cls(None, labels, empty, empty)
        return cls(name, labels, val_rows[labels[val_rows] == name], test_rows[labels[test_rows] == name])

    def without(self, positions: np.ndarray) -> np.ndarray:
        return positions if self.name is None else positions[self.labels[positions] != self.name]

    def summary(self, train_split: np.ndarray) -> dict[str, Any]:
        in_train_split = int((self.labels[train_split] == self.name).sum())
        return {
            "class": self.name,
            "training_rows_removed": in_train_split - len(self.val),
            "validation_rows": len(self.val),
            "test_rows": len(self.test),
        }

    def scaled(self, columns: _Columns, preprocessor: Preprocessor) -> HeldOut | None:
        if self.name is None:
            return None
        return HeldOut(
            self.name,
            columns.transform(preprocessor, self.val),
            columns.transform(preprocessor, self.test),
            self.val,
            self.test,
        )


@dataclass(frozen=True)
class _Labels:
    """The table's labels by row position, as names and as indices into ``classes``."""

    names: np.ndarray
    classes: tuple[str, ...]

    def indices(self, positions: np.ndarray) -> np.ndarray:
        index = {label: i for i, label in enumerate(self.classes)}
        return np.array([index[v] for v in self.names[positions]], dtype=np.int64)


@dataclass(frozen=True)
class _Columns:
    """The table's feature values as arrays, so that any set of rows can be fitted on or transformed."""

    names: list[str]
    numeric: np.ndarray
    categorical: dict[str, np.ndarray]

    @classmethod
    def of(cls, table: FlowTable) -> _Columns:
        categorical = {name: table.categorical[name].astype(str).to_numpy() for name in table.categorical.columns}
        return cls(list(table.numeric.columns), table.numeric.to_numpy(dtype=np.float64), categorical)

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.numeric[positions], {name: values[positions] for name, values in self.categorical.items()}

    def fit_preprocessor(
        self, positions: np.ndarray, config: TrainConfig, names: list[str] | None = None
    ) -> Preprocessor:
        values, categories = self.take(positions)
        return Preprocessor.fit(
            values,
            self.names if names is None else names,
            categories,
            log_scale=config.preprocess.log_scale,
            max_categories=config.preprocess.max_categories,
        )

    def transform(self, preprocessor: Preprocessor, positions: np.ndarray) -> np.ndarray:
        return preprocessor.transform(*self.take(positions))


MIN_BENIGN_REFERENCE_ROWS = 200  # PSI noise of the reference alone is about (bins - 1) / rows


def _drift_reference(
    train_rows: np.ndarray, labels: np.ndarray, columns: _Columns, preprocessor: Preprocessor
) -> ReferenceHistograms:
    """The histograms drift is measured against: the raw values of the BENIGN training rows, the traffic a
    detector sees nearly all the time (the training mix of a public dataset is mostly attacks: on the improved
    CICIDS2017 sample, benign flows of the very same meter read PSI 2.8 against it, the README's "Drift"); all
    training rows when there are fewer than :data:`MIN_BENIGN_REFERENCE_ROWS` benign ones."""
    benign = train_rows[labels[train_rows] == BENIGN]
    if len(benign) >= MIN_BENIGN_REFERENCE_ROWS:
        return ReferenceHistograms.fit(columns.take(benign)[0], preprocessor.numeric, population="benign training rows")
    return ReferenceHistograms.fit(columns.take(train_rows)[0], preprocessor.numeric, population="training rows")


def _classes(table: FlowTable, held_out: str | None = None) -> tuple[str, ...]:
    """The classes to learn, sorted (``held_out`` left out); refuses data a classifier of attacks against benign
    traffic cannot use."""
    present = set(table.labels.unique())
    if held_out is not None and (held_out not in present or held_out == BENIGN):
        raise DataError(f"cannot hold out {held_out!r}: it must be an attack class of the data")
    classes = tuple(sorted(present - {held_out}))
    if len(classes) < 2:
        raise DataError(f"training needs at least two classes; the data has only {', '.join(classes) or 'none'}")
    if BENIGN not in classes:
        raise DataError(f"the data has no benign class ({BENIGN}, Benign or Normal); classes: {', '.join(classes)}")
    return classes


def _feature_summary(table: FlowTable) -> dict[str, Any]:
    return {
        "numeric": list(table.numeric.columns),
        "categorical": list(table.categorical.columns),
        "excluded": dict(table.excluded_features),
    }


def _split_summary(split: Split, validation_rows: int, config: TrainConfig) -> dict[str, Any]:
    return {
        "method": config.split.method,
        "test_size": config.split.test_size,
        "seed": config.seed,
        "train_only_classes": list(split.train_only_classes),
        "test_only_classes": list(split.test_only_classes),
        "train_rows": len(split.train),
        "validation_rows": validation_rows,
        "test_rows": len(split.test),
    }


def _resample(
    train_x: np.ndarray,
    train_y: np.ndarray,
    classes: tuple[str, ...],
    config: TrainConfig,
    steps: dict[str, Any],
    reporter: Reporter,
) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE-Tomek on the scaled training rows; records what it did in ``steps["resample"]``."""
    with reporter.task("SMOTE-Tomek", 1) as advance:
        result = smote_tomek(
            train_x,
            train_y,
            k_neighbors=config.resample.k_neighbors,
            tomek=config.resample.tomek,
            max_rows_per_class=config.resample.max_rows_per_class,
            max_ratio=config.resample.max_ratio,
            keep=[] if config.resample.benign else [classes.index(BENIGN)],
            seed=config.seed,
            class_names=classes,
        )
        advance(1)
    steps["resample"] = {
        "k_neighbors": result.k_neighbors,
        "k_neighbors_reduced": {classes[int(k)]: v for k, v in result.k_reduced.items()},
        "notes": list(result.notes),
        "rows_before": {classes[int(k)]: v for k, v in result.counts_before.items()},
        "rows_after": {classes[int(k)]: v for k, v in result.counts_after.items()},
    }
    reporter.note(f"SMOTE-Tomek: {sum(result.counts_before.values())} → {len(result.labels)} training rows")
    for note in result.notes:
        reporter.note(f"  {note}")
    return result.features.astype(np.float32), result.labels.astype(np.int64)


def train_model(prepared: PreparedData, config: TrainConfig, reporter: Reporter) -> FitResult:
    """Pre-train (optional) and fine-tune on prepared data; predict the test split."""
    started = time.perf_counter()
    seed = config.seed if config.model_seed is None else config.model_seed
    seed_everything(seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    model = build_model(prepared.train_x.shape[1], len(prepared.classes), config.model)
    history = History()
    with reporter.stage("pre-train"):
        pretrained = _pretrain(prepared, config, device, seed, reporter)
    if pretrained is not None:
        history.pretrain_loss = pretrained.losses
        if pretrained.encoder_state is not None:
            model.encoder.load_state_dict(pretrained.encoder_state)
    validation = (prepared.val_x, prepared.val_y) if len(prepared.val_y) else None
    with reporter.stage("fine-tune"):
        finetune(
            model,
            (prepared.train_x, prepared.train_y),
            validation,
            _finetune_config(prepared, config),
            device,
            seed,
            reporter,
            history,
        )
    with reporter.stage("test predictions"):
        probabilities = predict_proba(model, prepared.test_x, device)
    with reporter.stage("calibration"):
        calibration = _temperature(model, prepared, config, device, reporter)
        test_logits = predict_logits(model, prepared.test_x, device) if calibration is not None else None
    with reporter.stage("novelty"):
        novelty = _calibrated(pretrained, model, prepared, config, device, reporter)
        test_novelty = (
            novelty.to(device).scores(prepared.test_x, probabilities, device) if novelty is not None else None
        )
    model.cpu().eval()
    return FitResult(
        prepared=prepared,
        model=model,
        history=history,
        test_predictions=probabilities.argmax(1),  # the raw softmax's: calibration cannot change a label
        test_probabilities=calibration.apply(probabilities) if calibration is not None else probabilities,
        device=str(device),
        seconds=time.perf_counter() - started,
        novelty=novelty,
        test_novelty=test_novelty,
        calibration=calibration,
        test_logits=test_logits,
    )


def _finetune_config(prepared: PreparedData, config: TrainConfig) -> FinetuneConfig:
    """The fine-tuning settings with a rule-named focal alpha turned into weights for the training rows
    (recorded in ``steps["focal_alpha"]``)."""
    resolved = resolve_alpha(config.finetune, prepared.train_y, len(prepared.classes))
    if resolved is not config.finetune:
        weights = resolved.focal.alpha if isinstance(resolved.focal.alpha, list) else []
        prepared.steps["focal_alpha"] = {
            "rule": config.finetune.focal.alpha,
            "weights": {name: round(w, 6) for name, w in zip(prepared.classes, weights, strict=True)},
        }
    return resolved


def _temperature(
    model: ResCAEBiGRU, prepared: PreparedData, config: TrainConfig, device: torch.device, reporter: Reporter
) -> TemperatureScaling | None:
    """The confidence's temperature, fitted on the validation rows (none without them or when disabled)."""
    if not config.calibration.enabled:
        return None
    if not len(prepared.val_y):
        reporter.note("calibration: no validation rows to fit a temperature on; confidences are the raw softmax")
        return None
    logits = predict_logits(model, prepared.val_x, device)
    scaling = fit_temperature(logits, prepared.val_y, config.calibration.bins)
    reporter.note(
        f"calibration: temperature {scaling.temperature:g} on {scaling.fitted_rows} validation rows "
        f"(their expected calibration error {scaling.ece_before:.4f} → {scaling.ece_after:.4f})"
    )
    return scaling


def _pretrain(
    prepared: PreparedData, config: TrainConfig, device: torch.device, seed: int, reporter: Reporter
) -> Pretrained | None:
    """Stage 1, trained as long as the classifier's pre-training or the novelty model needs (or not at all)."""
    pretrain = config.pretrain.epochs if config.pretrain.enabled else 0
    novelty = config.novelty.min_epochs if config.novelty.enabled else 0
    epochs = max(pretrain, novelty)
    if epochs == 0:
        return None
    return pretrain_autoencoder(
        prepared.pretrain_x,
        config.model,
        config.pretrain,
        device,
        seed,
        reporter,
        epochs=epochs,
        snapshot_epoch=pretrain or None,
    )


def _calibrated(
    pretrained: Pretrained | None,
    model: ResCAEBiGRU,
    prepared: PreparedData,
    config: TrainConfig,
    device: torch.device,
    reporter: Reporter,
) -> Novelty | None:
    if pretrained is None or not config.novelty.enabled:
        return None
    if not len(prepared.val_x):
        reporter.note("novelty: no validation rows to calibrate on (split.validation_size = 0); no novelty model")
        return None
    settings = config.novelty
    benign = prepared.val_x[prepared.val_y == prepared.classes.index(prepared.benign_class)]
    benign_probabilities = predict_proba(model, benign, device) if len(benign) else None
    novelty = calibrate(
        pretrained.autoencoder,
        prepared.val_x,
        settings.quantile,
        device,
        benign_probabilities,
        settings.budget,
        settings.flag,
    )
    calibration = novelty.calibration
    reporter.note(
        f"novelty: autoencoder threshold {calibration.threshold:.3g} (the {settings.quantile:g} quantile of "
        f"{calibration.calibration_rows} validation rows' reconstruction errors)"
    )
    if calibration.max_probability is not None:
        reporter.note(
            f"novelty: max-probability threshold {calibration.max_probability.threshold:.3g} (flags "
            f"{settings.budget:g} of {calibration.max_probability.calibration_rows} validation benign rows)"
        )
    reporter.note(f"novelty: {calibration.flag} decides is_novel")
    return novelty


def save_bundle(result: FitResult, directory: Path, training_data: dict[str, Any], metrics: dict[str, Any]) -> Path:
    prepared = result.prepared
    return write_bundle(
        directory,
        model=result.model,
        preprocessor=prepared.preprocessor,
        classes=prepared.classes,
        benign_class=prepared.benign_class,
        training_data=training_data,
        metrics=metrics,
        novelty=result.novelty,
        calibration=result.calibration,
        drift=prepared.drift,
    )


def _check_focal_alpha(config: TrainConfig, classes: tuple[str, ...]) -> None:
    """Per-class focal weights must match the data's classes; say so before any minute is spent."""
    alpha = config.finetune.focal.alpha
    if config.finetune.loss == "focal" and isinstance(alpha, list) and len(alpha) != len(classes):
        raise ConfigError(
            f"finetune.focal.alpha has {len(alpha)} weights but the data has {len(classes)} classes "
            f"(weights go in this order: {', '.join(classes)})"
        )


def _split(table: FlowTable, config: TrainConfig) -> Split:
    if config.split.method == "temporal":
        return temporal_split(table.labels, table.timestamps, config.split.test_size)
    return stratified_split(table.labels, config.split.test_size, config.seed)


def _carve_validation(train: np.ndarray, labels: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Hold back part of the training split for curves and epoch selection (stratified, seeded)."""
    if config.split.validation_size <= 0:
        return train, np.array([], dtype=np.int64)
    inner = stratified_split(labels[train], config.split.validation_size, (config.seed + 1) % 2**32)
    return train[inner.train], train[inner.test]


def _clean(
    train_rows: np.ndarray,
    labels: np.ndarray,
    columns: _Columns,
    config: TrainConfig,
    steps: dict[str, Any],
    reporter: Reporter,
) -> np.ndarray:
    """The training rows less the Isolation-Forest outliers among the benign ones (scored on provisionally
    scaled values); records what it removed in ``steps["outliers"]``."""
    if not config.outliers.enabled:
        return train_rows
    provisional = columns.fit_preprocessor(train_rows, config, names=[str(i) for i in range(len(columns.names))])
    result = remove_benign_outliers(
        columns.transform(provisional, train_rows),
        labels[train_rows],
        BENIGN,
        contamination=config.outliers.contamination,
        n_estimators=config.outliers.n_estimators,
        seed=config.seed,
    )
    steps["outliers"] = {"benign_rows": result.benign_rows, "removed": result.removed}
    reporter.note(f"Isolation Forest: removed {result.removed} of {result.benign_rows} benign training rows")
    return train_rows[result.keep]
