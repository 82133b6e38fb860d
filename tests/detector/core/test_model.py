import pytest
import torch

from detector.core.model import ModelConfig, ResCAE, ResCAEBiGRU, ResidualBlock, encoded_length


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


def test_every_conv_activation_puts_relu_on_the_shortcut_too():
    """Table 1's block: each path is non-negative on its own, so a negative input cannot flow through the shortcut."""
    torch.manual_seed(0)
    resnet, every = ResidualBlock(1, 4, "resnet").eval(), ResidualBlock(1, 4, "every_conv").eval()
    every.load_state_dict(resnet.state_dict())  # the same weights: the activation adds no parameter
    x = torch.randn(3, 1, 1, 9)
    assert (every.shortcut(x) >= 0).all() and (every.main(x) >= 0).all()
    assert not torch.allclose(every(x), resnet(x))


def test_model_json_names_the_activation_only_when_it_is_not_the_default():
    assert "activation" not in ModelConfig(n_features=4, n_classes=2).to_json()
    literal = ModelConfig(n_features=4, n_classes=2, activation="every_conv")
    assert ModelConfig.from_json(literal.to_json()) == literal
    with pytest.raises(ValueError, match="activation must be one of"):
        ModelConfig.from_json({"n_features": 4, "n_classes": 2, "activation": "gelu"})
