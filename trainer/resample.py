"""SMOTE-Tomek on the training split: synthesize minority-class flows, then drop Tomek links.

SMOTE interpolates a new flow between a minority row and one of its ``k`` nearest same-class
neighbours; Tomek-link removal then deletes pairs of opposite-class nearest neighbours, which cleans
the class borders SMOTE blurred. Both run on the scaled training split only.

Tiny classes are the norm in flow data (Heartbleed has 11 rows in our sample, 7 or 8 of them in a
training split). SMOTE needs ``k + 1`` rows per class, so a class with fewer rows is interpolated with a
smaller ``k`` of its own (every other class keeps the configured one), and a class with a single row is
duplicated instead of interpolated. What was adapted is reported, never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import TomekLinks


@dataclass(frozen=True)
class ResampleResult:
    features: np.ndarray
    labels: np.ndarray
    k_neighbors: int
    # Classes too small for ``k_neighbors``, with the k they were interpolated with.
    k_reduced: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)


def smote_tomek(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k_neighbors: int = 5,
    tomek: bool = True,
    max_rows_per_class: int | None = None,
    max_ratio: float | None = None,
    keep: Iterable[object] = (),
    seed: int = 42,
    class_names: Sequence[str] | None = None,
) -> ResampleResult:
    """Oversample every minority class up to the majority (or ``max_rows_per_class``), then clean.

    ``max_ratio`` bounds how far one class is inflated (at most ``max_ratio`` times its own rows): seven
    Heartbleed flows blown up to thousands of synthetic ones claim a region of feature space that real
    benign flows share.

    Classes already at or above the target are not oversampled, nor are the classes in ``keep`` (the
    benign class: synthetic benign flows would only blur what normal traffic looks like); Tomek-link
    cleaning (``tomek``) then removes pairs of nearest neighbours of different classes from every class,
    these included. Returns shuffled rows. ``class_names[label]`` names a class in the notes (the labels
    themselves otherwise).
    """

    def name(label: object) -> str:
        return str(label) if class_names is None else class_names[int(label)]  # type: ignore[call-overload]

    classes, counts = np.unique(labels, return_counts=True)
    before = {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    target = int(counts.max()) if max_rows_per_class is None else min(int(counts.max()), max_rows_per_class)
    untouched = set(keep)
    wanted = {c: _target(int(n), target, max_ratio) for c, n in zip(classes, counts, strict=True) if c not in untouched}
    strategy = {c: rows for c, rows in wanted.items() if rows > before[str(c)]}
    notes: list[str] = []
    x, y = features, labels

    singles = {c: t for c, t in strategy.items() if before[str(c)] < 2}
    if singles:
        names = ", ".join(map(name, singles))
        notes.append(f"duplicated rather than interpolated (one training row): {names}")
        x, y = RandomOverSampler(sampling_strategy=singles, random_state=seed).fit_resample(x, y)
    smote_strategy = {c: t for c, t in strategy.items() if c not in singles}

    reduced = {c: before[str(c)] - 1 for c in smote_strategy if before[str(c)] - 1 < k_neighbors}
    for c, k in reduced.items():
        rows = before[str(c)]
        notes.append(f"k_neighbors reduced from {k_neighbors} to {k} for {name(c)}: it has {rows} training rows")
    # One SMOTE per k, the configured k first: the classes that keep it are synthesized exactly as they
    # would be without the small classes.
    groups: dict[int, dict[object, int]] = {}
    for c, rows in smote_strategy.items():
        groups.setdefault(reduced.get(c, k_neighbors), {})[c] = rows
    for k in sorted(groups, reverse=True):
        x, y = SMOTE(sampling_strategy=groups[k], k_neighbors=k, random_state=seed).fit_resample(x, y)
    if tomek:
        x, y = TomekLinks(sampling_strategy="all").fit_resample(x, y)

    order = np.random.default_rng(seed).permutation(len(y))
    x, y = np.asarray(x)[order], np.asarray(y)[order]
    after_classes, after_counts = np.unique(y, return_counts=True)
    after = {str(c): int(n) for c, n in zip(after_classes, after_counts, strict=True)}
    reduced_by_name = {str(c): k for c, k in reduced.items()}
    return ResampleResult(x, y, k_neighbors, reduced_by_name, tuple(notes), before, after)


def _target(rows: int, target: int, max_ratio: float | None) -> int:
    return target if max_ratio is None else min(target, int(np.ceil(rows * max_ratio)))
