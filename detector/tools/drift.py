"""``detector drift``: how far flow files are from a bundle's training data, feature by feature.

Rows are read and decoded exactly as ``detector score`` reads them (CSV through the replay's record
conversion, NDJSON lines as Kafka message values; :func:`detector.core.flowfiles.decoded_rows`), counted into the
bundle's training histograms (``drift.json``, :mod:`detector.core.drift`) a batch at a time, and compared with
the Population Stability Index. The report lists every numeric feature's PSI, largest first, with its
reading (stable < 0.1 <= moderate <= 0.25 < significant), and how many rows were read and rejected (by the
decoder's reason codes). It is what ``flowwarden_feature_psi`` shows for a worker's window, for files at hand:
compare a capture of today's meter with the bundle before serving it.

Exit status: 0 with a report (whatever it says), 1 when ``--fail-on`` is given and a feature reaches that
level, or when no row could be decoded; 2 for a usage error (a bad file, a bundle that is bad or has no
``drift.json``); 130 when interrupted.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console

from detector.core.bundle import Bundle, BundleError, load_bundle
from detector.core.csvfile import CsvSourceError, read_header
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.drift import MODERATE, SIGNIFICANT, DriftSummary, ReferenceHistograms, verdict
from detector.core.flowfiles import decoded_rows
from detector.core.jsonrecords import STDIN, flow_files, is_ndjson_name
from detector.core.process import ExitCode, sigterm_interrupts
from detector.core.registry import resolve_bundle_path
from detector.tools.settings import DriftSettings

BATCH = 4096  # decoded flows per bin count: the only values held at a time


@dataclass
class DriftCounts:
    """What reading the files gave: bin counts of the decoded flows, and the rows rejected by reason."""

    counts: np.ndarray
    rows: int = 0
    decoded: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def count_files(files: list[Path], reference: ReferenceHistograms, decoder: FlowDecoder) -> DriftCounts:
    """Count every row of ``files`` into ``reference``'s bins (``-``: standard input)."""
    result = DriftCounts(np.zeros((len(reference.features), reference.width), dtype=np.int64))
    batch: list[np.ndarray] = []
    for item in decoded_rows(files, decoder):
        result.rows += 1
        if isinstance(item.outcome, DecodedFlow):
            batch.append(item.outcome.numeric)
            if len(batch) >= BATCH:
                result.counts += reference.bin_counts(np.stack(batch))
                result.decoded += len(batch)
                batch.clear()
        else:
            result.rejected[item.outcome.code] += 1
    if batch:
        result.counts += reference.bin_counts(np.stack(batch))
        result.decoded += len(batch)
    return result


def report(bundle: Bundle, files: list[Path], counted: DriftCounts) -> dict[str, Any]:
    """The report as a JSON-ready object: the bundle, the row counts, and :class:`DriftSummary`'s fields."""
    reference = bundle.drift
    assert reference is not None
    summary = DriftSummary.of(reference.features, reference.psi(counted.counts), counted.decoded)
    return {
        "bundle": {"name": bundle.name, "version": bundle.version},
        "reference": {"rows": reference.rows, "population": reference.population},
        "files": [str(path) for path in files],
        "rows_read": counted.rows,
        "rows_rejected": sum(counted.rejected.values()),
        "rejected": dict(counted.rejected.most_common()),
        **summary.to_json(),
    }


def table(document: dict[str, Any]) -> str:
    """The report for people: a header, one line per feature (largest PSI first), the verdict."""
    bundle, reference = document["bundle"], document["reference"]
    rejected = ", ".join(f"{code} {n:,}" for code, n in document["rejected"].items())
    lines = [
        f"drift against {bundle['name']} {bundle['version']} (histograms of {reference['rows']:,} "
        f"{reference['population']}): {document['rows']:,} flows decoded of {document['rows_read']:,} rows read, "
        f"{document['rows_rejected']:,} rejected" + (f" ({rejected})" if rejected else ""),
        "",
    ]
    width = max(len(entry["feature"]) for entry in document["features"])
    lines.append(f"{'feature':<{width}}  {'PSI':>8}  verdict")
    for entry in document["features"]:
        lines.append(f"{entry['feature']:<{width}}  {entry['psi']:>8.4f}  {entry['verdict']}")
    significant, moderate = document["significant"], document["moderate"]
    lines.append("")
    lines.append(
        f"max PSI {document['max_psi']:.4f}: {document['verdict']} · {len(significant)} feature(s) significant "
        f"(> {SIGNIFICANT}), {len(moderate)} moderate ({MODERATE} to {SIGNIFICANT}) · "
        f"thresholds as in Siddiqi (2006): < {MODERATE} stable, > {SIGNIFICANT} a significant shift"
    )
    return "\n".join(lines)


def run_command(settings: DriftSettings) -> int:
    """``detector drift`` from its settings; returns the exit status (module docstring)."""
    console = Console(stderr=True)
    try:
        if sum(str(path) == STDIN for path in settings.files) > 1:
            raise CsvSourceError("- (standard input) can be read once")
        files = flow_files(settings.files)
        for path in files:  # refuses binary and UTF-16 CSV files up front
            if str(path) != STDIN and not is_ndjson_name(path):
                read_header(path)
        bundle = load_bundle(resolve_bundle_path(settings.bundle))
        if bundle.drift is None:
            raise BundleError(
                f"bundle {bundle.version} has no training histograms (drift.json): it was written before drift "
                "existed; fit or publish a new bundle to measure drift"
            )
    except (CsvSourceError, BundleError) as exc:
        console.print(f"detector drift: error: {exc}", markup=False, soft_wrap=True)
        return ExitCode.USAGE
    decoder = FlowDecoder(bundle.preprocessor.numeric, tuple(bundle.preprocessor.categories))
    try:
        with sigterm_interrupts():
            counted = count_files(files, bundle.drift, decoder)
    except KeyboardInterrupt:
        console.print("detector drift: interrupted", markup=False)
        return ExitCode.INTERRUPTED
    if not counted.decoded:
        reasons = ", ".join(f"{code} {n:,}" for code, n in counted.rejected.most_common()) or "no data rows"
        console.print(f"detector drift: no row could be decoded ({reasons})", markup=False, soft_wrap=True)
        return ExitCode.FAILURE
    document = report(bundle, files, counted)
    if settings.format == "json":
        sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
        sys.stdout.buffer.flush()
    else:
        print(table(document), flush=True)
    if settings.fail_on is not None and _reaches(document["max_psi"], settings.fail_on):
        return ExitCode.FAILURE
    return ExitCode.OK


def _reaches(psi: float, level: str) -> bool:
    reading = verdict(psi)
    return reading == "significant" or (level == "moderate" and reading == "moderate")
