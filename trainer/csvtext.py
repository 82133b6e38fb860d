"""CSV files to text, and text to rows of string cells, counting the lines that are not well-formed records.

Flow CSVs are large and usually clean, so the common case must be fast: without quote characters a record
is a line, fields are counted with ``str.count`` and malformed lines are set aside before pandas' C parser
reads the rest. Quoted files (rare in flow data) go through Python's csv reader, which understands quoted
commas and newlines. Nothing here knows about flows: :mod:`trainer.load` decides what the cells mean.

Files are decoded as UTF-8, and any byte that is not valid UTF-8 as cp1252: the original CICIDS2017 CSVs
write the en dash of ``Web Attack – Brute Force`` as the cp1252 byte 0x96, and a file edited by hand may
hold both spellings. Decoding byte by byte keeps one class one class in such a file.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from pathlib import Path

import pandas as pd

from detector.core.csvfile import CP1252_FALLBACK, open_binary

#: Reasons for a line that is not a record, exactly as they appear in reports.
BLANK_LINE = "blank line"
WRONG_FIELD_COUNT = "wrong number of fields"


def decode(data: bytes) -> tuple[str, str]:
    """The text and its encoding: ``utf-8`` (a BOM is dropped), or ``cp1252`` when some bytes were not
    UTF-8 and were read as cp1252 (the rest of the text stays UTF-8)."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("utf-8-sig", errors=CP1252_FALLBACK), "cp1252"


def read_text(path: Path, limit: int | None = None) -> tuple[str, str]:
    """The file's text (header plus at most ``limit`` lines) and its encoding.

    Raises ``OSError``, ``EOFError`` or ``zlib.error`` for a file that cannot be read or unzipped.
    """
    with open_binary(path) as handle:
        data = handle.read() if limit is None else b"".join(itertools.islice(handle, limit + 1))
    return decode(data)


def split_records(text: str, n_fields: int) -> tuple[pd.DataFrame, Counter[str], int]:
    """Cells of the well-formed records after the header (str, columns 0..n-1), counts of the lines that are
    not records (:data:`BLANK_LINE`, :data:`WRONG_FIELD_COUNT`), and the number of lines read.

    Raises ``csv.Error`` (or pandas' ``ParserError``) for broken quoting, which no row count could describe.
    """
    if '"' in text:
        return _split_quoted(text, n_fields)
    return _split_plain(text, n_fields)


def no_cells(n_fields: int) -> pd.DataFrame:
    """An empty cell frame of ``n_fields`` string columns."""
    return pd.DataFrame({i: pd.Series([], dtype=str) for i in range(n_fields)})


def _split_plain(text: str, n_fields: int) -> tuple[pd.DataFrame, Counter[str], int]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    body = text.partition("\n")[2]
    lines = body.split("\n")
    if lines[-1] == "":  # the terminator of the last line, not a line
        lines.pop()
    expected = n_fields - 1
    counts = [line.count(",") for line in lines]
    malformed: Counter[str] = Counter()
    if any(count != expected for count in counts):
        good = []
        for line, count in zip(lines, counts, strict=True):
            if count == expected:
                good.append(line)
            else:
                malformed[BLANK_LINE if not line.strip() else WRONG_FIELD_COUNT] += 1
        body = "\n".join(good)
    cells = _read_cells(body, n_fields) if len(lines) > sum(malformed.values()) else no_cells(n_fields)
    return cells, malformed, len(lines)


def _split_quoted(text: str, n_fields: int) -> tuple[pd.DataFrame, Counter[str], int]:
    """Like :func:`_split_plain` for text with quotes, through Python's csv reader in strict mode.

    Strict, because a stray quote would otherwise swallow every line up to the next quote into one field.
    """
    records = csv.reader(io.StringIO(text), strict=True)
    malformed: Counter[str] = Counter()
    good: list[list[str]] = []
    rows_read = 0
    last_line = 0  # where the last complete record ended: the failing one starts on the next line
    try:
        next(records)  # the header, already read
        for record in records:
            last_line = records.line_num
            rows_read += 1
            if len(record) == n_fields:
                good.append(record)
            elif not record or (len(record) == 1 and not record[0].strip()):
                malformed[BLANK_LINE] += 1
            else:
                malformed[WRONG_FIELD_COUNT] += 1
    except csv.Error as exc:
        start = max(last_line, 1) + 1
        where = f"line {start}" if start >= records.line_num else f"the record that starts on line {start}"
        hint = " (a quote there that is never closed?)" if "field limit" in str(exc) else ""
        raise csv.Error(f"{where}: {exc}{hint}") from None
    cells = pd.DataFrame(good, columns=list(range(n_fields)), dtype=str) if good else no_cells(n_fields)
    return cells, malformed, rows_read


def _read_cells(body: str, n_fields: int) -> pd.DataFrame:
    """Cells of lines already known to hold ``n_fields`` fields each and no quotes, as strings."""
    return pd.read_csv(
        io.StringIO(body),
        header=None,
        names=list(range(n_fields)),
        index_col=False,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        skip_blank_lines=False,
        quoting=csv.QUOTE_NONE,
        engine="c",
    )
