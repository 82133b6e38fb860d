"""``trainer`` as a user runs it: bad input ends with one clear line and exit status 2, never a traceback."""

import json
import subprocess
import sys

import pytest

from detector.core.settings import SettingsError
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


def test_a_run_directory_is_checked_before_the_data_is_loaded(tmp_path, good_csv):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "report.json").write_text('{"earlier": true}')
    done = run_trainer("fit", "--data", str(good_csv), "--profile", "quick", "--out", str(taken))
    assert done.returncode == 2, done.stderr
    assert "already holds a run (report.json)" in done.stderr
    assert "loaded" not in done.stderr  # refused before any work
    assert json.loads((taken / "report.json").read_text()) == {"earlier": True}


def test_evaluate_never_overwrites_a_fit_run(tmp_path, good_csv):
    from tests.support.bundles import make_bundle

    run = tmp_path / "run"
    bundle = make_bundle(run / "bundle")
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(good_csv), "--out", str(run))
    assert done.returncode == 2 and "already holds a run (bundle)" in done.stderr
    assert not (run / "report.json").exists()


def test_a_registry_that_is_a_bundle_is_refused_before_training(tmp_path, good_csv):
    from tests.support.bundles import make_bundle

    served = make_bundle(tmp_path / "served")
    files = sorted(p.name for p in served.iterdir())
    out = tmp_path / "run"
    done = run_trainer(
        "fit", "--data", str(good_csv), "--profile", "quick", "--out", str(out), "--registry", str(served)
    )
    assert done.returncode == 2 and "is a bundle directory" in done.stderr
    assert "loaded" not in done.stderr
    assert sorted(p.name for p in served.iterdir()) == files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs: Input should be greater than or equal to 1 (from --epochs)"),
        (["--seed", "-1"], "seed"),
        (["--config", "alpha.toml"], "finetune.focal.alpha has 2 weights but the data has 4 classes"),
    ],
    ids=["zero-epochs", "negative-seed", "alpha-per-class"],
)
def test_settings_that_cannot_train_are_one_clear_error(tmp_path, good_csv, args, message):
    write(tmp_path / "alpha.toml", "[finetune.focal]\nalpha = [0.25, 0.75]\n")
    args = [str(tmp_path / a) if a.endswith(".toml") else a for a in args]
    done = run_trainer("fit", "--data", str(good_csv), "--profile", "quick", "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "epoch " not in done.stderr  # no training started


def test_evaluate_says_what_it_cannot_compute_and_which_label_map_entries_did_nothing(tmp_path):
    from tests.support.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    benign = [row for row in generated_rows(seed=3) if row["Label"] == "BENIGN"]
    data = write_generated_csv(tmp_path / "generated_benign.csv", benign)
    labels = write(tmp_path / "labels.toml", '[labels]\n"benign traffic" = "BENIGN"\n')
    done = run_trainer(
        "evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "e"),
        "--label-map", str(labels), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "detection rate n/a" in done.stderr
    assert "label map entries that match no label in the data: benign traffic" in done.stderr
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["binary"]["detection_rate"] is None


def test_evaluate_warns_about_rows_of_classes_the_bundle_never_learned(tmp_path):
    from tests.support.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    rows = generated_rows(seed=3)[:20]
    rows[0] = {**rows[0], "Label": "Brand New Attack"}
    data = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    assert "1 row(s) carry labels the bundle does not know, counted as misclassified: Brand New Attack" in done.stderr
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["labels_unknown_to_model"] == ["Brand New Attack"]


def test_labels_that_differ_only_in_letter_case_are_a_warning_not_a_merge(tmp_path):
    from tests.support.bundles import make_bundle

    rows = generated_rows(seed=3)[:20]
    rows[0], rows[1] = {**rows[0], "Label": "DoS Hulk"}, {**rows[1], "Label": "dos hulk"}
    data = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    out, bundle = tmp_path / "e", make_bundle(tmp_path / "bundle")
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "labels that differ only in letter case stay separate classes: DoS Hulk, dos hulk" in done.stderr
    assert "dos hulk" in json.loads((out / "report.json").read_text())["labels_unknown_to_model"]


def test_evaluate_on_data_without_a_feature_every_cic_meter_writes_says_to_train_without_it(tmp_path):
    from tests.support.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    rows = [{k: v for k, v in row.items() if k != "Flow Duration"} for row in generated_rows(seed=3)[:20]]
    data = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "e"))
    assert done.returncode == 2
    assert 'lacks them: train a bundle without them (`[features] exclude = ["Flow Duration"]`)' in done.stderr


def test_text_in_an_excluded_feature_drops_no_training_row(tmp_path):
    rows = [{**row, "Flow Bytes/s": "n/a"} for row in generated_rows(seed=1)]  # a meter that writes no rate
    data = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    config = write(tmp_path / "exclude.toml", '[features]\nexclude = ["Flow Bytes/s"]\n')
    done = run_trainer(
        "fit", "--data", str(data), "--profile", "quick", "--config", str(config), "--epochs", "1",
        "--out", str(tmp_path / "run"), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["rows_dropped"]["total"] == 0
    assert report["data"]["excluded_features"] == {"Flow Bytes/s": "excluded by features.exclude"}
    assert "left out because not every file has them" not in done.stderr


def test_text_in_a_feature_the_bundle_does_not_use_drops_no_evaluated_row(tmp_path):
    from tests.support.bundles import make_bundle

    bundle = make_bundle(tmp_path / "bundle")
    rows = [{**row, "Bwd RST Flags": "n/a"} for row in generated_rows(seed=3)[:20]]
    data = write_generated_csv(tmp_path / "generated_flows.csv", rows)
    done = run_trainer("evaluate", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / "e"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["rows_dropped"]["total"] == 0 and report["n_test"] == 20
    assert "left out because not every file has them" not in done.stderr


def test_every_option_but_config_can_come_from_the_environment(monkeypatch):
    from trainer.cli import build_parser

    parser = build_parser()
    monkeypatch.setenv("FLOWWARDEN_DATA", "a.csv 'folder with space'")
    monkeypatch.setenv("FLOWWARDEN_OUT", "runs/env")
    monkeypatch.setenv("FLOWWARDEN_PROFILE", "quick")
    monkeypatch.setenv("FLOWWARDEN_EPOCHS", "3")
    monkeypatch.setenv("FLOWWARDEN_QUIET", "true")
    monkeypatch.setenv("FLOWWARDEN_CONFIG", "detector-settings.toml")  # the detector's, never the trainer's
    args = parser.parse_args(["fit", "--profile", "paper"])
    settings = args._command.settings(args)
    assert [str(path) for path in settings.data] == ["a.csv", "folder with space"] and str(settings.out) == "runs/env"
    assert settings.profile == "paper", "a flag wins over the environment"
    assert (settings.epochs, settings.quiet, settings.config) == (3, True, None)
    monkeypatch.setenv("FLOWWARDEN_PROFILE", "fast")
    args = parser.parse_args(["fit"])
    with pytest.raises(SettingsError, match=r"profile: .* \(from FLOWWARDEN_PROFILE\)"):
        args._command.settings(args)
