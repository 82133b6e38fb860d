"""Decision Tree and Random Forest on exactly the deep model's split, features and training rows.

A simple forest is a strong baseline on CICFlowMeter features; reporting it next to ResCAE-BiGRU keeps
our accuracy claims honest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier


@dataclass(frozen=True)
class BaselineResult:
    name: str
    predictions: np.ndarray
    seconds: float


def baseline_models(seed: int) -> dict[str, object]:
    """The baselines, with library defaults (no tuning on any split)."""
    return {
        "decision_tree": DecisionTreeClassifier(random_state=seed),
        "random_forest": RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=-1),
    }


def run_baselines(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int) -> list[BaselineResult]:
    results = []
    for name, model in baseline_models(seed).items():
        started = time.perf_counter()
        model.fit(train_x, train_y)
        predictions = model.predict(test_x)
        results.append(BaselineResult(name, predictions, time.perf_counter() - started))
    return results
