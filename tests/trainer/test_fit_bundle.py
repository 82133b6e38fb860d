"""``trainer fit`` end to end on a generated fixture, and the bundle served by a detector-only process."""

import csv
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from detector.core.bundle import load_bundle
from detector.core.csvfile import read_rows
from detector.core.decode import FlowDecoder
from tests.support.generated import generated_rows, write_generated_csv
from trainer import commands
from trainer.config import load_config
from trainer.progress import Reporter

DETECTOR_ONLY_SCORER = """
import csv, gzip, json, sys
from detector.core.bundle import load_bundle
from detector.core.csvfile import read_rows
from detector.core.decode import DecodedFlow
from detector.core.scorer import Scorer

scorer = Scorer(load_bundle(sys.argv[1]), device="cpu", backend="eager")  # the fp32 model, as the trainer ran it
flows = [scorer.decoder.decode_mapping(row) for row in read_rows(sys.argv[2])]
assert all(isinstance(f, DecodedFlow) for f in flows), [f for f in flows if not isinstance(f, DecodedFlow)][:3]
verdicts = scorer.score(flows)
heavy = sorted(m for m in ("sklearn", "imblearn", "pandas", "matplotlib", "trainer") if m in sys.modules)
print(json.dumps({"labels": [v.label for v in verdicts], "confidence": [v.confidence for v in verdicts],
                  "novelty": [v.novelty for v in verdicts], "heavy_modules": heavy}))
"""


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    data = write_generated_csv(root / "generated_flows.csv.gz", generated_rows(seed=3, scale=3))
    config = load_config("quick").with_changes({"finetune": {"epochs": 12, "min_steps": 0}, "pretrain": {"epochs": 2}})
    report = commands.fit([str(data)], root / "run", config, reporter=Reporter(enabled=False))
    return root / "run", report


def test_fit_writes_the_run_directory_contract(fitted_run):
    run, _ = fitted_run
    for name in ("report.json", "report.md", "confusion_matrix.png", "curves.png", "bundle/manifest.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "report.json").read_text())
    for key in (
        "accuracy",
        "precision_weighted",
        "recall_weighted",
        "f1_weighted",
        "f1_macro",
        "per_class",
        "n_train",
        "n_test",
        "rows_dropped",
        "seconds",
    ):
        assert key in saved, key
    assert saved["n_test"] == sum(row["support"] for row in saved["per_class"].values())
    assert set(saved["per_class"]) == {"BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS"}
    assert saved["rows_dropped"] == {"total": 0, "reasons": {}}
    assert len(saved["history"]["epochs"]) == 12


def test_fit_learns_the_generated_classes(fitted_run):
    _, report = fitted_run
    assert report["f1_weighted"] > 0.9


def test_a_detector_only_process_predicts_exactly_what_the_trainer_predicted(fitted_run):
    run, _ = fitted_run
    with gzip.open(run / "test_predictions.csv.gz", "rt") as handle:
        expected = list(csv.DictReader(handle))
    done = subprocess.run(
        [sys.executable, "-c", DETECTOR_ONLY_SCORER, str(run / "bundle"), str(run / "test_split.csv.gz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    served = json.loads(done.stdout)
    assert served["heavy_modules"] == []
    assert served["labels"] == [row["predicted"] for row in expected]
    assert served["confidence"] == pytest.approx([float(row["confidence"]) for row in expected], abs=1e-5)
    assert served["novelty"] == pytest.approx([float(row["novelty"]) for row in expected], rel=1e-4)


def test_fit_calibrates_a_novelty_model_on_the_validation_rows_and_reports_it(fitted_run):
    run, report = fitted_run
    novelty = report["novelty"]
    assert novelty["quantile"] == 0.995 and novelty["threshold"] > 0
    assert novelty["calibration_rows"] == report["steps"]["split"]["validation_rows"]
    assert novelty["flag"] == "max_probability", "the signal trainer novelty's validation chose decides"
    confidence = novelty["max_probability"]
    assert confidence["budget"] == 0.01 and confidence["threshold"] > 0
    assert 0 < confidence["calibration_rows"] < novelty["calibration_rows"], "the validation benign rows only"
    assert 0 <= novelty["novel_rate"] < 0.05, "test rows are drawn like the validation rows"
    assert set(novelty["novel_rate_by_class"]) == set(report["per_class"])
    assert "novel flows" in (run / "report.md").read_text()
    assert {"novelty.safetensors", "novelty.json"} <= set(
        json.loads((run / "bundle/manifest.json").read_text())["files"]
    )


def test_the_novelty_model_leaves_the_classifier_as_it_would_be_without_it(fitted_run, tmp_path):
    run, report = fitted_run
    without = load_config("quick").with_changes(
        {"finetune": {"epochs": 12, "min_steps": 0}, "pretrain": {"epochs": 2}, "novelty": {"enabled": False}}
    )
    data = write_generated_csv(tmp_path / "generated_flows.csv.gz", generated_rows(seed=3, scale=3))
    plain = commands.fit([str(data)], tmp_path / "run", without, reporter=Reporter(enabled=False))
    assert (
        "novelty" not in plain
        and "novelty.json" not in json.loads((tmp_path / "run/bundle/manifest.json").read_text())["files"]
    )
    assert len(report["history"]["pretrain_loss"]) == 10 > len(plain["history"]["pretrain_loss"]) == 2
    with (
        gzip.open(run / "test_predictions.csv.gz", "rt") as a,
        gzip.open(tmp_path / "run/test_predictions.csv.gz", "rt") as b,
    ):
        assert [row["confidence"] for row in csv.DictReader(a)] == [row["confidence"] for row in csv.DictReader(b)]


@pytest.mark.parametrize("oversample_benign", [True, False])
def test_a_benign_minority_is_oversampled_only_when_the_config_says_so(tmp_path, oversample_benign):
    rows = generated_rows(seed=6, scale=2)
    benign = [r for r in rows if r["Label"] == "BENIGN"]
    attack_heavy = [r for r in rows if r["Label"] != "BENIGN"] + benign[:40]
    data = write_generated_csv(tmp_path / "generated_attack_heavy.csv.gz", attack_heavy)
    short = {"finetune": {"epochs": 1, "min_steps": 0}, "pretrain": {"epochs": 0}}
    config = load_config("quick").with_changes({"resample": {"benign": oversample_benign}, **short})
    report = commands.fit([str(data)], tmp_path / "run", config, reporter=Reporter(enabled=False))
    resampled = report["steps"]["resample"]
    grew = resampled["rows_after"]["BENIGN"] > resampled["rows_before"]["BENIGN"]
    assert grew is oversample_benign


def test_the_report_says_where_the_time_went_stage_by_stage(fitted_run):
    run, _ = fitted_run
    saved = json.loads((run / "report.json").read_text())
    stages = saved["stage_seconds"]
    assert list(stages) == [
        "load",
        "split",
        "outliers",
        "scaling",
        "resample",
        "pre-train",
        "fine-tune",
        "test predictions",
        "calibration",
        "novelty",
        "feature importance",
        "bundle, test split",
    ]
    assert all(seconds >= 0 for seconds in stages.values())
    assert sum(stages.values()) <= saved["seconds"] + 0.5
    assert stages["fine-tune"] >= sum(epoch["seconds"] for epoch in saved["history"]["epochs"]) - 0.5


def test_fit_fits_a_confidence_temperature_on_the_validation_rows_and_reports_its_ece(fitted_run):
    run, report = fitted_run
    calibration = report["calibration"]
    assert calibration["fitted_rows"] == report["steps"]["split"]["validation_rows"]
    assert calibration["temperature"] > 0 and calibration["measured_on"] == "test split"
    for key in ("ece_before", "ece_after"):
        assert 0 <= calibration[key] <= 1 and 0 <= calibration["validation"][key] <= 1
    assert calibration["validation"]["ece_after"] <= calibration["validation"]["ece_before"]
    assert (run / "reliability.png").stat().st_size > 0
    assert "confidence calibration: temperature" in (run / "report.md").read_text()
    bundle = load_bundle(run / "bundle")
    assert "calibration.json" in bundle.manifest["files"]
    assert bundle.calibration.temperature == calibration["temperature"]


def test_fit_reports_and_plots_the_global_feature_importance(fitted_run):
    run, report = fitted_run
    importance = json.loads((run / "report.json").read_text())["feature_importance"]
    assert importance == report["feature_importance"]
    assert importance["rows"] == min(report["n_test"], 2000) and importance["of_test_rows"] == report["n_test"]
    bundle = load_bundle(run / "bundle")
    assert [e["feature"] for e in importance["features"]] != list(bundle.features)  # ranked, not listed
    assert sorted(e["feature"] for e in importance["features"]) == sorted(bundle.features)
    means = [e["mean_abs_attribution"] for e in importance["features"]]
    assert means == sorted(means, reverse=True) and means[0] > 0
    assert (run / "feature_importance.png").stat().st_size > 0


def test_without_validation_rows_the_last_epoch_is_kept_and_nothing_is_calibrated(tmp_path):
    data = write_generated_csv(tmp_path / "generated_flows.csv.gz", generated_rows(seed=3))
    config = load_config("paper-literal").with_changes(
        {"finetune": {"epochs": 2}, "pretrain": {"epochs": 1}, "model": {"filters": [4, 8], "gru_hidden": 8}}
    )
    report = commands.fit([str(data)], tmp_path / "run", config, reporter=Reporter(enabled=False))
    assert report["steps"]["split"]["validation_rows"] == 0
    assert report["history"]["best_epoch"] is None and len(report["history"]["epochs"]) == 2
    assert "calibration" not in report and "novelty" not in report
    assert set(report["steps"]["focal_alpha"]["weights"]) == set(report["per_class"])
    bundle = load_bundle(tmp_path / "run" / "bundle")
    assert bundle.calibration.temperature == 1.0 and bundle.model.config.activation == "every_conv"


def test_fit_stores_the_benign_training_histograms_against_which_attacks_shift(fitted_run):
    """drift.json holds the histograms of the raw benign training values: the test split's benign flows read as
    no significant shift, its attacks as one."""
    run, _ = fitted_run
    bundle = load_bundle(run / "bundle")
    assert "drift.json" in bundle.manifest["files"] and bundle.drift is not None
    assert bundle.drift.features == bundle.preprocessor.numeric
    assert bundle.drift.population == "benign training rows"
    decoder = FlowDecoder(bundle.drift.features)
    rows = list(read_rows(run / "test_split.csv.gz"))
    benign = [decoder.decode_mapping(row).numeric for row in rows if row["Label"] == "BENIGN"]
    attacks = [decoder.decode_mapping(row).numeric for row in rows if row["Label"] != "BENIGN"]
    psi = bundle.drift.psi(bundle.drift.bin_counts(np.stack(benign)))
    # 108 benign test rows against 224 benign training rows: sampling noise alone is about 9/108 + 9/224 = 0.12
    # for a feature with 10 bins (measured: 0.00-0.15), so "not significant" is what this size can show.
    assert psi.max() < 0.25, dict(zip(bundle.drift.features, psi.round(3), strict=True))
    assert bundle.drift.psi(bundle.drift.bin_counts(np.stack(attacks))).max() > 0.25  # attacks are not benign
