"""``trainer novelty``: a class held out of training, and the novelty signals' thresholds and shares.

On *generated* flows (tests/support/generated.py): three attack classes, one of them ("Far Attack") built to
lie far from every other class. They check what is held out and where thresholds come from, not how good a
signal is on real traffic (that is the README's "Unknown attacks" run).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.generated import generated_rows, unlike_training, write_generated_csv
from trainer.cli import main
from trainer.config import load_config
from trainer.load import DataError, load_flows
from trainer.pipeline import prepare
from trainer.progress import Reporter
from trainer.unseen import SIGNALS, Populations, Rows, Thresholds, eligible_classes, measure, summarise

FAR = "Far Attack"
TINY_NETWORK = """
[model]
filters = [4, 8]
gru_hidden = 8
gru_layers = 1

[pretrain]
epochs = 1

[novelty]
min_epochs = 1
"""


def generated_with_a_far_class(seed: int) -> list[dict[str, object]]:
    """Generated flows plus a fourth class: DoS-like rows with every volume and timing feature 1000 times larger."""
    rows = generated_rows(seed=seed)
    far = [{**row, "Label": FAR} for row in rows if row["Label"] == "DoS Hulk"]
    return rows + unlike_training(far, factor=1000.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("unseen")
    (root / "tiny.toml").write_text(TINY_NETWORK, encoding="utf-8")
    return root, write_generated_csv(root / "generated_flows.csv", generated_with_a_far_class(seed=5))


def _row_set(matrix: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(matrix, dtype=np.float32)}


# ---- the held-out class never reaches training


def test_a_held_out_class_is_in_no_training_validation_or_test_row_and_the_rest_of_the_split_is_unchanged(data):
    _, csv = data
    table = load_flows([csv])
    config = load_config("quick").with_changes({"device": "cpu", "resample": {"enabled": False}})
    reporter = Reporter(enabled=False)
    full = prepare(table, config, reporter)
    held = prepare(table, config, reporter, held_out="Portscan")

    assert "Portscan" not in held.classes and held.held_out is not None
    labels = table.labels.to_numpy(dtype=object)
    assert set(labels[held.held_out.test_rows]) == {"Portscan"}
    assert set(labels[held.held_out.val_rows]) == {"Portscan"}
    # the split is the one trainer fit makes: every other test row where it was, the class's rows taken out
    portscan_test = full.test_rows[labels[full.test_rows] == "Portscan"]
    np.testing.assert_array_equal(held.held_out.test_rows, portscan_test)
    np.testing.assert_array_equal(held.test_rows, np.setdiff1d(full.test_rows, portscan_test))
    assert len(held.val_y) == len(full.val_y) - len(held.held_out.val_rows)
    # no scaled training, pre-training or validation row is a row of the held-out class
    unseen = _row_set(held.held_out.test_x) | _row_set(held.held_out.val_x)
    for matrix in (held.train_x, held.pretrain_x, held.val_x, held.test_x):
        assert not _row_set(matrix) & unseen
    split = held.steps["split"]["held_out"]
    in_training = int((labels == "Portscan").sum()) - split["validation_rows"] - split["test_rows"]
    assert split["training_rows_removed"] == in_training > 0


@pytest.mark.parametrize("name", ["BENIGN", "No Such Class"])
def test_only_an_attack_class_of_the_data_can_be_held_out(data, name):
    table = load_flows([data[1]])
    with pytest.raises(DataError, match="cannot hold out"):
        prepare(table, load_config("quick"), Reporter(enabled=False), held_out=name)


def test_classes_are_held_out_only_with_enough_rows():
    counts = {"BENIGN": 500, "DDoS": 100, "Botnet": 99, "Heartbleed": 11}
    assert eligible_classes(counts, "BENIGN", 100) == ["DDoS"]
    assert eligible_classes(counts, "BENIGN", 10) == ["Botnet", "DDoS", "Heartbleed"]


# ---- thresholds from validation benign rows only


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0, attack_share: float = 0.0) -> Rows:
    signals = {name: rng.normal(shift, 1.0, n) for name in ("autoencoder", "max_probability", "energy")}
    signals["isolation_forest"] = rng.normal(0.0, 1.0, n)  # this one never sees the difference
    labelled = rng.random(n) < attack_share
    return Rows(signals, labelled, labelled.astype(np.int64))


def _populations(seed: int, test_seed: int, held_out_shift: float | None = None) -> Populations:
    rng, test_rng = np.random.default_rng(seed), np.random.default_rng(test_seed)
    shift = test_rng.uniform(2, 4) if held_out_shift is None else held_out_shift
    return Populations(
        validation_benign=_rows(rng, 2000),
        held_out_validation=_rows(rng, 300, shift=3.0, attack_share=0.2),
        test_benign=_rows(test_rng, 2000, shift=test_rng.uniform(0, 1)),
        held_out_test=_rows(test_rng, 300, shift=shift, attack_share=0.2),
    )


def _thresholds(report):
    return {name: report["signals"][name]["threshold"] for name in SIGNALS}


def test_thresholds_come_from_the_validation_benign_rows_and_no_test_row_moves_them():
    classes = ("BENIGN", "DoS")
    one, other_test = measure(_populations(1, 10), 0.01, classes), measure(_populations(1, 11), 0.01, classes)
    other_validation = measure(_populations(2, 10), 0.01, classes)

    assert _thresholds(one) == _thresholds(other_test)
    assert _thresholds(one) != _thresholds(other_validation)
    assert one["signals"]["energy"]["caught"] != other_test["signals"]["energy"]["caught"]  # the test rows differ
    for name in SIGNALS:
        assert one["signals"][name]["benign_flagged_validation"] == pytest.approx(0.01, abs=0.002), name


def test_a_row_is_caught_when_the_classifier_calls_it_an_attack_or_the_signal_flags_it():
    rows = _populations(3, 4, held_out_shift=5.0)
    report = measure(rows, 0.01, ("BENIGN", "DoS"))
    thresholds = Thresholds.fit(rows.validation_benign, 0.01)
    for name in SIGNALS:
        flagged = thresholds.flagged(rows.held_out_test, name)
        expected = np.mean(flagged | rows.held_out_test.labelled_attack)
        assert report["signals"][name]["caught"] == pytest.approx(expected, abs=1e-6)
        assert report["signals"][name]["caught"] >= report["classifier_only"]["caught"]
    # the shifted signals catch most of the held-out rows; the forest, blind here, only what the classifier does
    assert report["signals"]["energy"]["caught"] > 0.8
    assert report["signals"]["isolation_forest"]["caught"] < 0.4
    assert report["signals"]["combined"]["caught"] > 0.8


def test_the_worker_signal_is_chosen_on_validation_rows_not_on_test_rows():
    def run(validation: dict[str, float], test: dict[str, float]) -> dict:
        keys = ("caught_validation", "caught", "flagged", "benign_flagged_validation", "benign_flagged_test")
        signals = {
            name: {**dict.fromkeys(keys, 0.0), "caught_validation": validation[name], "caught": test[name]}
            for name in SIGNALS
        }
        only = {"caught": 0.1, "caught_validation": 0.1, "benign_alarms_test": 0.0}
        return {"signals": signals, "classifier_only": only}

    low = dict.fromkeys(SIGNALS, 0.2)
    summary = summarise(
        {
            "A": run({**low, "energy": 0.9}, {**low, "autoencoder": 0.99}),
            "B": run({**low, "energy": 0.7}, {**low, "autoencoder": 0.99}),
        }
    )
    assert summary["chosen_signal"] == "energy" and summary["tied_on_validation"] == ["energy"]
    tie = summarise({"A": run(low, {**low, "energy": 0.9})})
    assert tie["chosen_signal"] == SIGNALS[0] and tie["tied_on_validation"] == list(SIGNALS)
    assert summary["mean"]["energy"]["caught_validation"] == pytest.approx(0.8)
    assert summary["mean"]["autoencoder"]["caught"] == pytest.approx(0.99)


# ---- the command


def test_trainer_novelty_writes_a_table_per_held_out_class_and_flags_the_far_class(data):
    root, csv = data
    out = root / "novelty"
    args = ["novelty", "--data", str(csv), "--profile", "quick", "--config", str(root / "tiny.toml")]
    args += ["--out", str(out), "--quiet", "--epochs", "1", "--device", "cpu", "--hold-out", FAR]
    assert main(args) == 0

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["complete"] is True and report["classes_held_out"] == [FAR]
    run = report["held_out"][FAR]
    assert FAR not in run["labelled_as"] and sum(run["labelled_as"].values()) == run["rows"]["held_out_test"]
    assert set(run["signals"]) == set(SIGNALS)
    for values in run["signals"].values():
        assert 0 <= values["benign_flagged_test"] <= 1 and values["caught"] >= run["classifier_only"]["caught"]
    # rows a thousand times larger than anything in training: the forest isolates them all
    assert run["signals"]["isolation_forest"]["flagged"] == 1.0
    assert report["summary"]["classes"] == 1 and report["summary"]["chosen_signal"] in SIGNALS
    table = (out / "report.md").read_text(encoding="utf-8")
    assert f"| {FAR} | {run['rows']['held_out_test']} |" in table and "**mean of 1**" in table


def test_trainer_novelty_refuses_to_hold_out_benign_traffic(data, capsys):
    root, csv = data
    args = ["novelty", "--data", str(csv), "--profile", "quick", "--out", str(root / "refused"), "--quiet"]
    assert main([*args, "--hold-out", "BENIGN"]) == 2
    assert "cannot hold out BENIGN" in capsys.readouterr().err
