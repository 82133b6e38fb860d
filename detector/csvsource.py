"""Reading flow CSVs row by row with the standard library (the detector image carries no pandas).

``detector replay`` and ``detector score`` stream rows from files that can be gigabytes long, so rows
are yielded one at a time as ``{column: text}``. The original CICIDS2017 files are cp1252 (their web
attack labels hold byte 0x96) while newer files are UTF-8: bytes that are not valid UTF-8 are decoded
as cp1252, so both read without error. A repeated column name (``Fwd Header Length`` in the original
CICIDS2017) gets a ``.1`` suffix, as pandas does, instead of overwriting the first.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

#: A codec error handler: bytes that are not valid UTF-8 are read as cp1252 (``bytes.decode(errors=...)``).
CP1252_FALLBACK = "flowwarden-cp1252-fallback"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chunk = error.object[error.start : error.end]
    return bytes(chunk).decode("cp1252", errors="replace"), error.end


codecs.register_error(CP1252_FALLBACK, _cp1252_fallback)


def not_csv_text(start: bytes, name: str) -> str | None:
    """Why a file whose (decompressed) first bytes are ``start`` is not CSV text, or None if it may be.

    Names the usual mistakes: a gzip file without ``.gz`` in its name, UTF-16 text, binary data (a pcap).
    """
    if start.startswith(b"\x1f\x8b"):
        return f"the file is gzip-compressed; name it {name}.gz (or gunzip it)"
    if start.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "the file is UTF-16 text; save it as UTF-8 (or ASCII) CSV"
    if b"\x00" in start:
        return "NUL bytes at the start: binary data (a pcap?) or UTF-16 text, not UTF-8 CSV text"
    return None


class CsvSourceError(ValueError):
    """A path that holds no readable CSV."""


def csv_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into the CSV files they hold (``.csv``, ``.csv.gz``), sorted per folder."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith((".csv", ".csv.gz")))
            if not found:
                raise CsvSourceError(f"folder {path} holds no .csv or .csv.gz files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise CsvSourceError(f"{path} does not exist")
    return files


def read_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """Yield each data row of one CSV (plain or gzip) as ``{column: text}``; blank lines are skipped."""
    with _open_text(Path(path)) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        names = _unique_names(header)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            yield dict(zip(names, cells, strict=False))


def read_header(path: str | Path) -> list[str]:
    """The column names of one CSV as :func:`read_rows` keys them (empty for an empty file).

    A row with fewer cells than this header arrives from :func:`read_rows` with fewer keys: callers that
    must not pass a truncated row on (replay, scoring) compare against it.
    """
    source = Path(path)
    with _open_binary(source) as raw:
        problem = not_csv_text(raw.read(4096), source.name)
    if problem:
        raise CsvSourceError(f"{source}: {problem}")
    with _open_text(source) as handle:
        header = next(csv.reader(handle), None)
    return _unique_names(header) if header else []


def _open_binary(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")


def _open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", errors=CP1252_FALLBACK, newline="")


def _unique_names(header: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for name in header:
        count = seen.get(name, 0)
        names.append(name if count == 0 else f"{name}.{count}")
        seen[name] = count + 1
    return names
