"""The stream's evaluation must give the numbers scikit-learn (and so the trainer's report) gives."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from detector.tools.online_eval import evaluate, evaluation_table, from_confusion
from trainer.evaluate import classification_metrics

CLASSES = ("BENIGN", "DDoS", "Portscan", "Infiltration", "Heartbleed")


def example(seed: int = 0, n: int = 400) -> tuple[list[str], list[str]]:
    """Imbalanced truth; predictions right ~80 % of the time; Heartbleed never occurs but is predicted."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(CLASSES[:4], size=n, p=[0.6, 0.25, 0.13, 0.02]).tolist()
    predicted = [t if rng.random() < 0.8 else str(rng.choice(CLASSES)) for t in truth]
    predicted[0] = "Unknown"  # a label outside the class list still counts
    return truth, predicted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_and_averages_equal_sklearn(seed):
    truth, predicted = example(seed)
    result = evaluate(zip(truth, predicted, strict=True), labels=CLASSES)
    order = list(result.per_class)
    assert order[: len(CLASSES)] == list(CLASSES) and order[-1] == "Unknown"
    p, r, f, s = precision_recall_fscore_support(truth, predicted, labels=order, zero_division=0)
    for i, label in enumerate(order):
        metrics = result.per_class[label]
        assert (metrics.precision, metrics.recall, metrics.f1) == pytest.approx((p[i], r[i], f[i]), abs=1e-12)
        assert metrics.support == s[i]
    assert result.accuracy == pytest.approx(accuracy_score(truth, predicted))
    weighted = precision_recall_fscore_support(truth, predicted, labels=order, average="weighted", zero_division=0)
    assert (result.precision_weighted, result.recall_weighted, result.f1_weighted) == pytest.approx(weighted[:3])
    present = [label for label in order if result.per_class[label].support > 0]
    macro = precision_recall_fscore_support(truth, predicted, labels=present, average="macro", zero_division=0)
    assert (result.precision_macro, result.recall_macro, result.f1_macro) == pytest.approx(macro[:3])


def test_the_numbers_match_the_trainers_report_definitions():
    truth, predicted = example(5)
    streamed = evaluate(zip(truth, predicted, strict=True), labels=CLASSES).as_dict()
    offline = classification_metrics(truth, predicted, CLASSES, "BENIGN")
    for key in ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro", "precision_macro"):
        assert streamed[key] == pytest.approx(offline[key]), key
    for label, row in offline["per_class"].items():
        assert streamed["per_class"][label] == pytest.approx(row), label


def test_counts_and_pairs_give_the_same_result_and_empty_input_is_all_zero():
    truth, predicted = example(3)
    pairs = list(zip(truth, predicted, strict=True))
    counts: dict[tuple[str, str], int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    assert from_confusion(counts, CLASSES).as_dict() == evaluate(pairs, CLASSES).as_dict()
    empty = evaluate([])
    assert empty.n == 0 and empty.accuracy == 0.0 and empty.f1_macro == 0.0 and empty.per_class == {}


def test_the_table_shows_every_class_and_the_reference():
    from rich.console import Console

    truth, predicted = example(4)
    result = evaluate(zip(truth, predicted, strict=True), labels=CLASSES)
    reference = {"accuracy": 0.9, "f1_weighted": 0.9, "f1_macro": 0.5, "per_class": {"DDoS": {"f1": 0.5}}}
    console = Console(width=200, record=True)
    console.print(evaluation_table(result, "streamed", reference))
    text = console.export_text()
    for label in CLASSES:
        assert label in text
    assert f"{result.per_class['DDoS'].f1 - 0.5:+.4f}" in text
    assert f"{result.accuracy:.4f}" in text
    never_true = next(line for line in text.splitlines() if "Heartbleed" in line)
    assert "0.0000" in never_true and never_true.count("–") == 4, "no recall/F1 for a class that never occurs"
