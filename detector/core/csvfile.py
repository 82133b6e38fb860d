"""The one reader of flow CSV files, for training, replay, scoring and ingest alike.

Training and serving must read a flow file the same way: the same bytes become the same cells, the same
rows are usable, the same rows are refused for the same reason. So every command reads CSV text here:

* **Files**: ``.csv`` or ``.csv.gz`` (gunzipped by name), given as files or folders (:func:`csv_files`).
  A file that is gzip without the name, UTF-16 text or binary (a pcap) is refused up front
  (:func:`not_csv_text`).
* **Text**: UTF-8 (a byte-order mark is dropped); a line that is not valid UTF-8 has its offending bytes
  read as cp1252, because the original CICIDS2017 files write the en dash of ``Web Attack – Brute Force``
  as the cp1252 byte 0x96, and a file edited by hand may hold both spellings. Lines end in LF, CRLF or
  (old Mac files) CR.
* **Records**: Python's csv reader in strict mode, so a quote that is never closed is an error naming the
  line instead of swallowing every line up to the next quote. A field may be up to 16 MiB long (the csv
  module's own limit, 128 KiB, would end a file at the first long cell); the limit is raised only while
  this module reads, never for the rest of the process.
* **Header**: a repeated column name (``Fwd Header Length`` in the original CICIDS2017) gets a ``.1``
  suffix, as pandas does, instead of overwriting the first.
* **Lines** (:func:`split_line`): a file that is still being written is read a line at a time, with the
  same rules for bytes and quoting (a field cannot span lines there).
* **Rows** (:func:`row_shape`): a line of blank cells only is :data:`BLANK_LINE`; a row with fewer cells than the header
  is :data:`SHORT_ROW`; one with more cells, any of them not blank, is :data:`LONG_ROW` (trailing commas
  are harmless); every other row is usable.

:func:`read_rows` streams rows as ``{column: text}`` for replay and scoring (files can be gigabytes);
:func:`read_table` reads a whole file into usable records plus counts of the others, for training.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

#: Row shapes (:func:`row_shape`); the trainer reports the two malformed ones as :data:`WRONG_FIELD_COUNT`.
BLANK_LINE = "blank line"
SHORT_ROW = "short row"
LONG_ROW = "long row"
WRONG_FIELD_COUNT = "wrong number of fields"

#: The key under which :func:`read_rows` puts the cells a row has beyond its header (only when one of them
#: is not blank). Callers compare ``len(row)`` with the header to find short and long rows.
EXTRA_CELLS = "\x00extra cells"

FIELD_LIMIT = 16 * 1024 * 1024
_SNIFF_BYTES = 64 * 1024


class CsvSourceError(ValueError):
    """A path that holds no readable CSV."""


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


def is_csv_name(path: Path) -> bool:
    """Whether the name says CSV text, plain or gzip (``.csv``, ``.csv.gz``, any case)."""
    return path.name.lower().endswith((".csv", ".csv.gz"))


def csv_files(paths: Sequence[str | Path]) -> list[Path]:
    """The CSV files named by ``paths``: files as given, folders expanded (sorted by name), each file once.

    A named file must have a CSV name (a pcap or a parquet file gets a precise refusal, not a parse error);
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


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, gunzipped when the name ends in ``.gz`` (any case)."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


# ----------------------------------------------------------------------------------------------------------
# Bytes to text


def decode_line(data: bytes) -> tuple[str, bool]:
    """One line's text, and whether some of its bytes were not UTF-8 (and were read as cp1252)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    parts, start = [], 0
    while start < len(data):
        try:
            parts.append(data[start:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            parts.append(data[start : start + exc.start].decode("utf-8"))
            parts.append(data[start + exc.start : start + exc.end].decode("cp1252", errors="replace"))
            start += exc.end
    return "".join(parts), True


def decode(data: bytes) -> tuple[str, str]:
    """Text of a whole byte string and its encoding: ``utf-8`` (a byte-order mark dropped), or ``cp1252``
    when some bytes were not UTF-8 and were read as cp1252 (the rest stays UTF-8)."""
    text, mixed = decode_line(data.removeprefix(b"\xef\xbb\xbf"))
    return text, "cp1252" if mixed else "utf-8"


class _Lines:
    """The decoded lines of a binary stream, for the csv reader; remembers whether any byte was cp1252."""

    def __init__(self, handle: BinaryIO) -> None:
        start = handle.read(_SNIFF_BYTES)
        rest = iter(handle)
        if b"\r" in start and b"\n" not in start:  # an old Mac file: CR ends its lines
            data = start + b"".join(rest)
            self._raw: Iterator[bytes] = iter(data.replace(b"\r", b"\n").splitlines(keepends=True))
        else:
            first = start.splitlines(keepends=True)
            tail = first.pop() if first and not first[-1].endswith(b"\n") else b""
            self._raw = _joined(first, tail, rest)
        self.mixed = False
        self._first = True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        data = next(self._raw)
        if self._first:
            data = data.removeprefix(b"\xef\xbb\xbf")
            self._first = False
        text, mixed = decode_line(data)
        self.mixed |= mixed
        return text


def _joined(lines: list[bytes], tail: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """The sniffed complete lines, then the partial last one completed by the rest of the stream."""
    yield from lines
    following = next(rest, None)
    if following is None:
        if tail:
            yield tail
        return
    yield tail + following
    yield from rest


# ----------------------------------------------------------------------------------------------------------
# Text to records


class CsvReader:
    """One flow CSV open for reading: its :attr:`header` and its :meth:`records`. Use as a context manager.

    ``source`` is a path, or an open binary stream (standard input) that is read as it is and left open.
    Raises ``OSError``, ``EOFError`` or ``zlib.error`` for a file that cannot be read or unzipped, and
    ``csv.Error`` (naming the line) for broken quoting, when opened or while reading.
    """

    def __init__(self, source: str | Path | BinaryIO) -> None:
        if isinstance(source, str | Path):
            self.path = Path(source)
            self._handle: BinaryIO | None = open_binary(self.path)
            stream = self._handle
        else:
            self.path = Path(str(getattr(source, "name", "-")))
            self._handle = None  # the caller's stream: not ours to close
            stream = source
        self._lines = _Lines(stream)
        self._reader = csv.reader(self._lines, strict=True)
        first = self._next()
        #: The column names as written, and as rows are keyed (repeats suffixed ``.1``, ...).
        self.raw_header: list[str] = first if first is not None else []
        self.header: list[str] = unique_names(self.raw_header)

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()

    @property
    def encoding(self) -> str:
        """``utf-8``, or ``cp1252`` once a byte that is not UTF-8 has been read."""
        return "cp1252" if self._lines.mixed else "utf-8"

    @property
    def line(self) -> int:
        """The number of lines read so far."""
        return self._reader.line_num

    def records(self) -> Iterator[list[str]]:
        """Every record after the header, as parsed: a blank line is ``[]``."""
        while True:
            record = self._next()
            if record is None:
                return
            yield record

    def rows(self) -> Iterator[dict[str, str]]:
        """Every row after the header as ``{column: text}``, as :func:`read_rows` yields them."""
        names = self.header
        for record in self.records():
            shape = row_shape(record, len(names))
            if shape == BLANK_LINE:
                continue
            row = dict(zip(names, record, strict=False))
            if shape == LONG_ROW:
                row[EXTRA_CELLS] = ",".join(record[len(names) :])
            yield row

    def _next(self) -> list[str] | None:
        last_line = self._reader.line_num
        previous = csv.field_size_limit(FIELD_LIMIT)
        try:
            return next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            start = last_line + 1
            where = f"line {start}" if start >= self._reader.line_num else f"the record that starts on line {start}"
            hint = " (a quote there that is never closed?)" if "field limit" in str(exc) or "EOF" in str(exc) else ""
            raise csv.Error(f"{where}: {exc}{hint}") from None
        finally:
            csv.field_size_limit(previous)


def split_line(data: bytes) -> list[str]:
    """The cells of one CSV line read on its own (a file being appended to, read line by line as it grows),
    with the reader's rules for bytes and quoting. Raises ``csv.Error`` for broken quoting."""
    text, _ = decode_line(data.rstrip(b"\r\n"))
    previous = csv.field_size_limit(FIELD_LIMIT)
    try:
        return next(csv.reader([text], strict=True), [])
    finally:
        csv.field_size_limit(previous)


def unique_names(header: Sequence[str]) -> list[str]:
    """Column names with repeats suffixed ``.1``, ``.2``, ... (as pandas names them)."""
    seen: dict[str, int] = {}
    names = []
    for name in header:
        count = seen.get(name, 0)
        names.append(name if count == 0 else f"{name}.{count}")
        seen[name] = count + 1
    return names


def row_shape(record: Sequence[str], width: int) -> str | None:
    """None for a usable record of a ``width``-column file, else :data:`BLANK_LINE`, :data:`SHORT_ROW` or
    :data:`LONG_ROW`. Cells beyond the header that are all blank (trailing commas) are harmless."""
    if all(not cell.strip() for cell in record):
        return BLANK_LINE
    if len(record) < width:
        return SHORT_ROW
    if len(record) > width and any(cell.strip() for cell in record[width:]):
        return LONG_ROW
    return None


def read_header(path: str | Path) -> list[str]:
    """The column names of one CSV as :func:`read_rows` keys them (empty for an empty file).

    Refuses a file that is not CSV text (gzip without ``.gz``, UTF-16, binary) and one that cannot be read,
    with :class:`CsvSourceError`.
    """
    source = Path(path)
    try:
        with open_binary(source) as raw:
            problem = not_csv_text(raw.read(4096), source.name)
        if problem:
            raise CsvSourceError(f"{source}: {problem}")
        with CsvReader(source) as reader:
            return reader.header
    except (OSError, EOFError, zlib.error, csv.Error) as exc:  # e.g. a .gz name on a file that is not gzip
        raise CsvSourceError(f"{source}: cannot read: {exc}") from None


def read_rows(path: str | Path) -> Iterator[dict[str, str]]:
    """Yield each row of one CSV (plain or gzip) as ``{column: text}``; blank lines are skipped.

    A short row has fewer keys than the header; a long one has its extra cells joined under
    :data:`EXTRA_CELLS`. Either way ``len(row)`` differs from the header's length.
    """
    with CsvReader(path) as reader:
        yield from reader.rows()


@dataclass
class CsvTable:
    """A whole file read for training: the usable records (each exactly as wide as the header), and how
    many records of each other shape were set aside."""

    header: list[str]
    records: list[list[str]]
    malformed: Counter[str] = field(default_factory=Counter)
    rows_read: int = 0
    encoding: str = "utf-8"


def read_table(path: str | Path, limit: int | None = None) -> CsvTable:
    """Read one CSV: at most ``limit`` records after the header (blank lines count). Raises like
    :class:`CsvReader`."""
    with CsvReader(path) as reader:
        width = len(reader.header)
        table = CsvTable(reader.header, [])
        for record in _limited(reader.records(), limit):
            table.rows_read += 1
            shape = row_shape(record, width)
            if shape is None:
                table.records.append(record[:width] if len(record) > width else record)
            else:
                table.malformed[shape] += 1
        table.encoding = reader.encoding
    return table


def _limited(records: Iterable[list[str]], limit: int | None) -> Iterable[list[str]]:
    if limit is None:
        return records
    return (record for _, record in zip(range(limit), records, strict=False))
