"""Feature drift: how far the flows served now are from the flows the model was trained on.

The trainer stores, for every numeric feature of the model, a histogram of the **raw** values (before the
log and the scaling) of its benign training rows (the traffic a detector sees nearly all the time; all
training rows when a dataset has too few benign ones): fixed bin edges at the deciles of those values (ties merged, so
a feature that is mostly zeros gets fewer bins), one more bin below the lowest edge, and one bin for values
that are not finite (NaN, ±inf: a meter's 0/0 and x/0). Serving counts the values of a batch or a window of
flows into the same bins (``numpy.searchsorted``, no raw rows kept) and compares the two distributions with
the **Population Stability Index**::

    PSI = Σ_bins (actual − expected) · ln(actual / expected)

over the bins' shares. PSI is 0 for identical shares and grows with the shift; a bin that is empty on one
side would make it infinite, so every share is raised to at least :data:`EPSILON` (1e-4) first. The usual
reading (Siddiqi, *Credit Risk Scorecards*, Wiley 2006; its statistical basis in Yurdakul, *Statistical
Properties of the Population Stability Index*, 2018) is: below :data:`MODERATE` (0.1) no significant
change, :data:`MODERATE` to :data:`SIGNIFICANT` (0.25) a moderate change worth a look, above
:data:`SIGNIFICANT` a significant shift: the meter, its configuration or the network is not what the
model learnt. With ``n`` flows in the window and ``k`` bins, sampling noise alone gives a PSI of about
``(k − 1) / n`` (the chi-square approximation), so a window of a few thousand flows reads well below 0.1
when nothing changed.

Categorical features (UNSW-NB15's ``proto``, ``service``, ``state``) have no histogram here: their unknown
values already map to an all-zero one-hot and the novelty score sees them.

The bundle stores the histograms as ``drift.json`` (checksummed like every file). A bundle written before
drift existed has none: drift is then unavailable, and nothing else changes. This module is imported by the
detector at serving time; it must not import anything from trainer/.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

DRIFT_FILE = "drift.json"
FORMAT = "flowwarden.drift/1"
DEFAULT_BINS = 10
EPSILON = 1e-4
MODERATE = 0.1
SIGNIFICANT = 0.25
Verdict = Literal["stable", "moderate", "significant"]


def verdict(psi: float) -> Verdict:
    """The usual reading of one PSI value: stable (< 0.1), moderate (0.1 to 0.25), significant (> 0.25)."""
    if psi > SIGNIFICANT:
        return "significant"
    if psi >= MODERATE:
        return "moderate"
    return "stable"


@dataclass(frozen=True)
class ReferenceHistograms:
    """The training histograms of ``features``: ``edges[i]`` are feature i's inner bin edges (ascending),
    ``counts[i]`` its training rows per bin: ``len(edges[i]) + 1`` finite bins, then the non-finite one.
    ``population`` says which rows they count (the trainer: the benign training rows, see trainer.pipeline)."""

    features: tuple[str, ...]
    edges: tuple[np.ndarray, ...]
    counts: tuple[np.ndarray, ...]
    rows: int
    population: str = "training rows"

    def __post_init__(self) -> None:
        if not (len(self.features) == len(self.edges) == len(self.counts)):
            raise ValueError(f"{DRIFT_FILE}: features, edges and counts differ in length")
        for name, edges, counts in zip(self.features, self.edges, self.counts, strict=True):
            if len(counts) != len(edges) + 2:
                raise ValueError(f"{DRIFT_FILE}: feature {name!r} has {len(counts)} counts for {len(edges)} edges")
            if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise ValueError(f"{DRIFT_FILE}: feature {name!r} edges must be finite and strictly increasing")
            if np.any(counts < 0):
                raise ValueError(f"{DRIFT_FILE}: feature {name!r} has a negative count")

    @classmethod
    def fit(
        cls, values: np.ndarray, features: Sequence[str], bins: int = DEFAULT_BINS, population: str = "training rows"
    ) -> ReferenceHistograms:
        """Histograms of the training rows ``values`` ``[N, len(features)]`` (raw, NaN and ±inf allowed): inner
        edges at the ``bins``-quantiles of each feature's finite values, equal edges merged."""
        matrix = np.asarray(values, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(features):
            raise ValueError(f"expected a matrix with {len(features)} columns, got shape {matrix.shape}")
        levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        all_edges = []
        for column in matrix.T:
            finite = column[np.isfinite(column)]
            all_edges.append(np.unique(np.quantile(finite, levels)) if len(finite) else np.zeros(0))
        empty = cls(tuple(features), tuple(all_edges), tuple(np.zeros(len(e) + 2, np.int64) for e in all_edges), 0)
        padded = empty.bin_counts(matrix)
        counts = tuple(row[: len(edges) + 2].copy() for row, edges in zip(padded, all_edges, strict=True))
        return cls(empty.features, empty.edges, counts, len(matrix), population)

    @property
    def width(self) -> int:
        """Bins of the widest feature: the width of :meth:`bin_counts`'s matrix."""
        return max((len(c) for c in self.counts), default=0)

    def bin_counts(self, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` ``[N, features]`` per bin: an int64 matrix ``[features, width]``; feature i's bins
        are its first ``len(edges[i]) + 2`` columns (finite bins, then non-finite), the rest stay 0."""
        matrix = np.asarray(values, dtype=np.float64)
        counts = np.zeros((len(self.features), self.width), dtype=np.int64)
        if not len(matrix):
            return counts
        for i, edges in enumerate(self.edges):
            column = matrix[:, i]
            finite = np.isfinite(column)
            slots = np.searchsorted(edges, column[finite], side="right")
            counts[i, : len(edges) + 1] = np.bincount(slots, minlength=len(edges) + 1)
            counts[i, len(edges) + 1] = len(column) - int(finite.sum())
        return counts

    def expected(self) -> np.ndarray:
        """The training counts as a ``[features, width]`` matrix, laid out like :meth:`bin_counts`."""
        matrix = np.zeros((len(self.features), self.width), dtype=np.int64)
        for i, counts in enumerate(self.counts):
            matrix[i, : len(counts)] = counts
        return matrix

    def psi(self, actual: np.ndarray) -> np.ndarray:
        """PSI of each feature between the training histograms and ``actual`` bin counts (:meth:`bin_counts`)."""
        return population_stability_index(self.expected(), actual)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "binning": f"{DEFAULT_BINS}-quantile edges of the raw training values (equal edges merged); "
            "bins: below the first edge, between edges, at or above the last edge, then non-finite (NaN, ±inf)",
            "rows": self.rows,
            "population": self.population,
            "features": {
                name: {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
                for name, edges, counts in zip(self.features, self.edges, self.counts, strict=True)
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> ReferenceHistograms:
        """Raises ``ValueError`` naming what is wrong with the stored histograms."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{DRIFT_FILE} is not in the {FORMAT} format")
        features = data.get("features")
        rows = data.get("rows")
        if not isinstance(features, dict) or not isinstance(rows, int) or isinstance(rows, bool):
            raise ValueError(f"{DRIFT_FILE} must hold 'features' (an object) and 'rows' (an integer)")
        try:
            edges = tuple(np.asarray(entry["edges"], dtype=np.float64).reshape(-1) for entry in features.values())
            counts = tuple(np.asarray(entry["counts"], dtype=np.int64).reshape(-1) for entry in features.values())
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{DRIFT_FILE}: every feature needs numeric 'edges' and integer 'counts' ({exc})") from exc
        population = data.get("population", "training rows")
        return cls(tuple(features), edges, counts, rows, str(population))


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI per row of two ``[features, bins]`` count matrices, each row's counts turned into shares (a row with
    no counts at all reads as all shares 0) and raised to at least :data:`EPSILON`. Bins empty on both sides
    add nothing."""
    e = _shares(expected)
    a = _shares(actual)
    psi: np.ndarray = np.sum((a - e) * np.log(a / e), axis=1)
    return psi


def _shares(counts: np.ndarray) -> np.ndarray:
    matrix = np.asarray(counts, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    floored: np.ndarray = np.maximum(shares, EPSILON)
    return floored


@dataclass(frozen=True)
class DriftSummary:
    """PSI per feature (sorted, largest first) and the features past each threshold."""

    psi: tuple[tuple[str, float], ...]
    rows: int

    @classmethod
    def of(cls, features: Sequence[str], psi: np.ndarray, rows: int) -> DriftSummary:
        ranked = sorted(zip(features, (float(v) for v in psi), strict=True), key=lambda item: (-item[1], item[0]))
        return cls(tuple(ranked), rows)

    @property
    def max_psi(self) -> float:
        return self.psi[0][1] if self.psi else 0.0

    @property
    def moderate(self) -> list[str]:
        """Features with a moderate change (0.1 <= PSI <= 0.25)."""
        return [name for name, value in self.psi if verdict(value) == "moderate"]

    @property
    def significant(self) -> list[str]:
        """Features with a significant shift (PSI > 0.25)."""
        return [name for name, value in self.psi if verdict(value) == "significant"]

    @property
    def verdict(self) -> Verdict:
        return verdict(self.max_psi)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "max_psi": self.max_psi,
            "verdict": self.verdict,
            "thresholds": {"moderate": MODERATE, "significant": SIGNIFICANT},
            "moderate": self.moderate,
            "significant": self.significant,
            "features": [{"feature": name, "psi": value, "verdict": verdict(value)} for name, value in self.psi],
        }


class DriftWindow:
    """Bin counts of about the last ``size`` flows, without keeping a flow: counts are added a batch at a time
    into blocks of about ``size / 20`` flows; the oldest block leaves once the rest still hold ``size`` flows.
    So the window holds between ``size`` and ``size`` + one block + one batch flows, in at most ~22 blocks.
    Not thread-safe: the caller serialises :meth:`add` and :meth:`counts`."""

    BLOCKS = 20

    def __init__(self, reference: ReferenceHistograms, size: int) -> None:
        if size < 1:
            raise ValueError("a drift window holds at least one flow")
        self.reference = reference
        self.size = size
        self._block_rows = max(1, math.ceil(size / self.BLOCKS))
        self._sealed: deque[tuple[int, np.ndarray]] = deque()
        self._open = np.zeros((len(reference.features), reference.width), dtype=np.int64)
        self._open_rows = 0
        self._total = np.zeros_like(self._open)
        self.rows = 0

    def add(self, values: np.ndarray) -> None:
        """Count a batch of raw values ``[N, features]`` (the reference's feature order) into the window."""
        if not len(values):
            return
        counts = self.reference.bin_counts(values)
        self._open += counts
        self._total += counts
        self._open_rows += len(values)
        self.rows += len(values)
        if self._open_rows >= self._block_rows:
            self._sealed.append((self._open_rows, self._open))
            self._open = np.zeros_like(self._total)
            self._open_rows = 0
        while self._sealed and self.rows - self._sealed[0][0] >= self.size:
            rows, counts = self._sealed.popleft()
            self._total -= counts
            self.rows -= rows

    def counts(self) -> np.ndarray:
        """The window's bin counts (a copy), laid out like :meth:`ReferenceHistograms.bin_counts`."""
        return self._total.copy()

    def psi(self) -> np.ndarray:
        return self.reference.psi(self._total)
