"""The held-out test split as files: replayable flows and the model's predictions on them.

``test_split.csv.gz`` holds each test row as the detector will see it on a stream: canonical feature
columns (exact values: floats are written round-trip, ±inf as ``inf``, NaN as an empty cell), the flow's
identity and its ``Label``. ``detector replay`` can stream it and ``detector score`` can score it; the demo
does both. ``test_predictions.csv.gz`` holds what the trainer's model predicted for the same rows (and
their novelty scores), the reference a served bundle must reproduce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from detector.core.features import resolve_columns
from trainer.load import FlowTable

TEST_SPLIT = "test_split.csv.gz"
TEST_PREDICTIONS = "test_predictions.csv.gz"


def write_test_split(table: FlowTable, rows: np.ndarray, out: Path) -> Path:
    """Write the rows at positions ``rows`` of ``table`` as a replayable CSV."""
    features = pd.concat([table.numeric.iloc[rows], table.categorical.iloc[rows]], axis=1)
    taken = set(resolve_columns(list(features.columns)).flow_fields)
    identity = table.flow.iloc[rows][[c for c in table.flow.columns if c not in taken]]
    frame = pd.concat([identity.dropna(axis=1, how="all"), features], axis=1)
    frame["Label"] = table.labels.iloc[rows].to_numpy()
    path = out / TEST_SPLIT
    frame.to_csv(path, index=False, float_format=None)
    return path


def write_test_predictions(
    truth: list[str], predicted: list[str], confidence: np.ndarray, out: Path, *, novelty: np.ndarray | None = None
) -> Path:
    """One line per test row, in the order of ``test_split.csv.gz`` (a ``novelty`` column when there is one)."""
    path = out / TEST_PREDICTIONS
    frame = pd.DataFrame({"label": truth, "predicted": predicted, "confidence": confidence})
    if novelty is not None:
        frame["novelty"] = novelty
    frame.to_csv(path, index=False)
    return path
