"""Splitting rows into train and test *before* anything is fitted.

``stratified`` is the paper's seeded 70/30 split with every class in both halves. ``temporal`` trains on
the earliest flows and tests on the latest, which is how a deployed detector meets traffic; random
splits of flow datasets are known to inflate scores because neighbouring flows of one attack land on
both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split


class SplitError(ValueError):
    """The requested split cannot be made from this data."""


@dataclass(frozen=True)
class Split:
    """Row positions of each side, and classes that could not be put on both sides."""

    train: np.ndarray
    test: np.ndarray
    train_only_classes: tuple[str, ...] = field(default=())
    # Classes the model never sees in training (a temporal split puts a late attack in the test split only).
    test_only_classes: tuple[str, ...] = field(default=())


def stratified_split(labels: pd.Series | np.ndarray, test_size: float, seed: int) -> Split:
    """Seeded stratified split. A class with a single row cannot be stratified: it goes to train."""
    y = np.asarray(labels)
    positions = np.arange(len(y))
    counts = pd.Series(y).value_counts()
    singletons = set(counts[counts < 2].index)
    kept = np.array([label not in singletons for label in y], dtype=bool)
    if kept.sum() < 2:
        raise SplitError("too few labeled rows to split")
    n_classes = len(counts) - len(singletons)
    n_test = max(round(test_size * kept.sum()), n_classes)
    if kept.sum() - n_test < n_classes:
        raise SplitError(
            f"a test size of {test_size:g} leaves {kept.sum() - n_test} of {kept.sum()} rows for training, "
            f"too few for a stratified split of {n_classes} classes"
        )
    train, test = train_test_split(positions[kept], test_size=n_test, stratify=y[kept], random_state=seed)
    train = np.sort(np.concatenate([train, positions[~kept]]))
    return Split(train, np.sort(test), tuple(sorted(map(str, singletons))))


def temporal_split(labels: pd.Series, timestamps: pd.Series, test_size: float) -> Split:
    """Earliest ``1 - test_size`` of the flows (by timestamp) train, the latest test.

    Rows without a timestamp cannot be placed in time; they are an error rather than a silent guess.
    """
    times = pd.to_datetime(timestamps)
    if times.isna().all():
        raise SplitError("temporal split needs flow timestamps, and this data has none")
    if times.isna().any():
        raise SplitError(f"temporal split: {int(times.isna().sum())} rows have no usable timestamp")
    order = np.argsort(times.to_numpy(), kind="stable")
    n_test = round(test_size * len(order))
    train, test = np.sort(order[: len(order) - n_test]), np.sort(order[len(order) - n_test :])
    y = np.asarray(labels)
    train_classes, test_classes = set(map(str, y[train])), set(map(str, y[test]))
    return Split(train, test, tuple(sorted(train_classes - test_classes)), tuple(sorted(test_classes - train_classes)))
