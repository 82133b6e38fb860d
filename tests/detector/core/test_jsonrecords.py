"""What is a JSON flow record, one record or one NDJSON line at a time, with the worker's dead-letter codes."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from detector.core.csvfile import CsvSourceError
from detector.core.decode import FlowDecoder
from detector.core.jsonrecords import (
    NotARecord,
    flow_files,
    is_ndjson_name,
    looks_like_ndjson,
    parse_body,
    parse_record,
    read_ndjson,
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b"null", "not_object"),
        (b'"text"', "not_object"),
        (b'{"a": "' + b"x" * 100 + b'"}', "oversized"),
    ],
)
def test_what_is_not_a_record_gets_the_code_the_worker_dead_letters_it_with(raw, code):
    refused = parse_record(raw, max_bytes=64)
    assert isinstance(refused, NotARecord) and refused.code == code and refused.reason
    worker = FlowDecoder(["Flow Duration"], max_record_bytes=64).decode_bytes(raw)
    assert worker.code == code, "the worker and the intake give one record one reason"  # type: ignore[union-attr]


def test_a_record_is_a_json_object_and_a_byte_order_mark_is_dropped():
    assert parse_record(b'\xef\xbb\xbf{"Dst Port": 80}') == {"Dst Port": 80}
    assert "an array" in parse_record(b"[]").reason  # type: ignore[union-attr]


def test_ndjson_lines_are_numbered_as_an_editor_numbers_them_and_blank_lines_skipped():
    lines = parse_body(b'\xef\xbb\xbf{"a": 1}\r\n\n   \n[2]\n{"b": 2}')
    assert [(line.number, line.raw) for line in lines] == [(1, b'{"a": 1}'), (4, b"[2]"), (5, b'{"b": 2}')]
    assert lines[0].record == {"a": 1} and lines[2].record == {"b": 2}
    assert isinstance(lines[1].record, NotARecord) and lines[1].record.code == "not_object"


def test_ndjson_is_read_from_plain_and_gzip_files_and_from_a_stream(tmp_path: Path):
    text = b'{"a": 1}\n{"a": 2}\n'
    plain, packed = tmp_path / "flows.ndjson", tmp_path / "flows.jsonl.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    for source in (plain, packed, io.BytesIO(text)):
        assert [line.record for line in read_ndjson(source)] == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("name", "ndjson"),
    [("a.ndjson", True), ("a.JSONL", True), ("a.jsonl.gz", True), ("a.csv", False), ("a.json", False)],
)
def test_ndjson_files_are_known_by_name(name, ndjson):
    assert is_ndjson_name(Path(name)) is ndjson


def test_flow_files_expand_folders_to_csv_and_ndjson_and_keep_standard_input(tmp_path: Path):
    for name in ("b.jsonl", "a.csv", "c.ndjson.gz", "notes.txt"):
        (tmp_path / name).write_text("")
    assert flow_files([tmp_path, "-"]) == [
        tmp_path / "a.csv",
        tmp_path / "b.jsonl",
        tmp_path / "c.ndjson.gz",
        Path("-"),
    ]
    with pytest.raises(CsvSourceError, match="not a flow file"):
        flow_files([tmp_path / "notes.txt"])


@pytest.mark.parametrize(
    ("start", "ndjson"), [(b'{"a": 1}', True), (b'\xef\xbb\xbf \n{"a"', True), (b"Dst Port,Label", False), (b"", False)]
)
def test_a_stream_is_ndjson_when_its_first_line_opens_an_object(start, ndjson):
    assert looks_like_ndjson(start) is ndjson
