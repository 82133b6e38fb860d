"""Training and serving read a flow file the same way: same rows, same values, same labels, same times.

The trainer loads a file with :func:`trainer.load.load_flows`; replay and ``detector score`` read it row by
row (:func:`detector.core.csvfile.read_rows` → :func:`detector.core.flowrecord.to_record` → the stream's
decoder, :func:`detector.core.flowtime.flow_time`). Every dialect in ``../shared/data`` and a set of
generated fixtures (quoting, cp1252 bytes, CRLF and CR line ends, a byte-order mark, duplicated columns,
blank and malformed lines, every timestamp form) must come out identical both ways.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.core.csvfile import csv_files, read_header, read_rows
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.flowrecord import layout_for, to_record
from detector.core.flowtime import flow_time
from tests.support.shared_data import SHARED_DATA
from trainer.load import load_flows

CIC_HEADER = "Flow ID,Src IP,Dst Port,Timestamp,Flow Duration,Total Fwd Packet,Flow Bytes/s,Label"


def served(path: Path, numeric: list[str], categorical: list[str]) -> tuple[np.ndarray, list[str], list[float | None]]:
    """What serving makes of ``path``: the numeric matrix, labels and flow times of the rows it can score
    that carry a label (the trainer keeps only labelled rows)."""
    header = read_header(path)
    layout = layout_for(tuple(header))
    decoder = FlowDecoder(numeric, categorical)
    rows, labels, times = [], [], []
    for row in read_rows(path):
        if len(row) != len(header):
            continue  # short and long rows: refused by both (score reports them, training drops them)
        decoded = decoder.decode_mapping(to_record(row, layout, with_labels=True))
        if isinstance(decoded, DecodedFlow) and decoded.label is not None:
            rows.append(decoded.numeric)
            labels.append(decoded.label)
            times.append(flow_time(row[layout.timestamp_column]) if layout.timestamp_column else None)
    matrix = np.vstack(rows) if rows else np.zeros((0, len(numeric)))
    return matrix, labels, times


def assert_same_reading(path: Path) -> None:
    table = load_flows([path])
    matrix, labels, times = served(path, list(table.numeric.columns), list(table.categorical.columns))
    assert len(labels) == len(table), f"{path.name}: serving scores {len(labels)} rows, training keeps {len(table)}"
    np.testing.assert_array_equal(matrix, table.numeric.to_numpy(), err_msg=path.name)  # NaN == NaN here
    assert labels == table.labels.tolist(), path.name
    trained_times = [None if pd.isna(t) else t for t in table.timestamps]
    served_times = [None if t is None else pd.Timestamp(round(t * 1e6), unit="us") for t in times]
    assert trained_times == served_times, path.name


def write(path: Path, text: str, *, encoding: str = "utf-8", compress: bool = False) -> Path:
    data = text.encode(encoding)
    if compress:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


GENERATED = {
    "generated_plain.csv": CIC_HEADER
    + "\nf1,10.0.0.1,80,2017-07-05 18:12:15.650811,100,2,Infinity,BENIGN"
    + "\nf2,10.0.0.2,443,5/7/2017 8:12,7,1,NaN,DDoS"
    + "\n\nf3,10.0.0.3,22,12/31/2017 10:00,0x1f,3,,DoS Hulk"
    + "\nf4,10.0.0.4,80,1499278335000,12,4,5.5"
    + "\nf5,10.0.0.5,80,31/12/2017 10:00:01 PM,12,4,5.5,BENIGN,extra"
    + "\nf6,10.0.0.6,80,,12,4,5.5,BENIGN,,"
    + "\n,,,,,,,\n",
    "generated_quoted.csv": CIC_HEADER
    + '\n"f1, quoted",10.0.0.1,80,"2017-07-05T18:12:15+02:00",100,2,1.5,"BENIGN"'
    + '\n"f2",10.0.0.2,80,1421927377,9,1,"2.5",Web Attack \u2013 XSS\n',
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_fixtures_read_the_same_in_training_and_serving(tmp_path, name):
    assert_same_reading(write(tmp_path / name, GENERATED[name]))


@pytest.mark.parametrize(
    ("variant", "kwargs"),
    [
        ("crlf", {"newline": "\r\n"}),
        ("cr", {"newline": "\r"}),
        ("bom", {"bom": True}),
        ("cp1252", {"encoding": "cp1252"}),
        ("gzip", {"compress": True}),
    ],
)
def test_line_ends_byte_order_marks_encodings_and_gzip_change_nothing(tmp_path, variant, kwargs):
    text = GENERATED["generated_quoted.csv"]
    if "newline" in kwargs:
        text = text.replace("\n", kwargs["newline"])
    if kwargs.get("bom"):
        text = "\ufeff" + text
    suffix = ".csv.gz" if kwargs.get("compress") else ".csv"
    path = write(
        tmp_path / f"generated_{variant}{suffix}",
        text,
        encoding=kwargs.get("encoding", "utf-8"),
        compress=kwargs.get("compress", False),
    )
    assert_same_reading(path)
    assert load_flows([path]).labels.tolist() == ["BENIGN", "Web Attack - XSS"]


def test_a_duplicated_column_reads_the_same(tmp_path):
    header = " Destination Port, Flow Duration, Fwd Header Length,Flow Bytes/s, Fwd Header Length, Label"
    path = write(tmp_path / "generated_dup.csv", f"{header}\n80,10,32,Infinity,32,BENIGN\n81,11,40,NaN,40,BENIGN\n")
    assert_same_reading(path)


def shared_files() -> list[Path]:
    if not SHARED_DATA.is_dir():
        return []
    labelled = ["cicids2017_improved_sample", "cicids2017_mergedlabels_sample", "cicids2017_original_format"]
    files = [file for folder in labelled for file in csv_files([SHARED_DATA / folder])]
    return files + csv_files([SHARED_DATA / "unsw_nb15"])


@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data folder not found: {SHARED_DATA}")
@pytest.mark.parametrize("path", shared_files(), ids=lambda path: path.name)
def test_every_shared_dialect_reads_the_same_in_training_and_serving(path):
    assert_same_reading(path)
