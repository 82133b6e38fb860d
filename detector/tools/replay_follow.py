"""``detector replay --follow``: the rows a flow meter appends to CSV files in a folder, as they are written.

The Java CICFlowMeter writes its flows to CSV files in an output folder (a header, then one row per flow,
appended as flows end; a new file per day or per capture). Following a folder means, on every poll:

* **new rows**: the bytes appended to each file since the last poll, up to the last complete line (a line
  still being written waits for its newline);
* **new files**: a ``.csv`` file that appears is read from its start (its first line is its header);
* **rotation**: files are known by identity (device and inode), not name, so a file renamed within the
  folder is not read again; one renamed out of the folder or deleted is read to its end, then let go;
* **truncation**: a file that got shorter was truncated and is being written anew: it is read again from
  its start, header first.

Nothing sent is sent twice within one run: each file's position only moves forward, except after a
truncation, when the bytes are new. Rows go through the same conversion as a replay's
(:mod:`detector.core.flowrecord`) and cells through the same CSV rules (:func:`detector.core.csvfile.split_line`);
short, long and malformed rows are counted, never sent. Gzip files cannot be appended to and are not followed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from detector.core.csvfile import BLANK_LINE, LONG_ROW, SHORT_ROW, row_shape, split_line, unique_names
from detector.core.flowrecord import RecordLayout, layout_for, record_key, row_label, to_record
from detector.tools.replay_source import LONG_ROW as LONG_ROW_REASON
from detector.tools.replay_source import SHORT_ROW as SHORT_ROW_REASON
from detector.tools.replay_source import OutgoingFlow, SourceStats

UTF8_BOM = b"\xef\xbb\xbf"
MALFORMED = "malformed CSV line (broken quoting)"
_READ_CHUNK = 1024 * 1024


@dataclass
class _Tailed:
    """One followed file: where its reading stands."""

    path: Path
    handle: BinaryIO
    identity: tuple[int, int]
    offset: int = 0  # bytes consumed: complete lines only
    partial: bytes = b""  # the start of a line not yet complete
    header: list[str] | None = None
    layout: RecordLayout | None = None


def is_followed_name(path: Path) -> bool:
    return path.name.lower().endswith(".csv")


class FollowedFiles:
    """The CSV files of ``paths`` (folders, or ``.csv`` files that may not exist yet), read as they grow.

    ``from_end``: rows already in the files when following starts are skipped (their headers are still read).
    """

    def __init__(self, paths: Sequence[Path], *, with_labels: bool, stats: SourceStats, from_end: bool = False):
        self.paths = [Path(p) for p in paths]
        self.with_labels = with_labels
        self.stats = stats
        self._tailed: dict[tuple[int, int], _Tailed] = {}
        self._skip_existing = from_end

    def flows(self, idle: Callable[[float], None], poll_seconds: float) -> Iterator[OutgoingFlow]:
        """Every new row, forever; ``idle(seconds)`` is called between polls that found nothing."""
        try:
            while True:
                found = self.poll()
                yield from found
                if not found:
                    idle(poll_seconds)
        finally:
            self.close()

    def poll(self) -> list[OutgoingFlow]:
        """One look at the folders and files: the rows written since the last look, file by file."""
        present = self._present()
        for identity, path in present.items():
            tailed = self._tailed.get(identity)
            if tailed is None:
                self._open(identity, path)
            else:
                tailed.path = path
        flows: list[OutgoingFlow] = []
        for identity, tailed in sorted(self._tailed.items(), key=lambda item: str(item[1].path)):
            gone = identity not in present
            flows.extend(self._read(tailed, final=gone))
            if gone:
                tailed.handle.close()
                del self._tailed[identity]
        self._skip_existing = False
        return flows

    def close(self) -> None:
        for tailed in self._tailed.values():
            tailed.handle.close()
        self._tailed.clear()

    def _present(self) -> dict[tuple[int, int], Path]:
        """The followed files there now, by identity."""
        candidates: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                try:
                    candidates.extend(sorted(child for child in path.iterdir() if is_followed_name(child)))
                except OSError:
                    continue
            else:
                candidates.append(path)
        present: dict[tuple[int, int], Path] = {}
        for path in candidates:
            try:
                status = path.stat()
            except OSError:  # not there (yet), or deleted between the listing and now
                continue
            if path.is_file():
                present.setdefault((status.st_dev, status.st_ino), path)
        return present

    def _open(self, identity: tuple[int, int], path: Path) -> None:
        try:
            handle = path.open("rb")
        except OSError as exc:
            self.stats.broken_files.append(f"{path}: cannot be opened ({exc.strerror or exc})")
            return
        tailed = _Tailed(path, handle, identity)
        self._tailed[identity] = tailed
        if self._skip_existing:  # --follow-from end: keep the header, skip the rows written so far
            self._read(tailed, final=False, send=False)

    def _read(self, tailed: _Tailed, *, final: bool, send: bool = True) -> list[OutgoingFlow]:
        """The complete rows appended to ``tailed`` since the last read (with ``final``, a last line without
        its newline too)."""
        try:
            if os.fstat(tailed.handle.fileno()).st_size < tailed.offset:  # truncated: written anew
                tailed.handle.seek(0)
                tailed.offset, tailed.partial, tailed.header, tailed.layout = 0, b"", None, None
            data = tailed.handle.read(_READ_CHUNK)
            while data:
                tailed.partial += data
                data = tailed.handle.read(_READ_CHUNK)
        except OSError as exc:
            self.stats.broken_files.append(f"{tailed.path}: unreadable after {tailed.offset} bytes ({exc})")
            return []
        lines = tailed.partial.split(b"\n")
        tailed.partial = lines.pop()
        if final and tailed.partial:
            lines.append(tailed.partial)
            tailed.partial = b""
        flows = []
        for line in lines:
            tailed.offset += len(line) + 1
            outcome = self._row(tailed, line)
            if outcome is None or not send:  # a header or a blank line; or a row skipped with --follow-from end
                continue
            self.stats.rows_read += 1
            if isinstance(outcome, str):
                self.stats.skipped[outcome] += 1
            else:
                flows.append(outcome)
        return flows

    def _row(self, tailed: _Tailed, line: bytes) -> OutgoingFlow | str | None:
        """The flow of one line, or why the row is skipped, or None for a header or a blank line."""
        if not line.strip():
            return None
        if tailed.header is None:
            try:
                tailed.header = unique_names(split_line(line.removeprefix(UTF8_BOM)))
            except csv.Error:
                tailed.header = []
            tailed.layout = layout_for(tuple(tailed.header))
            return None
        try:
            cells = split_line(line)
        except csv.Error:
            return MALFORMED
        shape = row_shape(cells, len(tailed.header))
        if shape == BLANK_LINE:
            return None
        if shape in (SHORT_ROW, LONG_ROW):
            return SHORT_ROW_REASON if shape == SHORT_ROW else LONG_ROW_REASON
        assert tailed.layout is not None
        row = dict(zip(tailed.header, cells, strict=False))
        record = to_record(row, tailed.layout, with_labels=self.with_labels)
        return OutgoingFlow(record_key(row, tailed.layout), orjson.dumps(record), row_label(row, tailed.layout), None)


def followable(paths: Sequence[Path]) -> str | None:
    """Why ``paths`` cannot be followed (None when they can): each must be a folder, or a ``.csv`` file in an
    existing folder (the file itself may appear later)."""
    for path in map(Path, paths):
        if path.is_dir():
            continue
        if not is_followed_name(path):
            return f"{path}: --follow takes folders and .csv files (a gzip file is not appended to)"
        if not path.parent.is_dir():
            return f"{path}: its folder {path.parent} does not exist"
    return None
