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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from detector.core.csvfile import CsvSourceError, is_csv_name, open_binary

UTF8_BOM = b"\xef\xbb\xbf"
#: File names read as NDJSON (plain or gzip): everything else is read as CSV.
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
#: The file name that means standard input.
STDIN = "-"


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


def numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(number, bytes)`` of each non-blank line of ``lines``, without its line end (a BOM on line 1 dropped)."""
    for number, data in enumerate(lines, start=1):
        raw = data.rstrip(b"\r\n")
        if number == 1:
            raw = raw.removeprefix(UTF8_BOM)
        if raw.strip():
            yield number, raw


def parse_lines(lines: Iterable[bytes], max_bytes: int | None = None) -> Iterator[Line]:
    """Each non-blank line of ``lines`` (with or without their line ends) parsed as one record."""
    for number, raw in numbered(lines):
        yield Line(number, raw, parse_record(raw, max_bytes))


def parse_body(body: bytes, max_bytes: int | None = None) -> list[Line]:
    """Every non-blank line of an NDJSON body (an HTTP request's), parsed."""
    return list(parse_lines(body.split(b"\n"), max_bytes))


def is_ndjson_name(path: Path) -> bool:
    """Whether the name says NDJSON, plain or gzip (``.ndjson``, ``.jsonl``, ``.gz`` after either; any case)."""
    return path.name.lower().endswith(NDJSON_SUFFIXES)


def ndjson_lines(source: Path | BinaryIO) -> Iterator[tuple[int, bytes]]:
    """``(number, bytes)`` of each non-blank line of an NDJSON file (gunzipped when its name ends in ``.gz``)
    or of an open binary stream (standard input), one at a time: files can be as large as a day of flows.
    For callers that decode the bytes themselves (the worker's decoder); :func:`read_ndjson` parses them.

    Raises ``OSError``, ``EOFError`` or ``zlib.error`` when the file cannot be read or unzipped.
    """
    if isinstance(source, Path):
        with open_binary(source) as handle:
            yield from numbered(handle)
    else:
        yield from numbered(source)


def read_ndjson(source: Path | BinaryIO, max_bytes: int | None = None) -> Iterator[Line]:
    """The lines of an NDJSON file or stream (see :func:`ndjson_lines`), each parsed as one record."""
    for number, raw in ndjson_lines(source):
        yield Line(number, raw, parse_record(raw, max_bytes))


def flow_files(paths: Sequence[str | Path]) -> list[Path]:
    """The flow files named by ``paths``: CSV (as :func:`~detector.core.csvfile.csv_files` takes them) and
    NDJSON, folders expanded (sorted by name, other files passed over), each file once; ``-`` (standard
    input) is kept where it stands. Raises :class:`~detector.core.csvfile.CsvSourceError`."""
    if not paths:
        raise CsvSourceError("no flow file given")
    files: list[Path] = []
    for path in map(Path, paths):
        if str(path) == STDIN:
            files.append(path)
        elif path.is_dir():
            found = sorted(child for child in path.iterdir() if child.is_file() and _is_flow_name(child))
            if not found:
                raise CsvSourceError(f"folder {path} holds no .csv, .csv.gz, .ndjson or .jsonl files")
            files.extend(found)
        elif not path.exists():
            raise CsvSourceError(f"{path} does not exist")
        elif not _is_flow_name(path):
            raise CsvSourceError(
                f"{path}: not a flow file (CSV: .csv, .csv.gz; NDJSON: .ndjson, .jsonl, plain or .gz; - for "
                "standard input)"
            )
        else:
            files.append(path)
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path if str(path) == STDIN else path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _is_flow_name(path: Path) -> bool:
    return is_csv_name(path) or is_ndjson_name(path)


def looks_like_ndjson(start: bytes) -> bool:
    """Whether a stream whose first bytes are ``start`` holds NDJSON (its first line opens a JSON object)
    rather than CSV (a header of column names)."""
    return start.removeprefix(UTF8_BOM).lstrip().startswith(b"{")
