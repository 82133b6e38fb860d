"""Property: the trainer's loader reads any CSV text into rows, every row kept or dropped with a reason, or refuses
the file with a :class:`DataError` that names it; never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given

from tests.support.properties import HOSTILE, csv_texts
from trainer.load import DataError, load_flows


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="load-properties-") as directory:
        yield Path(directory)


@HOSTILE
@given(csv_texts())
@example(b'Dst Port,Label\n"80,BENIGN\n')  # a quote never closed
@example(b"Dst Port,Label\n1e999,BENIGN\n-inf,DDoS\n,\n")
@example(b"Dst Port,Label\n\x00,BENIGN\n")
def test_any_csv_text_is_rows_with_reasons_or_a_data_error(scratch, text):
    path = scratch / "flows.csv"
    path.write_bytes(text)
    try:
        table = load_flows([path])
    except DataError as exc:
        assert str(path) in str(exc) or "no feature column" in str(exc), exc
        return
    (summary,) = table.files
    assert summary.rows_read == summary.rows_kept + sum(summary.dropped.values())
    assert len(table) == summary.rows_kept > 0
    assert all(reason and count > 0 for reason, count in summary.dropped.items())
    assert len(table.numeric) == len(table.flow) == len(table.timestamps) == len(table)
    assert all(isinstance(label, str) and label for label in table.labels)
    assert all(isinstance(value, float) for value in table.numeric.to_numpy().ravel().tolist())
