"""Scoring streamed verdicts against ground truth, without scikit-learn (the worker image lacks it).

The demo replays labelled flows and checks the verdicts that come back from Kafka: the numbers must be
comparable to the trainer's ``report.json``, so the definitions follow it (and scikit-learn, which the
trainer uses) exactly:

* per class: precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = their harmonic mean; 0 where undefined
  (``zero_division=0``);
* weighted averages weight each class by its support (rows whose ground truth is that class);
* macro averages are the plain mean over the classes that occur in the ground truth, as the trainer's
  report computes them (a class the model predicts but that never occurs cannot be "found").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table

HEADLINE = (("accuracy", "accuracy"), ("f1_weighted", "weighted F1"), ("f1_macro", "macro F1"))


@dataclass(frozen=True, slots=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int = 0
    accuracy: float = 0.0  # one-vs-rest, (TP + TN) / N: the paper's per-class accuracy, as in report.json


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one set of (ground truth, predicted) pairs."""

    n: int
    accuracy: float
    per_class: dict[str, ClassMetrics]
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    confusion: Counter[tuple[str, str]]

    def as_dict(self) -> dict[str, Any]:
        """The same keys as the trainer's report.json, for side-by-side comparison."""
        return {
            "accuracy": self.accuracy,
            "precision_weighted": self.precision_weighted,
            "recall_weighted": self.recall_weighted,
            "f1_weighted": self.f1_weighted,
            "precision_macro": self.precision_macro,
            "recall_macro": self.recall_macro,
            "f1_macro": self.f1_macro,
            "n": self.n,
            "per_class": {
                label: {
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "accuracy": m.accuracy,
                    "support": m.support,
                }
                for label, m in self.per_class.items()
            },
        }


def evaluate(pairs: Iterable[tuple[str, str]], labels: Sequence[str] | None = None) -> Evaluation:
    """Metrics for ``(ground_truth, predicted)`` pairs.

    ``labels`` fixes the order of the per-class table (e.g. the bundle's classes); labels that occur in the
    pairs but not in ``labels`` are appended in sorted order, so nothing is silently left out.
    """
    return from_confusion(Counter((str(t), str(p)) for t, p in pairs), labels)


def from_confusion(confusion: Mapping[tuple[str, str], int], labels: Sequence[str] | None = None) -> Evaluation:
    """Metrics from counts of ``(ground_truth, predicted)`` pairs (a stream's running tally)."""
    confusion = Counter(confusion)
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    for (truth, guess), count in confusion.items():
        support[truth] += count
        predicted[guess] += count
    seen = set(support) | set(predicted)
    order = list(dict.fromkeys(labels or ())) + sorted(seen - set(labels or ()))
    n = sum(support.values())
    per_class = {}
    for label in order:
        hits = confusion[(label, label)]
        precision = _ratio(hits, predicted[label])
        recall = _ratio(hits, support[label])
        f1 = _ratio(2 * precision * recall, precision + recall)
        wrong = predicted[label] + support[label] - 2 * hits  # false positives + false negatives
        accuracy = 1 - wrong / max(1, n)
        per_class[label] = ClassMetrics(precision, recall, f1, support[label], predicted[label], accuracy)
    present = [m for m in per_class.values() if m.support > 0]
    return Evaluation(
        n=n,
        accuracy=_ratio(sum(confusion[(label, label)] for label in support), n),
        per_class=per_class,
        precision_weighted=_weighted(present, "precision", n),
        recall_weighted=_weighted(present, "recall", n),
        f1_weighted=_weighted(present, "f1", n),
        precision_macro=_mean(m.precision for m in present),
        recall_macro=_mean(m.recall for m in present),
        f1_macro=_mean(m.f1 for m in present),
        confusion=confusion,
    )


def evaluation_table(
    evaluation: Evaluation,
    title: str,
    reference: Mapping[str, Any] | None = None,
    reference_name: str = "offline",
) -> Table:
    """A per-class table; with ``reference`` (a report.json-shaped dict) its F1 and the difference too."""
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for name in ("precision", "recall", "F1", "support"):
        table.add_column(name, justify="right")
    if reference is not None:
        table.add_column(f"{reference_name} F1", justify="right")
        table.add_column("Δ F1", justify="right")
    ref_classes = (reference or {}).get("per_class", {})
    for label, metrics in evaluation.per_class.items():
        if metrics.support == 0:
            # Recall and F1 are undefined without a single true instance (and the macro average skips the
            # class): show a dash rather than a 0 that reads like a miss.
            precision = f"{metrics.precision:.4f}" if metrics.predicted else "–"
            row = [f"[dim]{label}[/dim]", precision, "–", "–", "0"]
            table.add_row(*row, *(["–", "–"] if reference is not None else []))
            continue
        row = [label, f"{metrics.precision:.4f}", f"{metrics.recall:.4f}", f"{metrics.f1:.4f}", f"{metrics.support:,}"]
        if reference is not None:
            row += _compare(metrics.f1, ref_classes.get(label, {}).get("f1"))
        table.add_row(*row)
    table.add_section()
    values = evaluation.as_dict()
    for key, name in HEADLINE:
        row = [f"[bold]{name}[/bold]", "", "", f"[bold]{values[key]:.4f}[/bold]", f"{evaluation.n:,}"]
        if reference is not None:
            row += _compare(values[key], (reference or {}).get(key))
        table.add_row(*row)
    return table


def _compare(value: float, reference: Any) -> list[str]:
    if not isinstance(reference, int | float):
        return ["–", "–"]
    delta = value - float(reference)
    style = "green" if abs(delta) < 0.005 else "yellow" if abs(delta) < 0.02 else "red"
    return [f"{float(reference):.4f}", f"[{style}]{delta:+.4f}[/{style}]"]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0


def _weighted(metrics: Sequence[ClassMetrics], name: str, total: int) -> float:
    return _ratio(sum(getattr(m, name) * m.support for m in metrics), total)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0
