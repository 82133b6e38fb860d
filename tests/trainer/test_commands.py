"""``trainer baselines``, ``trainer ablate`` and ``trainer publish`` as a user runs them (through ``main``).

The runs use the quick profile, one fine-tuning epoch and a tiny network (a config file on top of the
profile), on generated flows: they check what the commands write, not how accurate a model gets. One
``trainer fit`` run is the reference the baselines are compared with and the bundle that gets published.
"""

import json

import pytest

from detector.core.registry import LATEST
from tests.support.generated import generated_rows, write_generated_csv
from trainer.cli import main

HEADLINE = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro")
TINY_NETWORK = """
[model]
filters = [4, 8]
gru_hidden = 8
gru_layers = 1

[pretrain]
epochs = 1

[novelty]
min_epochs = 1
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    data = write_generated_csv(root / "generated_flows.csv", generated_rows(seed=4))
    (root / "tiny.toml").write_text(TINY_NETWORK, encoding="utf-8")
    return root, data


def trainer(command, workspace, out, *extra):
    root, data = workspace
    args = [command, "--data", str(data), "--profile", "quick", "--config", str(root / "tiny.toml")]
    return main([*args, "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def fit_run(workspace):
    root, _ = workspace
    assert trainer("fit", workspace, root / "fit", "--epochs", "1", "--device", "cpu") == 0
    return root / "fit"


def read_report(directory):
    return json.loads((directory / "report.json").read_text(encoding="utf-8"))


def supports(per_class):
    return {label: row["support"] for label, row in per_class.items()}


def assert_metrics_are_rates(row):
    for key in HEADLINE:
        assert 0 <= row[key] <= 1, (key, row[key])


def test_baselines_report_both_models_on_the_split_fit_evaluates_on(workspace, fit_run):
    root, _ = workspace
    assert trainer("baselines", workspace, root / "baselines") == 0
    fit, summary = read_report(fit_run), read_report(root / "baselines")

    models = {f"{model}_{rows}" for model in ("decision_tree", "random_forest") for rows in ("pipeline", "plain")}
    assert set(summary) == {*models, "seconds"}
    comparison = (root / "baselines" / "report.md").read_text(encoding="utf-8")
    for name in models:
        assert_metrics_are_rates(summary[name])
        assert supports(summary[name]["per_class"]) == supports(fit["per_class"]), name
        assert f"| {name} |" in comparison
        report = read_report(root / "baselines" / name)
        assert report["n_test"] == fit["n_test"] and report["n_train"] == fit["n_train"]
    # pipeline rows: exactly the rows the deep model fits on (cleaned, resampled); plain rows: neither step
    assert read_report(root / "baselines" / "random_forest_pipeline")["n_fit"] == fit["n_fit"]
    assert read_report(root / "baselines" / "random_forest_plain")["n_fit"] == fit["n_train"] - fit["n_validation"]


def test_ablate_writes_the_papers_five_rows_each_adding_one_component_on_the_same_split(workspace):
    root, _ = workspace
    assert trainer("ablate", workspace, root / "ablate", "--epochs", "1", "--device", "cpu") == 0
    rows = read_report(root / "ablate")

    assert list(rows) == ["base", "+SAM", "+iForest", "+SMOTE", "full"]
    assert {name: row["paper_accuracy_f1_percent"] for name, row in rows.items()} == {
        "base": [97.42, 97.29],
        "+SAM": [98.39, 98.35],
        "+iForest": [98.55, 98.30],
        "+SMOTE": [99.03, 98.94],
        "full": [99.33, 99.41],
    }
    test_split = supports(rows["base"]["per_class"])
    for row in rows.values():
        assert_metrics_are_rates(row)
        assert supports(row["per_class"]) == test_split

    steps = {}
    for name, directory in zip(rows, ("base", "plus-sam", "plus-iforest", "plus-smote", "full"), strict=True):
        for file in ("report.json", "report.md", "curves.png"):
            assert (root / "ablate" / directory / file).is_file(), (directory, file)
        steps[name] = read_report(root / "ablate" / directory)["steps"]
    cleaned = [name for name in rows if "outliers" in steps[name]]
    resampled = [name for name in rows if "resample" in steps[name]]
    assert cleaned == ["+iForest", "+SMOTE", "full"] and resampled == ["+SMOTE", "full"]

    table = (root / "ablate" / "report.md").read_text(encoding="utf-8")
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == list(rows)


def test_ablate_single_adds_each_component_to_the_base_alone(workspace):
    root, _ = workspace
    out = root / "ablate-single"
    assert trainer("ablate", workspace, out, "--epochs", "1", "--device", "cpu", "--protocol", "single") == 0
    rows = read_report(out)
    assert list(rows) == ["base", "+SAM", "+iForest", "+SMOTE", "+Focal", "full"]
    assert {row["protocol"] for row in rows.values()} == {"single"}
    assert rows["+Focal"]["paper_accuracy_f1_percent"] is None
    steps = {
        name: read_report(out / directory)["steps"]
        for name, directory in zip(
            rows, ("base", "plus-sam", "plus-iforest", "plus-smote", "plus-focal", "full"), strict=True
        )
    }
    assert [name for name in rows if "outliers" in steps[name]] == ["+iForest", "full"]
    assert [name for name in rows if "resample" in steps[name]] == ["+SMOTE", "full"]
    table = (out / "report.md").read_text(encoding="utf-8")
    assert "single protocol" in table and "| +Focal |" in table and "| — | — |" in table


def test_publish_moves_latest_and_refuses_to_publish_a_version_twice(workspace, fit_run, tmp_path, capsys):
    assert trainer("fit", workspace, tmp_path / "refit", "--epochs", "1", "--device", "cpu", "--seed", "7") == 0
    first, second = fit_run / "bundle", tmp_path / "refit" / "bundle"
    versions = [read_report(run)["bundle"]["version"] for run in (fit_run, tmp_path / "refit")]
    assert versions[0] != versions[1]
    registry = tmp_path / "registry"

    def latest():
        return (registry / LATEST).read_text(encoding="utf-8").strip()

    assert main(["publish", "--bundle", str(first), "--registry", str(registry)]) == 0
    assert latest() == versions[0]
    assert main(["publish", "--bundle", str(second), "--registry", str(registry)]) == 0
    assert latest() == versions[1]
    assert sorted(p.name for p in (registry / "versions").iterdir()) == sorted(versions)
    capsys.readouterr()

    assert main(["publish", "--bundle", str(first), "--registry", str(registry)]) == 2
    error = capsys.readouterr().err
    assert "trainer publish: error:" in error and f"version {versions[0]} already exists" in error
    assert "Traceback" not in error
    assert latest() == versions[1]
