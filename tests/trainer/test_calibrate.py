"""Temperature scaling and the expected calibration error, on logits whose true calibration is known."""

import numpy as np
import pytest

from trainer.calibrate import (
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    reliability,
)


def labels_drawn_from(logits, temperature, seed=0):
    """Labels sampled from softmax(logits / temperature): those probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = probabilities(logits, temperature)
    return np.array([rng.choice(len(row), p=row) for row in p])


@pytest.fixture(scope="module")
def overconfident():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=4.0, size=(4000, 5))
    return logits, labels_drawn_from(logits, temperature=2.0)


def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(overconfident):
    logits, labels = overconfident
    scaling = fit_temperature(logits, labels)
    assert scaling.temperature == pytest.approx(2.0, rel=0.1)
    assert scaling.fitted_rows == len(labels)
    assert scaling.ece_after < scaling.ece_before / 2


def test_the_temperature_never_changes_the_most_probable_class(overconfident):
    logits, labels = overconfident
    scaling = fit_temperature(logits, labels)
    assert (probabilities(logits, scaling.temperature).argmax(1) == logits.argmax(1)).all()


def test_calibrated_probabilities_have_a_small_expected_calibration_error():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(20000, 3))
    labels = labels_drawn_from(logits, temperature=1.0, seed=4)
    assert expected_calibration_error(probabilities(logits), labels) < 0.02


def test_ece_is_the_row_weighted_gap_between_confidence_and_accuracy_per_bin():
    # two rows at confidence 0.9 (one right), two at 0.6 (both right): |0.9-0.5|*2/4 + |0.6-1|*2/4 = 0.4
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.4)
    curve = reliability(probs, labels, bins=10)
    assert curve.counts.sum() == 4 and np.nansum(curve.counts > 0) == 2


def test_no_validation_rows_is_an_error_not_a_temperature():
    with pytest.raises(ValueError, match="needs validation rows"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def test_the_report_block_measures_the_test_rows_and_draws_the_diagram(overconfident, tmp_path):
    logits, labels = overconfident
    scaling = fit_temperature(logits[:2000], labels[:2000])
    summary = calibration_summary(scaling, logits[2000:], labels[2000:], 15, tmp_path / "reliability.png")
    assert summary["ece_after"] < summary["ece_before"] and summary["nll_after"] < summary["nll_before"]
    assert summary["validation"] == {"ece_before": scaling.ece_before, "ece_after": scaling.ece_after}
    assert (tmp_path / "reliability.png").stat().st_size > 0
