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

_FALLBACK = "flowwarden-cp1252-fallback"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chunk = error.object[error.start : error.end]
    return bytes(chunk).decode("cp1252", errors="replace"), error.end


codecs.register_error(_FALLBACK, _cp1252_fallback)


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
    with _open_text(Path(path)) as handle:
        header = next(csv.reader(handle), None)
    return _unique_names(header) if header else []


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb")  # noqa: SIM115 - returned open
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=_FALLBACK, newline="")


def _unique_names(header: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for name in header:
        count = seen.get(name, 0)
        names.append(name if count == 0 else f"{name}.{count}")
        seen[name] = count + 1
    return names
