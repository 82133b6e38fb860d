"""Flow records as JSON: one record's bytes, and NDJSON (one record per line) from a file, a stream or a body.

A flow record on the wire is one JSON object (``schemas/flow-record.schema.json``). The worker reads one per
Kafka message, ``detector ingest`` one per POST or one per line of an NDJSON batch, ``detector score`` one per
line of a ``.ndjson``/``.jsonl`` file. They all decide what is a record here, with the same codes the
worker gives its dead letters:

* ``empty``: no bytes (a line of blanks in NDJSON is skipped instead: NDJSON writers end with a newline);
* ``oversized``: more bytes than the caller's limit;
* ``not_json``: not valid JSON (a UTF-8 byte-order mark is dropped first; JSON has none, some writers add it);
* ``not_object``: valid JSON but not an object (an array, a number, a string, ``null``).

NDJSON lines end in LF or CRLF; lines are numbered from 1 as an editor numbers them, blank lines included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from detector.core.csvfile import open_binary

UTF8_BOM = b"\xef\xbb\xbf"
#: File names read as NDJSON (plain or gzip): everything else is read as CSV.
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")


@dataclass(frozen=True, slots=True)
class NotARecord:
    """Bytes that are not a flow record. ``code`` is one of the module's codes; ``reason`` is for people."""

    code: str
    reason: str


def parse_record(raw: bytes, max_bytes: int | None = None) -> dict[str, Any] | NotARecord:
    """One JSON object from ``raw``, or why ``raw`` is not one."""
    if not raw:
        return NotARecord("empty", "no bytes: an empty record")
    if max_bytes is not None and len(raw) > max_bytes:
        return NotARecord("oversized", f"record is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        record = orjson.loads(raw.removeprefix(UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        return NotARecord("not_json", f"not valid JSON: {exc}")
    if not isinstance(record, dict):
        return NotARecord("not_object", f"a flow record must be a JSON object, got {_json_type(record)}")
    return record


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class Line:
    """One non-blank NDJSON line: its number (from 1), its bytes without the line end, and what it holds."""

    number: int
    raw: bytes
    record: dict[str, Any] | NotARecord


def parse_lines(lines: Iterable[bytes], max_bytes: int | None = None) -> Iterator[Line]:
    """Each non-blank line of ``lines`` (with or without their line ends) parsed as one record."""
    for number, data in enumerate(lines, start=1):
        raw = data.rstrip(b"\r\n")
        if number == 1:
            raw = raw.removeprefix(UTF8_BOM)
        if raw.strip():
            yield Line(number, raw, parse_record(raw, max_bytes))


def parse_body(body: bytes, max_bytes: int | None = None) -> list[Line]:
    """Every non-blank line of an NDJSON body (an HTTP request's), parsed."""
    return list(parse_lines(body.split(b"\n"), max_bytes))


def is_ndjson_name(path: Path) -> bool:
    """Whether the name says NDJSON, plain or gzip (``.ndjson``, ``.jsonl``, ``.gz`` after either; any case)."""
    return path.name.lower().endswith(NDJSON_SUFFIXES)


def read_ndjson(source: Path | BinaryIO, max_bytes: int | None = None) -> Iterator[Line]:
    """The lines of an NDJSON file (gunzipped when its name ends in ``.gz``) or of an open binary stream
    (standard input), parsed one at a time: files can be as large as a day of flows.

    Raises ``OSError``, ``EOFError`` or ``zlib.error`` when the file cannot be read or unzipped.
    """
    if isinstance(source, Path):
        with open_binary(source) as handle:
            yield from parse_lines(handle, max_bytes)
    else:
        yield from parse_lines(source, max_bytes)
