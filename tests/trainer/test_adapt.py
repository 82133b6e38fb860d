"""``trainer adapt`` as a user runs it (through ``main``), on *generated* flows: a tiny bundle trained on
generated rows, and "site" flows that are its benign rows made ten times larger (a stand-in for another
meter's benign traffic, which the base bundle's novelty flag marks novel)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detector.core.bundle import file_sha256, load_bundle
from detector.core.novelty import NOVEL_ABOVE
from detector.core.registry import resolve_bundle_path
from detector.core.scorer import predict_proba
from detector.core.signing import load_trusted_keys
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, unlike_training, write_generated_csv
from trainer.adapt import read_site_flows, split_rows
from trainer.cli import main

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapt") / "base"
    return make_bundle(directory, novelty=True, novelty_flag="max_probability", temperature=0.7, version="base-v1")


@pytest.fixture(scope="module")
def site_csv(tmp_path_factory):
    """240 generated benign rows of the "site", and one row whose cell is not a number (rejected, counted)."""
    rows = [row for row in generated_rows(seed=5, scale=2) if row["Label"] == "BENIGN"]
    rows = unlike_training(rows)
    rows.append({**rows[0], "Flow Duration": "not-a-number"})
    return write_generated_csv(tmp_path_factory.mktemp("site") / "generated_site_benign.csv", rows)


@pytest.fixture(scope="module")
def adapted_run(base, site_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt-run") / "run"
    args = ["adapt", "--bundle", str(base), "--benign", str(site_csv), "--out", str(out)]
    assert main([*args, "--epochs", "60", "--budget", "0.05", "--seed", "3", "--quiet"]) == 0
    return out


def test_adapt_writes_a_verifiable_bundle_with_the_base_classifier_unchanged(base, adapted_run):
    original, adapted = load_bundle(base), load_bundle(adapted_run / "bundle")  # checksums verified
    assert adapted.version != original.version and adapted.version.endswith(f"-site-{original.sha256[:8]}")
    for name in ("model.safetensors", "model.json", "preprocessing.json", "calibration.json", "drift.json"):
        assert file_sha256(adapted_run / "bundle" / name) == file_sha256(base / name), name
    matrix = np.random.default_rng(0).random((50, original.preprocessor.width), dtype=np.float32)
    same = predict_proba(original.model, matrix, CPU), predict_proba(adapted.model, matrix, CPU)
    assert np.array_equal(*same)
    assert adapted.calibration.temperature == original.calibration.temperature == 0.7
    assert adapted.manifest["metrics"] == original.manifest["metrics"]
    assert file_sha256(adapted_run / "bundle" / "novelty.safetensors") != file_sha256(base / "novelty.safetensors")


def test_the_site_threshold_flags_about_the_budget_of_the_held_out_rows(base, site_csv, adapted_run):
    adapted, original = load_bundle(adapted_run / "bundle"), load_bundle(base)
    calibration = adapted.novelty.calibration
    site = calibration.site
    assert calibration.flag == "autoencoder" and original.novelty.calibration.flag == "max_probability"
    assert calibration.max_probability == original.novelty.calibration.max_probability, "the classifier is unchanged"
    assert original.novelty.calibration.site is None
    assert site["rows_read"] == 241 and site["rows_decoded"] == 240 and site["rows_rejected"] == 1
    assert site["files"][0]["sha256"] == file_sha256(site_csv) and site["files"][0]["rejected"] == {"wrong_type": 1}
    assert site["rows_held_out"] == 48 and site["rows_used"] == 192 and site["seed"] == 3
    assert site["budget"] == 0.05 and site["resolvable_budget"] == pytest.approx(1 / 48)
    assert site["base_bundle"] == {"version": "base-v1", "sha256": original.sha256}

    flows = read_site_flows([site_csv], original)
    _, held = split_rows(len(flows.matrix), site["held_out"], site["seed"])
    matrix = flows.matrix[held]
    probabilities = predict_proba(original.model, matrix, CPU)
    flagged = float((adapted.novelty.scores(matrix, probabilities, CPU) > NOVEL_ABOVE).mean())
    assert flagged == pytest.approx(site["held_out_flagged_share"])
    assert 0.05 - 1 / 48 <= flagged <= 0.05
    before = float((original.novelty.signals(matrix, probabilities, CPU)["autoencoder"] > NOVEL_ABOVE).mean())
    assert before > 0.5, "the base bundle's autoencoder should find the unlike site flows novel"

    report = json.loads((adapted_run / "report.json").read_text())
    assert report["base_novelty_on_held_out"]["flag"] == "max_probability"
    assert report["base_novelty_on_held_out"]["signals"]["autoencoder"] == pytest.approx(before)
    assert {c["init"] for c in report["candidates"]} == {"base", "scratch"}
    assert report["site"]["init"] in {"base", "scratch"}


def test_adapt_publishes_to_a_registry_signed_only_with_sign(base, site_csv, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    key, public = tmp_path / "keys" / "bundle-signing.key", tmp_path / "keys" / "bundle-signing.pub"
    common = ["adapt", "--bundle", str(base), "--benign", str(site_csv), "--epochs", "2", "--init", "scratch"]
    assert main([*common, "--out", str(tmp_path / "a"), "--sign", str(key), "--quiet"]) == 2
    assert "--sign signs the version published to a registry" in capsys.readouterr().err
    registry = tmp_path / "registry"
    assert main([*common, "--out", str(tmp_path / "b"), "--registry", str(registry), "--sign", str(key)]) == 0
    trusted = load_trusted_keys([public])
    published = load_bundle(resolve_bundle_path(registry), trusted_keys=trusted)
    assert published.signed_by == trusted[0].key_id and published.novelty.calibration.site["init"] == "scratch"
    assert not (tmp_path / "b" / "bundle" / "manifest.sig").exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no decodable rows", "no row of the 1 trusted flow file(s) could be decoded"),
        ("too few rows", "10 trusted flow(s) decoded: too few to adapt"),
        ("missing bundle", "does not exist"),
        ("missing file", "does not exist"),
    ],
)
def test_bad_input_gives_one_precise_error(base, tmp_path, capsys, case, message):
    benign = [row for row in generated_rows(seed=6) if row["Label"] == "BENIGN"]
    flows = tmp_path / "generated_flows.csv"
    bundle = base
    if case == "no decodable rows":
        write_generated_csv(flows, [{k: v for k, v in row.items() if k != "Flow Duration"} for row in benign])
    elif case == "too few rows":
        write_generated_csv(flows, benign[:10])
    elif case == "missing bundle":
        write_generated_csv(flows, benign)
        bundle = tmp_path / "no-such-bundle"
    args = ["adapt", "--bundle", str(bundle), "--benign", str(flows), "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainer adapt: error:") and message in err, err
    assert "Traceback" not in err
    if case == "no decodable rows":
        assert "missing_features (120)" in err
    assert not (tmp_path / "run" / "bundle").exists()
