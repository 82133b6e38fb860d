import pytest
import torch

from detector.core.model import ModelConfig, ResCAE, ResCAEBiGRU, encoded_length


@pytest.mark.parametrize("n_features", [1, 2, 3, 77, 78, 84, 196])
def test_residual_paths_agree_for_any_feature_count(n_features):
    model = ResCAEBiGRU(ModelConfig(n_features=n_features, n_classes=5)).eval()
    x = torch.rand(4, n_features)
    assert model(x).shape == (4, 5)
    encoded = model.encoder(x.reshape(4, 1, 1, n_features))
    assert encoded.shape == (4, 32, 1, encoded_length(n_features))


@pytest.mark.parametrize("n_features", [3, 78, 84])
def test_autoencoder_reconstructs_every_input_in_unit_range(n_features):
    out = ResCAE(n_features)(torch.rand(6, n_features))
    assert out.shape == (6, n_features)
    assert (out >= 0).all() and (out <= 1).all()


def test_encoder_weights_transfer_from_autoencoder_to_classifier():
    autoencoder = ResCAE(20)
    classifier = ResCAEBiGRU(ModelConfig(n_features=20, n_classes=3))
    classifier.encoder.load_state_dict(autoencoder.encoder.state_dict())
    x = torch.rand(2, 1, 1, 20)
    autoencoder.eval()
    classifier.eval()
    torch.testing.assert_close(classifier.encoder(x), autoencoder.encoder(x))


def test_probabilities_sum_to_one():
    model = ResCAEBiGRU(ModelConfig(n_features=10, n_classes=4)).eval()
    p = model.predict_proba(torch.rand(8, 10))
    torch.testing.assert_close(p.sum(1), torch.ones(8))
