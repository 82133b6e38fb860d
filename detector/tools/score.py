"""``detector score``: the stream's model path without Kafka, from flow files to JSON lines.

A CSV row goes exactly the way a replayed record goes through a worker: the same record conversion as
``detector replay`` (:mod:`detector.core.flowrecord`), :meth:`FlowDecoder.decode_mapping`, :meth:`Scorer.score` in
batches, and the alert helpers for the output fields. An NDJSON line (``.ndjson``, ``.jsonl``, plain or
``.gz``: one flow record per line, the records a worker reads) goes the way a Kafka message does,
:meth:`FlowDecoder.decode_bytes`. ``-`` reads standard input, NDJSON when its first line opens a JSON object,
else CSV. So the output is the reference a stream must agree with, row for row, and a quick way to score a
file with a bundle on a laptop.

One JSON object per input row, in input order::

    {"source": {"file": "...", "row": 1}, "flow": {...}, "label": "DDoS", "is_attack": true,
     "confidence": 0.98, "probabilities": [{"label": "DDoS", "probability": 0.98}, ...],
     "ground_truth": "DDoS",          # only when the row carries a label
     "explanation": [{"feature": "Flow Duration", "value": 12.0, "attribution": 0.41}, ...]}
                                      # only with --explain K, on attack verdicts

``row`` counts a CSV's data rows from 1 (the header is not a row); an NDJSON line's source has ``line``
instead, its line number from 1 (blank lines are skipped but counted). A row that cannot be scored becomes
``{"source": {...}, "error": {"code": ..., "reason": ...}}`` with the decoder's codes (``missing_features``,
``wrong_type``, ...) plus ``short_row`` (fewer cells than the header), ``long_row`` (more) and
``unreadable`` (the file breaks off there); it is counted, never dropped.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
from rich.console import Console

from detector.core.alerts import build_alert
from detector.core.bundle import Bundle, BundleError, load_bundle
from detector.core.csvfile import CsvSourceError, read_header
from detector.core.decode import DecodedFlow, Rejected
from detector.core.features import family_of, missing_features_advice, resolve_columns
from detector.core.flowfiles import DecodedRow, decoded_rows
from detector.core.jsonrecords import STDIN, flow_files, is_ndjson_name
from detector.core.process import ExitCode, sigterm_interrupts
from detector.core.registry import resolve_bundle_path
from detector.core.scorer import DeviceError, Scorer
from detector.core.signing import SigningError, load_trusted_keys
from detector.tools.online_eval import from_confusion
from detector.tools.settings import ScoreSettings

DEFAULT_BATCH = 1024
NOVEL_HINT_FACTOR = 5  # a novel share this many times the calibrated one is no longer noise
_VERDICT_FIELDS = (
    "flow",
    "label",
    "is_attack",
    "confidence",
    "probabilities",
    "novelty",
    "ground_truth",
    "explanation",
)


@dataclass
class ScoreSummary:
    """Counts for the summary line."""

    rows: int = 0
    scored: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    attacks: Counter[str] = field(default_factory=Counter)
    novel: int | None = None  # None: the bundle has no novelty model
    novel_expected: float = 0.0  # the share of novel flows the calibration expects on flows like the training data
    truth_pairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    missing_features_hint: str = "rows lack features the bundle needs"

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> ScoreSummary:
        """An empty summary that knows the novel share the bundle's calibration expects."""
        expected = bundle.novelty.calibration.expected_share if bundle.novelty is not None else 0.0
        return cls(novel_expected=expected)

    def line(self, files: int, seconds: float) -> str:
        errors = sum(self.errors.values())
        parts = [f"scored {self.scored:,} of {self.rows:,} rows from {files} file(s) in {seconds:.1f} s"]
        by_code = ", ".join(f"{code} {n:,}" for code, n in self.errors.most_common())
        parts.append(f"errors {errors:,}" + (f" ({by_code})" if by_code else ""))
        attacks = ", ".join(f"{label} {n:,}" for label, n in self.attacks.most_common())
        parts.append(f"attacks {sum(self.attacks.values()):,}" + (f" ({attacks})" if attacks else ""))
        if self.novel is not None:
            share = f" ({100 * self.novel / self.scored:.1f} %)" if self.scored else ""
            parts.append(f"novel {self.novel:,}{share}")
        if self.truth_pairs:
            evaluation = from_confusion(self.truth_pairs)
            parts.append(
                f"vs ground truth: accuracy {evaluation.accuracy:.4f}, weighted F1 {evaluation.f1_weighted:.4f}, "
                f"macro F1 {evaluation.f1_macro:.4f}"
            )
        return " · ".join(parts)

    def hints(self) -> list[str]:
        """What the user should know beyond the counts: why nothing was scored, and what to do about it."""
        hints = []
        if self.rows and not self.scored:
            hints.append("no row could be scored (see the error lines for each row's reason)")
        if self.errors["missing_features"]:
            hints.append(self.missing_features_hint)
        if self.novel and self.novel > NOVEL_HINT_FACTOR * self.novel_expected * self.scored:
            hints.append(
                f"{100 * self.novel / self.scored:.1f} % of the scored flows are novel, against about "
                f"{100 * self.novel_expected:.1f} % for flows like the training data: these flows are unlike it "
                "(another flow meter or network, or unknown traffic), so their labels are guesses"
            )
        return hints


def score_files(
    files: list[Path],
    scorer: Scorer,
    out: IO[bytes],
    *,
    batch: int = DEFAULT_BATCH,
    summary: ScoreSummary | None = None,
    stdin: io.BufferedReader | None = None,
    explain: int = 0,
) -> ScoreSummary:
    """Score every row of ``files`` (``-``: ``stdin``, default standard input) and write one JSON line per row
    to ``out``; counts go into ``summary``. ``explain`` > 0 adds to each attack verdict its ``explanation``: the
    features that pushed its label most (:meth:`Scorer.explain`; benign verdicts are not explained)."""
    summary = summary if summary is not None else ScoreSummary.for_bundle(scorer.bundle)
    pending: list[DecodedRow] = []
    for item in decoded_rows(files, scorer.decoder, stdin):
        summary.rows += 1
        pending.append(item)
        if len(pending) >= batch:
            _flush(pending, scorer, out, summary, explain)
    _flush(pending, scorer, out, summary, explain)
    return summary


def _flush(pending: list[DecodedRow], scorer: Scorer, out: IO[bytes], summary: ScoreSummary, explain: int) -> None:
    flows = [p.outcome for p in pending if isinstance(p.outcome, DecodedFlow)]
    verdicts = iter(scorer.explained_attacks(scorer.score(flows), flows, explain)) if flows else iter(())
    lines = []
    for item in pending:
        if isinstance(item.outcome, Rejected):
            summary.errors[item.outcome.code] += 1
            body = {"code": item.outcome.code, "reason": item.outcome.reason}
            lines.append(orjson.dumps({"source": item.source, "error": body}))
            continue
        verdict = next(verdicts)
        alert = build_alert(verdict, item.outcome.flow, item.outcome.label, {}, ("", 0, 0), "")
        line = {"source": item.source, **{key: alert[key] for key in _VERDICT_FIELDS if key in alert}}
        lines.append(orjson.dumps(line))
        summary.scored += 1
        if verdict.is_attack:
            summary.attacks[verdict.label] += 1
        if verdict.novelty is not None:
            summary.novel = (summary.novel or 0) + verdict.is_novel
        if item.outcome.label:
            summary.truth_pairs[(item.outcome.label, verdict.label)] += 1
    if lines:
        out.write(b"\n".join(lines) + b"\n")
    pending.clear()


def run_command(settings: ScoreSettings) -> int:
    """``detector score`` from its settings; returns the exit status."""
    console = Console(stderr=True)
    started = time.perf_counter()
    try:
        if sum(str(path) == STDIN for path in settings.csv) > 1:
            raise CsvSourceError("- (standard input) can be read once")
        files = flow_files(settings.csv)
        # Refuses binary and UTF-16 CSV files up front.
        headers = [read_header(path) for path in files if str(path) != STDIN and not is_ndjson_name(path)]
        trusted = load_trusted_keys([settings.trusted_key] if settings.trusted_key else [])
        bundle = load_bundle(resolve_bundle_path(settings.bundle), trusted_keys=trusted)
        scorer = Scorer(bundle, device=settings.device, backend=settings.backend)
        out = _open_out(settings.out, files)
    except (CsvSourceError, BundleError, SigningError, DeviceError) as exc:
        console.print(f"detector score: error: {exc}", markup=False, soft_wrap=True)
        return ExitCode.USAGE
    console.print(
        f"scoring with {bundle.name} {bundle.version} ({len(bundle.classes)} classes) on {scorer.device} "
        f"({scorer.backend.name} backend{'; ' + scorer.backend.note if scorer.backend.note else ''})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    summary = ScoreSummary.for_bundle(bundle)
    summary.missing_features_hint = _missing_features_hint(bundle, headers)
    status = ExitCode.OK
    try:
        if out is not None:
            with sigterm_interrupts(), out:
                score_files(files, scorer, out, batch=settings.batch, summary=summary, explain=settings.explain)
        else:
            with sigterm_interrupts():
                score_files(
                    files, scorer, sys.stdout.buffer, batch=settings.batch, summary=summary, explain=settings.explain
                )
            sys.stdout.buffer.flush()
    except BrokenPipeError:
        # `detector score ... | head`: the reader left. Point stdout at /dev/null so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except KeyboardInterrupt:
        console.print("detector score: interrupted; counts so far:", markup=False)
        status = ExitCode.INTERRUPTED
    console.print(
        summary.line(len(files), time.perf_counter() - started), markup=False, highlight=False, soft_wrap=True
    )
    for hint in summary.hints():
        console.print(f"detector score: {hint}", markup=False, highlight=False, soft_wrap=True)
    if status == ExitCode.OK and not summary.rows:
        console.print("detector score: the files hold no data rows", markup=False, soft_wrap=True)
        return ExitCode.FAILURE
    if status == ExitCode.OK and not summary.scored:
        return ExitCode.FAILURE
    return status


def _open_out(path: str | Path | None, inputs: list[Path]) -> IO[bytes] | None:
    """The ``--out`` file opened for writing (None: stdout); a path that cannot be written, or one of the
    input files (opening it would empty it before a row is read), is a usage error."""
    if not path:
        return None
    target = Path(path)
    named = [source for source in inputs if str(source) != STDIN]
    if target.exists() and any(target.resolve() == source.resolve() for source in named):
        raise CsvSourceError(f"--out {path} is one of the input files: it would be emptied before it is read")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")
    except OSError as exc:
        raise CsvSourceError(f"--out {path} cannot be written: {exc.strerror or exc}") from None


def _missing_features_hint(bundle: Bundle, headers: list[list[str]]) -> str:
    """What to do about rows that lack the bundle's features (the same advice as ``trainer evaluate``)."""
    plans = [resolve_columns(header) for header in headers if header]
    needed = list(bundle.features)
    missing = [name for name in needed if any(name not in plan.features for plan in plans)]
    families = {family_of(plan.features) for plan in plans}
    data = next(iter(families)) if len(families) == 1 else "mixed"
    advice = missing_features_advice(missing, family_of(needed), data)
    return f"rows lack features the bundle needs: {advice}"
