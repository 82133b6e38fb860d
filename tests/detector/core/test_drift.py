"""Feature drift: training histograms, the Population Stability Index, the sliding window, the bundle's drift.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from detector.core.bundle import BundleError, load_bundle
from detector.core.decode import FlowDecoder
from detector.core.drift import (
    EPSILON,
    DriftSummary,
    DriftWindow,
    ReferenceHistograms,
    population_stability_index,
    verdict,
)
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows


def raw_values(seed: int, scale: int = 4) -> np.ndarray:
    """The raw numeric values of a generated sample: a "test split" of the generator the reference saw."""
    decoder = FlowDecoder(FEATURES)
    return np.stack([decoder.decode_mapping(row).numeric for row in generated_rows(seed, scale)])  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def reference() -> ReferenceHistograms:
    return ReferenceHistograms.fit(raw_values(0, scale=8), FEATURES)


def test_a_fresh_sample_of_the_training_distribution_is_stable(reference: ReferenceHistograms) -> None:
    psi = reference.psi(reference.bin_counts(raw_values(7)))
    assert psi.shape == (len(FEATURES),)
    assert np.all(psi < 0.1), dict(zip(FEATURES, psi.round(3), strict=True))


@pytest.mark.parametrize(("feature", "change"), [("Flow Duration", 3.0), ("Packet Length Mean", 0.2)])
def test_a_scaled_feature_drifts_significantly_and_only_that_one(
    reference: ReferenceHistograms, feature: str, change: float
) -> None:
    values = raw_values(7)
    values[:, FEATURES.index(feature)] *= change
    summary = DriftSummary.of(FEATURES, reference.psi(reference.bin_counts(values)), len(values))
    assert summary.significant == [feature]
    assert summary.psi[0][0] == feature and summary.max_psi > 0.25
    assert summary.verdict == "significant"


def test_a_shifted_feature_drifts_too(reference: ReferenceHistograms) -> None:
    values = raw_values(7)
    column = FEATURES.index("FWD Init Win Bytes")
    values[:, column] = 65535  # every flow now opens with another window: a meter or OS change
    psi = reference.psi(reference.bin_counts(values))
    assert psi[column] > 0.25
    assert np.all(np.delete(psi, column) < 0.1)


def test_non_finite_values_have_their_own_bin(reference: ReferenceHistograms) -> None:
    values = raw_values(7)
    column = FEATURES.index("Flow Bytes/s")
    values[: len(values) // 2, column] = np.inf  # half the flows now divide by a zero duration
    counts = reference.bin_counts(values)
    assert counts[column, len(reference.edges[column]) + 1] == len(values) // 2
    assert reference.psi(counts)[column] > 0.25


def test_psi_matches_its_formula_and_raises_empty_bins_to_epsilon() -> None:
    expected = np.array([[50, 50, 0]])
    actual = np.array([[25, 75, 0]])
    by_hand = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert population_stability_index(expected, actual)[0] == pytest.approx(by_hand)
    one_sided = population_stability_index(np.array([[100, 0]]), np.array([[50, 50]]))[0]
    assert one_sided == pytest.approx((0.5 - 1.0) * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON))
    assert population_stability_index(expected, expected)[0] == 0.0


@pytest.mark.parametrize(("psi", "word"), [(0.0, "stable"), (0.099, "stable"), (0.1, "moderate"), (0.25, "moderate")])
def test_thresholds_read_as_usual(psi: float, word: str) -> None:
    assert verdict(psi) == word
    assert verdict(0.2501) == "significant"


def test_mostly_constant_feature_merges_its_edges() -> None:
    values = np.zeros((100, 1))
    values[:5, 0] = [1, 2, 3, 4, 5]
    reference = ReferenceHistograms.fit(values, ["x"])
    assert len(reference.edges[0]) < 9
    assert reference.counts[0].sum() == 100
    assert reference.psi(reference.bin_counts(values))[0] == 0.0


def test_histograms_survive_json(reference: ReferenceHistograms) -> None:
    again = ReferenceHistograms.from_json(json.loads(json.dumps(reference.to_json())))
    values = raw_values(3)
    assert again.features == reference.features
    np.testing.assert_array_equal(again.bin_counts(values), reference.bin_counts(values))


@pytest.mark.parametrize(
    "document",
    [
        {"format": "other"},
        {"format": "flowwarden.drift/1", "rows": 1, "features": {"x": {"edges": [1.0], "counts": [1, 0]}}},
        {"format": "flowwarden.drift/1", "rows": 1, "features": {"x": {"edges": [2.0, 1.0], "counts": [1, 0, 0, 0]}}},
        {"format": "flowwarden.drift/1", "rows": 1, "features": {"x": {"counts": [1, 0]}}},
    ],
    ids=["format", "count length", "edges not increasing", "no edges"],
)
def test_malformed_histograms_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"drift\.json"):
        ReferenceHistograms.from_json(document)


def test_window_keeps_about_the_last_size_flows(reference: ReferenceHistograms) -> None:
    window = DriftWindow(reference, size=1000)
    stable = raw_values(7)
    for start in range(0, len(stable), 64):
        window.add(stable[start : start + 64])
    assert np.all(window.psi() < 0.1)
    shifted = raw_values(8)
    shifted[:, FEATURES.index("Flow Duration")] *= 3
    for start in range(0, len(shifted), 64):
        window.add(shifted[start : start + 64])
    assert 1000 <= window.rows <= 1000 + 50 + 64
    assert window.counts().sum(axis=1).tolist() == [window.rows] * len(FEATURES)
    psi = window.psi()
    assert psi[FEATURES.index("Flow Duration")] > 0.25  # the old flows have left the window
    assert np.all(np.delete(psi, FEATURES.index("Flow Duration")) < 0.1)


def test_bundle_stores_and_verifies_drift(tmp_path: Path) -> None:
    bundle = load_bundle(make_bundle(tmp_path / "b"))
    assert bundle.drift is not None and bundle.drift.features == bundle.preprocessor.numeric
    assert "drift.json" in bundle.manifest["files"]
    assert load_bundle(make_bundle(tmp_path / "old", drift=False)).drift is None
    (tmp_path / "b" / "drift.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BundleError, match=r"checksum mismatch for drift\.json"):
        load_bundle(tmp_path / "b")
