"""Fine-tuning length: a configured number of epochs, stretched for small data by ``min_steps``."""

import numpy as np
import pytest
import torch

from detector.core.model import ModelConfig, ResCAEBiGRU
from detector.core.scorer import predict_proba
from trainer.config import FinetuneConfig, ModelSection, PretrainConfig
from trainer.progress import Reporter
from trainer.train import TrainingDiverged, finetune, pretrain_autoencoder, resolve_alpha


def fine_tune(rows: int, **settings):
    rng = np.random.default_rng(0)
    x = rng.random((rows, 8), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    torch.manual_seed(0)
    model = ResCAEBiGRU(ModelConfig(n_features=8, n_classes=2, gru_hidden=4, gru_layers=1))
    cfg = FinetuneConfig(batch_size=16, **settings)
    return finetune(model, (x, y), (x[:16], y[:16]), cfg, torch.device("cpu"), seed=0, reporter=Reporter(False))


def test_a_small_training_set_gets_epochs_until_it_reaches_min_steps():
    history = fine_tune(rows=32, epochs=2, min_steps=9)  # 2 batches per epoch -> 5 epochs for 9 steps
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4, 5]


def test_a_training_set_that_reaches_min_steps_keeps_the_configured_epochs():
    history = fine_tune(rows=96, epochs=2, min_steps=9)  # 6 batches per epoch: 12 steps in 2 epochs
    assert len(history.epochs) == 2


def test_the_learning_rate_anneals_to_zero_over_the_stretched_run():
    history = fine_tune(rows=32, epochs=1, min_steps=8)
    rates = [e.lr for e in history.epochs]
    assert len(rates) == 4 and rates[0] == 0.01
    assert rates == sorted(rates, reverse=True) and rates[-1] < 0.002


def test_the_model_kept_is_the_epoch_with_the_lowest_validation_loss_not_the_last_one():
    rng = np.random.default_rng(1)
    x = rng.random((96, 8), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    val_x = rng.random((32, 8), dtype=np.float32)
    val_y = (val_x[:, 0] <= 0.5).astype(np.int64)  # labelled against the training rule: the better the fit, the worse
    torch.manual_seed(0)
    model = ResCAEBiGRU(ModelConfig(n_features=8, n_classes=2, gru_hidden=4, gru_layers=1))
    cfg = FinetuneConfig(epochs=6, min_steps=0, batch_size=16, lr=0.05, loss="cross_entropy", sam={"enabled": False})

    history = finetune(model, (x, y), (val_x, val_y), cfg, torch.device("cpu"), seed=0, reporter=Reporter(False))

    val_losses = [e.val_loss for e in history.epochs]
    lowest = min(val_losses)
    assert history.best_epoch == val_losses.index(lowest) + 1
    assert history.best_epoch < len(history.epochs), "the run must end on a worse epoch for this test to mean anything"
    probabilities = predict_proba(model, val_x, torch.device("cpu"))
    kept_loss = float(-np.log(probabilities[np.arange(len(val_y)), val_y]).mean())
    assert kept_loss == pytest.approx(lowest, rel=1e-5)
    assert kept_loss != pytest.approx(val_losses[-1], rel=1e-3)


def test_a_diverging_fine_tuning_stops_with_the_learning_rate_to_blame_instead_of_shipping_nan_weights():
    with pytest.raises(TrainingDiverged, match=r"fine-tuning loss is nan after epoch 1: .* lower finetune\.lr"):
        fine_tune(rows=32, epochs=2, lr=1e30, sam={"enabled": False})


def test_a_diverging_pre_training_stops_likewise():
    x = np.random.default_rng(0).random((32, 8), dtype=np.float32)
    with pytest.raises(TrainingDiverged, match=r"pre-training loss is (nan|inf) after epoch 1: .* pretrain\.lr"):
        pretrain_autoencoder(
            x,
            ModelSection(filters=(2, 2)),
            PretrainConfig(lr=1e30, batch_size=8),
            torch.device("cpu"),
            seed=0,
            reporter=Reporter(False),
            epochs=2,
            snapshot_epoch=None,
        )


def test_sam_sgd_pre_training_reduces_the_reconstruction_error():
    rng = np.random.default_rng(2)
    x = rng.random((64, 8), dtype=np.float32)
    cfg = PretrainConfig(epochs=4, batch_size=16, optimizer="sam_sgd", lr=0.05)
    torch.manual_seed(0)
    pretrained = pretrain_autoencoder(
        x, ModelSection(filters=(4, 8)), cfg, torch.device("cpu"), 0, Reporter(False), epochs=4, snapshot_epoch=2
    )
    assert len(pretrained.losses) == 4 and pretrained.losses[-1] < pretrained.losses[0]
    assert pretrained.encoder_state is not None


def test_a_named_alpha_rule_becomes_one_weight_per_class_from_the_training_labels():
    cfg = FinetuneConfig(focal={"alpha": "inverse_frequency"})
    resolved = resolve_alpha(cfg, np.array([0, 0, 0, 1]), n_classes=3)
    assert resolved.focal.alpha == pytest.approx([0.75, 2.25, 0.0])  # 1/3 : 1 : none, scaled to mean 1 over 3
    assert resolve_alpha(FinetuneConfig(), np.array([0, 1]), 2) == FinetuneConfig()  # no rule: unchanged


def test_label_smoothing_and_an_alpha_rule_train_a_model():
    history = fine_tune(rows=32, epochs=2, label_smoothing=0.1, focal={"alpha": [1.0, 2.0]})
    assert len(history.epochs) == 2 and all(np.isfinite(e.train_loss) for e in history.epochs)
