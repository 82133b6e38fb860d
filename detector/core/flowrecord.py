"""CSV rows as the JSON flow records a flow meter would send (``schemas/flow-record.schema.json``).

``detector replay`` publishes these records and ``detector score`` scores the very same records, so the
offline reference and the stream see identical input. The conversion is deliberately small:

* columns keep the names the file gives them (that is what a flow meter sends; the detector maps dialects);
* a cell that is a finite decimal number becomes a JSON number, so ``"80"`` → ``80`` and ``"1.5"`` → ``1.5``
  (the decoder parses both forms identically, so no feature value changes);
* ``Infinity``/``NaN``/hex and any other text stay strings: JSON has no infinity, and the decoder owns the
  documented rule for those tokens;
* an empty numeric cell becomes ``null`` (a missing value, as JSON spells it);
* flow ids, IP addresses, categorical features (UNSW-NB15 ``proto``/``service``/``state``) and label
  columns always stay text, as the schema types them;
* label columns are removed unless asked for: a real flow meter knows no ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from detector.core.features import CATEGORICAL_FEATURES, Role, resolve_columns
from detector.core.labels import resolve_label

_TEXT_FLOW_FIELDS = frozenset({"flow_id", "src_ip", "dst_ip"})
_KEY_FIELDS = ("src_ip", "dst_ip", "src_port", "dst_port", "protocol")
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class RecordLayout:
    """How to turn rows with one set of columns into records: which columns stay text, which to drop."""

    text_columns: frozenset[str]
    label_columns: tuple[str, ...]
    label: str | None
    secondary_label: str | None
    flow_fields: Mapping[str, str]

    @property
    def timestamp_column(self) -> str | None:
        return self.flow_fields.get("timestamp")


@lru_cache(maxsize=64)
def layout_for(columns: tuple[str, ...]) -> RecordLayout:
    """The layout of a table with these column names (cached: every row of a file shares it)."""
    plan = resolve_columns(columns)
    text = {c.source for c in plan.columns if c.role is Role.LABEL}
    text |= {c.source for c in plan.columns if c.canonical in CATEGORICAL_FEATURES}
    text |= {source for name, source in plan.flow_fields.items() if name in _TEXT_FLOW_FIELDS}
    return RecordLayout(
        text_columns=frozenset(text),
        label_columns=tuple(c.source for c in plan.columns if c.role is Role.LABEL),
        label=plan.label,
        secondary_label=plan.secondary_labels[0] if plan.secondary_labels else None,
        flow_fields=dict(plan.flow_fields),
    )


def cell_value(text: str) -> Any:
    """One CSV cell as a JSON value: an int or float when it is a finite number, else the text itself."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        number = int(stripped)
    except ValueError:
        pass
    else:
        # Beyond 64 bits JSON readers lose precision (orjson refuses): keep the exact text.
        return number if -_INT64 <= number < _INT64 else text
    try:
        value = float(stripped)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def to_record(row: Mapping[str, Any], layout: RecordLayout, *, with_labels: bool) -> dict[str, Any]:
    """The flow record for one CSV row (see the module docstring for the rules). Cells are text as a CSV
    reader gives them; a cell that is already a number or None (a DataFrame's) is kept as it is, and one in
    a text column becomes its text."""
    record: dict[str, Any] = {}
    for name, text in row.items():
        if name in layout.text_columns:
            if with_labels or name not in layout.label_columns:
                record[name] = text if text is None or isinstance(text, str) else str(text)
        else:
            record[name] = cell_value(text) if isinstance(text, str) else text
    return record


def row_label(row: Mapping[str, str], layout: RecordLayout) -> str | None:
    """The row's ground-truth class in its canonical spelling, or None when the table has no label."""
    if layout.label is None:
        return None
    flag = row.get(layout.secondary_label) if layout.secondary_label else None
    return resolve_label(row.get(layout.label), flag)


def record_key(row: Mapping[str, Any], layout: RecordLayout) -> bytes | None:
    """The Kafka key: the flow id when present, else the 5-tuple, else None (the partitioner spreads them).

    One flow's records share a key and so a partition, which keeps them in order. Without both addresses
    there is no flow identity to keep together (the original CICIDS2017 CSVs carry only the destination
    port), and keying by what is left would pile every flow to one port onto one partition.
    """
    flow_id = _text(row.get(layout.flow_fields.get("flow_id", "")))
    if flow_id:
        return flow_id.encode()
    parts = [_text(row.get(layout.flow_fields[f])) if f in layout.flow_fields else "" for f in _KEY_FIELDS]
    return "-".join(parts).encode() if parts[0] and parts[1] else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
