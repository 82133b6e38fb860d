"""Global feature importance for the run directory: which features the model leans on, over the test split.

The mean absolute attribution per feature over a random subsample of the test split's rows (at most
:data:`IMPORTANCE_ROWS`: a few seconds on a CPU), each row explained towards the class the model predicts for it,
with the very attributions ``--explain`` puts in alerts (:mod:`detector.core.explain`: integrated gradients on the
fp32 model, one-hot columns folded into their feature). Like those, it describes the model, not the traffic: a
feature the model ignores may still separate the classes, and a large mean says the model's output moves with the
feature, not that the feature causes the class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detector.core.explain import STEPS, Explainer
from detector.core.model import ResCAEBiGRU
from detector.core.preprocess import Preprocessor

IMPORTANCE_ROWS = 2000
TOP = 20  # features in the plot (report.json lists them all)


def feature_importance(
    model: ResCAEBiGRU,
    preprocessor: Preprocessor,
    test_x: np.ndarray,
    predictions: np.ndarray,
    device: torch.device,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    rows: int = IMPORTANCE_ROWS,
) -> dict[str, Any]:
    """report.json's ``feature_importance``: every feature with its mean |attribution|, largest first."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(test_x))[:rows])
    explainer = Explainer(model.eval(), preprocessor, device, temperature)
    attributions = explainer.attributions(test_x[chosen], np.asarray(predictions)[chosen])
    mean = np.abs(attributions).mean(axis=0) if len(chosen) else np.zeros(len(explainer.features))
    order = np.argsort(-mean, kind="stable")
    return {
        "method": f"mean |integrated gradients| ({STEPS} steps from the all-zero input) of each row's predicted "
        "class's log-odds, one-hot columns summed into their feature",
        "rows": len(chosen),
        "of_test_rows": len(test_x),
        "features": [
            {"feature": explainer.features[i], "mean_abs_attribution": round(float(mean[i]), 6)} for i in order
        ],
    }
