"""Property: ``detector score``'s reading path (:func:`score_files`) gives every row of any CSV or NDJSON text one
line, a verdict or an error with a code and a reason, and never raises.

A file that is not CSV text at all is refused up front by :func:`read_header`, as ``detector score`` does, with
:class:`CsvSourceError`: that is the typed rejection of a whole file.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from detector.core.bundle import load_bundle
from detector.core.csvfile import CsvSourceError, read_header
from detector.core.scorer import Scorer
from detector.tools.score import score_files
from tests.support.bundles import make_bundle
from tests.support.properties import HOSTILE, csv_texts, message_values

ERROR_CODES = {
    "empty",
    "oversized",
    "not_json",
    "not_object",
    "schema_version",
    "missing_features",
    "wrong_type",
    "short_row",
    "long_row",
    "unreadable",
}


@pytest.fixture(scope="module")
def scorer(tmp_path_factory, one_torch_thread) -> Scorer:
    bundle = load_bundle(make_bundle(tmp_path_factory.mktemp("score-properties") / "bundle"))
    return Scorer(bundle, device="cpu", backend="eager")


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="score-properties-") as directory:
        yield Path(directory)


def assert_one_line_per_row(output: bytes, rows: int, scorer: Scorer) -> None:
    lines = [orjson.loads(line) for line in output.splitlines()]
    assert len(lines) == rows
    for line in lines:
        assert "source" in line
        if "error" in line:
            assert line["error"]["code"] in ERROR_CODES, line
            assert line["error"]["reason"].strip()
        else:
            assert line["label"] in scorer.bundle.classes
            assert 0.0 <= line["confidence"] <= 1.0


@HOSTILE
@given(csv_texts())
@example(b"Dst Port,Label\n80\n")
@example(b'Dst Port,Label\n"80,BENIGN\n')
@example(b"\xff\xfeD\x00s\x00t\x00")
def test_any_csv_file_gives_one_line_per_row_or_is_refused_as_a_whole(scorer, scratch, text):
    path = scratch / "flows.csv"
    path.write_bytes(text)
    try:
        read_header(path)
    except CsvSourceError as exc:
        assert str(exc).strip()
        return
    out = io.BytesIO()
    summary = score_files([path], scorer, out, batch=8)
    assert_one_line_per_row(out.getvalue(), summary.rows, scorer)
    assert summary.scored + sum(summary.errors.values()) == summary.rows


@HOSTILE
@given(st.lists(message_values.filter(lambda value: value is not None and b"\n" not in value), max_size=6))
def test_any_ndjson_on_standard_input_gives_one_line_per_record(scorer, values):
    stdin = io.BufferedReader(io.BytesIO(b"\n".join([b'{"schema_version": 1}', *values]) + b"\n"))
    out = io.BytesIO()
    summary = score_files([Path("-")], scorer, out, batch=8, stdin=stdin)
    assert_one_line_per_row(out.getvalue(), summary.rows, scorer)
    assert summary.rows == 1 + sum(1 for value in values if value.strip())
