"""Loading labeled flow CSVs for training, with every unusable row counted.

:func:`load_flows` reads one or more CSV files (plain or gzip, or folders of them) in any dialect that
:mod:`detector.core.features` knows and returns a :class:`FlowTable`: canonical numeric features, UNSW-NB15
categories, normalised labels, flow identity and parsed timestamps, one row per usable flow.

Three promises the rest of the trainer relies on:

* **Same numbers as serving.** Every numeric cell is parsed exactly as :func:`detector.core.values.parse_number`
  parses a stream record's field (bit for bit, including ``Infinity``, ``inf``, ``NaN``, empty cells and hex
  ports), then multiplied by the column's unit factor (:attr:`detector.core.features.Column.scale`), as
  :mod:`detector.core.decode` does. The fast path converts a whole column with Python's ``float`` semantics;
  only the cells it rejects go through ``parse_number`` one by one.
* **No silent loss.** A row that cannot be used is dropped and counted under one reason (the first that
  applies, in this order): :data:`~detector.core.csvfile.BLANK_LINE`,
  :data:`~detector.core.csvfile.WRONG_FIELD_COUNT`,
  :data:`REPEATED_HEADER`, :data:`MISSING_LABEL`, ``TEXT_IN_NUMERIC.format(feature=...)``. For every file,
  ``rows_read == rows_kept + sum(dropped.values())``. NaN and ±inf are *not* a reason to drop: such rows are
  kept and counted in :attr:`FlowTable.nonfinite_rows`; the stored preprocessing handles them.
* **Clear errors.** A problem with a whole file (missing, empty, no label column, no known features, nothing
  usable) raises :class:`DataError` naming the file and the problem, before any large file is parsed where
  the header already tells.

Reading the text and splitting it into records is :mod:`detector.core.csvfile`'s job, the same reader replay
and scoring use (UTF-8, else cp1252, whose en dash :func:`detector.core.labels.normalize_label` then folds
into ``Web Attack - Brute Force``); timestamps are read by :mod:`detector.core.flowtime`, as replay reads them.
"""

from __future__ import annotations

import csv
import itertools
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from detector.core.csvfile import (
    BLANK_LINE,
    LONG_ROW,
    SHORT_ROW,
    WRONG_FIELD_COUNT,
    CsvReader,
    CsvSourceError,
    csv_files,
    not_csv_text,
    open_binary,
    read_table,
)
from detector.core.features import (
    CATEGORICAL_FEATURES,
    CIC_FEATURES,
    FAMILY_NAMES,
    LABEL_COLUMNS,
    UNSW_FEATURES,
    ColumnPlan,
    Role,
    family_of,
    resolve_columns,
)
from detector.core.flowtime import flow_times
from detector.core.labels import apply_label_map, normalize_label, resolve_label
from detector.core.tomlfile import TomlFileError, read_toml_file
from detector.core.values import parse_number

#: Drop reasons, exactly as they appear in :attr:`FlowTable.dropped` and in reports (with
#: :data:`BLANK_LINE` and :data:`WRONG_FIELD_COUNT`).
REPEATED_HEADER = "repeated header line"
MISSING_LABEL = "missing label"
TEXT_IN_NUMERIC = "text in numeric feature {feature}"

#: Flow identity columns of :attr:`FlowTable.flow`, always present in this order (NaN where a file has none).
FLOW_FIELDS: tuple[str, ...] = ("flow_id", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "timestamp")


# What datetime64[ns] can hold, in seconds since the epoch.
_NS_RANGE_SECONDS = 9.2e9
_MAX_NAMES_SHOWN = 40
_FLAG_CODES = frozenset({"0", "1", "0.0", "1.0"})
_HEADER_PADDING = " \t\r\n\ufeff"


NO_FEATURES_LEFT = "the feature selection leaves no features"
#: ``unused(features, family)`` of :func:`load_flows`: the features not to load, with the reason for each.
UnusedFeatures = Callable[[Sequence[str], str], Mapping[str, str]]


class DataError(ValueError):
    """A problem that stops loading. The message names the file and the problem; show it as is."""


@dataclass
class FileSummary:
    """What loading one source file found: row counts, drop reasons, and how its columns were read.

    ``features`` lists the canonical features the file provides (not only those used); ``converted`` maps a
    canonical feature to the unit factor applied (the Python ``cicflowmeter``'s seconds to microseconds).
    """

    path: Path
    family: str
    encoding: str
    label_column: str
    flag_column: str | None
    rows_read: int = 0
    rows_kept: int = 0
    nonfinite_rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    features: tuple[str, ...] = ()
    unknown_columns: tuple[str, ...] = ()
    duplicate_columns: tuple[str, ...] = ()
    # A duplicate column whose numbers differ from the column used, and on how many kept rows: the file is
    # ambiguous and the first column was used. (The original CICIDS2017's second Fwd Header Length is equal.)
    conflicting_duplicates: dict[str, int] = field(default_factory=dict)
    converted: dict[str, float] = field(default_factory=dict)
    relabelled: dict[str, int] = field(default_factory=dict)  # label-map key -> rows it renamed

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (the path as a string)."""
        return {**asdict(self), "path": str(self.path)}


@dataclass
class FlowTable:
    """Labeled flows ready for splitting and preprocessing; every attribute has one row per kept flow.

    ``numeric`` columns are canonical feature names in the vocabulary's order (float64, may hold NaN/±inf);
    ``categorical`` holds stripped category strings (UNSW-NB15 ``proto``/``service``/``state``; no columns
    for CIC data). ``flow`` holds the flow identity cells as the file wrote them, for alerts and for
    splitting by time; it must never be used as features. ``excluded_features`` maps a canonical feature
    that some but not all files provide to the reason it was left out.
    """

    numeric: pd.DataFrame
    categorical: pd.DataFrame
    labels: pd.Series
    flow: pd.DataFrame
    timestamps: pd.Series
    source: pd.Series
    dropped: dict[str, int]
    nonfinite_rows: int
    files: list[FileSummary]
    excluded_features: dict[str, str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def family(self) -> str:
        """``"cic"`` or ``"unsw"``: the feature vocabulary all files share."""
        return self.files[0].family

    @property
    def rows_read(self) -> int:
        return sum(summary.rows_read for summary in self.files)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())

    def relabelled(self) -> dict[str, int]:
        """Rows each label-map key renamed, over all files (a key that renamed nothing is absent)."""
        total: Counter[str] = Counter()
        for summary in self.files:
            total.update(summary.relabelled)
        return dict(total)

    def class_counts(self) -> dict[str, int]:
        """Rows per class, largest first."""
        return {str(label): int(count) for label, count in self.labels.value_counts().items()}

    def summary(self) -> dict[str, object]:
        """A JSON-ready account of what was loaded and dropped (for ``report.json``'s ``rows_dropped``)."""
        return {
            "rows_read": self.rows_read,
            "rows_kept": len(self),
            "rows_dropped": self.rows_dropped,
            "dropped": dict(self.dropped),
            "nonfinite_rows": self.nonfinite_rows,
            "numeric_features": list(self.numeric.columns),
            "categorical_features": list(self.categorical.columns),
            "excluded_features": dict(self.excluded_features),
            "classes": self.class_counts(),
            "files": [summary.as_dict() for summary in self.files],
        }


@dataclass(frozen=True)
class _Source:
    """One file after its header was read: enough to check it and to plan the feature set."""

    path: Path
    names: tuple[str, ...]
    plan: ColumnPlan
    family: str

    def position(self, column: str) -> int:
        """Index of a source column; the first occurrence, which is the one the plan chose."""
        return self.names.index(column)


# ----------------------------------------------------------------------------------------------------------
# Public API


def load_flows(
    paths: Sequence[str | Path],
    *,
    label_map: Mapping[str, str] | None = None,
    limit_per_file: int | None = None,
    unused: UnusedFeatures | None = None,
) -> FlowTable:
    """Load labeled flow CSVs into one :class:`FlowTable`.

    Parameters
    ----------
    paths
        Files (``.csv`` or ``.csv.gz``) and folders (every ``.csv``/``.csv.gz`` directly inside, sorted by
        name). A file reached twice is read once.
    label_map
        Optional renaming of classes applied after spelling normalisation, e.g. ``{"Bot": "Botnet"}``;
        keys and values are normalised with :func:`detector.core.labels.normalize_label`. Unmapped labels pass.
    limit_per_file
        Read at most this many data lines of each file (for quick runs); blank lines count.
    unused
        Called with the features every file provides and the family (``"cic"``/``"unsw"``); returns the
        features the caller will not use, each with the reason. Those are never parsed, so text in them
        drops no row, and they are listed in ``excluded_features``.

    Returns
    -------
    FlowTable
        Only the canonical features present in *every* file are used; the others are listed in
        ``excluded_features``.

    Raises
    ------
    DataError
        A path is missing or not a CSV, a folder has no CSVs, a file is empty or header-only, has no label
        column or no known feature column, files mix the CIC and UNSW-NB15 families, no feature is common
        to all files, or no row of a file is usable.
    """
    if limit_per_file is not None and limit_per_file < 1:
        raise DataError(f"limit_per_file must be at least 1, got {limit_per_file}")
    try:
        files = csv_files([paths] if isinstance(paths, str | Path) else paths)
    except CsvSourceError as exc:
        raise DataError(str(exc)) from None
    sources = [_inspect(path) for path in files]
    _check_one_family(sources)
    numeric, categorical, excluded = _common_features(sources)
    if unused is not None:
        left_out = dict(unused([*numeric, *categorical], sources[0].family))
        numeric = [name for name in numeric if name not in left_out]
        categorical = [name for name in categorical if name not in left_out]
        if not numeric and not categorical:
            raise DataError(NO_FEATURES_LEFT)
        excluded.update(left_out)
    labels_to = _normalize_map(label_map or {})
    loaded = [_load_file(source, numeric, categorical, labels_to, limit_per_file) for source in sources]
    return _combine(loaded, numeric, categorical, excluded)


def read_label_map(path: str | Path) -> dict[str, str]:
    """Read a label map from a TOML file's ``[labels]`` table, e.g. ``"Bot" = "Botnet"``.

    Keys and values are normalised the way labels are, so a map written with any dash or spacing applies.
    Raises :class:`DataError` if the file is missing, is not TOML, or the table is not string -> string.
    """
    path = Path(path)
    try:
        document = read_toml_file(path)
    except TomlFileError as exc:
        raise DataError(f"{path}: label map {exc}") from None
    table = document.get("labels")
    if not isinstance(table, dict):
        raise DataError(f'{path}: a label map needs a [labels] table, e.g. [labels] "Bot" = "Botnet"')
    bad = [key for key, value in table.items() if not isinstance(value, str)]
    if bad:
        raise DataError(f"{path}: label map values must be strings; not for: {', '.join(map(repr, bad))}")
    return _normalize_map(table, origin=str(path))


# ----------------------------------------------------------------------------------------------------------
# Header pass: check every file and agree on one feature set before parsing any body.


def _inspect(path: Path) -> _Source:
    names = _read_header(path)
    plan = resolve_columns(names)
    seen = _shown(name.strip() for name in names)
    if len(names) == 1 and any(mark in names[0] for mark in ";\t|"):
        raise DataError(
            f"{path}: the header is one column ({names[0][:60]!r}...): the file is not comma-separated; "
            "flow CSVs are read with ',' between fields"
        )
    if plan.label is None:
        expected = ", ".join(LABEL_COLUMNS)
        raise DataError(f"{path}: no label column (looked for {expected}); columns seen: {seen}")
    if not plan.features:
        raise DataError(f"{path}: no known feature columns; columns seen: {seen}")
    family = family_of(plan.features)
    if family == "mixed":
        raise DataError(f"{path}: columns of both the CIC and the UNSW-NB15 families; columns seen: {seen}")
    return _Source(path, tuple(names), plan, family)


def _read_header(path: Path) -> list[str]:
    """The header's column names (verbatim). Also rejects empty, header-only and non-text files cheaply."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    names: list[str] = []
    try:
        with open_binary(path) as handle:
            _refuse_binary(path, handle.read(4096))  # a pcapng's first "line" is a lone newline: look further
        with CsvReader(path) as reader:
            names = reader.raw_header
            has_data = any(any(cell.strip() for cell in record) for record in reader.records())
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except csv.Error as exc:
        if not names:  # the header itself is broken
            raise DataError(f"{path}: the header line is not CSV: {exc}") from None
        has_data = True  # a broken record after the header: reported with its line when the body is read
    if not any(name.strip() for name in names):
        raise DataError(f"{path}: empty file (no header line)")
    if not has_data:
        raise DataError(f"{path}: header only, no data rows")
    return names


def _refuse_binary(path: Path, start: bytes) -> None:
    problem = not_csv_text(start, path.name)
    if problem:
        raise DataError(f"{path}: {problem}")


def _check_one_family(sources: Sequence[_Source]) -> None:
    families = {source.family for source in sources}
    if len(families) > 1:
        listing = "; ".join(f"{source.path.name} ({FAMILY_NAMES[source.family]})" for source in sources)
        raise DataError(f"cannot train on CIC and UNSW-NB15 files together (different features): {listing}")


def _common_features(sources: Sequence[_Source]) -> tuple[list[str], list[str], dict[str, str]]:
    """Numeric and categorical canonical features present in every file, and why the others are not used."""
    provided = [set(source.plan.features) for source in sources]
    common = set.intersection(*provided)
    if not common:
        raise DataError("no feature column is present in every file: " + ", ".join(str(s.path) for s in sources))
    order = CIC_FEATURES if sources[0].family == "cic" else UNSW_FEATURES
    excluded: dict[str, str] = {}
    for name in order:
        lacking = [source.path.name for source, has in zip(sources, provided, strict=True) if name not in has]
        if name not in common and len(lacking) < len(sources):
            excluded[name] = "absent from " + _shown(lacking, limit=3, quote=False)
    numeric = [name for name in order if name in common and name not in CATEGORICAL_FEATURES]
    categorical = [name for name in order if name in common and name in CATEGORICAL_FEATURES]
    return numeric, categorical, excluded


# ----------------------------------------------------------------------------------------------------------
# Body pass: one file to cells, cells to rows kept or dropped with a reason.


@dataclass
class _Loaded:
    summary: FileSummary
    numeric: pd.DataFrame
    categorical: pd.DataFrame
    labels: pd.Series
    flow: pd.DataFrame
    timestamps: pd.Series


def _load_file(
    source: _Source,
    numeric: Sequence[str],
    categorical: Sequence[str],
    label_map: Mapping[str, str],
    limit: int | None,
) -> _Loaded:
    try:
        table = read_table(source.path, limit)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source.path}: cannot read: {exc}") from None
    except csv.Error as exc:  # e.g. a quote that is never closed
        raise DataError(f"{source.path}: not a readable CSV: {str(exc).strip()}") from None
    cells = _cells(table.records, len(source.names))
    # The trainer drops short and long rows alike: both are rows it cannot align with the header.
    wrong_width = table.malformed[SHORT_ROW] + table.malformed[LONG_ROW]
    structural = +Counter({BLANK_LINE: table.malformed[BLANK_LINE], WRONG_FIELD_COUNT: wrong_width})
    rows_read, encoding = table.rows_read, table.encoding
    reasons = pd.Series(None, index=cells.index, dtype=object)
    _mark(reasons, _repeated_headers(cells, source), REPEATED_HEADER)
    labels, renamed_by = _labels(cells, source, label_map, rows=reasons.isna())
    _mark(reasons, labels.isna(), MISSING_LABEL)
    values = _parse_features(cells, source, numeric, reasons)

    kept = reasons.isna()
    dropped = Counter(structural) + Counter(reasons[~kept].value_counts().to_dict())
    summary = FileSummary(
        path=source.path,
        family=source.family,
        encoding=encoding,
        label_column=source.plan.label or "",
        flag_column=source.plan.secondary_labels[0] if source.plan.secondary_labels else None,
        rows_read=rows_read,
        rows_kept=int(kept.sum()),
        dropped=dict(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
        features=tuple(source.plan.features),
        unknown_columns=source.plan.unknown,
        duplicate_columns=source.plan.duplicates,
        conflicting_duplicates=_conflicting_duplicates(cells, source, values, kept.to_numpy()),
        converted={name: col.scale for name, col in source.plan.features.items() if col.scale != 1.0},
        relabelled={str(key): int(n) for key, n in renamed_by[kept].value_counts().items()},
    )
    if summary.rows_kept == 0:
        raise DataError(f"{source.path}: no usable rows ({rows_read} read, dropped: {_reasons_text(dropped)})")
    values = values[kept.to_numpy()].reset_index(drop=True)
    summary.nonfinite_rows = int((~np.isfinite(values.to_numpy())).any(axis=1).sum()) if len(values.columns) else 0
    flow = _flow_frame(cells[kept], source)
    return _Loaded(
        summary=summary,
        numeric=values,
        categorical=_categories(cells[kept], source, categorical),
        labels=labels[kept].reset_index(drop=True).astype(str),
        flow=flow,
        timestamps=parse_timestamps(flow["timestamp"]),
    )


def _cells(records: list[list[str]], width: int) -> pd.DataFrame:
    """The usable records as a frame of string cells, columns numbered 0..width-1."""
    if not records:
        return pd.DataFrame({i: pd.Series([], dtype=str) for i in range(width)})
    return pd.DataFrame(records, columns=list(range(width)), dtype=str)


def _mark(reasons: pd.Series, mask: pd.Series | np.ndarray, reason: str) -> None:
    """Give ``reason`` to the rows in ``mask`` that have no reason yet (the first reason wins)."""
    reasons[np.asarray(mask) & reasons.isna().to_numpy()] = reason


# ---- rows that are not flows


def _repeated_headers(cells: pd.DataFrame, source: _Source) -> np.ndarray:
    """Rows that repeat the header line (files concatenated with ``cat``, each with its byte-order mark)."""
    label_at = source.position(source.plan.label or "")
    names = [name.strip(_HEADER_PADDING) for name in source.names]
    candidates = cells[label_at].str.strip(_HEADER_PADDING) == names[label_at]
    if not candidates.any():
        return np.zeros(len(cells), dtype=bool)
    same = cells[candidates].apply(lambda column: column.str.strip(_HEADER_PADDING) == names[column.name])
    mask = candidates.copy()
    mask[candidates] = same.all(axis=1)
    return mask.to_numpy()


def _labels(
    cells: pd.DataFrame, source: _Source, label_map: Mapping[str, str], *, rows: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """Normalised class per row (None where a row has none), resolved like the stream decoder does, and
    the label-map key that renamed each row (None where none did). ``rows`` marks the rows that are flows
    (not repeated headers): only their labels decide whether ``0``/``1`` are flags."""
    plan = source.plan
    raw = cells[source.position(plan.label or "")]
    flags = cells[source.position(plan.secondary_labels[0])] if plan.secondary_labels else None
    codes_are_flags = _only_flags(raw[rows])
    pairs = zip(raw, flags if flags is not None else itertools.repeat(None), strict=False)
    resolved: dict[tuple[str, str | None], tuple[str | None, str | None]] = {}
    out, keys = [], []
    for pair in pairs:
        if pair not in resolved:
            label = resolve_label(*pair, codes_are_flags=codes_are_flags)
            key = label if label is not None and label in label_map else None
            resolved[pair] = (label if label is None else apply_label_map(label, label_map), key)
        label, key = resolved[pair]
        out.append(label)
        keys.append(key)
    return pd.Series(out, index=cells.index, dtype=object), pd.Series(keys, index=cells.index, dtype=object)


def _only_flags(raw: pd.Series) -> bool:
    """Whether a label column that holds ``0``/``1`` is a benign/attack flag: only when no other value is in
    it. Integer-coded classes (``0`` … ``3``) keep their codes, to be named with ``--label-map``."""
    values = {value for value in (normalize_label(text) for text in raw.unique()) if value and value.lower() != "nan"}
    return values <= _FLAG_CODES


# ---- numbers


def _parse_features(cells: pd.DataFrame, source: _Source, numeric: Sequence[str], reasons: pd.Series) -> pd.DataFrame:
    """Numeric features of every row as float64; marks rows with text in a feature (first in file order)."""
    pending = reasons.isna().to_numpy()
    by_position = sorted(numeric, key=lambda name: source.position(source.plan.features[name].source))
    values: dict[str, np.ndarray] = {}
    for name in by_position:
        column = source.plan.features[name]
        parsed, bad = parse_cells(cells[source.position(column.source)].to_numpy(dtype=object), pending)
        values[name] = parsed * column.scale if column.scale != 1.0 else parsed
        if bad.any():
            _mark(reasons, bad, TEXT_IN_NUMERIC.format(feature=name))
            pending = pending & ~bad
    return pd.DataFrame({name: values[name] for name in numeric}, index=cells.index, columns=list(numeric))


def _conflicting_duplicates(
    cells: pd.DataFrame, source: _Source, values: pd.DataFrame, kept: np.ndarray
) -> dict[str, int]:
    """``{duplicate column: kept rows where its number differs from the feature's}`` for each duplicate of a
    feature in use (position ``i`` of the plan's columns is cell column ``i``)."""
    conflicts: dict[str, int] = {}
    for position, column in enumerate(source.plan.columns):
        if column.role is not Role.IGNORED or column.canonical not in values.columns:
            continue
        used = source.plan.features[column.canonical]
        parsed, _ = parse_cells(cells[position].to_numpy(dtype=object), kept)
        own = values[column.canonical].to_numpy() / used.scale
        differ = kept & ~((parsed == own) | (np.isnan(parsed) & np.isnan(own)))
        if differ.any():
            conflicts[f"{column.source} (column {position + 1})"] = int(differ.sum())
    return conflicts


def parse_cells(cells: np.ndarray, wanted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse string cells exactly as :func:`detector.core.values.parse_number` parses each one.

    Returns the float64 values (NaN where a cell is not a number) and a mask of the cells that are not
    numbers. Only cells where ``wanted`` is true are parsed (others come back as NaN, never bad); this keeps
    rows already dropped, such as repeated headers, from pushing a whole column onto the slow path.

    The fast path is numpy's object-to-float cast, which calls Python's ``float`` on each string, exactly
    what ``parse_number`` falls back to after its token table (whose entries ``float`` reads identically,
    or rejects). The rest — empty cells, ``null``, hex, text — go through ``parse_number`` one by one.
    """
    cells = np.asarray(cells, dtype=object)
    if wanted is None:
        wanted = np.ones(len(cells), dtype=bool)
    out = np.full(len(cells), np.nan)
    try:
        out[wanted] = cells[wanted].astype(np.float64)
        return out, np.zeros(len(cells), dtype=bool)
    except (ValueError, TypeError):
        pass
    bad = np.zeros(len(cells), dtype=bool)
    for i in np.flatnonzero(wanted):
        try:
            out[i] = parse_number(cells[i])
        except ValueError:
            bad[i] = True
    return out, bad


# ---- categories, identity, time


def _categories(cells: pd.DataFrame, source: _Source, categorical: Sequence[str]) -> pd.DataFrame:
    """Category cells stripped, as the stream decoder strips them."""
    columns = {
        name: cells[source.position(source.plan.features[name].source)].str.strip().reset_index(drop=True)
        for name in categorical
    }
    return pd.DataFrame(columns, index=pd.RangeIndex(len(cells)), columns=list(categorical)).astype(str)


def _flow_frame(cells: pd.DataFrame, source: _Source) -> pd.DataFrame:
    """The flow identity cells as written, under :data:`FLOW_FIELDS` names (NaN where the file has none)."""
    columns = {}
    for name in FLOW_FIELDS:
        column = source.plan.flow_fields.get(name)
        if column is None:
            columns[name] = pd.Series(np.nan, index=range(len(cells)), dtype=str)
        else:
            columns[name] = cells[source.position(column)].reset_index(drop=True)
    return pd.DataFrame(columns)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Flow timestamps as naive UTC ``datetime64[ns]``; NaT where a cell is empty or unreadable.

    The rules are :func:`detector.core.flowtime.flow_time`'s, the very ones replay and scoring use (ISO 8601,
    day-first slashed dates unless the day comes second, epoch seconds/ms/µs/ns by size); times are kept
    to the microsecond.
    """
    seconds = flow_times(values.tolist())
    micros = np.round(seconds * 1e6)
    in_range = np.abs(micros) < _NS_RANGE_SECONDS * 1e6
    micros = np.where(in_range, micros, np.nan)
    return pd.Series(pd.to_datetime(micros, unit="us"), dtype="datetime64[ns]").reset_index(drop=True)


# ---- putting files together


def _combine(
    loaded: Sequence[_Loaded], numeric: Sequence[str], categorical: Sequence[str], excluded: dict[str, str]
) -> FlowTable:
    dropped: Counter[str] = Counter()
    for part in loaded:
        dropped.update(part.summary.dropped)
    source = pd.Series(
        np.concatenate([np.repeat(part.summary.path.name, len(part.labels)) for part in loaded]), dtype=str
    )
    return FlowTable(
        numeric=_concat([part.numeric for part in loaded]).astype(np.float64)[list(numeric)],
        categorical=_concat([part.categorical for part in loaded])[list(categorical)],
        labels=_concat([part.labels for part in loaded]).astype(str).rename("label"),
        flow=_concat([part.flow for part in loaded]),
        timestamps=_concat([part.timestamps for part in loaded]).rename("timestamp"),
        source=source.rename("source"),
        dropped=dict(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
        nonfinite_rows=sum(part.summary.nonfinite_rows for part in loaded),
        files=[part.summary for part in loaded],
        excluded_features=excluded,
    )


def _concat(parts):
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------
# Small helpers


def _normalize_map(label_map: Mapping[str, str], origin: str = "label map") -> dict[str, str]:
    """The map with keys and values in their canonical spelling. Two spellings of one class mapped to
    different names would leave the result to the entries' order: an error naming both."""
    normalized: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for key, value in label_map.items():
        label, target = normalize_label(key), normalize_label(value)
        if not label or not target:
            raise DataError(f"{origin}: empty label in entry {key!r}")
        if label in normalized and normalized[label] != target:
            raise DataError(
                f"{origin}: entries {spelled[label]!r} and {key!r} are one class ({label!r}) "
                f"mapped to {normalized[label]!r} and {target!r}"
            )
        normalized[label], spelled[label] = target, key
    return normalized


def _shown(names: Iterable[str], limit: int = _MAX_NAMES_SHOWN, *, quote: bool = True) -> str:
    """A readable, bounded list of names for an error message."""
    names = list(names)
    text = ", ".join(repr(name) if quote else name for name in names[:limit])
    return text + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _reasons_text(dropped: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in dropped.items()) or "none"
