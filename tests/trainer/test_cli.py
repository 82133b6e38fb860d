"""``trainer`` as a user runs it: bad input ends with one clear line and exit status 2, never a traceback."""

import json
import subprocess
import sys

import pytest

from tests.support.generated import generated_rows, write_generated_csv


def run_trainer(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def good_csv(tmp_path):
    return write_generated_csv(tmp_path / "generated_flows.csv", generated_rows(seed=1))


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("Flow Duration,Total Fwd Packet,Label\n", "header"),
        ("Flow Duration,Total Fwd Packet\n1,2\n", "label"),
    ],
    ids=["empty-file", "header-only", "no-label-column"],
)
def test_unusable_training_files_are_one_clear_error(tmp_path, content, message):
    bad = write(tmp_path / "bad.csv", content)
    done = run_trainer("fit", "--data", str(bad), "--profile", "quick", "--out", str(tmp_path / "run"), "--quiet")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert message in done.stderr.lower()
    assert str(bad) in done.stderr


def test_bad_rows_are_counted_in_the_report_not_fatal(tmp_path, good_csv):
    lines = good_csv.read_text(encoding="cp1252").splitlines()
    header, rows = lines[0], lines[1:]
    broken = [*rows[:5], header, *rows[5:]]  # a repeated header line in the middle
    broken[10] = broken[10].replace(",6,", ",six,", 1)  # text in a numeric column
    broken[20] = broken[20].replace(",6,", ",Infinity,", 1)  # a meter's infinity: kept
    data = write(tmp_path / "flows.csv", "\n".join([header, *broken]) + "\n")
    done = run_trainer(
        "fit", "--data", str(data), "--profile", "quick", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    reasons = report["rows_dropped"]["reasons"]
    assert reasons.get("repeated header line") == 1
    assert any(reason.startswith("text in numeric feature") for reason in reasons)
    assert report["rows_dropped"]["total"] == 2
    assert report["data"]["nonfinite_rows"] == 1


def test_a_bad_config_file_is_one_clear_error(tmp_path, good_csv):
    config = write(tmp_path / "bad.toml", "[finetune]\nepochz = 3\n")
    done = run_trainer("fit", "--data", str(good_csv), "--config", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "epochz" in done.stderr and "Traceback" not in done.stderr


def test_evaluating_a_tampered_bundle_is_refused(tmp_path, good_csv):
    from tests.support.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "model.safetensors").write_bytes(b"\x00" * 64)
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(good_csv), "--out", str(tmp_path / "e"))
    assert done.returncode == 2
    assert "checksum mismatch for model.safetensors" in done.stderr
    assert "Traceback" not in done.stderr


def test_evaluate_reports_how_much_of_the_data_is_novel(tmp_path):
    from tests.support.bundles import make_bundle
    from tests.support.generated import unlike_training

    bundle = make_bundle(tmp_path / "bundle", novelty=True)
    like = write_generated_csv(tmp_path / "like.csv", generated_rows(seed=11))
    unlike = write_generated_csv(tmp_path / "unlike.csv", unlike_training(generated_rows(seed=12)))
    rates = {}
    for name, data in (("like", like), ("unlike", unlike)):
        done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        assert "novel flows" in done.stderr
        rates[name] = json.loads((tmp_path / name / "report.json").read_text())["novelty"]["novel_rate"]
    assert rates["like"] < 0.15 < 0.9 < rates["unlike"]
