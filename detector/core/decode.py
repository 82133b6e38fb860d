"""Turning one flow record (JSON bytes or a CSV row) into the numbers a bundle's preprocessing needs.

A flow record is a flat JSON object written by a flow meter, in any dialect that
:mod:`detector.core.features` knows, e.g. ``{"Dst Port": 80, "Flow Duration": 1234, ...}`` or the Python
``cicflowmeter``'s ``{"dst_port": 80, "flow_duration": 0.001234, ...}``. It may carry
``"schema_version": 1`` and, when replayed with labels, the dataset's label column.

Anything that cannot be scored becomes a :class:`Rejected` with a machine-readable ``code`` and a
human reason, never an exception: the worker routes it to the dead-letter topic and moves on.
Records from one producer share their key set, so the column plan is computed once per key set, and
:meth:`FlowDecoder.decode_many` (the worker's batch) parses records of the key set it saw last straight into
the bundle's values (:mod:`detector.core.recordshape`); every record that path is not sure of is decoded one
field at a time as :meth:`FlowDecoder.decode_bytes` does, so both give the same flows and the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from detector.core.features import ColumnPlan, resolve_columns
from detector.core.jsonrecords import NotARecord, parse_record
from detector.core.labels import resolve_label
from detector.core.recordshape import RecordShape
from detector.core.values import parse_number

RECORD_SCHEMA_VERSION = 1
DEFAULT_MAX_RECORD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DecodedFlow:
    """One scoreable flow: raw numeric values in the bundle's order, categories, identity, label."""

    numeric: np.ndarray
    categorical: tuple[str, ...]
    flow: dict[str, Any]
    label: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that cannot be scored. ``code`` is stable (for metrics); ``reason`` is for people."""

    code: str
    reason: str


class FlowDecoder:
    """Decodes records for one bundle's feature list. Thread-compatible, not thread-safe."""

    def __init__(
        self,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        *,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.numeric = tuple(numeric)
        self.categorical = tuple(categorical)
        self.max_record_bytes = max_record_bytes
        self._shape: RecordShape | None = None
        self._shapes: dict[frozenset[str], RecordShape | None] = {}  # built (or found unfit) per key set

    def decode_many(self, values: Sequence[bytes | None]) -> list[DecodedFlow | Rejected]:
        """Decode a batch of message values: the same results as :meth:`decode_bytes` on each, faster.

        Records of the key set last seen are parsed by its :class:`RecordShape` and their numeric values become
        one matrix (each flow's ``numeric`` is a row of it); the others, and whatever the shape refuses, take
        the careful path. When most of a batch took the careful path for one new key set, the next batch
        gets a shape for that one."""
        results: list[DecodedFlow | Rejected | None] = [None] * len(values)
        fast: list[tuple[int, tuple[str, ...], dict[str, Any], str | None]] = []
        rows: list[tuple[Any, ...]] = []
        newcomer: tuple[str, ...] | None = None
        careful = 0
        shape, limit = self._shape, self.max_record_bytes
        for index, raw in enumerate(values):
            parsed = shape.parse(raw) if shape is not None and raw and len(raw) <= limit else None
            if parsed is not None:
                rows.append(parsed[0])
                fast.append((index, parsed[1], parsed[2], parsed[3]))
                continue
            careful += 1
            result, keys = self._careful(raw)
            results[index] = result
            if keys is not None and type(result) is DecodedFlow:
                newcomer = keys
        if fast:
            assert shape is not None
            matrix = shape.matrix(rows)
            for row, (index, categorical, flow, label) in enumerate(fast):
                results[index] = DecodedFlow(matrix[row], categorical, flow, label)
        if newcomer is not None and 2 * careful > len(values):
            self._learn(newcomer)
        return results  # type: ignore[return-value]

    def decode_bytes(self, raw: bytes | None) -> DecodedFlow | Rejected:
        """Decode one Kafka message value."""
        if raw is None:
            return Rejected("empty", "message has no value (tombstone)")
        if not raw:
            return Rejected("empty", "message value is empty (0 bytes)")
        record = parse_record(raw, self.max_record_bytes)
        if isinstance(record, NotARecord):
            return Rejected(record.code, record.reason)
        try:
            return self.decode_mapping(record)
        except Exception as exc:  # a decoder bug must not turn one record into a poison pill for every worker
            return Rejected("decoder_error", f"the decoder failed on this record: {type(exc).__name__}: {exc}")

    def _careful(self, raw: bytes | None) -> tuple[DecodedFlow | Rejected, tuple[str, ...] | None]:
        """:meth:`decode_bytes`, and the record's keys when it was an object."""
        if not raw:
            return self.decode_bytes(raw), None
        record = parse_record(raw, self.max_record_bytes)
        if isinstance(record, NotARecord):
            return Rejected(record.code, record.reason), None
        try:
            return self.decode_mapping(record), tuple(record)
        except Exception as exc:  # as in decode_bytes
            return Rejected("decoder_error", f"the decoder failed on this record: {type(exc).__name__}: {exc}"), None

    def _learn(self, keys: tuple[str, ...]) -> None:
        """Take the fast path for ``keys`` from now on, built once per key set (two producers taking turns
        cost a lookup); a key set whose plan cannot have one keeps the current one."""
        key_set = frozenset(keys)
        if key_set not in self._shapes:
            if len(self._shapes) >= 64:
                self._shapes.clear()
            try:
                self._shapes[key_set] = RecordShape(keys, self.numeric, self.categorical)
            except ValueError:
                self._shapes[key_set] = None
        self._shape = self._shapes[key_set] or self._shape

    def decode_mapping(self, record: Mapping[str, Any]) -> DecodedFlow | Rejected:
        """Decode one record already parsed into a mapping (a JSON object or a CSV row)."""
        version = record.get("schema_version", RECORD_SCHEMA_VERSION)
        if isinstance(version, bool) or version != RECORD_SCHEMA_VERSION:  # JSON true is not 1
            return Rejected(
                "schema_version",
                f"unsupported schema_version {version!r} (this detector reads {RECORD_SCHEMA_VERSION})",
            )
        plan = _plan(tuple(record))
        missing = [name for name in self.numeric + self.categorical if name not in plan.features]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            return Rejected("missing_features", f"missing {len(missing)} required feature(s): {shown}")

        numeric = np.empty(len(self.numeric), dtype=np.float64)
        for i, name in enumerate(self.numeric):
            column = plan.features[name]
            try:
                numeric[i] = parse_number(record[column.source]) * column.scale
            except ValueError as exc:
                return Rejected("wrong_type", f"feature {column.source!r}: {exc}")
        categories = []
        for name in self.categorical:
            source = plan.features[name].source
            if isinstance(record[source], dict | list | bool):
                return Rejected("wrong_type", f"feature {source!r} must be a category name")
            categories.append(_category(record[source]))
        categorical = tuple(categories)
        flow = {field: record[source] for field, source in plan.flow_fields.items()}
        for source in (*plan.flow_fields.values(), *([plan.label] if plan.label else []), *plan.secondary_labels):
            if isinstance(record.get(source), dict | list):
                return Rejected("wrong_type", f"field {source!r} must be a string or a number, not a JSON container")
        label = None
        if plan.label is not None:
            flag = record.get(plan.secondary_labels[0]) if plan.secondary_labels else None
            label = resolve_label(record[plan.label], flag)
        return DecodedFlow(numeric, categorical, flow, label)


def _category(value: Any) -> str:
    return "" if value is None else str(value).strip()


@lru_cache(maxsize=256)
def _plan(keys: tuple[str, ...]) -> ColumnPlan:
    return resolve_columns(keys)
