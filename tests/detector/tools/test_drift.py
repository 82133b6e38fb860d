"""``detector drift``: the PSI report of flow files against a bundle's training histograms, and its exit status."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from detector.cli import main
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, write_generated_csv

SHIFTED = "Flow Duration"
TEST_SPLIT = generated_rows(seed=5, scale=4)  # a fresh sample of the generator the bundle's histograms saw


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("drift") / "bundle")


@pytest.fixture(scope="module")
def unshifted(tmp_path_factory) -> Path:
    return write_generated_csv(tmp_path_factory.mktemp("flows") / "unshifted.csv.gz", TEST_SPLIT)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    rows = [{**row, SHIFTED: float(row[SHIFTED]) * 3} for row in TEST_SPLIT]  # type: ignore[arg-type]
    return write_generated_csv(tmp_path_factory.mktemp("flows") / "shifted.csv", rows)


def drift(capsys, *args: object) -> tuple[int, str, str]:
    status = main(["drift", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_unshifted_test_split_is_stable_for_every_feature(bundle, unshifted, capsys) -> None:
    status, out, _ = drift(capsys, "--bundle", bundle, unshifted, "--format", "json", "--fail-on", "moderate")
    report = orjson.loads(out)
    assert status == 0
    assert report["rows_read"] == report["rows"] == len(TEST_SPLIT) and report["rows_rejected"] == 0
    assert report["verdict"] == "stable" and report["max_psi"] < 0.1
    assert report["significant"] == [] and report["moderate"] == []
    assert {entry["verdict"] for entry in report["features"]} == {"stable"}


def test_the_shifted_feature_is_significant_and_the_others_are_not(bundle, shifted, capsys) -> None:
    status, out, _ = drift(capsys, "--bundle", bundle, shifted, "--format", "json")
    report = orjson.loads(out)
    assert status == 0  # a report, however bad, is not a failure unless --fail-on asks
    assert report["significant"] == [SHIFTED] and report["moderate"] == []
    assert report["features"][0]["feature"] == SHIFTED and report["features"][0]["psi"] > 0.25
    psis = [entry["psi"] for entry in report["features"]]
    assert psis == sorted(psis, reverse=True)
    assert report["thresholds"] == {"moderate": 0.1, "significant": 0.25}


@pytest.mark.parametrize(("level", "status"), [("significant", 1), ("moderate", 1)])
def test_fail_on_turns_a_significant_shift_into_status_1(bundle, shifted, capsys, level, status) -> None:
    assert drift(capsys, "--bundle", bundle, shifted, "--fail-on", level)[0] == status


def test_the_table_names_each_feature_its_psi_and_verdict(bundle, shifted, capsys) -> None:
    status, out, _ = drift(capsys, "--bundle", bundle, shifted)
    lines = out.splitlines()
    assert status == 0
    assert f"{len(TEST_SPLIT):,} flows decoded of {len(TEST_SPLIT):,} rows read, 0 rejected" in lines[0]
    first = lines[3].split()
    assert " ".join(first[:-2]) == SHIFTED and float(first[-2]) > 0.25 and first[-1] == "significant"
    assert "max PSI" in lines[-1] and "significant" in lines[-1]


def test_rejected_rows_are_counted_by_reason_and_ndjson_reads_like_the_worker(bundle, tmp_path, capsys) -> None:
    rows = [dict(row) for row in TEST_SPLIT[:400]]
    rows[3]["Total Fwd Packet"] = "lots"
    records = [orjson.dumps({k: v for k, v in row.items()}) for row in rows] + [b"not json"]
    path = tmp_path / "flows.ndjson.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"\n".join(records) + b"\n")
    status, out, _ = drift(capsys, "--bundle", bundle, path, "--format", "json")
    report = orjson.loads(out)
    assert status == 0
    assert report["rows_read"] == 401 and report["rows"] == 399
    assert report["rejected"] == {"wrong_type": 1, "not_json": 1}


def test_no_decodable_row_is_status_1(bundle, tmp_path, capsys) -> None:
    path = write_generated_csv(tmp_path / "bad.csv", [{"Flow ID": "x", "Dst Port": 80}])
    status, out, err = drift(capsys, "--bundle", bundle, path)
    assert status == 1 and out == ""
    assert "no row could be decoded (missing_features 1)" in err


def test_a_bundle_without_histograms_is_a_usage_error(tmp_path, unshifted, capsys) -> None:
    old = make_bundle(tmp_path / "old", drift=False)
    status, out, err = drift(capsys, "--bundle", old, unshifted)
    assert status == 2 and out == ""
    assert "no training histograms (drift.json)" in err
