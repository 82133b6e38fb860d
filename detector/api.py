"""flowwarden from Python: load a bundle, score flows in a notebook or a batch job.

::

    import detector

    model = detector.load("runs/q/bundle")          # a bundle directory, a .tar.gz, or a registry (LATEST)
    verdicts = model.predict(frame)                  # a pandas DataFrame in, one out (same index)
    verdicts = model.predict(rows)                   # or any iterable of {column: value} mappings

A flow goes the very way ``detector score`` and the streaming worker take it: the row becomes a flow record
(:func:`detector.core.flowrecord.to_record`), the stream's decoder reads it, the bundle's preprocessing and
model score it in batches. So a notebook's verdicts equal the stream's, row for row. Columns may use any
dialect the detector knows (CICFlowMeter, the Python ``cicflowmeter``, UNSW-NB15) and hold text (a CSV read
with ``dtype=str``) or numbers.

The result has one row per input row: ``label``, ``is_attack``, ``confidence`` (calibrated by the bundle's
temperature, see :mod:`detector.core.calibration`), ``probabilities`` (the top
classes, most probable first, as ``{label: probability}``), ``novelty`` and ``is_novel`` (None when the
bundle has no novelty model), ``ground_truth`` (the row's own label, if it has one) and ``error`` (None, or
``"code: reason"`` for a row that cannot be scored, whose other columns are then None) and ``explanation``.

``explanation`` is None unless ``load(..., explain=K)``: then each attack verdict carries the K features that
pushed its label most, as a list of ``{"feature", "value", "attribution"}`` (the flow's own feature names and
raw values; attributions are integrated gradients in log-odds of the label, see :mod:`detector.core.explain`),
computed on the bundle's fp32 weights whatever ``backend`` serves the verdicts; benign verdicts carry None.
The same as ``detector score --explain K``. pandas is needed only to build the DataFrame (the worker image
does not carry it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from detector.core.bundle import Bundle, load_bundle
from detector.core.decode import DecodedFlow, Rejected
from detector.core.flowrecord import layout_for, to_record
from detector.core.registry import resolve_bundle_path
from detector.core.scorer import Scorer, Verdict
from detector.core.signing import load_trusted_keys

COLUMNS = (
    "label",
    "is_attack",
    "confidence",
    "probabilities",
    "novelty",
    "is_novel",
    "ground_truth",
    "error",
    "explanation",
)


class Detector:
    """A verified bundle ready to score flows; build it with :func:`load`."""

    def __init__(
        self, bundle: Bundle, device: str = "auto", batch: int = 1024, backend: str = "auto", explain: int = 0
    ) -> None:
        if explain < 0:
            raise ValueError(f"explain must be 0 (off) or a number of features, got {explain}")
        self.bundle = bundle
        self.scorer = Scorer(bundle, device, backend=backend)
        self.batch = batch
        self.explain = explain

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.bundle.classes)

    @property
    def version(self) -> str:
        return self.bundle.version

    def predict(self, data: Any) -> Any:
        """Verdicts for a DataFrame or an iterable of mappings, as a DataFrame (see the module docstring)."""
        import pandas as pd  # only here: the detector itself never needs pandas

        if isinstance(data, pd.DataFrame):
            rows: Iterable[Mapping[str, Any]] = data.to_dict(orient="records")
            index = data.index
        else:
            rows, index = list(data), None
        results = self.predict_rows(rows)
        return pd.DataFrame(results, columns=list(COLUMNS), index=index)

    def predict_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Verdicts as plain dicts (the DataFrame's rows), for callers without pandas."""
        outcomes = [self._decode(row) for row in rows]
        flows = [outcome for outcome in outcomes if isinstance(outcome, DecodedFlow)]
        verdicts = iter(
            [verdict for start in range(0, len(flows), self.batch) for verdict in self._score(flows, start)]
        )
        results = []
        for outcome in outcomes:
            if isinstance(outcome, Rejected):
                results.append({**dict.fromkeys(COLUMNS), "error": f"{outcome.code}: {outcome.reason}"})
                continue
            verdict = next(verdicts)
            results.append(
                {
                    "label": verdict.label,
                    "is_attack": verdict.is_attack,
                    "confidence": round(verdict.confidence, 6),
                    "probabilities": dict(verdict.top),
                    "novelty": None if verdict.novelty is None else round(verdict.novelty, 6),
                    "is_novel": None if verdict.novelty is None else verdict.is_novel,
                    "ground_truth": outcome.label,
                    "error": None,
                    "explanation": [a.to_json() for a in verdict.explanation] if verdict.explanation else None,
                }
            )
        return results

    def _score(self, flows: list[DecodedFlow], start: int) -> list[Verdict]:
        chunk = flows[start : start + self.batch]
        return self.scorer.explained_attacks(self.scorer.score(chunk), chunk, self.explain)

    def _decode(self, row: Mapping[str, Any]) -> DecodedFlow | Rejected:
        cells = {str(name): _plain(value) for name, value in row.items()}
        record = to_record(cells, layout_for(tuple(cells)), with_labels=True)
        return self.scorer.decoder.decode_mapping(record)


def load(
    path: str | Path,
    *,
    device: str = "auto",
    batch: int = 1024,
    backend: str = "auto",
    explain: int = 0,
    trusted_keys: Sequence[str | Path] = (),
) -> Detector:
    """A :class:`Detector` for a bundle directory, a ``.tar.gz`` bundle or a registry (its ``LATEST``
    version). The bundle is verified (format version, every checksum) first; raises
    :class:`~detector.core.bundle.BundleError` for a bad one, :class:`~detector.core.scorer.DeviceError`
    for ``device="cuda"`` without a GPU or a ``backend`` the device cannot run (``auto``: OpenVINO bfloat16 on
    a CPU with bfloat16 where the openvino extra is installed, else int8; CUDA graphs on a GPU; ``eager``: the fp32
    model exactly as the trainer evaluated it). ``explain=K`` adds each attack verdict's K most pushing features
    (the module docstring). With ``trusted_keys`` (PEM files of ed25519 public keys) the bundle must also be signed
    by one of them (:mod:`detector.core.signing`), else ``BundleError``; a key file that cannot be used raises
    :class:`~detector.core.signing.SigningError`."""
    bundle = load_bundle(resolve_bundle_path(Path(path)), trusted_keys=load_trusted_keys(trusted_keys))
    return Detector(bundle, device=device, batch=batch, backend=backend, explain=explain)


def _plain(value: Any) -> Any:
    """A cell as a CSV reader or a JSON parser would give it: text, a Python number, or None."""
    if value is None or isinstance(value, str | bool):
        return value
    if hasattr(value, "item"):  # a numpy scalar from a DataFrame
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return ""  # a missing cell, as in a CSV
    return value
