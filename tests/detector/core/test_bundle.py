import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from detector.core.bundle import BundleError, archive_bundle, file_sha256, load_bundle
from detector.core.scorer import Scorer
from tests.support.bundles import decoded_generated_flows, fitted_classifier, fitted_preprocessor, make_bundle


@pytest.fixture
def bundle_dir(tmp_path):
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def novelty_bundle_dir(tmp_path):
    return make_bundle(tmp_path / "bundle", novelty=True)


def test_a_written_bundle_loads_and_scores_like_the_model_that_wrote_it(bundle_dir):
    bundle = load_bundle(bundle_dir)
    flows = decoded_generated_flows()
    served = Scorer(bundle, device="cpu", backend="eager").scores(flows).probabilities
    model = fitted_classifier()  # what make_bundle wrote
    inputs = torch.as_tensor(fitted_preprocessor().transform(np.stack([f.numeric for f in flows])))
    with torch.inference_mode():
        written = torch.softmax(model(inputs), dim=1).numpy()
    np.testing.assert_allclose(served, written, rtol=1e-5, atol=1e-6)
    assert bundle.classes == ("BENIGN", "DoS Hulk", "Portscan", "Web Attack - XSS")
    assert bundle.benign_class == "BENIGN"
    assert len(bundle.sha256) == 64


def test_a_tar_gz_of_the_bundle_is_accepted(bundle_dir, tmp_path):
    archive = archive_bundle(bundle_dir, tmp_path / "bundle.tar.gz")
    assert load_bundle(archive).sha256 == load_bundle(bundle_dir).sha256


@pytest.mark.parametrize("name", ["model.safetensors", "novelty.safetensors"])
def test_one_changed_byte_is_refused_naming_the_file(novelty_bundle_dir, name):
    assert load_bundle(novelty_bundle_dir).novelty is not None
    weights = novelty_bundle_dir / name
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"checksum mismatch for {re.escape(name)}"):
        load_bundle(novelty_bundle_dir)


def test_a_changed_preprocessing_file_is_refused(bundle_dir):
    path = bundle_dir / "preprocessing.json"
    path.write_text(path.read_text().replace('"log_scale": true', '"log_scale": false'))
    with pytest.raises(BundleError, match=r"checksum mismatch for preprocessing\.json"):
        load_bundle(bundle_dir)


def test_a_missing_file_is_refused_naming_the_file(bundle_dir):
    (bundle_dir / "model.json").unlink()
    with pytest.raises(BundleError, match=r"file model\.json is missing"):
        load_bundle(bundle_dir)


def test_a_missing_manifest_is_refused(bundle_dir):
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(bundle_dir)


def test_an_unknown_format_version_is_refused(bundle_dir):
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="unknown bundle format version 99"):
        load_bundle(bundle_dir)


def test_a_manifest_path_outside_the_bundle_is_refused(bundle_dir):
    path = bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["../evil"] = {"sha256": "0" * 64}
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        load_bundle(bundle_dir)


def test_a_nonexistent_path_and_a_non_archive_file_are_clear_errors(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(BundleError, match=r"not a \.tar\.gz"):
        load_bundle(junk)


def test_weights_are_safetensors_not_pickle(bundle_dir):
    header = (bundle_dir / "model.safetensors").read_bytes()[:8]
    header_length = int.from_bytes(header, "little")
    assert (bundle_dir / "model.safetensors").read_bytes()[8 : 8 + header_length].startswith(b"{")
    assert not [path.name for path in bundle_dir.iterdir() if path.suffix in {".pt", ".pth", ".pkl", ".pickle"}]


def test_loading_a_bundle_imports_no_training_dependency(novelty_bundle_dir):
    code = (
        "import sys; from detector.core.bundle import load_bundle; from detector.core.scorer import Scorer; "
        f"Scorer(load_bundle({str(novelty_bundle_dir)!r}), device='cpu'); "
        "bad = [m for m in ('sklearn', 'imblearn', 'pandas', 'matplotlib', 'trainer') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_novelty_files_come_in_pairs(novelty_bundle_dir):
    path = novelty_bundle_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["files"]["novelty.json"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"lists novelty\.safetensors without novelty\.json"):
        load_bundle(novelty_bundle_dir)


def test_a_novelty_calibration_without_a_positive_threshold_is_refused(novelty_bundle_dir):
    calibration = novelty_bundle_dir / "novelty.json"
    calibration.write_text(json.dumps({**json.loads(calibration.read_text()), "threshold": 0}))
    manifest_path = novelty_bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["novelty.json"]["sha256"] = file_sha256(calibration)  # a consistent, but wrong, bundle
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"novelty\.json.*threshold must be a positive number"):
        load_bundle(novelty_bundle_dir)


def test_a_truncated_archive_is_refused_not_a_crash(bundle_dir, tmp_path):
    archive = archive_bundle(bundle_dir, tmp_path / "bundle.tar.gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BundleError, match=re.escape("truncated.tar.gz")):
        load_bundle(truncated)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("classes", None, "'classes' must be a non-empty list of strings"),
        ("classes", [0, 1, 2, 3], "'classes' must be a non-empty list of strings"),
        ("classes", ["BENIGN", "BENIGN", "Portscan", "DoS Hulk"], "'classes' names some entries twice"),
        ("features", None, "'features' must be a non-empty list of strings"),
        ("model", "x", "'model' must be an object"),
        ("model", {"name": "rescae-bigru", "version": "../v1"}, "not a plain name"),
        ("benign_class", 1, "'benign_class' must be a string"),
        ("files", [], "'files' must map each file name"),
        ("metrics", None, "'metrics' must be an object"),
    ],
)
def test_a_hand_edited_manifest_of_the_wrong_shape_is_refused(bundle_dir, field, value, message):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest[field] = value
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(bundle_dir)


def rewrite_consistently(bundle_dir, name, change):
    """Change one JSON file of a bundle and re-sum it in the manifest: consistent checksums, wrong content."""
    path = bundle_dir / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"][name]["sha256"] = file_sha256(path)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {**m, "gru_hidden": "x"}, "gru_hidden must be a positive integer, got 'x'"),
        (lambda m: {**m, "filters": [16]}, "filters must be two positive integers"),
        (lambda m: {**m, "dropout": 2}, "dropout must be a number in [0, 1)"),
        (lambda m: {**m, "layers": 3}, "unknown field(s): layers"),
    ],
)
def test_a_model_json_of_the_wrong_shape_is_one_clear_error(bundle_dir, change, message):
    rewrite_consistently(bundle_dir, "model.json", change)
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["preprocessing.json", "model.json", "novelty.json"])
@pytest.mark.parametrize("content", [[], "text", 3])
def test_a_parameter_file_that_is_not_a_json_object_is_one_clear_error(novelty_bundle_dir, name, content):
    rewrite_consistently(novelty_bundle_dir, name, lambda _: content)
    with pytest.raises(BundleError, match=re.escape(f"bundle {novelty_bundle_dir}:")):
        load_bundle(novelty_bundle_dir)


def test_weights_that_do_not_fit_the_model_are_summed_up_on_one_line(bundle_dir):
    rewrite_consistently(bundle_dir, "model.json", lambda m: {**m, "gru_hidden": m["gru_hidden"] * 2})
    with pytest.raises(BundleError, match="does not fit the model") as refused:
        load_bundle(bundle_dir)
    assert "\n" not in str(refused.value) and "more)" in str(refused.value)


def test_a_bundle_without_calibration_serves_the_raw_softmax(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert "calibration.json" not in bundle.manifest["files"]
    assert bundle.calibration.temperature == 1.0  # the scores are the raw softmax: see the first test


def test_the_temperature_changes_the_confidence_and_never_the_label(tmp_path):
    raw = load_bundle(make_bundle(tmp_path / "raw"))
    calibrated = load_bundle(make_bundle(tmp_path / "calibrated", temperature=2.5))
    assert "calibration.json" in calibrated.manifest["files"] and calibrated.calibration.temperature == 2.5
    flows = decoded_generated_flows()
    before = Scorer(raw, device="cpu", backend="eager").score(flows)  # the fp32 model, as written
    after = Scorer(calibrated, device="cpu", backend="eager").score(flows)
    assert [v.label for v in after] == [v.label for v in before]
    assert all(a.confidence < b.confidence for a, b in zip(after, before, strict=True) if b.confidence > 0.5)
    inputs = torch.as_tensor(fitted_preprocessor().transform(np.stack([f.numeric for f in flows])))
    with torch.inference_mode():
        expected = torch.softmax(fitted_classifier()(inputs) / 2.5, dim=1).max(dim=1).values.numpy()
    np.testing.assert_allclose([v.confidence for v in after], expected, rtol=1e-5, atol=1e-6)


def test_the_calibration_file_is_pinned_by_the_manifest_and_checked_when_loaded(tmp_path):
    bundle_dir = make_bundle(tmp_path / "bundle", temperature=2.0)
    path = bundle_dir / "calibration.json"
    path.write_text(path.read_text().replace('"temperature": 2.0', '"temperature": 3.0'))
    with pytest.raises(BundleError, match=r"checksum mismatch for calibration\.json"):
        load_bundle(bundle_dir)
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": -1}))
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["calibration.json"]["sha256"] = file_sha256(path)  # a consistent, but wrong, bundle
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"calibration\.json: temperature must be a positive number"):
        load_bundle(bundle_dir)
