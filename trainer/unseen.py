"""Unknown attacks, measured: how much of an attack class the model never saw is still caught.

A classifier puts every flow into a class it knows, so an attack family missing from training is caught
only if the classifier happens to call it *some* attack, or if a novelty signal flags it. ``trainer
novelty`` trains once per held-out class (:func:`trainer.pipeline.prepare` with ``held_out``) and, with
this module, scores five signals, each larger for flows less like the training data:

* ``autoencoder``: the stage-1 autoencoder's reconstruction error (the bundle's novelty model today);
* ``max_probability``: −log of the classifier's maximum softmax probability (the same order as 1 − MSP,
  without float saturation at 1);
* ``energy``: −logsumexp of the logits (Liu et al. 2020);
* ``isolation_forest``: an Isolation Forest fitted on the cleaned, scaled training rows (before resampling),
  negated ``score_samples``;
* ``combined``: the largest of the four after each is turned into its rank among the *validation benign*
  rows (parameter-free: there are no rows of an unknown class to fit weights on without peeking at it).

Every threshold is the ``1 - budget`` quantile of the signal on the **validation benign rows**, never on test
rows. A held-out row is caught when the classifier labels it any attack class *or* the signal flags it. The
benign test rows' flagged share at the same threshold is reported as the honesty check (it should be near
the budget). Which signal the worker should use is chosen on the held-out classes' *validation-split* rows
(never trained on, never test); the test-split numbers are the ones reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.ensemble import IsolationForest

from detector.core.novelty import reconstruction_error
from trainer.calibrate import predict_logits
from trainer.config import TrainConfig
from trainer.pipeline import FitResult

MIN_HELD_OUT_ROWS = 100  # a class is held out only with this many rows in the data (about 30 test rows)
BUDGET = 0.01  # share of validation benign rows a signal may flag: its threshold's quantile is 1 - BUDGET
BASE_SIGNALS = ("autoencoder", "max_probability", "energy", "isolation_forest")
SIGNALS = (*BASE_SIGNALS, "combined")


def eligible_classes(counts: dict[str, int], benign: str, min_rows: int = MIN_HELD_OUT_ROWS) -> list[str]:
    """The attack classes with at least ``min_rows`` rows, sorted by name."""
    return sorted(name for name, rows in counts.items() if name != benign and rows >= min_rows)


@dataclass(frozen=True)
class Rows:
    """One population's raw signal values and whether the classifier labels each row an attack."""

    signals: dict[str, np.ndarray]
    labelled_attack: np.ndarray
    predicted: np.ndarray  # class indices

    def __len__(self) -> int:
        return len(self.labelled_attack)


@dataclass(frozen=True)
class Scorers:
    """What turns a scaled matrix into signal values: the trained networks and the forest."""

    result: FitResult
    forest: IsolationForest
    device: torch.device

    @classmethod
    def of(cls, result: FitResult, config: TrainConfig) -> Scorers:
        if result.novelty is None:
            raise ValueError("the novelty measurement needs the autoencoder: enable [novelty] in the profile")
        forest = IsolationForest(n_estimators=config.outliers.n_estimators, random_state=config.seed)
        forest.fit(result.prepared.pretrain_x)
        return cls(result, forest, torch.device(result.device))

    def rows(self, matrix: np.ndarray) -> Rows:
        model = self.result.model.to(self.device).eval()
        logits = predict_logits(model, matrix, self.device).astype(np.float64)
        autoencoder = self.result.novelty.autoencoder.to(self.device).eval()  # type: ignore[union-attr]
        total = logsumexp(logits, axis=1) if len(matrix) else np.zeros(0)
        signals = {
            "autoencoder": reconstruction_error(autoencoder, matrix, self.device),
            "max_probability": total - (logits.max(axis=1) if len(matrix) else np.zeros(0)),
            "energy": -total,
            "isolation_forest": -self.forest.score_samples(matrix) if len(matrix) else np.zeros(0),
        }
        predicted = logits.argmax(axis=1) if len(matrix) else np.zeros(0, dtype=np.int64)
        benign = self.result.prepared.classes.index(self.result.prepared.benign_class)
        return Rows(signals, predicted != benign, predicted)


@dataclass(frozen=True)
class Thresholds:
    """Per signal, the value above which a row is flagged; and the validation benign values the combined
    signal ranks against. Both come from the validation benign rows only."""

    reference: dict[str, np.ndarray]  # sorted validation benign values of each base signal
    values: dict[str, float]
    budget: float

    @classmethod
    def fit(cls, validation_benign: Rows, budget: float = BUDGET) -> Thresholds:
        if len(validation_benign) == 0:
            raise ValueError("thresholds need validation benign rows (split.validation_size must be above 0)")
        reference = {name: np.sort(validation_benign.signals[name]) for name in BASE_SIGNALS}
        partial = cls(reference, {}, budget)
        values = {name: float(np.quantile(partial.signal(validation_benign, name), 1 - budget)) for name in SIGNALS}
        return cls(reference, values, budget)

    def signal(self, rows: Rows, name: str) -> np.ndarray:
        if name != "combined":
            return rows.signals[name]
        ranks = [
            np.searchsorted(self.reference[base], rows.signals[base], side="left") / len(self.reference[base])
            for base in BASE_SIGNALS
        ]
        return np.max(ranks, axis=0) if len(rows) else np.zeros(0)

    def flagged(self, rows: Rows, name: str) -> np.ndarray:
        return self.signal(rows, name) > self.values[name]


@dataclass(frozen=True)
class Populations:
    """The rows one held-out run scores."""

    validation_benign: Rows
    test_benign: Rows
    held_out_validation: Rows
    held_out_test: Rows


def populations(scorers: Scorers) -> Populations:
    """Score the validation benign, test benign and held-out rows of the run behind ``scorers``."""
    prepared = scorers.result.prepared
    if prepared.held_out is None:
        raise ValueError("the prepared data holds no class out")
    benign = prepared.classes.index(prepared.benign_class)
    return Populations(
        validation_benign=scorers.rows(prepared.val_x[prepared.val_y == benign]),
        test_benign=scorers.rows(prepared.test_x[prepared.test_y == benign]),
        held_out_validation=scorers.rows(prepared.held_out.val_x),
        held_out_test=scorers.rows(prepared.held_out.test_x),
    )


def measure(rows: Populations, budget: float, classes: tuple[str, ...]) -> dict[str, Any]:
    """One held-out class's report: per signal its threshold, the held-out share caught (labelled an attack or
    flagged), the benign test rows flagged; and what the classifier alone does."""
    thresholds = Thresholds.fit(rows.validation_benign, budget)
    signals: dict[str, Any] = {}
    for name in SIGNALS:
        flagged_test = thresholds.flagged(rows.held_out_test, name)
        benign_flagged = thresholds.flagged(rows.test_benign, name)
        signals[name] = {
            "threshold": thresholds.values[name],
            "caught": _share(rows.held_out_test.labelled_attack | flagged_test),
            "flagged": _share(flagged_test),
            "caught_validation": _share(
                rows.held_out_validation.labelled_attack | thresholds.flagged(rows.held_out_validation, name)
            ),
            "benign_flagged_validation": _share(thresholds.flagged(rows.validation_benign, name)),
            "benign_flagged_test": _share(benign_flagged),
            "benign_alarms_test": _share(rows.test_benign.labelled_attack | benign_flagged),
        }
    labelled = np.asarray(classes, dtype=object)[rows.held_out_test.predicted]
    names, counts = np.unique(labelled, return_counts=True) if len(labelled) else ([], [])
    return {
        "rows": {
            "validation_benign": len(rows.validation_benign),
            "test_benign": len(rows.test_benign),
            "held_out_validation": len(rows.held_out_validation),
            "held_out_test": len(rows.held_out_test),
        },
        "classifier_only": {
            "caught": _share(rows.held_out_test.labelled_attack),
            "caught_validation": _share(rows.held_out_validation.labelled_attack),
            "benign_alarms_test": _share(rows.test_benign.labelled_attack),
        },
        "labelled_as": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
        "signals": signals,
    }


def summarise(per_class: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The mean over held-out classes of each signal's numbers, and the signal chosen on validation rows: the
    highest mean ``caught_validation`` (ties go to the earlier signal in :data:`SIGNALS`, and are listed in
    ``tied_on_validation``)."""
    if not per_class:
        return {"classes": 0, "mean": {}, "chosen_signal": None}
    runs = list(per_class.values())
    keys = ("caught", "flagged", "caught_validation", "benign_flagged_validation", "benign_flagged_test")
    mean = {
        name: {key: round(float(np.mean([run["signals"][name][key] for run in runs])), 6) for key in keys}
        for name in SIGNALS
    }
    mean["classifier_only"] = {
        key: round(float(np.mean([run["classifier_only"][key] for run in runs])), 6)
        for key in ("caught", "caught_validation", "benign_alarms_test")
    }
    chosen = max(SIGNALS, key=lambda name: (mean[name]["caught_validation"], -SIGNALS.index(name)))
    tied = [name for name in SIGNALS if mean[name]["caught_validation"] == mean[chosen]["caught_validation"]]
    return {"classes": len(runs), "mean": mean, "chosen_signal": chosen, "tied_on_validation": tied}


def markdown(report: dict[str, Any]) -> str:
    """report.md: one row per held-out class, one column per signal (share caught on the test split)."""
    budget = report["false_alarm_budget"]
    header = ["held-out class", "test rows", "classifier only", *SIGNALS]
    lines = [
        f"# Unknown attacks: held-out-class detection at {budget:.0%} benign false alarms",
        "",
        "Share of the held-out class's test rows caught (labelled any attack class, or flagged by the signal), "
        "each signal's threshold at the "
        f"{1 - budget:g} quantile of the validation benign rows. Profile {report['profile']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for name, run in report["held_out"].items():
        cells = [name, str(run["rows"]["held_out_test"]), _pct(run["classifier_only"]["caught"])]
        cells += [_pct(run["signals"][signal]["caught"]) for signal in SIGNALS]
        lines.append("| " + " | ".join(cells) + " |")
    summary = report["summary"]
    if summary["classes"]:
        mean = summary["mean"]
        cells = [f"**mean of {summary['classes']}**", "", _pct(mean["classifier_only"]["caught"])]
        cells += [_pct(mean[signal]["caught"]) for signal in SIGNALS]
        lines.append("| " + " | ".join(cells) + " |")
        flagged = [_pct(mean[signal]["benign_flagged_test"]) for signal in SIGNALS]
        lines.append("| benign test rows flagged (mean) | | " + _pct(mean["classifier_only"]["benign_alarms_test"]))
        lines[-1] += " | " + " | ".join(flagged) + " |"
        chosen, tied = summary["chosen_signal"], summary.get("tied_on_validation", [])
        lines += ["", f"Chosen on the held-out classes' validation-split rows: **{chosen}**."]
        if len(tied) > 1:
            lines[-1] += f" A tie between {', '.join(tied)} there; the first in that list was taken."
    if not report.get("complete", True):
        lines += ["", "Incomplete: not every class has been held out yet (the run is going on, or it stopped)."]
    return "\n".join(lines) + "\n"


def _share(mask: np.ndarray) -> float:
    return round(float(np.mean(mask)), 6) if len(mask) else 0.0


def _pct(value: float) -> str:
    return f"{value:.1%}"
