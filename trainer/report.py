"""Writing a run directory: ``report.json``, ``report.md``, figures, and the one-screen summary.

``report.json`` is a contract (docs/architecture.md, "Contracts"): at least ``accuracy``, ``precision_weighted``,
``recall_weighted``, ``f1_weighted``, ``f1_macro``, ``per_class``, ``n_train``, ``n_test``,
``rows_dropped`` (total and reasons) and ``seconds``. Everything else a reader needs to trust the numbers
(split, what each step did, configuration, versions) is there too.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from trainer.evaluate import markdown_table, rate_text
from trainer.load import FlowTable
from trainer.plots import plot_confusion_matrix


def data_summary(table: FlowTable) -> dict[str, Any]:
    """What was read: files, rows kept and dropped (with reasons), classes, features."""
    return table.summary()


def rows_dropped(table: FlowTable) -> dict[str, Any]:
    return {"total": int(sum(table.dropped.values())), "reasons": {k: int(v) for k, v in table.dropped.items()}}


def environment() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()}


def write_report(
    out: Path, report: dict[str, Any], title: str, extra_markdown: str = "", rows: str = "Test split"
) -> None:
    """report.json, report.md and confusion_matrix.png for one evaluated model; ``rows`` names what was scored."""
    out.mkdir(parents=True, exist_ok=True)
    write_report_json(out, report)
    header = [
        f"# {title}",
        "",
        f"- rows scored: {report['n_test']} · training split: {report['n_train']} rows"
        + (f" (of which {report['n_validation']} for validation)" if report.get("n_validation") else "")
        + f" · seconds: {report['seconds']:.1f}",
        f"- rows dropped while loading: {report['rows_dropped']['total']}"
        + "".join(f"\n  - {reason}: {n}" for reason, n in report["rows_dropped"]["reasons"].items()),
        *([novelty_line(report["novelty"])] if "novelty" in report else []),
        *([calibration_line(report["calibration"])] if "calibration" in report else []),
        "",
    ]
    body = markdown_table(report, rows)
    (out / "report.md").write_text("\n".join(header) + body + extra_markdown, encoding="utf-8")
    plot_confusion_matrix(report["confusion_matrix"], report["labels"], out / "confusion_matrix.png", title)


def write_report_json(out: Path, report: dict[str, Any]) -> None:
    """``report.json`` alone (e.g. to add what happened after the report was first written).

    Strict JSON: a float that is inf or nan is written as ``null`` (Python's ``NaN`` token is not JSON and
    breaks ``jq`` and most readers).
    """
    text = json.dumps(_finite(report), indent=2, allow_nan=False)
    (out / "report.json").write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def novelty_line(novelty: dict[str, Any]) -> str:
    """The novelty model's verdict on these rows, as one Markdown list item."""
    return (
        f"- novel flows (unlike the training data): {novelty['novel_flows']} = {100 * novelty['novel_rate']:.2f} % "
        f"(expected about {100 * (1 - novelty['quantile']):.2f} % for flows like the training data)"
    )


def calibration_line(calibration: dict[str, Any]) -> str:
    """The confidence's temperature and what it did to the expected calibration error, as a Markdown item."""
    return (
        f"- confidence calibration: temperature {calibration['temperature']:g} (fitted on "
        f"{calibration['fitted_rows']} validation rows); expected calibration error on the test split "
        f"{calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after ({calibration['diagram']})"
    )


def print_summary(report: dict[str, Any], out: Path, title: str, console: Console | None = None) -> None:
    """One screen: per-class table, the headline numbers, and where the files are."""
    console = console or Console(stderr=True)
    table = Table(title=title, show_lines=False)
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, row in report["per_class"].items():
        f1 = row["f1"]
        style = "red" if row["support"] and f1 < 0.8 else None
        table.add_row(
            label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{f1:.4f}", str(row["support"]), style=style
        )
    console.print(table)
    binary = report["binary"]
    console.print(
        f"[bold]accuracy {report['accuracy']:.4f}  weighted F1 {report['f1_weighted']:.4f}  "
        f"macro F1 {report['f1_macro']:.4f}[/bold]  detection rate {rate_text(binary['detection_rate'])}  "
        f"false alarms {rate_text(binary['false_alarm_rate'])}"
    )
    if "novelty" in report:
        console.print(novelty_line(report["novelty"]).removeprefix("- "))
    if "calibration" in report:
        console.print(calibration_line(report["calibration"]).removeprefix("- "))
    console.print(f"{report['n_train']} training rows, {report['n_test']} test rows, {report['seconds']:.0f}s")
    if report.get("stage_seconds"):
        console.print("time by stage: " + stage_text(report["stage_seconds"]), highlight=False)
    console.print(f"run directory: {out}")


def stage_text(stages: dict[str, float]) -> str:
    """``load 12s · split 0s · ...`` in the order the stages ran."""
    return " · ".join(f"{name} {seconds:.0f}s" for name, seconds in stages.items())
