"""The CSV reader on an open stream (standard input) reads what it reads from a file, and leaves it open."""

from __future__ import annotations

import io

from detector.core.csvfile import CsvReader, read_rows


def test_a_stream_gives_the_rows_of_the_same_file_and_stays_open(tmp_path):
    text = "\ufeffDst Port,Label\r\n80,BENIGN\r\n\r\n443,DDoS,extra\r\n22\r\n"
    path = tmp_path / "flows.csv"
    path.write_text(text, encoding="utf-8", newline="")
    stream = io.BufferedReader(io.BytesIO(path.read_bytes()))
    with CsvReader(stream) as reader:
        assert reader.header == ["Dst Port", "Label"]
        rows = list(reader.rows())
    assert rows == list(read_rows(path))
    assert len(rows) == 3, "the blank line is skipped; the long and short rows are kept for the caller"
    assert not stream.closed
