"""Site adaptation (``trainer adapt``): the bundle's anomaly model fitted to the user's own meter and network.

A bundle trained on one flow meter's data is blind on another meter's flows: its classifier labels a real
SYN scan benign, and its autoencoder finds ordinary browsing "novel" (README, "Novelty"). A user has no
labelled flows of their own meter, but they can point at a period they trust. From those flows this module

1. decodes every row exactly as ``detector score`` does (the bundle's decoder and preprocessing,
   :mod:`detector.core.flowfiles`); rows that cannot be decoded are counted per reason, never dropped silently;
2. splits off a seeded held-out share of the decoded rows;
3. trains the autoencoder (the bundle's ResCAE architecture) on the rest, twice when the bundle has one:
   fine-tuned from the bundle's novelty autoencoder, and trained from a fresh initialisation; the one with
   the lower median reconstruction error on the held-out rows is kept (the held-out rows are the only
   site data it was not trained on; no attack row is ever looked at);
4. sets the novelty threshold at the ``1 - budget`` quantile of the held-out errors (``method="higher"``: an
   error that is observed, so with fewer than ``1 / budget`` held-out rows it is their largest error, and the
   budget the held-out rows can resolve, ``1 / rows``, is reported);
5. writes a new bundle whose classifier, preprocessing, temperature and drift histograms are the base
   bundle's, unchanged, and whose ``novelty.safetensors``/``novelty.json`` are the site-fitted ones;
   ``novelty.json`` names the deciding signal (``"flag": "autoencoder"``) and carries a ``site`` object.

What it cannot do: flows of an attack inside the trusted period are learnt as normal; the classifier is not
adapted (its labels on another meter's flows stay what they were).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from detector.core.bundle import Bundle, file_sha256, load_bundle, write_bundle
from detector.core.calibration import CALIBRATION_FILE
from detector.core.csvfile import CsvSourceError
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.flowfiles import decoded_rows
from detector.core.jsonrecords import STDIN, flow_files
from detector.core.model import ResCAE
from detector.core.novelty import NOVEL_ABOVE, Novelty, NoveltyCalibration, reconstruction_error
from detector.core.registry import check_registry_target, publish, resolve_bundle_path
from detector.core.scorer import pick_device, predict_proba
from detector.core.signing import key_id, load_private_key
from trainer.config import ConfigError, ModelSection, PretrainConfig
from trainer.load import DataError
from trainer.progress import Reporter
from trainer.report import environment, write_report_json
from trainer.rundir import check_run_dir
from trainer.train import pretrain_autoencoder, seed_everything

BUDGET = 0.01  # share of the held-out trusted flows the threshold may flag
HELD_OUT = 0.2  # share of the decoded trusted flows kept out of training, for the threshold and the choice
MIN_FIT_ROWS = 20
MIN_HELD_OUT_ROWS = 5
MIN_STEPS = 1000  # without --epochs: at least this many optimizer steps ...
MIN_EPOCHS = 10  # ... and at least this many epochs (trainer fit's novelty.min_epochs)
_FLOOR = 1e-12  # a threshold of 0 would divide by zero

Init = Literal["auto", "base", "scratch"]
INITS = ("auto", "base", "scratch")


@dataclass
class SiteFlows:
    """The trusted flows, decoded and preprocessed, and what reading them gave per file."""

    matrix: np.ndarray
    files: list[dict[str, Any]]
    rejected: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)  # the first reason seen per rejection code

    @property
    def rows_read(self) -> int:
        return sum(entry["rows"] for entry in self.files)


@dataclass(frozen=True)
class Candidate:
    """One fitted autoencoder and its reconstruction errors on the held-out trusted rows."""

    init: str
    autoencoder: ResCAE
    held_out_errors: np.ndarray
    final_loss: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        errors = self.held_out_errors
        return {
            "init": self.init,
            "held_out_error_median": float(np.median(errors)),
            "held_out_error_mean": float(errors.mean()),
            "held_out_error_max": float(errors.max()),
            "final_training_loss": self.final_loss,
            "seconds": round(self.seconds, 1),
        }


def adapt(
    bundle_path: str | Path,
    benign: Sequence[str | Path],
    out: Path,
    *,
    registry: str | Path | None = None,
    sign: str | Path | None = None,
    budget: float = BUDGET,
    held_out: float = HELD_OUT,
    epochs: int | None = None,
    seed: int = 42,
    init: Init = "auto",
    device: str = "auto",
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Fit ``bundle_path``'s anomaly model to the trusted ``benign`` flows and write the adapted bundle to
    ``out/bundle`` (and publish it to ``registry``, signed with the PEM key ``sign`` when given); returns the
    report also written to ``out/report.json``. Bad input raises :class:`DataError` (files, rows),
    :class:`ConfigError` (options) or ``BundleError`` (the bundle) before anything is trained."""
    reporter = reporter or Reporter()
    started = time.perf_counter()
    if sign is not None and not registry:
        raise ConfigError("--sign signs the version published to a registry: give --registry too")
    if not 0 < budget < 0.5 or not 0 < held_out < 1:
        raise ConfigError(f"--budget must be in (0, 0.5) and --held-out in (0, 1), got {budget} and {held_out}")
    key = load_private_key(sign) if sign is not None else None
    if registry:
        check_registry_target(registry)
    base = load_bundle(resolve_bundle_path(bundle_path))
    if init == "base" and base.novelty is None:
        raise ConfigError(f"--init base: bundle {base.version} has no novelty autoencoder to start from")
    out = check_run_dir(out)
    with reporter.stage("read trusted flows"):
        flows = read_site_flows(benign, base)
    fit_rows, held_rows = split_rows(len(flows.matrix), held_out, seed)
    fit_x, held_x = flows.matrix[fit_rows], flows.matrix[held_rows]
    reporter.note(
        f"trusted flows: {flows.rows_read:,} rows read, {len(flows.matrix):,} decoded, "
        f"{sum(flows.rejected.values()):,} rejected; {len(fit_x):,} to fit, {len(held_x):,} held out (seed {seed})"
    )
    target = pick_device(device)
    section = ModelSection(filters=base.model.config.filters, activation=base.model.config.activation)
    pretrain = PretrainConfig()
    epochs = epochs or default_epochs(len(fit_x), pretrain.batch_size)
    candidates = []
    for name, start in _starts(base, init).items():
        with reporter.stage(f"fit autoencoder ({name})"):
            candidates.append(
                fit_candidate(name, fit_x, held_x, section, pretrain, epochs, seed, target, start, reporter)
            )
    best = min(candidates, key=lambda c: float(np.median(c.held_out_errors)))
    threshold, flagged = threshold_at(best.held_out_errors, budget)
    site = {
        "files": flows.files,
        "rows_read": flows.rows_read,
        "rows_decoded": len(flows.matrix),
        "rows_rejected": sum(flows.rejected.values()),
        "rejected": dict(flows.rejected.most_common()),
        "rows_used": len(fit_x),
        "rows_held_out": len(held_x),
        "held_out": held_out,
        "seed": seed,
        "budget": budget,
        "resolvable_budget": 1 / len(held_x),
        "held_out_flagged_share": flagged,
        "init": best.init,
        "epochs": epochs,
        "base_bundle": {"version": base.version, "sha256": base.sha256},
    }
    calibration = NoveltyCalibration(
        threshold,
        1 - budget,
        len(held_x),
        flag="autoencoder",
        max_probability=base.novelty.calibration.max_probability if base.novelty is not None else None,
        site=site,
    )
    with reporter.stage("bundle"):
        bundle_dir = write_adapted_bundle(base, Novelty(best.autoencoder, calibration), out / "bundle")
        adapted = load_bundle(bundle_dir)
    report: dict[str, Any] = {
        "site": site,
        "threshold": threshold,
        "candidates": [candidate.summary() for candidate in candidates],
        "choice": "the candidate with the lower median reconstruction error on the held-out trusted rows",
        "base_novelty_on_held_out": _base_flagged(base, held_x, target),
        "rejected_reasons": flows.reasons,
        "bundle": {"path": str(bundle_dir), "version": adapted.version, "sha256": adapted.sha256},
        "stage_seconds": dict(reporter.stage_seconds),
        "environment": environment(),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report_json(out, report)
    if registry:  # last: the run directory is complete even if publishing fails
        report["bundle"].update(registry=str(registry), published_version=publish(bundle_dir, registry, sign_with=key))
        if key is not None:
            report["bundle"]["signed_by"] = key_id(key.public_key())
        write_report_json(out, report)
    reporter.result(summary_text(report, out))
    return report


def _starts(base: Bundle, init: Init) -> dict[str, ResCAE | None]:
    """The autoencoders to try: ``base`` fine-tunes the bundle's (when it has one), ``scratch`` a fresh one."""
    starts: dict[str, ResCAE | None] = {}
    if init in ("auto", "base") and base.novelty is not None:
        starts["base"] = base.novelty.autoencoder
    if init in ("auto", "scratch"):
        starts["scratch"] = None
    return starts


def read_site_flows(paths: Sequence[str | Path], bundle: Bundle) -> SiteFlows:
    """Every row of the flow files ``paths`` (CSV of any dialect the decoder knows, or NDJSON; folders
    expanded) decoded for ``bundle`` and preprocessed. Raises :class:`DataError` when a file cannot be read or
    no row can be decoded."""
    try:
        files = flow_files(paths)
    except CsvSourceError as exc:
        raise DataError(str(exc)) from exc
    if any(str(path) == STDIN for path in files):
        raise DataError("trusted flows must be files (their sha256 is recorded), not - (standard input)")
    pre = bundle.preprocessor
    decoder = FlowDecoder(pre.numeric, tuple(pre.categories))
    numeric: list[np.ndarray] = []
    categorical: list[tuple[str, ...]] = []
    result = SiteFlows(np.zeros((0, pre.width), dtype=np.float32), [])
    for path in files:
        rejected: Counter[str] = Counter()
        rows = 0
        for item in decoded_rows([path], decoder):
            rows += 1
            if isinstance(item.outcome, DecodedFlow):
                numeric.append(item.outcome.numeric)
                categorical.append(item.outcome.categorical)
            else:
                rejected[item.outcome.code] += 1
                result.reasons.setdefault(item.outcome.code, item.outcome.reason)
        result.rejected.update(rejected)
        result.files.append(
            {
                "path": str(path),
                "sha256": file_sha256(path),
                "rows": rows,
                "decoded": rows - sum(rejected.values()),
                "rejected": dict(rejected.most_common()),
            }
        )
    if not numeric:
        why = "; ".join(f"{code} ({n:,}): {result.reasons[code]}" for code, n in result.rejected.most_common())
        raise DataError(
            f"no row of the {len(files)} trusted flow file(s) could be decoded for bundle {bundle.version}"
            + (f": {why}" if why else ": they hold no data rows")
        )
    columns = {name: [row[i] for row in categorical] for i, name in enumerate(pre.categories)}
    result.matrix = pre.transform(np.stack(numeric), columns)
    return result


def split_rows(rows: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random indices to fit on and to hold out (``held_out`` of ``rows``, at least
    :data:`MIN_HELD_OUT_ROWS`). Raises :class:`DataError` when either part would be too small."""
    held = max(MIN_HELD_OUT_ROWS, round(rows * held_out))
    if rows - held < MIN_FIT_ROWS:
        raise DataError(
            f"{rows:,} trusted flow(s) decoded: too few to adapt; it needs at least "
            f"{MIN_FIT_ROWS + max(MIN_HELD_OUT_ROWS, math.ceil(MIN_FIT_ROWS * held_out / (1 - held_out)))} "
            f"({MIN_FIT_ROWS} to fit and {held_out:.0%} held out, at least {MIN_HELD_OUT_ROWS}) and "
            "thousands to set a 1 % budget well"
        )
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[held:]), np.sort(order[:held])


def default_epochs(rows: int, batch_size: int) -> int:
    """Epochs for at least :data:`MIN_STEPS` optimizer steps and :data:`MIN_EPOCHS` epochs (a rule fixed in
    advance: a few hundred trusted flows make one batch an epoch)."""
    batches = max(1, math.ceil(rows / batch_size))
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / batches))


def fit_candidate(
    init: str,
    fit_x: np.ndarray,
    held_x: np.ndarray,
    section: ModelSection,
    pretrain: PretrainConfig,
    epochs: int,
    seed: int,
    device: torch.device,
    start: ResCAE | None,
    reporter: Reporter,
) -> Candidate:
    """The autoencoder trained on ``fit_x`` (from ``start``'s weights, or fresh when None) and its errors on
    ``held_x``."""
    started = time.perf_counter()
    seed_everything(seed)
    reporter.note(
        f"fitting the autoencoder ({'fine-tuned from the bundle' if start else 'from scratch'}), "
        f"{epochs} epochs on {len(fit_x):,} rows"
    )
    trained = pretrain_autoencoder(
        fit_x,
        section,
        pretrain,
        device,
        seed,
        Reporter(enabled=False),
        epochs=epochs,
        snapshot_epoch=None,
        start=start,
    )
    autoencoder = trained.autoencoder.to(device).eval()
    errors = reconstruction_error(autoencoder, held_x, device)
    return Candidate(init, autoencoder.cpu(), errors, trained.losses[-1], time.perf_counter() - started)


def threshold_at(errors: np.ndarray, budget: float) -> tuple[float, float]:
    """The ``1 - budget`` quantile of ``errors`` (an observed error: ``method="higher"``) and the share of
    ``errors`` above it."""
    threshold = max(float(np.quantile(errors, 1 - budget, method="higher")), _FLOOR)
    return threshold, float((errors > threshold).mean())


def write_adapted_bundle(base: Bundle, novelty: Novelty, directory: Path) -> Path:
    """A bundle with ``base``'s classifier, preprocessing, temperature and drift histograms and ``novelty``.

    The version names the base it came from: ``<UTC time>-site-<first 8 of the base's sha256>``. A signature
    of the base is not carried over (the manifest changes); ``--sign`` signs the published version."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return write_bundle(
        directory,
        model=base.model,
        preprocessor=base.preprocessor,
        classes=base.classes,
        benign_class=base.benign_class,
        version=f"{stamp}-site-{base.sha256[:8]}",
        training_data=base.manifest.get("training_data"),
        metrics=base.manifest.get("metrics"),
        novelty=novelty,
        calibration=base.calibration if CALIBRATION_FILE in base.manifest["files"] else None,
        drift=base.drift,
    )


def _base_flagged(base: Bundle, held_x: np.ndarray, device: torch.device) -> dict[str, Any] | None:
    """What the base bundle's own novelty signals say about the held-out trusted rows (the false alarms that
    adapting is for): the share each flags, and which one decides there."""
    if base.novelty is None:
        return None
    probabilities = predict_proba(base.model.to(device), held_x, device)
    signals = base.novelty.to(device).signals(held_x, probabilities, device)
    base.model.cpu()
    base.novelty.to(torch.device("cpu"))
    shares = {name: float((scores > NOVEL_ABOVE).mean()) for name, scores in signals.items()}
    return {
        "flag": base.novelty.calibration.flag,
        "flagged_share": shares[base.novelty.calibration.flag],
        "signals": shares,
    }


def summary_text(report: dict[str, Any], out: Path) -> str:
    """The printed summary: rows, the choice, the threshold and what it flags, where the bundle went."""
    site = report["site"]
    rejected = ", ".join(f"{code} {n:,}" for code, n in site["rejected"].items())
    lines = [
        f"adapted bundle {report['bundle']['version']} (from {site['base_bundle']['version']}): "
        f"{report['bundle']['path']}",
        f"  trusted rows: {site['rows_read']:,} read, {site['rows_decoded']:,} decoded, "
        f"{site['rows_rejected']:,} rejected{f' ({rejected})' if rejected else ''}; "
        f"{site['rows_used']:,} fitted, {site['rows_held_out']:,} held out (seed {site['seed']})",
    ]
    for candidate in report["candidates"]:
        chosen = " <- chosen" if candidate["init"] == site["init"] else ""
        lines.append(
            f"  autoencoder {candidate['init']:<7}: held-out error median {candidate['held_out_error_median']:.3g}, "
            f"max {candidate['held_out_error_max']:.3g} ({site['epochs']} epochs){chosen}"
        )
    lines.append(
        f"  threshold {report['threshold']:.4g}: budget {site['budget']:.2%}, held-out flagged "
        f"{site['held_out_flagged_share']:.2%}; {site['rows_held_out']:,} held-out rows resolve a budget of "
        f"{site['resolvable_budget']:.2%} at best"
    )
    base = report["base_novelty_on_held_out"]
    if base is not None:
        lines.append(
            f"  the base bundle's novelty flag ({base['flag']}) marked {base['flagged_share']:.2%} of the held-out "
            "rows novel"
        )
    if "published_version" in report["bundle"]:
        signed = f", signed by {report['bundle']['signed_by']}" if "signed_by" in report["bundle"] else ""
        lines.append(
            f"  published as version {report['bundle']['published_version']} to {report['bundle']['registry']}{signed}"
        )
    lines.append(f"  report: {out / 'report.json'}")
    return "\n".join(lines)
