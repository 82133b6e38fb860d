"""The decoder's fast path: one producer's record shape, parsed straight into the values a bundle needs.

A flow meter writes every record with the same keys. For such a key set, :class:`RecordShape` builds a
``msgspec`` struct whose fields are exactly those keys, typed as the careful path
(:meth:`FlowDecoder.decode_mapping <detector.core.decode.FlowDecoder.decode_mapping>`) would accept them: a
numeric feature is a JSON number (``float``), an identity, label or category field a JSON scalar. ``msgspec``
then parses a record into it in one C-level step, without the dict of ~90 keys that ``orjson.loads`` builds,
and the feature values come out as one tuple per record, one ``float64`` matrix per batch.

The shape only says *yes* when the careful path would give the very same result; anything else (other keys,
a missing or extra key, text or ``null`` or ``true`` in a numeric field, a container, an integer beyond 64
bits, a ``schema_version`` other than 1, bytes that are not JSON) is ``None`` here, and the caller decodes
that record the careful way, which gives it its dead-letter reason. A shape is only built for a key set
whose :class:`~detector.core.features.ColumnPlan` does not depend on the order of the keys (no two keys
compete for one feature, identity field or label), since a struct matches keys by name, not position.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np

from detector.core.features import ColumnPlan, resolve_columns
from detector.core.labels import resolve_label

SCHEMA_VERSION_KEY = "schema_version"
# orjson reads an integer literal in this range as an int and any other as a float; msgspec reads every
# integer literal as an int. A value outside it in a field that keeps its JSON type (identity, label,
# category) sends the record the careful way, so that both paths always agree.
_SMALLEST_INT, _LARGEST_INT = -(2**63), 2**64 - 1
_SCALAR = str | int | float | bool | None
_CATEGORY = str | int | float | None
_LABEL_CACHE_SIZE = 4096


class RecordShape:
    """The fast decoding of one key set for one bundle's features; see the module docstring."""

    def __init__(self, keys: Sequence[str], numeric: Sequence[str], categorical: Sequence[str]) -> None:
        self.keys = frozenset(keys)
        keys = [key for key in keys if key != SCHEMA_VERSION_KEY]
        plan = _order_free_plan(keys)
        if plan is None:
            raise ValueError("the key set's column plan depends on the order of its keys")
        features = plan.features
        if any(name not in features for name in (*numeric, *categorical)):
            raise ValueError("the key set lacks features the bundle needs")
        numeric_sources = [features[name].source for name in numeric]
        self.scale = np.array([features[name].scale for name in numeric], dtype=np.float64)
        self.scaled = bool(np.any(self.scale != 1.0))
        self.width = len(numeric_sources)
        category_sources = [features[name].source for name in categorical]
        labels = [plan.label] if plan.label else []
        kept = [*plan.flow_fields.values(), *labels, *plan.secondary_labels]
        # struct fields: the numeric sources first (in the bundle's order), then every other key
        order = [*numeric_sources, *[key for key in keys if key not in numeric_sources]]
        position = {key: i for i, key in enumerate(order)}
        kept_set, category_set = set(kept), set(category_sources)
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for i, key in enumerate(order):
            if key in kept_set or (key in category_set and i < self.width):
                kind: Any = _SCALAR
            elif key in category_set:
                kind = _CATEGORY
            elif i < self.width:
                kind = float
            else:
                kind = _SCALAR  # read by no one: any scalar, as the careful path ignores it (not a container)
            fields.append((f"f{i}", kind))
        fields.append(("schema_version", _SCALAR, 1))
        rename = {f"f{i}": key for i, key in enumerate(order)}
        struct = msgspec.defstruct(
            "FlowRecord", fields, rename=rename, forbid_unknown_fields=True, gc=False, omit_defaults=False
        )
        self._decoder = msgspec.json.Decoder(struct)
        self._as_tuple = msgspec.structs.astuple
        # numeric fields typed as scalars (also an identity or a category field): checked per record
        self._loose_numeric = [i for i in range(self.width) if fields[i][1] is not float]
        self._kept = itemgetter(*[position[key] for key in kept], -1) if kept else None
        self._categories = [position[key] for key in category_sources]
        self._flow_names = tuple(plan.flow_fields)
        self._flow_count = len(plan.flow_fields)
        self._has_label = plan.label is not None
        self._has_flag = bool(plan.secondary_labels)
        self._labels: dict[tuple[str, Any], str | None] = {}

    def parse(self, raw: bytes) -> tuple[tuple[Any, ...], tuple[str, ...], dict[str, Any], str | None] | None:
        """``(numeric values, categories, flow fields, label)`` of one record, or None: decode it carefully."""
        try:
            values = self._as_tuple(self._decoder.decode(raw))
        except (msgspec.DecodeError, ValueError, RecursionError):  # ValueError: e.g. a string not in UTF-8
            return None
        for i in self._loose_numeric:
            value = values[i]
            if (type(value) is not float and type(value) is not int) or not _fits(value):
                return None
        kept = self._kept(values) if self._kept is not None else (values[-1],)
        version = kept[-1]
        if type(version) is not int or version != 1:
            return None  # 1.0 or a wrong version: the careful path decides
        if not all(map(_fits, kept)):
            return None
        categories: tuple[str, ...] = ()
        if self._categories:
            raw_categories = [values[i] for i in self._categories]
            if not all(map(_fits, raw_categories)) or any(type(value) is bool for value in raw_categories):
                return None
            categories = tuple("" if value is None else str(value).strip() for value in raw_categories)
        flow = dict(zip(self._flow_names, kept, strict=False))
        label = None
        if self._has_label:
            raw_label = kept[self._flow_count]
            flag = kept[self._flow_count + 1] if self._has_flag else None
            label = self._label(raw_label, flag)
        return values[: self.width], categories, flow, label

    def matrix(self, rows: Sequence[tuple[Any, ...]]) -> np.ndarray:
        """The numeric values of ``rows`` (from :meth:`parse`) as one ``float64`` matrix, scaled as the plan says."""
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), self.width)
        return matrix * self.scale if self.scaled else matrix

    def _label(self, raw: Any, flag: Any) -> str | None:
        if type(raw) is not str or (flag is not None and type(flag) is not str):
            return resolve_label(raw, flag)
        key = (raw, flag)
        if key in self._labels:
            return self._labels[key]
        if len(self._labels) >= _LABEL_CACHE_SIZE:
            self._labels.clear()
        label = self._labels[key] = resolve_label(raw, flag)
        return label


def _fits(value: object) -> bool:
    """Whether orjson would read ``value`` as msgspec did (an integer beyond 64 bits: orjson gives a float)."""
    return type(value) is not int or _SMALLEST_INT <= value <= _LARGEST_INT


def _order_free_plan(keys: Sequence[str]) -> ColumnPlan | None:
    """The keys' column plan when reading them in the opposite order gives the same one, else None.

    Where two keys compete for one feature, identity field or label, the first one wins: reversed, the other
    would. Equal plans both ways mean that no key competes, so any order of these keys gives this plan."""
    plan = resolve_columns(keys)
    others = (resolve_columns(list(reversed(keys))), resolve_columns([*keys, SCHEMA_VERSION_KEY]))
    return plan if all(_used(other) == _used(plan) for other in others) else None


def _used(plan: ColumnPlan) -> tuple[object, ...]:
    """What of a plan the decoder reads (several secondary labels in another order: another plan)."""
    features = {name: (column.source, column.scale) for name, column in plan.features.items()}
    return features, plan.flow_fields, plan.label, plan.secondary_labels
