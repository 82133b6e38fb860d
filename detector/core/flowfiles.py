"""Flow files read row by row and decoded for one bundle, exactly as ``detector score`` reads them.

A CSV row goes the way a replayed record goes through a worker: the record conversion of ``detector replay``
(:mod:`detector.core.flowrecord`), then :meth:`FlowDecoder.decode_mapping`. An NDJSON line (``.ndjson``,
``.jsonl``, plain or ``.gz``) goes the way a Kafka message does, :meth:`FlowDecoder.decode_bytes`. ``-`` reads
standard input, NDJSON when its first line opens a JSON object, else CSV. A row that cannot be decoded comes
back as a :class:`Rejected` with its reason, never dropped: ``detector score``, ``detector drift`` and
``trainer adapt`` count them.
"""

from __future__ import annotations

import csv
import io
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from detector.core.csvfile import EXTRA_CELLS, CsvReader
from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from detector.core.flowrecord import layout_for, to_record
from detector.core.jsonrecords import STDIN, is_ndjson_name, looks_like_ndjson, ndjson_lines

SNIFF_BYTES = 4096  # of standard input, to tell NDJSON (a line opening a JSON object) from CSV (a header)


@dataclass(frozen=True, slots=True)
class DecodedRow:
    """One input row: where it came from, and what decoding it gave."""

    source: dict[str, Any]
    outcome: DecodedFlow | Rejected


def decoded_rows(
    files: list[Path], decoder: FlowDecoder, stdin: io.BufferedReader | None = None
) -> Iterator[DecodedRow]:
    """Every row of ``files`` (``-``: ``stdin``, default standard input) decoded by ``decoder``, in order, each with
    its ``source`` (file and row or line): a :class:`DecodedFlow`, or a :class:`Rejected` that says why not."""
    for path in files:
        if str(path) == STDIN:
            stream = stdin if stdin is not None else cast(io.BufferedReader, sys.stdin.buffer)
            if looks_like_ndjson(stream.peek(SNIFF_BYTES)):
                yield from _ndjson_rows(stream, STDIN, decoder)
            else:
                yield from _csv_rows(stream, STDIN, decoder)
        elif is_ndjson_name(path):
            yield from _ndjson_rows(path, str(path), decoder)
        else:
            yield from _csv_rows(path, str(path), decoder)


def _csv_rows(source: Path | BinaryIO, name: str, decoder: FlowDecoder) -> Iterator[DecodedRow]:
    number = 0
    try:
        with CsvReader(source) as reader:
            header = reader.header
            if not header:
                return
            layout = layout_for(tuple(header))
            for number, row in enumerate(reader.rows(), start=1):
                where = {"file": name, "row": number}
                if len(row) < len(header):
                    reason = f"row has {len(row)} of the header's {len(header)} cells"
                    yield DecodedRow(where, Rejected("short_row", reason))
                    continue
                if EXTRA_CELLS in row:
                    reason = f"row has cells beyond the header's {len(header)}: {row[EXTRA_CELLS][:80]!r}"
                    yield DecodedRow(where, Rejected("long_row", reason))
                    continue
                record = to_record(row, layout, with_labels=True)
                yield DecodedRow(where, decoder.decode_mapping(record))
    except (csv.Error, OSError, EOFError, UnicodeError, zlib.error) as exc:
        yield DecodedRow({"file": name, "row": number + 1}, Rejected("unreadable", f"file breaks off: {exc}"))


def _ndjson_rows(source: Path | BinaryIO, name: str, decoder: FlowDecoder) -> Iterator[DecodedRow]:
    """Each line goes the worker's way from the bytes of a Kafka message: ``decode_bytes``, size limit included."""
    number = 0
    try:
        for number, raw in ndjson_lines(source):
            yield DecodedRow({"file": name, "line": number}, decoder.decode_bytes(raw))
    except (OSError, EOFError, zlib.error) as exc:
        yield DecodedRow({"file": name, "line": number + 1}, Rejected("unreadable", f"file breaks off: {exc}"))
