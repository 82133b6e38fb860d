"""Metrics a security team can trust: per class, weighted AND macro, plus attack-vs-benign rates.

Weighted F1 is dominated by the big classes; macro F1 shows whether the rare attacks (Infiltration,
web attacks, Heartbleed) are caught at all. Both are reported, with support, so nobody mistakes a
99 % weighted score for a detector that finds everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str], benign_class: str
) -> dict[str, Any]:
    """The report's metric block for string labels; ``classes`` fixes the order of tables and matrix.

    Labels that occur in ``truth`` but not in ``classes`` (a class the model never saw) are appended,
    so their support and zero recall show up instead of vanishing.
    """
    y_true, y_pred = np.asarray(truth, dtype=object), np.asarray(predicted, dtype=object)
    order = list(classes) + sorted(set(map(str, y_true)) - set(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=order, zero_division=0)
    weighted = precision_recall_fscore_support(y_true, y_pred, labels=order, average="weighted", zero_division=0)
    present = [label for label, n in zip(order, support, strict=True) if n > 0]
    macro = precision_recall_fscore_support(y_true, y_pred, labels=present, average="macro", zero_division=0)
    matrix = confusion_matrix(y_true, y_pred, labels=order)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "precision_weighted": float(weighted[0]),
        "recall_weighted": float(weighted[1]),
        "f1_weighted": float(weighted[2]),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "accuracy": a, "support": int(n)}
            for label, p, r, f, a, n in zip(
                order, precision, recall, f1, _one_vs_rest_accuracy(y_true, y_pred, order), support, strict=True
            )
        },
        "labels": order,
        "confusion_matrix": matrix.tolist(),
        "binary": _attack_vs_benign(y_true, y_pred, benign_class),
    }


def _one_vs_rest_accuracy(y_true: Any, y_pred: Any, order: list[str]) -> list[float]:
    """Per class, the share of all rows on which "is it this class?" was answered right: (TP + TN) / N.

    This is the per-class accuracy the paper reports. It is high for every small class (a class of 3 rows
    among 13,000 scores at least 0.9997 even when all 3 are missed), so read it beside recall and F1. Counted
    over every row, also one whose prediction is outside ``order`` (the confusion matrix leaves it out).
    """
    truth, guess = np.asarray(y_true), np.asarray(y_pred)
    total = max(1, len(truth))
    return [float(1 - np.count_nonzero((truth == label) != (guess == label)) / total) for label in order]


def _attack_vs_benign(y_true: np.ndarray, y_pred: np.ndarray, benign_class: str) -> dict[str, float | int | None]:
    """Detection rate (attacks flagged as any attack) and false-alarm rate (benign flagged).

    A rate is ``None`` when the data has nothing to compute it on (no attacks, or no benign flows): a
    benign-only file has no detection rate, and 0 would read as "detects nothing".
    """
    attack_true, attack_pred = y_true != benign_class, y_pred != benign_class
    attacks, benign = int(attack_true.sum()), int((~attack_true).sum())
    return {
        "attacks": attacks,
        "benign": benign,
        "detection_rate": float((attack_pred & attack_true).sum() / attacks) if attacks else None,
        "false_alarm_rate": float((attack_pred & ~attack_true).sum() / benign) if benign else None,
    }


def rate_text(rate: float | None) -> str:
    """A rate for people: four decimals, or ``n/a`` when it could not be computed."""
    return "n/a" if rate is None else f"{rate:.4f}"


def markdown_table(metrics: dict[str, Any], title: str) -> str:
    """A per-class table with the summary rows, for report.md and the terminal."""
    present = sum(1 for row in metrics["per_class"].values() if row["support"] > 0)
    lines = [
        f"### {title}",
        "",
        f"accuracy {metrics['accuracy']:.4f} · weighted F1 {metrics['f1_weighted']:.4f} · "
        f"macro F1 {metrics['f1_macro']:.4f} (over the {present} classes present) · "
        f"weighted precision {metrics['precision_weighted']:.4f} · "
        f"weighted recall {metrics['recall_weighted']:.4f}",
        "",
        "| class | precision | recall | F1 | accuracy (one-vs-rest) | support |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} "
            f"| {row['accuracy']:.4f} | {row['support']} |"
        )
    binary = metrics["binary"]
    lines += [
        "",
        f"attack vs benign: detection rate {rate_text(binary['detection_rate'])} on {binary['attacks']} attacks, "
        f"false-alarm rate {rate_text(binary['false_alarm_rate'])} on {binary['benign']} benign flows",
        "",
    ]
    return "\n".join(lines)
