"""Stage 2 starts from stage 1: the classifier's encoder begins as the pre-trained autoencoder's encoder."""

import numpy as np
import torch

from tests.support.generated import generated_rows, write_generated_csv
from trainer.config import load_config
from trainer.load import load_flows
from trainer.pipeline import prepare, train_model
from trainer.progress import Reporter


def test_the_classifier_starts_from_the_encoder_the_autoencoder_pre_trained(tmp_path):
    data = write_generated_csv(tmp_path / "generated_flows.csv", generated_rows(seed=2))
    config = load_config("quick").with_changes(
        {
            "device": "cpu",
            "outliers": {"enabled": False},
            "resample": {"enabled": False},
            "pretrain": {"epochs": 2},
            # the novelty model trains exactly as long as the classifier's pre-training: the same autoencoder
            "novelty": {"enabled": True, "min_epochs": 1},
            # one step so small that the fine-tuned weights are still the ones fine-tuning started from
            "finetune": {"epochs": 1, "min_steps": 0, "lr": 1e-12, "momentum": 0.0, "sam": {"enabled": False}},
        }
    )
    reporter = Reporter(enabled=False)
    result = train_model(prepare(load_flows([data]), config, reporter), config, reporter)

    assert result.novelty is not None and len(result.history.pretrain_loss) == 2
    pre_trained = dict(result.novelty.autoencoder.encoder.named_parameters())
    fine_tuned = dict(result.model.encoder.named_parameters())
    assert pre_trained.keys() == fine_tuned.keys()
    for name, weights in fine_tuned.items():
        torch.testing.assert_close(
            weights, pre_trained[name], rtol=0, atol=1e-6, msg=lambda detail, name=name: f"encoder {name}: {detail}"
        )


# ---- what each step may see: the training steps 3-6 (split, clean, scale, resample) fit on the training split only


def _prepared(tmp_path, **changes):
    data = write_generated_csv(tmp_path / "generated_flows.csv", generated_rows(seed=3, scale=2))
    table = load_flows([data])
    config = load_config("quick").with_changes(
        {"device": "cpu", "preprocess": {"log_scale": False}, "outliers": {"contamination": 0.05}, **changes}
    )
    return table, prepare(table, config, Reporter(enabled=False))


def _row_set(matrix: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(matrix, dtype=np.float32)}


def test_the_scaler_learns_its_range_from_the_training_rows_only(tmp_path):
    table, prepared = _prepared(
        tmp_path, split={"validation_size": 0.0}, outliers={"enabled": False}, resample={"enabled": False}
    )
    values = table.numeric.to_numpy(dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    train = np.setdiff1d(np.arange(len(table)), prepared.test_rows)
    np.testing.assert_array_equal(prepared.preprocessor.minimum, np.nan_to_num(np.nanmin(values[train], axis=0)))
    np.testing.assert_array_equal(prepared.preprocessor.maximum, np.nan_to_num(np.nanmax(values[train], axis=0)))
    everywhere = np.nan_to_num(np.nanmax(values, axis=0))
    assert (everywhere != prepared.preprocessor.maximum).any(), "some maximum must lie in the test split"


def test_the_autoencoder_pre_trains_on_the_cleaned_training_rows_and_never_on_validation_or_test_rows(tmp_path):
    _, prepared = _prepared(tmp_path)
    split, removed = prepared.steps["split"], prepared.steps["outliers"]["removed"]
    assert len(prepared.pretrain_x) == split["train_rows"] - split["validation_rows"] - removed
    pretrain = _row_set(prepared.pretrain_x)
    assert not pretrain & _row_set(prepared.test_x)
    assert not pretrain & _row_set(prepared.val_x)


def test_isolation_forest_cleaning_removes_the_benign_rows_it_reports_and_no_attack_row(tmp_path):
    _, uncleaned = _prepared(tmp_path, outliers={"enabled": False}, resample={"enabled": False})
    _, cleaned = _prepared(tmp_path, resample={"enabled": False})
    before = dict(zip(*np.unique(uncleaned.train_y, return_counts=True), strict=True))
    after = dict(zip(*np.unique(cleaned.train_y, return_counts=True), strict=True))
    benign = cleaned.classes.index(cleaned.benign_class)
    removed = cleaned.steps["outliers"]["removed"]
    assert removed > 0
    assert after[benign] == before[benign] - removed
    assert {k: v for k, v in after.items() if k != benign} == {k: v for k, v in before.items() if k != benign}
