"""What each ``trainer`` command does, from arguments to a finished run directory."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.core.bundle import load_bundle
from detector.core.features import family_of, missing_features_advice
from detector.core.labels import BENIGN
from detector.core.registry import check_registry_target, publish, resolve_bundle_path
from detector.core.scorer import pick_device, predict_proba
from detector.core.signing import generate_key_pair, key_id, load_private_key
from trainer.ablate import PAPER_TABLE6, Protocol, ablation_rows
from trainer.baselines import run_baselines
from trainer.calibrate import calibration_summary
from trainer.config import ConfigError, TrainConfig, load_config
from trainer.evaluate import classification_metrics, rate_text
from trainer.export import write_test_predictions, write_test_split
from trainer.importance import TOP, feature_importance
from trainer.load import DataError, FlowTable, UnusedFeatures, load_flows, read_label_map
from trainer.novelty import novelty_summary
from trainer.pipeline import FitResult, PreparedData, prepare, save_bundle, train_model
from trainer.plots import plot_curves, plot_feature_importance
from trainer.progress import Reporter
from trainer.report import data_summary, environment, print_summary, rows_dropped, write_report, write_report_json
from trainer.rundir import check_run_dir
from trainer.select import unused_features
from trainer.unseen import (
    BUDGET,
    MIN_HELD_OUT_ROWS,
    Scorers,
    eligible_classes,
    markdown,
    measure,
    populations,
    summarise,
)

HEADLINE = ("accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro")


def fit(
    data: Sequence[str],
    out: Path,
    config: TrainConfig,
    *,
    label_map: str | None = None,
    registry: str | Path | None = None,
    sign: str | Path | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the held-out split, write the run directory and the bundle; returns the report.

    With ``registry`` the bundle is also published there, signed with the private key in the PEM file ``sign``
    when given. The registry and the key are checked before anything is loaded, so a typo costs seconds, not
    a training run.
    """
    reporter = reporter or Reporter()
    started = time.perf_counter()
    if sign is not None and not registry:
        raise ConfigError("--sign signs the version published to a registry: give --registry too")
    key = load_private_key(sign) if sign is not None else None
    if registry:
        check_registry_target(registry)
    out = check_run_dir(out)
    with reporter.stage("load"):
        table = _load(data, label_map, reporter, _unused_by(config))
    prepared = prepare(table, config, reporter)
    result = train_model(prepared, config, reporter)
    report = _model_report(table, prepared, result.test_predictions, time.perf_counter() - started)
    report.update(
        profile=config.profile,
        device=result.device,
        training_seconds=round(result.seconds, 1),
        history=result.history.to_json(),
        steps=prepared.steps,
        config=config.model_dump(mode="json"),
        environment=environment(),
    )
    if result.novelty is not None and result.test_novelty is not None:
        truth = prepared.names(prepared.test_y)
        report["novelty"] = novelty_summary(truth, result.test_novelty, result.novelty.calibration)
    if result.calibration is not None and result.test_logits is not None:
        out.mkdir(parents=True, exist_ok=True)
        report["calibration"] = calibration_summary(
            result.calibration, result.test_logits, prepared.test_y, config.calibration.bins, out / "reliability.png"
        )
    with reporter.stage("feature importance"):
        out.mkdir(parents=True, exist_ok=True)
        report["feature_importance"] = _importance(result, config)
        plot_feature_importance(report["feature_importance"], out / "feature_importance.png", TOP)
    with reporter.stage("bundle, test split"):
        bundle_dir = save_bundle(
            result,
            out / "bundle",
            training_data=data_summary(table),
            metrics={key: report[key] for key in (*HEADLINE, "n_train", "n_test")},
        )
        bundle = load_bundle(bundle_dir)
        report["bundle"] = {"path": str(bundle_dir), "version": bundle.version, "sha256": bundle.sha256}
        _export_test_split(table, result, out)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["stage_seconds"] = dict(reporter.stage_seconds)
    write_report(out, report, f"ResCAE-BiGRU ({config.profile})")
    plot_curves(result.history, out / "curves.png")
    print_summary(report, out, f"ResCAE-BiGRU · {config.profile} profile · test split")
    if registry:  # last: the run directory is complete even if publishing fails
        published = publish(bundle_dir, registry, sign_with=key)
        report["bundle"].update(registry=str(registry), published_version=published)
        signed = ""
        if key is not None:
            report["bundle"]["signed_by"] = key_id(key.public_key())
            signed = f", signed by key {report['bundle']['signed_by']}"
        write_report_json(out, report)
        reporter.result(f"published version {published} to registry {registry}{signed}")
    return report


def _importance(result: FitResult, config: TrainConfig) -> dict[str, Any]:
    prepared = result.prepared
    temperature = result.calibration.temperature if result.calibration is not None else 1.0
    device = next(result.model.parameters()).device
    return feature_importance(
        result.model,
        prepared.preprocessor,
        prepared.test_x,
        result.test_predictions,
        device,
        temperature=temperature,
        seed=config.seed,
    )


def evaluate(
    bundle_path: str,
    data: Sequence[str],
    out: Path,
    *,
    label_map: str | None = None,
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Score a bundle on any labeled data (another dialect, a later day) and write a report."""
    reporter = reporter or Reporter()
    started = time.perf_counter()
    out = check_run_dir(out)
    bundle = load_bundle(resolve_bundle_path(bundle_path))
    table = _load(data, label_map, reporter, _not_needed_by(bundle.preprocessor.input_features))
    pre = bundle.preprocessor
    available = set(table.numeric.columns) | set(table.categorical.columns)
    missing = [name for name in pre.input_features if name not in available]
    if missing:
        raise DataError(
            f"the data lacks {len(missing)} feature(s) the bundle needs: {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
            + "; "
            + missing_features_advice(missing, family_of(pre.input_features), table.family)
        )
    matrix = pre.transform(
        table.numeric[list(pre.numeric)].to_numpy(dtype=np.float64),
        {name: table.categorical[name].astype(str).tolist() for name in pre.categories},
    )
    target = pick_device(device)
    raw_probabilities = predict_proba(bundle.model.to(target), matrix, target)
    probabilities = bundle.calibration.apply(raw_probabilities)
    predicted = np.asarray(bundle.classes, dtype=object)[probabilities.argmax(1)]
    metrics = classification_metrics(table.labels.tolist(), predicted.tolist(), bundle.classes, bundle.benign_class)
    report = {
        **metrics,
        "n_train": bundle.manifest.get("metrics", {}).get("n_train"),
        "n_test": len(table.labels),
        "rows_dropped": rows_dropped(table),
        "seconds": round(time.perf_counter() - started, 1),
        "labels_unknown_to_model": _warn_unknown_labels(table, bundle.classes, reporter),
        "bundle": {"path": str(bundle.path), "version": bundle.version, "sha256": bundle.sha256},
        "data": data_summary(table),
        "environment": environment(),
    }
    if bundle.novelty is not None:
        scores = bundle.novelty.to(target).scores(matrix, raw_probabilities, target)
        report["novelty"] = novelty_summary(table.labels.tolist(), scores, bundle.novelty.calibration)
    write_report(out, report, f"Evaluation of bundle {bundle.version}", rows=f"{len(table.labels)} evaluated rows")
    print_summary(report, out, f"bundle {bundle.version} · evaluation")
    return report


def _warn_unknown_labels(table: FlowTable, classes: Sequence[str], reporter: Reporter) -> list[str]:
    """Labels of the data that no class of the bundle has (every prediction of such a row is wrong): a
    typo in a label map, or an attack the bundle never saw. Warned about, and returned for the report."""
    unknown = sorted(set(table.labels) - set(classes))
    if unknown:
        rows = int(table.labels.isin(unknown).sum())
        reporter.warn(
            f"{rows} row(s) carry labels the bundle does not know, counted as misclassified: {', '.join(unknown)}"
        )
    return unknown


def baselines(
    data: Sequence[str],
    out: Path,
    config: TrainConfig,
    *,
    label_map: str | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Decision Tree and Random Forest on the same split and features as ``fit``, trained twice.

    ``pipeline`` rows train on exactly the rows the deep model trains on (after Isolation-Forest cleaning
    and SMOTE-Tomek); ``plain`` rows train on the scaled training split without either, which is how such
    baselines are usually reported. The test split is the same for all.
    """
    reporter = reporter or Reporter()
    started = time.perf_counter()
    out = check_run_dir(out)
    table = _load(data, label_map, reporter, _unused_by(config))
    plain = config.with_changes({"outliers": {"enabled": False}, "resample": {"enabled": False}})
    summary: dict[str, Any] = {}
    for variant, variant_config in (("pipeline", config), ("plain", plain)):
        prepare_started = time.perf_counter()
        prepared = prepare(table, variant_config, reporter)
        prepare_seconds = time.perf_counter() - prepare_started
        for result in run_baselines(prepared.train_x, prepared.train_y, prepared.test_x, config.seed):
            name = f"{result.name}_{variant}"
            report = _model_report(table, prepared, result.predictions, prepare_seconds + result.seconds)
            report["fit_seconds"] = round(result.seconds, 2)
            write_report(out / name, report, f"{result.name.replace('_', ' ')} baseline ({variant} training rows)")
            print_summary(report, out / name, f"{name} · test split")
            summary[name] = {key: report[key] for key in (*HEADLINE, "per_class")}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_report_json(out, summary)
    (out / "report.md").write_text(_comparison_markdown(summary, "Baselines on the fit split"), encoding="utf-8")
    return summary


def ablate(
    data: Sequence[str],
    out: Path,
    config: TrainConfig,
    *,
    label_map: str | None = None,
    protocol: Protocol = "stacked",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """The paper's Table 6 rows under one reading of it (``stacked`` or ``single``, see
    :mod:`trainer.ablate`), each a full run on the same split."""
    reporter = reporter or Reporter()
    out = check_run_dir(out)
    table = _load(data, label_map, reporter, _unused_by(config))
    rows: dict[str, Any] = {}
    for name, row_config in ablation_rows(config, protocol):
        reporter.note(f"[bold]ablation row {name}[/bold]")
        started = time.perf_counter()
        prepared = prepare(table, row_config, reporter)
        result: FitResult = train_model(prepared, row_config, reporter)
        report = _model_report(table, prepared, result.test_predictions, time.perf_counter() - started)
        report["steps"] = prepared.steps
        write_report(out / _slug(name), report, f"ablation {name}")
        plot_curves(result.history, out / _slug(name) / "curves.png")
        rows[name] = {key: report[key] for key in (*HEADLINE, "binary", "per_class", "seconds")}
        rows[name].update(protocol=protocol, paper_accuracy_f1_percent=PAPER_TABLE6[name])
    write_report_json(out, rows)
    (out / "report.md").write_text(_ablation_markdown(rows, protocol), encoding="utf-8")
    reporter.note(_ablation_markdown(rows, protocol))
    return rows


def novelty(
    data: Sequence[str],
    out: Path,
    config: TrainConfig,
    *,
    label_map: str | None = None,
    hold_out: Sequence[str] = (),
    min_rows: int = MIN_HELD_OUT_ROWS,
    budget: float = BUDGET,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train once per attack class left out and measure how much of it each novelty signal still catches
    (:mod:`trainer.unseen`). report.json and report.md are rewritten after every class, so an interrupted
    run keeps what it measured (``complete`` says whether every class was done)."""
    reporter = reporter or Reporter()
    started = time.perf_counter()
    out = check_run_dir(out)
    table = _load(data, label_map, reporter, _unused_by(config))
    counts = {str(k): int(v) for k, v in table.labels.value_counts().items()}
    eligible = eligible_classes(counts, BENIGN, min_rows)
    classes = list(hold_out) or eligible
    unknown = sorted(set(classes) - set(counts) - {BENIGN})
    if unknown or BENIGN in classes:
        raise DataError(f"cannot hold out {', '.join(unknown or [BENIGN])}: not an attack class of the data")
    report: dict[str, Any] = {
        "profile": config.profile,
        "false_alarm_budget": budget,
        "min_rows": min_rows,
        "class_rows": counts,
        "classes_held_out": classes,
        "held_out": {},
        "complete": False,
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in classes:
        reporter.note(f"[bold]held out: {name}[/bold]")
        class_started = time.perf_counter()
        prepared = prepare(table, config, reporter, held_out=name)
        result = train_model(prepared, config, reporter)
        with reporter.stage("novelty signals"):
            run = measure(populations(Scorers.of(result, config)), budget, prepared.classes)
        run["split"] = prepared.steps["split"]["held_out"]
        run["seconds"] = round(time.perf_counter() - class_started, 1)
        report["held_out"][name] = run
        report["summary"] = summarise(report["held_out"])
        report["seconds"] = round(time.perf_counter() - started, 1)
        _write_novelty(out, report)
    report["complete"] = True
    report["environment"] = environment()
    _write_novelty(out, report)
    reporter.note(markdown(report))
    return report


def _write_novelty(out: Path, report: dict[str, Any]) -> None:
    write_report_json(out, report)
    (out / "report.md").write_text(markdown(report), encoding="utf-8")


def publish_bundle(
    bundle: str | Path, registry: str | Path, reporter: Reporter | None = None, *, sign: str | Path | None = None
) -> str:
    """Publish ``bundle`` to ``registry``, signed with the private key in the PEM file ``sign`` when given."""
    key = load_private_key(sign) if sign is not None else None
    version = publish(bundle, registry, sign_with=key)
    signed = f", signed by key {key_id(key.public_key())}" if key is not None else ""
    (reporter or Reporter()).result(
        f"published {bundle} as version {version}{signed}; {registry}/LATEST now points to it"
    )
    return version


def keygen(out: str | Path, reporter: Reporter | None = None) -> tuple[Path, Path]:
    """A new ed25519 key pair for ``trainer publish --sign`` (private) and ``detector run --trusted-key`` (public)."""
    private, public = generate_key_pair(out)
    (reporter or Reporter()).result(
        f"wrote {private} (private: keep it secret; trainer publish --sign {private}) and {public} "
        f"(key id {key_id(load_private_key(private).public_key())}; detector run --trusted-key {public})"
    )
    return private, public


def _export_test_split(table: FlowTable, result: FitResult, out: Path) -> None:
    prepared = result.prepared
    write_test_split(table, prepared.test_rows, out)
    write_test_predictions(
        prepared.names(prepared.test_y),
        prepared.names(result.test_predictions),
        result.test_probabilities.max(axis=1),
        out,
        novelty=result.test_novelty,
    )


def _unused_by(config: TrainConfig) -> UnusedFeatures:
    return lambda names, family: unused_features(names, family, config.features)


def _not_needed_by(needed: Sequence[str]) -> UnusedFeatures:
    """Features a bundle does not use; none when it uses none of them (the missing-features error then
    says what kind of bundle the data needs)."""
    wanted = set(needed)

    def not_needed(names: Sequence[str], family: str) -> dict[str, str]:
        if not wanted & set(names):
            return {}
        return {name: "not used by the bundle" for name in names if name not in wanted}

    return not_needed


def _load(
    data: Sequence[str], label_map: str | None, reporter: Reporter, unused: UnusedFeatures | None = None
) -> FlowTable:
    """The data, without parsing the features ``unused`` names (text in those drops no row)."""
    mapping = read_label_map(label_map) if label_map else None
    left_out: dict[str, str] = {}

    def recorded(names: Sequence[str], family: str) -> Mapping[str, str]:
        left_out.update(unused(names, family) if unused else {})
        return left_out

    with reporter.task("load flows", 1) as advance:
        table = load_flows(data, label_map=mapping, unused=recorded)
        advance(1)
    dropped = sum(table.dropped.values())
    reporter.note(
        f"loaded {len(table.labels)} rows from {len(table.files)} file(s): {table.labels.nunique()} classes, "
        f"{len(table.numeric.columns)} numeric + {len(table.categorical.columns)} categorical features; "
        f"{dropped} rows dropped"
        + (f" ({', '.join(f'{k}: {v}' for k, v in table.dropped.items())})" if dropped else "")
    )
    absent = sorted(set(table.excluded_features) - set(left_out))
    if absent:
        reporter.warn(f"{len(absent)} feature(s) left out because not every file has them: " + ", ".join(absent))
    for file in table.files:
        for column, rows in file.conflicting_duplicates.items():
            reporter.warn(
                f"{file.path.name}: duplicate column {column} differs from the first one on {rows} row(s); "
                "the first was used"
            )
    _warn_about_case_twins(table.labels.unique(), reporter)
    unused = sorted(set(mapping or {}) - set(table.relabelled()))
    if unused:
        reporter.warn(f"label map entries that match no label in the data: {', '.join(unused)}")
    return table


def _warn_about_case_twins(labels: Sequence[str], reporter: Reporter) -> None:
    """Labels that differ only in letter case (``DDoS``, ``ddos``) stay separate classes, as every distinct
    name does; this is rarely what was meant, so say so and how to merge them."""
    by_folded: dict[str, list[str]] = {}
    for label in labels:
        by_folded.setdefault(label.casefold(), []).append(label)
    for twins in by_folded.values():
        if len(twins) > 1:
            reporter.warn(
                f"labels that differ only in letter case stay separate classes: {', '.join(sorted(twins))} "
                "(merge them with --label-map if they are one class)"
            )


def _model_report(table: FlowTable, prepared: PreparedData, predictions: np.ndarray, seconds: float) -> dict:
    """The metrics of ``predictions`` on the test split, with the rows used and ``seconds`` the model took."""
    truth, predicted = prepared.names(prepared.test_y), prepared.names(predictions)
    metrics = classification_metrics(truth, predicted, prepared.classes, prepared.benign_class)
    split = prepared.steps.get("split", {})
    return {
        **metrics,
        "n_train": split.get("train_rows"),
        "n_validation": split.get("validation_rows"),
        "n_fit": len(prepared.train_y),
        "n_test": len(prepared.test_y),
        "rows_dropped": rows_dropped(table),
        "seconds": round(seconds, 1),
        "data": data_summary(table),
    }


def _comparison_markdown(summary: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| model | accuracy | weighted F1 | macro F1 |", "|---|---:|---:|---:|"]
    for name, row in summary.items():
        if isinstance(row, dict):
            lines.append(f"| {name} | {row['accuracy']:.4f} | {row['f1_weighted']:.4f} | {row['f1_macro']:.4f} |")
    return "\n".join(lines) + "\n"


def _ablation_markdown(rows: dict[str, Any], protocol: Protocol) -> str:
    reading = (
        "each row adds its component to the row above"
        if protocol == "stacked"
        else "each row adds its component to the base alone"
    )
    lines = [
        f"# Ablation (paper Table 6), {protocol} protocol: {reading}",
        "",
        "| row | accuracy | weighted F1 | macro F1 | false alarms | paper accuracy | paper F1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        paper = row["paper_accuracy_f1_percent"]
        paper_cells = "— | —" if paper is None else f"{paper[0] / 100:.4f} | {paper[1] / 100:.4f}"
        lines.append(
            f"| {name} | {row['accuracy']:.4f} | {row['f1_weighted']:.4f} | {row['f1_macro']:.4f} "
            f"| {rate_text(row['binary']['false_alarm_rate'])} | {paper_cells} |"
        )
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return name.replace("+", "plus-").lower()


def load_training_config(profile: str, path: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """The profile, the config file on top, then command-line overrides on top of both."""
    config = load_config(profile, path)
    return config.with_changes(overrides) if overrides else config
