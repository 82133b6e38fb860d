"""The README's fidelity and forest-gap experiments (issue 20, items 1 and 7): many full runs on one split,
compared on the VALIDATION split, with the test numbers of what validation chose. Never part of ``make test``.

    .venv/bin/python tests/bench/quality_experiments.py prepare --data DATA_DIR --exp EXP
    .venv/bin/python tests/bench/quality_experiments.py train --exp EXP [--runs P0,L0,...] [--jobs 7] [--device cuda]
    .venv/bin/python tests/bench/quality_experiments.py report --exp EXP

``prepare`` runs the trainer's own data steps (load, split, Isolation Forest, scaling, SMOTE-Tomek:
``trainer.pipeline.prepare``) once per data variant and stores the arrays (``EXP/data-NAME.npz``), so that the
network runs see exactly the rows ``trainer fit`` would, wherever they run. ``train`` trains each named run
(``trainer.pipeline.train_model`` with the run's configuration) in ``--jobs`` processes and stores the
validation and test logits (``EXP/runs/NAME.npz``); ``RF-*`` runs fit the README's Random Forest instead.
``report`` prints the validation table, the choices it makes and the test numbers of those choices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

# name -> (profile, changes): the trainer configuration that fixes the prepared rows.
DATA: dict[str, tuple[str, dict[str, Any]]] = {
    "paper": ("paper", {}),
    "literal-val": ("paper-literal", {"split": {"validation_size": 0.1}, "finetune": {"select_best": False}}),
    "literal": ("paper-literal", {}),
    "tuned": ("tuned", {}),
    "quick": ("quick", {}),
}

_LITERAL_MODEL: dict[str, Any] = {
    "model": {"activation": "every_conv"},
    "pretrain": {"epochs": 50, "optimizer": "sam_sgd", "lr": 0.01},
    "finetune": {"focal": {"alpha": "inverse_frequency"}, "select_best": False},
}

# name -> (data variant, changes on top of its profile); in order of importance (run first).
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "RF-paper": ("paper", {}),  # seconds each: done before the networks take the cores
    "RF-tuned": ("tuned", {}),
    "P0": ("paper", {}),
    "L0": ("literal-val", {}),
    "L1": ("paper", _LITERAL_MODEL),
    "T0": ("tuned", {}),
    "T1": ("tuned", {"finetune": {"focal": {"alpha": "effective_number"}}}),
    "T2": ("tuned", {"finetune": {"label_smoothing": 0.1}}),
    "T4": ("tuned", {"model_seed": 1}),
    "T5": ("tuned", {"model_seed": 2}),
    "L70": ("literal", {}),
    "P1": ("paper", {"pretrain": _LITERAL_MODEL["pretrain"]}),
    "P2": ("paper", {"finetune": {"focal": {"alpha": "inverse_frequency"}}}),
    "P3": ("paper", {"model": {"activation": "every_conv"}}),
    "P4": ("paper", {"finetune": {"select_best": False}}),
    "T3": ("tuned", {"finetune": {"epochs": 100}}),
    # The quick profile, to screen the forest-gap candidates cheaply (8 epochs, at least 900 steps).
    "RF-quick": ("quick", {}),
    "Q0": ("quick", {}),
    "Q1": ("quick", {"finetune": {"focal": {"alpha": "effective_number"}}}),
    "Q2": ("quick", {"finetune": {"label_smoothing": 0.1}}),
    "Q3": ("quick", {"finetune": {"focal": {"alpha": "inverse_frequency"}}}),
    "Q4": ("quick", {"model_seed": 1}),
    "Q5": ("quick", {"model_seed": 2}),
    "Q6": ("quick", {"finetune": {"epochs": 16}}),
    "Q7": ("quick", {"model": {"activation": "every_conv"}}),
    "Q8": ("quick", {"pretrain": {"optimizer": "sam_sgd", "lr": 0.01}}),
}

DESCRIPTIONS = {
    "P0": "paper profile",
    "L0": "paper-literal (validation carved out to compare, last epoch)",
    "L1": "paper + the four model switches (SAM-SGD pre-training, focal alpha, ReLU everywhere, last epoch)",
    "P1": "paper + SAM-SGD pre-training, lr 0.01, 50 epochs",
    "P2": "paper + focal alpha inverse_frequency",
    "P3": "paper + ReLU after every convolution",
    "P4": "paper + last epoch instead of lowest validation loss",
    "L70": "paper-literal as shipped (70 %, no validation)",
    "T0": "tuned profile",
    "T1": "tuned + focal alpha effective_number (beta 0.999)",
    "T2": "tuned + label smoothing 0.1",
    "T3": "tuned, 100 epochs",
    "T4": "tuned, model seed 1",
    "T5": "tuned, model seed 2",
    "RF-paper": "Random Forest on the paper profile's rows",
    "RF-tuned": "Random Forest on the tuned profile's rows",
    "RF-quick": "Random Forest on the quick profile's rows",
    "Q0": "quick profile",
    "Q1": "quick + focal alpha effective_number (beta 0.999)",
    "Q2": "quick + label smoothing 0.1",
    "Q3": "quick + focal alpha inverse_frequency",
    "Q4": "quick, model seed 1",
    "Q5": "quick, model seed 2",
    "Q6": "quick, 16 epochs (twice the schedule)",
    "Q7": "quick + ReLU after every convolution",
    "Q8": "quick + SAM-SGD pre-training (lr 0.01)",
}


def _config(profile: str, changes: dict[str, Any]) -> Any:
    from trainer.config import load_config

    config = load_config(profile)
    return config.with_changes(changes) if changes else config


def prepare_all(data: list[str], exp: Path, names: list[str]) -> None:
    from trainer.commands import _load, _unused_by
    from trainer.pipeline import prepare
    from trainer.progress import Reporter

    exp.mkdir(parents=True, exist_ok=True)
    reporter = Reporter(enabled=False)
    table = None
    for name in names:
        profile, changes = DATA[name]
        config = _config(profile, changes)
        table = table or _load(data, None, reporter, _unused_by(config))
        started = time.perf_counter()
        prepared = prepare(table, config, reporter)
        np.savez_compressed(
            exp / f"data-{name}.npz",
            train_x=prepared.train_x,
            train_y=prepared.train_y,
            val_x=prepared.val_x,
            val_y=prepared.val_y,
            test_x=prepared.test_x,
            test_y=prepared.test_y,
            pretrain_x=prepared.pretrain_x,
            classes=np.asarray(prepared.classes),
        )
        (exp / f"data-{name}.json").write_text(json.dumps(prepared.steps, indent=1, default=str))
        print(f"prepared {name}: {len(prepared.train_y)} training rows in {time.perf_counter() - started:.0f}s")


def _prepared(exp: Path, name: str) -> Any:
    from detector.core.labels import BENIGN
    from detector.core.preprocess import Preprocessor
    from trainer.pipeline import PreparedData

    arrays = np.load(exp / f"data-{name}.npz")
    classes = tuple(str(c) for c in arrays["classes"])
    dummy = Preprocessor.fit(np.zeros((1, 1)), ["x"])
    return PreparedData(
        classes=classes,
        benign_class=BENIGN,
        preprocessor=dummy,
        train_x=arrays["train_x"],
        train_y=arrays["train_y"],
        val_x=arrays["val_x"],
        val_y=arrays["val_y"],
        test_x=arrays["test_x"],
        test_y=arrays["test_y"],
        test_rows=np.arange(len(arrays["test_y"])),
        pretrain_x=arrays["pretrain_x"],
        steps={},
    )


def train_one(exp: Path, run: str, device: str, threads: int, smoke: bool = False) -> str:
    import torch

    from detector.core.scorer import pick_device
    from trainer.calibrate import predict_logits
    from trainer.progress import Reporter

    torch.set_num_threads(threads)
    data_name, changes = RUNS[run]
    prepared = _prepared(exp, data_name)
    started = time.perf_counter()
    out = exp / "runs"
    out.mkdir(exist_ok=True)
    if run.startswith("RF-"):
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(n_estimators=100, random_state=42, n_jobs=threads)
        forest.fit(prepared.train_x, prepared.train_y)
        val_p = _full_proba(forest, prepared.val_x, len(prepared.classes))
        test_p = _full_proba(forest, prepared.test_x, len(prepared.classes))
        np.savez_compressed(out / f"{run}.npz", val_proba=val_p, test_proba=test_p)
        return f"{run}: {time.perf_counter() - started:.0f}s"

    from trainer.pipeline import train_model

    profile = DATA[data_name][0]
    config = _config(profile, {**_merge(DATA[data_name][1], changes), "device": device, "threads": threads})
    config = config.with_changes({"novelty": {"enabled": False}})
    if smoke:  # a check of the script itself, not a measurement
        config = config.with_changes({"finetune": {"epochs": 1, "min_steps": 0}, "pretrain": {"epochs": 1}})
    result = train_model(prepared, config, Reporter(enabled=False))
    target = pick_device(device)
    model = result.model.to(target).eval()
    val_logits = predict_logits(model, prepared.val_x, target) if len(prepared.val_y) else np.zeros((0, 0))
    test_logits = predict_logits(model, prepared.test_x, target)
    np.savez_compressed(out / f"{run}.npz", val_logits=val_logits, test_logits=test_logits)
    history = result.history.to_json()
    history["seconds"] = round(time.perf_counter() - started, 1)
    history["temperature"] = result.calibration.temperature if result.calibration else None
    history["steps"] = result.prepared.steps
    (out / f"{run}.json").write_text(json.dumps(history, default=str))
    return f"{run}: {history['seconds']:.0f}s, best epoch {history['best_epoch']}"


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and key in merged else value
    return merged


def _full_proba(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba over every class, also those the model never saw."""
    proba = np.zeros((len(x), n_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def train_all(
    exp: Path, runs: list[str], jobs: int, device: str, threads: int, pack: Path | None, smoke: bool = False
) -> None:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train_one, exp, run, device, threads, smoke): run for run in runs}
        for future in as_completed(futures):
            try:
                print(future.result(), flush=True)
            except Exception as exc:  # one failed run must not lose the others
                print(f"{futures[future]} FAILED: {exc!r}", flush=True)
            if pack is not None:
                _pack(exp, pack)


def _pack(exp: Path, pack: Path) -> None:
    partial = pack.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        tar.add(exp / "runs", arcname="runs")
    partial.replace(pack)


def _softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _metrics(y: np.ndarray, proba: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    from trainer.evaluate import classification_metrics

    names = np.asarray(classes, dtype=object)
    m = classification_metrics(list(names[y]), list(names[proba.argmax(1)]), classes, "BENIGN")
    nll = float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None)).mean())
    return {
        "accuracy": m["accuracy"],
        "f1_weighted": m["f1_weighted"],
        "f1_macro": m["f1_macro"],
        "false_alarms": m["binary"]["false_alarm_rate"],
        "nll": nll,
        "per_class_f1": {k: v["f1"] for k, v in m["per_class"].items()},
    }


def report(exp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    probas: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for run, (data_name, _) in RUNS.items():
        path = exp / "runs" / f"{run}.npz"
        if not path.exists():
            continue
        arrays = np.load(path)
        prepared = np.load(exp / f"data-{data_name}.npz")
        classes = tuple(str(c) for c in prepared["classes"])
        if "val_proba" in arrays:
            val_p, test_p = arrays["val_proba"], arrays["test_proba"]
        else:
            val_p = _softmax(arrays["val_logits"]) if arrays["val_logits"].size else None
            test_p = _softmax(arrays["test_logits"])
        probas[run] = (val_p, test_p)
        entry: dict[str, Any] = {"description": DESCRIPTIONS[run], "data": data_name}
        if val_p is not None:
            entry["validation"] = _metrics(prepared["val_y"], val_p, classes)
        entry["test"] = _metrics(prepared["test_y"], test_p, classes)
        meta = exp / "runs" / f"{run}.json"
        if meta.exists():
            history = json.loads(meta.read_text())
            entry.update(seconds=history["seconds"], best_epoch=history["best_epoch"])
        results[run] = entry
    results.update(_ensembles(exp, probas))
    (exp / "report.json").write_text(json.dumps(results, indent=1))
    _print_table(results)
    return results


def _ensembles(exp: Path, probas: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Averaged probabilities: three seeds of the tuned profile, and the tuned network with the forest."""
    found: dict[str, Any] = {}
    for name, data_name, members, description in (
        ("E-seeds", "tuned", ("T0", "T4", "T5"), "tuned, mean of model seeds 42, 1, 2"),
        ("E-forest", "tuned", ("T0", "RF-tuned"), "tuned network and Random Forest, mean probabilities"),
        ("EQ-seeds", "quick", ("Q0", "Q4", "Q5"), "quick, mean of model seeds 42, 1, 2"),
        ("EQ-forest", "quick", ("Q0", "RF-quick"), "quick network and Random Forest, mean probabilities"),
    ):
        if not all(m in probas for m in members):
            continue
        prepared = np.load(exp / f"data-{data_name}.npz")
        classes = tuple(str(c) for c in prepared["classes"])
        val_p = np.mean([probas[m][0] for m in members], axis=0)
        test_p = np.mean([probas[m][1] for m in members], axis=0)
        found[name] = {
            "description": description,
            "data": data_name,
            "validation": _metrics(prepared["val_y"], val_p, classes),
            "test": _metrics(prepared["test_y"], test_p, classes),
        }
    return found


def _print_table(results: dict[str, Any]) -> None:
    print(
        "| run | what | val accuracy | val weighted F1 | val macro F1 | val false alarms | val NLL |"
        " test accuracy | test weighted F1 | test macro F1 | test false alarms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run, entry in results.items():
        v = entry.get("validation") or {}
        t = entry["test"]

        def cell(block: dict[str, Any], key: str) -> str:
            return "—" if block.get(key) is None else f"{block[key]:.4f}"

        print(
            f"| {run} | {entry['description']} | {cell(v, 'accuracy')} | {cell(v, 'f1_weighted')} | "
            f"{cell(v, 'f1_macro')} | {cell(v, 'false_alarms')} | {cell(v, 'nll')} | {cell(t, 'accuracy')} | "
            f"{cell(t, 'f1_weighted')} | {cell(t, 'f1_macro')} | {cell(t, 'false_alarms')} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--data", nargs="+", required=True)
    p.add_argument("--exp", type=Path, required=True)
    p.add_argument("--variants", default=",".join(DATA))
    t = sub.add_parser("train")
    t.add_argument("--exp", type=Path, required=True)
    t.add_argument("--runs", default=",".join(RUNS))
    t.add_argument("--jobs", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", default="auto")
    t.add_argument("--pack", type=Path, help="keep a tar of the finished runs here, refreshed after each run")
    t.add_argument("--smoke", action="store_true", help="one epoch per run: checks the script, measures nothing")
    r = sub.add_parser("report")
    r.add_argument("--exp", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare_all(args.data, args.exp, args.variants.split(","))
    elif args.command == "train":
        train_all(args.exp, args.runs.split(","), args.jobs, args.device, args.threads, args.pack, args.smoke)
    else:
        report(args.exp)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
