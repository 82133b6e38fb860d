"""Stage 2 starts from stage 1: the classifier's encoder begins as the pre-trained autoencoder's encoder."""

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
