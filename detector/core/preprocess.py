"""The stored preprocessing: one transform that training and serving both run, so they cannot drift.

A flow's features arrive as a float64 matrix of numeric columns (``NaN`` where the meter wrote NaN,
``±inf`` where it divided by zero) plus, for UNSW-NB15-style data, category strings. The transform:

1. **Non-finite values** (the documented rule): ``NaN`` becomes 0, because CICFlowMeter writes NaN
   for a rate over an empty flow (0/0); ``+inf``/``-inf`` (a rate over a zero duration) become the top /
   bottom of the training range, i.e. 1 / 0 after scaling.
2. Optionally a signed logarithm ``sign(x)·log1p(|x|)`` (``log_scale``), which spreads out the
   heavy-tailed counters (durations span 0..1.2e8 µs) before min-max squeezes them into [0, 1].
3. **Min-max** to [0, 1] with the training split's range; serving clips to [0, 1], so a value outside
   the training range cannot push the model off its input domain. A column that was constant in
   training carries no information and always maps to 0.
4. **One-hot** categories, in the order learned in training; an unknown category is all zeros.

The parameters are plain JSON inside the bundle (``preprocessing.json``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "flowwarden.preprocessing/1"
NONFINITE_RULE = "NaN -> 0; +inf/-inf -> top/bottom of the training range; then clip to [0, 1]"


class PreprocessingError(ValueError):
    """The stored preprocessing parameters are malformed or do not fit the data given."""


@dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing parameters and the transform that applies them.

    ``numeric`` and ``categories`` name canonical features (see :mod:`detector.core.features`);
    ``minimum`` / ``maximum`` hold the training range of each numeric feature *after* the optional
    log, which is what the scaling uses.
    """

    numeric: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]
    minimum: np.ndarray
    maximum: np.ndarray
    log_scale: bool = False

    @classmethod
    def fit(
        cls,
        numeric: np.ndarray,
        numeric_names: Sequence[str],
        categorical: dict[str, Sequence[str]] | None = None,
        *,
        log_scale: bool = False,
        max_categories: int | None = None,
    ) -> Preprocessor:
        """Learn ranges (finite values only) and category vocabularies from training rows.

        ``max_categories`` keeps only the most frequent values of each categorical feature (ties broken
        by name); rarer ones are treated like values never seen in training (all-zero one-hot). UNSW-NB15's
        ``proto`` has over 130 values, most of them on a handful of rows: without a cap they would triple
        the model's input width for almost no information.
        """
        values = _as_matrix(numeric, len(numeric_names))
        values = _signed_log(np.nan_to_num(values, nan=0.0, posinf=np.nan, neginf=np.nan), log_scale)
        finite = np.where(np.isfinite(values), values, np.nan)
        with np.errstate(all="ignore"):
            minimum = np.nanmin(finite, axis=0) if len(finite) else np.zeros(values.shape[1])
            maximum = np.nanmax(finite, axis=0) if len(finite) else np.zeros(values.shape[1])
        minimum = np.nan_to_num(minimum, nan=0.0)
        maximum = np.nan_to_num(maximum, nan=0.0)
        categories = {name: _vocabulary(column, max_categories) for name, column in (categorical or {}).items()}
        return cls(tuple(numeric_names), categories, minimum, maximum, log_scale)

    @property
    def input_features(self) -> tuple[str, ...]:
        """Every canonical feature a record must carry, numeric first."""
        return self.numeric + tuple(self.categories)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the model's input columns, e.g. ``Flow Duration`` or ``proto=tcp``."""
        onehot = tuple(f"{name}={value}" for name, values in self.categories.items() for value in values)
        return self.numeric + onehot

    @property
    def width(self) -> int:
        return len(self.output_names)

    def transform(self, numeric: np.ndarray, categorical: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
        """Model-ready float32 matrix ``[N, width]`` from raw numeric values and category strings."""
        values = _as_matrix(numeric, len(self.numeric)).astype(np.float64, copy=True)
        np.nan_to_num(values, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
        values = _signed_log(values, self.log_scale)
        np.clip(values, self.minimum, self.maximum, out=values)
        span = self.maximum - self.minimum
        inverse = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
        scaled: np.ndarray = ((values - self.minimum) * inverse).astype(np.float32)
        if not self.categories:
            return scaled
        combined: np.ndarray = np.hstack([scaled, self._one_hot(categorical or {}, len(values))])
        return combined

    def _one_hot(self, categorical: Mapping[str, Sequence[str]], n_rows: int) -> np.ndarray:
        blocks = []
        for name, vocabulary in self.categories.items():
            if name not in categorical:
                raise PreprocessingError(f"categorical feature {name!r} is missing")
            index = {value: i for i, value in enumerate(vocabulary)}
            block = np.zeros((n_rows, len(vocabulary)), dtype=np.float32)
            for row, value in enumerate(categorical[name]):
                position = index.get(str(value).strip())
                if position is not None:
                    block[row, position] = 1.0
            blocks.append(block)
        return np.hstack(blocks)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "nonfinite_rule": NONFINITE_RULE,
            "log_scale": self.log_scale,
            "numeric": list(self.numeric),
            "minimum": [float(v) for v in self.minimum],
            "maximum": [float(v) for v in self.maximum],
            "categories": {name: list(values) for name, values in self.categories.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessor:
        """Rebuild from :meth:`to_json` output; raises :class:`PreprocessingError` when malformed."""
        if not isinstance(data, dict):
            raise PreprocessingError(f"preprocessing parameters must be a JSON object, not {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise PreprocessingError(f"preprocessing format {data.get('format')!r} is not {FORMAT!r}")
        try:
            numeric = tuple(str(n) for n in data["numeric"])
            minimum = np.asarray(data["minimum"], dtype=np.float64)
            maximum = np.asarray(data["maximum"], dtype=np.float64)
            categories = {str(k): tuple(str(v) for v in vs) for k, vs in data["categories"].items()}
            log_scale = bool(data["log_scale"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PreprocessingError(f"preprocessing parameters are malformed: {exc}") from exc
        if minimum.shape != (len(numeric),) or maximum.shape != (len(numeric),):
            raise PreprocessingError("preprocessing ranges do not match the numeric feature list")
        if not (np.all(np.isfinite(minimum)) and np.all(np.isfinite(maximum)) and np.all(maximum >= minimum)):
            raise PreprocessingError("preprocessing ranges must be finite with maximum >= minimum")
        return cls(numeric, categories, minimum, maximum, log_scale)


def _vocabulary(values: Sequence[str], limit: int | None) -> tuple[str, ...]:
    counts = Counter(str(v).strip() for v in values)
    ranked = sorted(counts, key=lambda value: (-counts[value], value))
    return tuple(sorted(ranked[:limit] if limit is not None else ranked))


def _as_matrix(values: np.ndarray, width: int) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise PreprocessingError(f"expected a matrix with {width} numeric columns, got shape {matrix.shape}")
    return matrix


def _signed_log(values: np.ndarray, enabled: bool) -> np.ndarray:
    if not enabled:
        return values
    logged: np.ndarray = np.sign(values) * np.log1p(np.abs(values))
    return logged
