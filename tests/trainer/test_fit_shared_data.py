"""``trainer fit --profile quick`` on the real public samples (skips without ../shared/data)."""

from __future__ import annotations

import json

import pytest

from detector.core.bundle import load_bundle
from tests.support.shared_data import require_shared_data
from trainer import commands
from trainer.config import load_config
from trainer.progress import Reporter

DATA = require_shared_data()
pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_a_quick_run_trains_on_unsw_nb15_with_one_hot_categories(tmp_path):
    config = load_config("quick").with_changes({"finetune": {"epochs": 3, "min_steps": 0}, "pretrain": {"epochs": 1}})
    report = commands.fit([str(DATA / "unsw_nb15")], tmp_path / "run", config, reporter=Reporter(enabled=False))
    bundle = load_bundle(tmp_path / "run" / "bundle")
    categories = bundle.preprocessor.categories
    assert set(categories) == {"proto", "service", "state"}
    assert {"tcp", "udp"} <= set(categories["proto"])
    assert any(name.startswith("proto=") for name in bundle.preprocessor.output_names)
    assert "Exploits" in bundle.classes and "BENIGN" in bundle.classes
    assert report["n_test"] > 2000
    assert report["binary"]["detection_rate"] > 0.5  # learned something beyond the majority class
    assert json.loads((tmp_path / "run" / "report.json").read_text())["rows_dropped"]["total"] == 0


def test_the_quick_profile_reaches_095_weighted_f1_on_the_cicids2017_sample(tmp_path):
    """The acceptance bar of the quick profile (a few minutes on two cores), on the untouched test split."""
    report = commands.fit(
        [str(DATA / "cicids2017_improved_sample")], tmp_path / "run", load_config("quick"), reporter=Reporter(False)
    )
    assert report["n_test"] == 13026
    assert report["f1_weighted"] >= 0.95
    assert report["binary"]["detection_rate"] >= 0.99
