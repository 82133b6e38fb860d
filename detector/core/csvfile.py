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
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

#: A codec error handler: bytes that are not valid UTF-8 are read as cp1252 (``bytes.decode(errors=...)``).
CP1252_FALLBACK = "flowwarden-cp1252-fallback"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    chunk = error.object[error.start : error.end]
    return bytes(chunk).decode("cp1252", errors="replace"), error.end


codecs.register_error(CP1252_FALLBACK, _cp1252_fallback)

#: The key under which :func:`read_rows` puts the cells a row has beyond its header (only when one of them
#: is not blank: trailing commas are harmless). Callers compare ``len(row)`` with the header to find them.
EXTRA_CELLS = "\x00extra cells"

# Python's csv module refuses a field over 128 KiB and stops reading the file there, which would silently
# end a replay at the first long cell. 16 MiB still stops an unclosed quote from swallowing a whole file.
FIELD_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))


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


def is_csv_name(path: Path) -> bool:
    """Whether the name says CSV text, plain or gzip (``.csv``, ``.csv.gz``, any case)."""
    return path.name.lower().endswith((".csv", ".csv.gz"))


def csv_files(paths: Sequence[str | Path]) -> list[Path]:
    """The CSV files named by ``paths``: files as given, folders expanded (sorted by name), each file once.

    Shared by the trainer and the detector so that both read the same files from the same arguments. A
    named file must have a CSV name (a pcap or a parquet file gets a precise refusal, not a parse error);
    in a folder, other files are passed over.
    """
    if not paths:
        raise CsvSourceError("no CSV path given")
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(child for child in path.iterdir() if child.is_file() and is_csv_name(child))
            if not found:
                raise CsvSourceError(f"folder {path} holds no .csv or .csv.gz files")
            files.extend(found)
        elif not path.exists():
            raise CsvSourceError(f"{path} does not exist")
        elif not is_csv_name(path):
            raise CsvSourceError(f"{path}: not a .csv or .csv.gz file (flows are read from CSV text, plain or gzip)")
        else:
            files.append(path)
    return _each_once(files)


def _each_once(files: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def read_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """Yield each data row of one CSV (plain or gzip) as ``{column: text}``; blank lines are skipped.

    A row with fewer cells than the header has fewer keys; one with more (not blank) cells has the extra
    ones joined under :data:`EXTRA_CELLS`. Either way ``len(row)`` differs from the header's length.
    """
    with _open_text(Path(path)) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        names = _unique_names(header)
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            row = dict(zip(names, cells, strict=False))
            extra = cells[len(names) :]
            if any(cell.strip() for cell in extra):
                row[EXTRA_CELLS] = ",".join(extra)
            yield row


def read_header(path: str | Path) -> list[str]:
    """The column names of one CSV as :func:`read_rows` keys them (empty for an empty file).

    A row with fewer or more cells than this header arrives from :func:`read_rows` with fewer or more keys:
    callers that must not pass a truncated or shifted row on (replay, scoring) compare against it.
    """
    source = Path(path)
    try:
        with open_binary(source) as raw:
            problem = not_csv_text(raw.read(4096), source.name)
        if problem:
            raise CsvSourceError(f"{source}: {problem}")
        with _open_text(source) as handle:
            header = next(csv.reader(handle), None)
    except (OSError, EOFError, zlib.error, csv.Error) as exc:  # e.g. a .gz name on a file that is not gzip
        raise CsvSourceError(f"{source}: cannot read: {exc}") from None
    return _unique_names(header) if header else []


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when the name ends in ``.gz`` (any case)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", errors=CP1252_FALLBACK, newline="")


def _unique_names(header: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for name in header:
        count = seen.get(name, 0)
        names.append(name if count == 0 else f"{name}.{count}")
        seen[name] = count + 1
    return names
