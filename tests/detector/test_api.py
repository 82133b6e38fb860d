"""The Python API scores flows exactly as ``detector score`` does, row by row, from a DataFrame or rows."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pandas as pd
import pytest

import detector
from detector.cli import main
from detector.core.bundle import BundleError
from detector.core.csvfile import read_rows
from detector.core.registry import publish
from detector.core.scorer import DeviceError
from detector.core.signing import generate_key_pair, load_private_key, sign_bundle_directory
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, write_generated_csv

ROWS = generated_rows(seed=5)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("api") / "bundle", novelty=True)


@pytest.fixture(scope="module")
def flows(tmp_path_factory) -> Path:
    rows = [dict(row) for row in ROWS]
    rows[3]["Total Fwd Packet"] = "lots"  # a row that cannot be scored
    rows[0]["Flow Bytes/s"] = "Infinity"
    return write_generated_csv(tmp_path_factory.mktemp("api") / "flows.csv", rows)


@pytest.fixture(scope="module")
def scored(bundle, flows, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("api") / "scores.jsonl"
    assert main(["score", "--bundle", str(bundle), str(flows), "--out", str(out)]) == 0
    return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def assert_matches_score(result: pd.DataFrame, scored: list[dict]) -> None:
    assert len(result) == len(scored)
    for (_, row), line in zip(result.iterrows(), scored, strict=True):
        if "error" in line:  # pandas shows a missing value as None or NaN, by the column's dtype
            assert row["error"] == f"{line['error']['code']}: {line['error']['reason']}"
            assert pd.isna(row["label"])
            continue
        assert pd.isna(row["error"])
        assert (row["label"], row["is_attack"], row["confidence"]) == (
            line["label"],
            line["is_attack"],
            line["confidence"],
        )
        assert row["probabilities"] == {p["label"]: p["probability"] for p in line["probabilities"]}
        assert (row["novelty"], row["is_novel"]) == (line["novelty"]["score"], line["novelty"]["is_novel"])
        assert row["ground_truth"] == line.get("ground_truth")


def test_a_dataframe_of_text_cells_scores_like_detector_score(bundle, flows, scored):
    frame = pd.read_csv(flows, dtype=str, keep_default_na=False, encoding="cp1252")
    assert_matches_score(detector.load(bundle).predict(frame), scored)


def test_a_dataframe_as_pandas_parses_it_scores_like_detector_score(bundle, flows, scored):
    frame = pd.read_csv(flows, encoding="cp1252")  # numbers, NaN for missing cells, the text column as object
    result = detector.load(bundle).predict(frame)
    assert_matches_score(result, scored)
    assert list(result.index) == list(frame.index)


def test_rows_score_like_detector_score(bundle, flows, scored):
    assert_matches_score(detector.load(bundle).predict(read_rows(flows)), scored)


def test_a_registry_serves_its_latest_version(bundle, tmp_path, flows, scored):
    registry = tmp_path / "registry"
    publish(bundle, registry)
    model = detector.load(registry)
    assert model.version == detector.load(bundle).version
    assert_matches_score(model.predict(read_rows(flows)), scored)


def test_a_bad_bundle_is_refused_with_a_clear_error(tmp_path):
    with pytest.raises(BundleError):
        detector.load(tmp_path)


def test_importing_detector_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, detector; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_backend_is_chosen_like_detector_scores(bundle, flows):
    fp32 = detector.load(bundle, backend="eager").predict(read_rows(flows))
    int8 = detector.load(bundle).predict(read_rows(flows))
    assert list(fp32["label"]) == list(int8["label"]), "int8 labels these generated flows as the fp32 model does"
    assert list(fp32["confidence"]) != list(int8["confidence"]), "auto on a CPU is int8, not the fp32 model"
    with pytest.raises(DeviceError, match="backend cuda-graphs does not run on cpu"):
        detector.load(bundle, device="cpu", backend="cuda-graphs")


def test_trusted_keys_refuse_an_unsigned_bundle_and_accept_a_signed_one(bundle, tmp_path):
    private, public = generate_key_pair(tmp_path / "keys")
    with pytest.raises(BundleError, match="it is not signed"):
        detector.load(bundle, device="cpu", trusted_keys=[public])
    signed = shutil.copytree(bundle, tmp_path / "signed")
    sign_bundle_directory(signed, load_private_key(private))
    assert detector.load(signed, device="cpu", trusted_keys=[public]).bundle.signed_by
