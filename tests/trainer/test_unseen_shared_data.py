"""``trainer novelty`` on the real improved CICIDS2017 sample, one class held out (skips without ../shared/data)."""

from __future__ import annotations

import pytest

from tests.support.shared_data import require_shared_data
from trainer import commands
from trainer.config import load_config
from trainer.progress import Reporter
from trainer.unseen import SIGNALS

DATA = require_shared_data()
pytestmark = [pytest.mark.data, pytest.mark.slow]


def test_holding_out_botnet_keeps_every_signal_near_its_benign_budget_on_test_rows(tmp_path):
    config = load_config("quick").with_changes(
        {"finetune": {"epochs": 2, "min_steps": 0}, "pretrain": {"epochs": 1}, "novelty": {"min_epochs": 2}}
    )
    report = commands.novelty(
        [str(DATA / "cicids2017_improved_sample")],
        tmp_path / "run",
        config,
        hold_out=["Botnet"],
        reporter=Reporter(enabled=False),
    )
    run = report["held_out"]["Botnet"]
    assert "Botnet" not in run["labelled_as"]
    assert run["rows"]["held_out_test"] == 221  # 30 % of the 736 Botnet rows: the split trainer fit makes
    for name in SIGNALS:
        # thresholds at 1 % of the validation benign rows: test benign rows flagged stay near it
        assert run["signals"][name]["benign_flagged_test"] <= 0.04, name
        assert run["signals"][name]["caught"] >= run["classifier_only"]["caught"], name
