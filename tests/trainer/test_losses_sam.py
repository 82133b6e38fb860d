import pytest
import torch
from torch import nn

from trainer.losses import FocalLoss, focal_alpha
from trainer.sam import SAM


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), nn.functional.cross_entropy(logits, target))


def test_focal_loss_down_weights_easy_examples():
    target = torch.tensor([0, 0])
    easy, hard = torch.tensor([[6.0, 0.0, 0.0]]), torch.tensor([[0.2, 0.0, 0.0]])
    focal, ce = FocalLoss(gamma=2.0), nn.CrossEntropyLoss()
    ratio_easy = focal(easy, target[:1]) / ce(easy, target[:1])
    ratio_hard = focal(hard, target[:1]) / ce(hard, target[:1])
    assert ratio_easy < ratio_hard < 1


def test_focal_loss_per_class_alpha_weights_the_target_class():
    logits, target = torch.zeros(1, 2), torch.tensor([1])
    plain = FocalLoss(gamma=2.0)(logits, target)
    torch.testing.assert_close(FocalLoss(gamma=2.0, alpha=[1.0, 3.0])(logits, target), 3 * plain)


def test_sam_leaves_weights_where_the_base_optimizer_puts_them_and_reduces_the_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(64, 4), (torch.randn(64) > 0).long()
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05)

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    first = sam.step(model, closure)
    running_mean = model[1].running_mean.clone()
    for _ in range(30):
        last = sam.step(model, closure)
    assert last < first
    batchnorm_updates_per_step = (model[1].running_mean - running_mean).abs().sum()
    assert batchnorm_updates_per_step > 0  # the first pass of each step still updates statistics


def test_sam_freezes_batchnorm_statistics_in_its_second_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    sam = SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.0), rho=0.05)
    x = torch.randn(32, 3)
    passes = []

    def closure():
        before = model[1].running_mean.clone()
        loss = model(x).pow(2).mean()
        loss.backward()
        passes.append(not torch.equal(before, model[1].running_mean))
        return loss

    sam.step(model, closure)
    assert passes == [True, False]


def test_label_smoothed_focal_loss_with_gamma_zero_is_label_smoothed_cross_entropy():
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    smoothed = FocalLoss(gamma=0.0, label_smoothing=0.1)(logits, target)
    torch.testing.assert_close(smoothed, nn.functional.cross_entropy(logits, target, label_smoothing=0.1))
    assert FocalLoss(gamma=2.0, label_smoothing=0.1)(logits, target) != FocalLoss(gamma=2.0)(logits, target)


@pytest.mark.parametrize("rule", ["inverse_frequency", "effective_number"])
def test_alpha_rules_weigh_rare_classes_more_and_average_one(rule):
    alpha = focal_alpha(rule, [1000, 100, 10, 0], beta=0.999)
    assert alpha[0] < alpha[1] < alpha[2] and alpha[3] == 0  # a class without rows never is a target
    assert sum(alpha) / len(alpha) == pytest.approx(1.0)


def test_inverse_frequency_alpha_is_proportional_to_one_over_the_count():
    alpha = focal_alpha("inverse_frequency", [300, 100])
    assert alpha[1] / alpha[0] == pytest.approx(3.0)
    # effective numbers flatten among large classes: 10x the rows is far less than 10x less weight
    big = focal_alpha("effective_number", [30000, 3000], beta=0.999)
    assert big[1] / big[0] < 1.1


def test_an_unknown_alpha_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown focal alpha rule"):
        focal_alpha("balanced", [1, 2])
