"""Hostile input for property tests (hypothesis): arbitrary bytes, JSON values, flow records and CSV text.

Every input path of the detector and the trainer must end a record as a verdict/row or a typed rejection with a
reason, never an exception. These strategies generate what a broken flow meter, a fuzzer or an attacker could
send: raw bytes, any JSON value, records that look like flows but carry wrong types, NaN, huge numbers, nested
containers, unknown keys, and CSV text with odd quoting, line ends and cell counts.

:data:`HOSTILE` is the settings every property target runs under: at least 1,000 examples in ``make test``
(``FLOWWARDEN_PROPERTY_EXAMPLES`` raises it, for a longer hunt), no deadline (a shared CI machine is slow now and
then; wall-clock time is never asserted) and no example database written into the checkout.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.support.generated import FEATURES, METADATA, generated_rows

MIN_EXAMPLES = 1000
HOSTILE = settings(
    max_examples=max(MIN_EXAMPLES, int(os.environ.get("FLOWWARDEN_PROPERTY_EXAMPLES", MIN_EXAMPLES))),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


#: Scalars a JSON document can hold, and some a sloppy writer produces (NaN, ±inf, huge integers).
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "NaN", "Infinity", "-inf", "1e999", "0x50", "1_000", "٣", "80 ", "\x00", "nan"]),
)

#: Any JSON value (nested a little).
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)

_ROWS = generated_rows(0)[:20]
_COLUMNS = (*FEATURES, *METADATA, "Label")


@st.composite
def flow_like_records(draw: st.DrawFn) -> dict[str, Any]:
    """A generated flow record with some fields replaced by hostile values, some removed, some keys added."""
    record: dict[str, Any] = dict(draw(st.sampled_from(_ROWS)))
    for key in draw(st.lists(st.sampled_from(_COLUMNS), max_size=4, unique=True)):
        if draw(st.booleans()):
            record[key] = draw(json_values)
        else:
            record.pop(key, None)
    if draw(st.booleans()):
        record["schema_version"] = draw(scalars)
    record.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    return record


def to_json_bytes(value: Any) -> bytes:
    """``value`` as JSON text (NaN and ±inf as Python's json writes them: invalid JSON, as some writers do)."""
    return json.dumps(value).encode("utf-8")


#: One Kafka message value: raw bytes, any JSON value, or a flow-like record.
message_values = st.one_of(
    st.binary(max_size=200),
    json_values.map(to_json_bytes),
    flow_like_records().map(to_json_bytes),
    st.none(),
)

#: One CSV cell: a generated-looking number, text, or something odd.
csv_cells = st.one_of(
    st.sampled_from(["0", "1", "80", "6", "1.5e6", "-1", "", "NaN", "Infinity", "-inf", "0x1bb", "BENIGN"]),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)


@st.composite
def csv_texts(draw: st.DrawFn, header: Sequence[str] = _COLUMNS) -> bytes:
    """CSV text: mostly the generated header and rows of hostile cells (short, long, quoted, odd line ends),
    sometimes arbitrary text or bytes."""
    kind = draw(st.sampled_from(["rows", "rows", "rows", "text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "text":
        encoding = draw(st.sampled_from(["utf-8", "utf-16", "cp1252"]))
        return draw(st.text(max_size=300)).encode(encoding, errors="replace")
    columns = list(header)
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))
    if draw(st.integers(0, 4)) == 0:
        columns = columns[: draw(st.integers(0, len(columns)))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    writer.writerow(columns)
    base = draw(st.sampled_from(_ROWS))
    for _ in range(draw(st.integers(0, 6))):
        row = [str(base.get(column, "")) for column in columns]
        for index in draw(st.lists(st.integers(0, max(len(row) - 1, 0)), max_size=4)):
            if row:
                row[index] = draw(csv_cells)
        cut = draw(st.integers(0, 5))
        if cut == 1:
            row = row[: draw(st.integers(0, len(row)))]
        elif cut == 2:
            row = row + draw(st.lists(csv_cells, min_size=1, max_size=3))
        writer.writerow(row)
    text = buffer.getvalue()
    if draw(st.integers(0, 5)) == 0:
        text += draw(st.sampled_from(['"unclosed,quote\n', "\n\n", ",,,\n", "\x00\n", header[0] + "\n"]))
    return text.encode("utf-8")
