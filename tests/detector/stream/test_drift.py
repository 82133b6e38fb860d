"""The worker's drift metrics: flowwarden_feature_psi in the exposition, from batches a processor decodes."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from detector.core.bundle import load_bundle
from detector.stream.metrics import WorkerMetrics
from detector.stream.runner import build_processor
from detector.stream.settings import RunSettings
from tests.detector.stream.test_processor import messages
from tests.support.bundles import make_bundle
from tests.support.generated import FEATURES, generated_rows
from tests.support.worker import flow_values

SHIFTED = "Flow Duration"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("drift") / "b", version="d1")


def feature_psi(metrics: WorkerMetrics) -> dict[str, float]:
    families = text_string_to_metric_families(metrics.exposition().decode())
    return {s.labels["feature"]: s.value for f in families if f.name == "flowwarden_feature_psi" for s in f.samples}


def window_records(metrics: WorkerMetrics) -> float:
    families = text_string_to_metric_families(metrics.exposition().decode())
    return next(s.value for f in families if f.name == "flowwarden_drift_window_records" for s in f.samples)


def shifted(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows with their flow durations three times as long: a meter that now reports in other units."""
    return [{**row, SHIFTED: float(row[SHIFTED]) * 3} for row in rows]  # type: ignore[arg-type]


def run_batches(settings: RunSettings, bundle_dir, rows) -> WorkerMetrics:
    metrics = WorkerMetrics(drift_window=settings.drift_window if settings.drift else None)
    work = build_processor(settings, load_bundle(bundle_dir), drift=metrics.drift)
    values = flow_values(rows)
    for start in range(0, len(values), 256):
        work.process(messages(values[start : start + 256], start=start))
    return metrics


def test_unshifted_flows_export_a_small_psi_for_every_feature(bundle_dir) -> None:
    rows = generated_rows(11, scale=4)
    metrics = run_batches(RunSettings(bundle=bundle_dir, drift_window=500, device="cpu"), bundle_dir, rows)
    psi = feature_psi(metrics)
    assert set(psi) == set(FEATURES)
    assert max(psi.values()) < 0.1, psi
    assert 500 <= window_records(metrics) <= 500 + 256 + 25 < len(rows)  # the window, not every flow


def test_a_shifted_feature_is_significant_in_the_exposition_and_the_others_are_not(bundle_dir) -> None:
    rows = shifted(generated_rows(11, scale=4))
    metrics = run_batches(RunSettings(bundle=bundle_dir, drift_window=500, device="cpu"), bundle_dir, rows)
    psi = feature_psi(metrics)
    assert psi[SHIFTED] > 0.25
    assert max(value for name, value in psi.items() if name != SHIFTED) < 0.1, psi


def test_no_psi_until_the_window_holds_enough_flows(bundle_dir) -> None:
    rows = generated_rows(11)[:200]
    metrics = run_batches(RunSettings(bundle=bundle_dir, drift_window=5000, device="cpu"), bundle_dir, rows)
    assert feature_psi(metrics) == {}
    assert window_records(metrics) == 200


def test_drift_off_exports_nothing(bundle_dir) -> None:
    metrics = run_batches(RunSettings(bundle=bundle_dir, drift=False, device="cpu"), bundle_dir, generated_rows(11))
    assert "flowwarden_feature_psi" not in metrics.exposition().decode()


def test_a_bundle_without_histograms_says_so_once_and_exports_no_psi(tmp_path) -> None:
    old = make_bundle(tmp_path / "old", drift=False)
    with capture_logs() as logs:
        metrics = run_batches(RunSettings(bundle=old, drift_window=100, device="cpu"), old, generated_rows(11, 2))
    assert feature_psi(metrics) == {}
    assert window_records(metrics) == 0
    assert sum("drift unavailable" in entry["event"] for entry in logs) == 1


def test_a_hot_swap_starts_a_new_window(bundle_dir) -> None:
    metrics = WorkerMetrics(drift_window=1000)
    settings = RunSettings(bundle=bundle_dir, drift_window=1000, device="cpu")
    work = build_processor(settings, load_bundle(bundle_dir), drift=metrics.drift)
    work.process(messages(flow_values(shifted(generated_rows(11)))))
    work.serve(load_bundle(bundle_dir))
    assert window_records(metrics) == 0
