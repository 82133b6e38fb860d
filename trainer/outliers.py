"""Isolation-Forest cleaning of the benign training rows.

Benign traffic in public datasets holds mislabeled and freak flows; the paper removes the ones an
Isolation Forest finds easiest to isolate. Only benign rows of the *training* split are fitted and
removed: attack rows are never touched (a rare attack class would otherwise lose its few examples)
and the test split is never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest


@dataclass(frozen=True)
class OutlierResult:
    keep: np.ndarray  # boolean mask over the rows given
    removed: int
    benign_rows: int


def remove_benign_outliers(
    features: np.ndarray,
    labels: np.ndarray,
    benign_class: str,
    *,
    contamination: float | str = "auto",
    n_estimators: int = 100,
    seed: int = 42,
) -> OutlierResult:
    """Mask of rows to keep: every attack row, and the benign rows the forest scores as inliers."""
    keep = np.ones(len(labels), dtype=bool)
    benign = np.asarray(labels) == benign_class
    if benign.sum() < 2:
        return OutlierResult(keep, 0, int(benign.sum()))
    forest = IsolationForest(n_estimators=n_estimators, contamination=contamination, random_state=seed)
    verdict = forest.fit(features[benign]).predict(features[benign])
    keep[np.flatnonzero(benign)[verdict == -1]] = False
    return OutlierResult(keep, int((~keep).sum()), int(benign.sum()))
