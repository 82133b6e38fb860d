"""Fine-tuning length: a configured number of epochs, stretched for small data by ``min_steps``."""

import numpy as np
import torch

from detector.model import ModelConfig, ResCAEBiGRU
from trainer.config import FinetuneConfig
from trainer.progress import Reporter
from trainer.train import finetune


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
