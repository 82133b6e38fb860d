"""trainer.load on small *generated* CSV fixtures (written into tmp_path; not real traffic).

Every fixture file is named ``generated_*.csv`` so that nobody mistakes it for data.
"""

from __future__ import annotations

import gzip
import math
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detector.core.csvfile import BLANK_LINE, WRONG_FIELD_COUNT
from detector.core.decode import FlowDecoder
from detector.core.labels import BENIGN
from detector.core.values import parse_number
from trainer.load import (
    MISSING_LABEL,
    REPEATED_HEADER,
    TEXT_IN_NUMERIC,
    DataError,
    FlowTable,
    load_flows,
    parse_cells,
    parse_timestamps,
    read_label_map,
)

CIC_HEADER = "Flow ID,Src IP,Dst Port,Timestamp,Flow Duration,Total Fwd Packet,Flow Bytes/s,Label"


def cic_row(i: int = 0, label: str = "BENIGN", duration: str = "100", rate: str = "2.5") -> str:
    return f"f{i},10.0.0.{i},80,2017-07-05 18:12:{i % 60:02d}.650811,{duration},{i + 1},{rate},{label}"


def write(path: Path, text: str | bytes) -> Path:
    data = text if isinstance(text, bytes) else text.encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def generated(tmp_path: Path, lines: list[str], name: str = "generated_flows.csv", header: str = CIC_HEADER) -> Path:
    return write(tmp_path / name, "\n".join([header, *lines]) + "\n")


def assert_rows_accounted(table: FlowTable) -> None:
    for summary in table.files:
        assert summary.rows_read == summary.rows_kept + sum(summary.dropped.values())
    assert len(table) == sum(summary.rows_kept for summary in table.files)
    for part in (table.numeric, table.categorical, table.flow, table.timestamps, table.source):
        assert len(part) == len(table)


# ---- whole-file problems


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"generated_nothing\.csv does not exist"):
        load_flows([tmp_path / "generated_nothing.csv"])


def test_an_empty_file_is_a_data_error(tmp_path):
    path = write(tmp_path / "generated_empty.csv", b"")
    with pytest.raises(DataError, match=r"generated_empty\.csv: empty file \(0 bytes\)"):
        load_flows([path])


def test_a_whitespace_only_file_is_empty(tmp_path):
    path = write(tmp_path / "generated_blank.csv", "\n\n")
    with pytest.raises(DataError, match="empty file"):
        load_flows([path])


def test_a_header_only_file_is_a_data_error(tmp_path):
    path = generated(tmp_path, [])
    with pytest.raises(DataError, match=r"generated_flows\.csv: header only, no data rows"):
        load_flows([path])


def test_no_label_column_lists_the_columns_seen(tmp_path):
    path = generated(tmp_path, ["1,2"], header="Flow Duration,Total Fwd Packet")
    with pytest.raises(DataError, match="no label column") as raised:
        load_flows([path])
    assert "'Flow Duration', 'Total Fwd Packet'" in str(raised.value)
    assert "generated_flows.csv" in str(raised.value)


def test_no_known_feature_column_is_a_data_error(tmp_path):
    path = generated(tmp_path, ["1,2,BENIGN"], header="foo,bar,Label")
    with pytest.raises(DataError, match="no known feature columns; columns seen: 'foo', 'bar', 'Label'"):
        load_flows([path])


def test_a_folder_without_csvs_is_a_data_error(tmp_path):
    (tmp_path / "generated_notes.txt").write_text("not a csv")
    with pytest.raises(DataError, match=re.escape("holds no .csv or .csv.gz files")):
        load_flows([tmp_path])


def test_a_file_that_is_not_csv_is_a_data_error(tmp_path):
    path = write(tmp_path / "generated_flows.parquet", "x")
    with pytest.raises(DataError, match=re.escape("not a .csv or .csv.gz file")):
        load_flows([path])


def test_a_broken_gzip_is_a_data_error(tmp_path):
    (tmp_path / "generated_broken.csv.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="cannot read"):
        load_flows([tmp_path / "generated_broken.csv.gz"])


def test_nothing_left_after_dropping_is_a_data_error(tmp_path):
    path = generated(tmp_path, [cic_row(0, label=""), cic_row(1, duration="slow")])
    with pytest.raises(DataError, match="no usable rows") as raised:
        load_flows([path])
    assert f"{MISSING_LABEL}: 1" in str(raised.value)


def test_cic_and_unsw_files_together_are_a_data_error(tmp_path):
    cic = generated(tmp_path, [cic_row()])
    unsw_header = "dur,proto,service,state,attack_cat,label"
    unsw = generated(tmp_path, ["0.1,tcp,-,FIN,Normal,0"], "generated_unsw.csv", unsw_header)
    with pytest.raises(DataError, match="CIC and UNSW-NB15"):
        load_flows([cic, unsw])


# ---- rows that cannot be used


def test_text_in_numeric_features_drops_the_row_naming_the_first_feature(tmp_path):
    path = generated(
        tmp_path,
        [
            cic_row(0),
            cic_row(1, duration="abc"),
            cic_row(2, duration="n/a", rate="fast"),  # two bad cells: counted once, under the first
            cic_row(3, rate="fast"),
            cic_row(4),
        ],
    )
    table = load_flows([path])
    assert len(table) == 2
    assert table.dropped == {
        TEXT_IN_NUMERIC.format(feature="Flow Duration"): 2,
        TEXT_IN_NUMERIC.format(feature="Flow Bytes/s"): 1,
    }
    assert table.flow["flow_id"].tolist() == ["f0", "f4"]
    assert_rows_accounted(table)


def test_infinities_and_nan_are_kept_and_counted(tmp_path):
    rates = ["Infinity", "-Infinity", "inf", "NaN", "", "nan", "3.5"]
    path = generated(tmp_path, [cic_row(i, rate=rate) for i, rate in enumerate(rates)])
    table = load_flows([path])
    assert len(table) == len(rates)
    assert table.dropped == {}
    assert table.nonfinite_rows == 6
    assert table.files[0].nonfinite_rows == 6
    values = table.numeric["Flow Bytes/s"].to_numpy()
    assert values[0] == math.inf and values[1] == -math.inf and values[2] == math.inf
    assert np.isnan(values[3:6]).all() and values[6] == 3.5


def test_repeated_header_lines_in_the_middle_are_dropped(tmp_path):
    path = generated(tmp_path, [cic_row(0), CIC_HEADER, cic_row(1), CIC_HEADER, cic_row(2)])
    table = load_flows([path])
    assert len(table) == 3
    assert table.dropped == {REPEATED_HEADER: 2}
    assert_rows_accounted(table)


def test_a_repeated_header_with_its_byte_order_mark_is_a_repeated_header(tmp_path):
    # `cat a.csv b.csv` of two files that each start with a BOM (the UNSW-NB15 partitions do).
    part = ("\ufeff" + "\n".join([CIC_HEADER, cic_row(0), cic_row(1)]) + "\n").encode("utf-8")
    table = load_flows([write(tmp_path / "generated_cat.csv", part + part)])
    assert len(table) == 4
    assert table.dropped == {REPEATED_HEADER: 1}


def test_a_blank_line_is_counted(tmp_path):
    path = generated(tmp_path, [cic_row(0), "", cic_row(1), "   "])
    table = load_flows([path])
    assert len(table) == 2
    assert table.dropped == {BLANK_LINE: 2}
    assert table.files[0].rows_read == 4


def test_rows_with_too_many_or_too_few_fields_are_dropped(tmp_path):
    path = generated(tmp_path, [cic_row(0), cic_row(1) + ",extra", "f2,10.0.0.2,80", cic_row(3)])
    table = load_flows([path])
    assert table.flow["flow_id"].tolist() == ["f0", "f3"]
    assert table.dropped == {WRONG_FIELD_COUNT: 2}
    assert_rows_accounted(table)


def test_quoted_files_count_malformed_rows_the_same_way(tmp_path):
    quoted = '"f9, with comma",10.0.0.9,80,2017-07-05 18:12:15,100,1,2.5,BENIGN'
    lines = [cic_row(0), quoted, cic_row(1) + ",extra", "f2,10.0.0.2,80", "", CIC_HEADER, cic_row(3, duration="x")]
    table = load_flows([generated(tmp_path, lines)])
    assert table.flow["flow_id"].tolist() == ["f0", "f9, with comma"]
    assert table.dropped == {
        WRONG_FIELD_COUNT: 2,
        BLANK_LINE: 1,
        REPEATED_HEADER: 1,
        TEXT_IN_NUMERIC.format(feature="Flow Duration"): 1,
    }
    assert_rows_accounted(table)


def test_missing_labels_are_dropped(tmp_path):
    path = generated(tmp_path, [cic_row(0), cic_row(1, label=""), cic_row(2, label="  ")])
    table = load_flows([path])
    assert table.dropped == {MISSING_LABEL: 2}


def test_crlf_line_endings(tmp_path):
    text = "\r\n".join([CIC_HEADER, cic_row(0), cic_row(1, label="DoS Hulk")]) + "\r\n"
    table = load_flows([write(tmp_path / "generated_crlf.csv", text)])
    assert table.labels.tolist() == ["BENIGN", "DoS Hulk"]
    assert table.dropped == {}


def test_classic_mac_line_endings(tmp_path):
    text = "\r".join([CIC_HEADER, cic_row(0), cic_row(1, label="DoS Hulk")]) + "\r"
    table = load_flows([write(tmp_path / "generated_cr.csv", text)])
    assert table.labels.tolist() == ["BENIGN", "DoS Hulk"]
    assert table.dropped == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(f"{CIC_HEADER}\n{cic_row(0)}\n".encode()), "gzip-compressed; name it generated_flows.csv.gz"),
        (f"{CIC_HEADER}\n{cic_row(0)}\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
        (f"{CIC_HEADER}\n{cic_row(0)}\n".encode("utf-16-le"), "NUL bytes at the start"),
        (b"\n\r\r\n\x1c\x00\x00\x00M<+\x1a\x01\x00\x00\x00" + bytes(64), "binary data (a pcap?)"),
    ],
    ids=["gzip-named-csv", "utf16-with-bom", "utf16-without-bom", "pcapng"],
)
def test_a_file_that_is_not_csv_text_says_what_it_is(tmp_path, content, message):
    path = write(tmp_path / "generated_flows.csv", content)
    with pytest.raises(DataError, match=re.escape(message)):
        load_flows([path])


def test_constant_columns_are_kept(tmp_path):
    table = load_flows([generated(tmp_path, [cic_row(i, rate="0") for i in range(3)])])
    assert "Flow Bytes/s" in table.numeric.columns


# ---- labels


def test_web_attack_dash_spellings_are_one_class(tmp_path):
    header = CIC_HEADER.encode()
    cp1252 = header + b"\n" + cic_row(0, label="Web Attack \x96 Brute Force").encode("latin-1") + b"\n"
    write(tmp_path / "generated_a_cp1252.csv", cp1252)
    spellings = ["Web Attack \ufffd Brute Force", "Web Attack \u2013 Brute Force", "Web Attack - Brute Force"]
    generated(tmp_path, [cic_row(i, label=s) for i, s in enumerate(spellings)], "generated_b_utf8.csv")
    table = load_flows([tmp_path])
    assert table.labels.tolist() == ["Web Attack - Brute Force"] * 4
    assert [f.encoding for f in table.files] == ["cp1252", "utf-8"]


def test_one_file_mixing_utf8_and_cp1252_dashes_keeps_one_class(tmp_path):
    lines = [
        CIC_HEADER.encode(),
        cic_row(0, label="Web Attack \u2013 XSS").encode("utf-8"),
        cic_row(1, label="Web Attack \x96 XSS").encode("latin-1"),
        cic_row(2, label="Caf\xe9").encode("latin-1"),
    ]
    table = load_flows([write(tmp_path / "generated_mixed.csv", b"\n".join(lines) + b"\n")])
    assert table.labels.tolist() == ["Web Attack - XSS", "Web Attack - XSS", "Caf\xe9"]


def test_bot_and_botnet_stay_apart_unless_a_label_map_merges_them(tmp_path):
    path = generated(tmp_path, [cic_row(0, label="Bot"), cic_row(1, label="Botnet"), cic_row(2, label="Benign")])
    assert load_flows([path]).class_counts() == {"Bot": 1, "Botnet": 1, BENIGN: 1}
    merged = load_flows([path], label_map={"Bot": "Botnet"})
    assert merged.class_counts() == {"Botnet": 2, BENIGN: 1}
    assert merged.relabelled() == {"Bot": 1}
    assert load_flows([path], label_map={"bot": "Botnet"}).relabelled() == {}  # a typo renames nothing


def test_a_label_column_of_0_and_1_only_is_a_benign_attack_flag(tmp_path):
    path = generated(tmp_path, [cic_row(0, label="0"), cic_row(1, label="1"), cic_row(2, label="1.0")])
    assert load_flows([path]).class_counts() == {BENIGN: 1, "ATTACK": 2}


def test_integer_coded_classes_keep_their_codes_until_a_label_map_names_them(tmp_path):
    # "1" is a class of its own here, not the attack flag: renaming only 0 and 1 would merge nothing
    # consistently (1 -> ATTACK while 2 and 3 stay codes).
    path = generated(tmp_path, [cic_row(i, label=str(i % 4)) for i in range(8)])
    assert load_flows([path]).class_counts() == {"0": 2, "1": 2, "2": 2, "3": 2}
    named = load_flows([path], label_map={"0": "BENIGN", "1": "DDoS", "2": "PortScan", "3": "Bot"})
    assert named.class_counts() == {BENIGN: 2, "DDoS": 2, "PortScan": 2, "Bot": 2}


def test_a_label_map_naming_one_class_twice_with_different_targets_is_a_data_error(tmp_path):
    toml = tmp_path / "generated_labels.toml"
    toml.write_text('[labels]\n"Web Attack \u2013 XSS" = "WebAttack"\n"Web Attack - XSS" = "Other"\n')
    with pytest.raises(DataError, match=r"'Web Attack \u2013 XSS' and 'Web Attack - XSS' are one class"):
        read_label_map(toml)
    toml.write_text('[labels]\n"Web Attack \u2013 XSS" = "WebAttack"\n"Web Attack - XSS" = "WebAttack"\n')
    assert read_label_map(toml) == {"Web Attack - XSS": "WebAttack"}  # the same target twice is harmless


def test_a_label_map_that_is_a_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="label map is a directory"):
        read_label_map(tmp_path)


def test_read_label_map_normalises_keys_and_values(tmp_path):
    toml = tmp_path / "generated_labels.toml"
    toml.write_text('[labels]\n"Bot" = "Botnet"\n"Web Attack \u2013 XSS" = "Web  Attack"\n"normal" = "Benign"\n')
    assert read_label_map(toml) == {"Bot": "Botnet", "Web Attack - XSS": "Web Attack", BENIGN: BENIGN}


@pytest.mark.parametrize(
    ("text", "message"),
    [("[labels]\nBot = 3\n", "values must be strings"), ("labels = 1", "needs a [labels] table"), ("[x", "TOML")],
)
def test_read_label_map_rejects_bad_files(tmp_path, text, message):
    toml = tmp_path / "generated_labels.toml"
    toml.write_text(text)
    with pytest.raises(DataError, match=re.escape(message)):
        read_label_map(toml)


def test_unsw_labels_categories_hex_ports_and_epoch_times(tmp_path):
    header = "srcip,sport,dstip,dsport,proto,state,dur,sbytes,service,Stime,ct_src_ ltm,attack_cat,label"
    lines = [
        "59.166.0.0,1390,149.171.126.6,53,udp,CON,0.001055,132,dns,1421927414,1,,0",
        "59.166.0.1,49320,149.171.126.7,0xc0a8,tcp,FIN,0.5,2000,-,1421927415,2, Exploits ,1",
        "59.166.0.2,1391,149.171.126.8,80,tcp,FIN,0.5,2000,http,1421927416,2,,1",  # attack without a class
    ]
    table = load_flows([generated(tmp_path, lines, "generated_unsw.csv", header)])
    assert table.family == "unsw"
    assert table.labels.tolist() == [BENIGN, "Exploits"]
    assert table.dropped == {MISSING_LABEL: 1}
    assert list(table.categorical.columns) == ["proto", "service", "state"]
    assert table.categorical.to_numpy().tolist() == [["udp", "dns", "CON"], ["tcp", "-", "FIN"]]
    assert table.numeric["dsport"].tolist() == [53.0, float(0xC0A8)]
    assert "ct_src_ltm" in table.numeric.columns
    assert table.timestamps.tolist() == [pd.Timestamp("2015-01-22 11:50:14"), pd.Timestamp("2015-01-22 11:50:15")]
    assert table.files[0].label_column == "attack_cat" and table.files[0].flag_column == "label"


# ---- inputs


def test_gzip_and_plain_csv_load_the_same(tmp_path):
    lines = [cic_row(i) for i in range(5)]
    plain = load_flows([generated(tmp_path, lines)])
    zipped = load_flows([generated(tmp_path, lines, "generated_flows.csv.gz")])
    pd.testing.assert_frame_equal(plain.numeric, zipped.numeric)
    assert zipped.source.tolist() == ["generated_flows.csv.gz"] * 5


def test_a_folder_loads_its_csvs_sorted(tmp_path):
    generated(tmp_path, [cic_row(0, label="DoS Hulk")], "generated_b.csv.gz")
    generated(tmp_path, [cic_row(1), cic_row(2)], "generated_a.csv")
    (tmp_path / "generated_readme.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    generated(tmp_path / "sub", [cic_row(3)], "generated_c.csv")  # not recursive
    table = load_flows([tmp_path, tmp_path / "generated_a.csv"])  # a file reached twice is read once
    assert table.source.tolist() == ["generated_a.csv", "generated_a.csv", "generated_b.csv.gz"]
    assert table.labels.tolist() == [BENIGN, BENIGN, "DoS Hulk"]
    assert_rows_accounted(table)


def test_limit_per_file(tmp_path):
    path = generated(tmp_path, [cic_row(i) for i in range(10)])
    table = load_flows([path], limit_per_file=4)
    assert len(table) == 4 and table.files[0].rows_read == 4


def test_features_are_the_intersection_across_files(tmp_path):
    a = generated(tmp_path, [cic_row(0)], "generated_a.csv")
    b = generated(tmp_path, ["100,1,BENIGN"], "generated_b.csv", header="Flow Duration,Total Fwd Packet,Label")
    table = load_flows([a, b])
    assert list(table.numeric.columns) == ["Flow Duration", "Total Fwd Packet"]
    assert table.excluded_features == {
        "Dst Port": "absent from generated_b.csv",
        "Flow Bytes/s": "absent from generated_b.csv",
    }
    assert table.flow["flow_id"].tolist()[0] == "f0" and pd.isna(table.flow["flow_id"].tolist()[1])


def test_original_cicids2017_header_quirks(tmp_path):
    header = " Destination Port, Flow Duration, Fwd Header Length,Flow Bytes/s, Fwd Header Length, Label"
    table = load_flows([generated(tmp_path, ["80,10,32,Infinity,32,BENIGN"], header=header)])
    assert list(table.numeric.columns) == ["Dst Port", "Flow Duration", "Flow Bytes/s", "Fwd Header Length"]
    assert table.files[0].duplicate_columns == (" Fwd Header Length",)
    assert table.files[0].conflicting_duplicates == {}  # equal values: nothing to warn about
    assert table.numeric["Flow Bytes/s"].tolist() == [math.inf]


def test_a_duplicate_feature_column_with_other_values_is_reported_with_the_rows_that_differ(tmp_path):
    header = "Flow Duration,Dst Port,Flow Duration,Label"
    table = load_flows([generated(tmp_path, ["999,80,10,BENIGN", "999,80,999,DoS", "999,80,0x3e7,DoS"], header=header)])
    assert table.numeric["Flow Duration"].tolist() == [999.0, 999.0, 999.0]  # the first column is used
    assert table.files[0].conflicting_duplicates == {"Flow Duration (column 3)": 1}


def test_python_cicflowmeter_seconds_become_microseconds(tmp_path):
    header = "src_ip,dst_port,timestamp,flow_duration,flow_iat_mean,tot_fwd_pkts,flow_byts_s,Label"
    line = "192.168.178.65,443,2024-11-22 15:43:02,90.27400231361389,0.5,17,157.62,BENIGN"
    table = load_flows([generated(tmp_path, [line], header=header)])
    assert table.numeric["Flow Duration"].iloc[0] == parse_number("90.27400231361389") * 1_000_000.0
    assert table.numeric["Flow IAT Mean"].iloc[0] == 500_000.0
    assert table.numeric["Total Fwd Packet"].iloc[0] == 17.0  # counts and rates are not times
    assert table.numeric["Flow Bytes/s"].iloc[0] == 157.62
    assert table.files[0].converted == {"Flow Duration": 1e6, "Flow IAT Mean": 1e6}
    assert table.timestamps.iloc[0] == pd.Timestamp("2024-11-22 15:43:02")


# ---- parsing agrees with serving


def _cell_strings(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    fixed = ["Infinity", "-Infinity", "+Infinity", "inf", "-inf", "INF", "NaN", "nan", "-nan", "", " ", "null"]
    fixed += ["0x000b", "0xC0A8", "-0x10", "1_000", "-0", "+.5e-3", " 12 ", "1e400", "abc", "1.2.3", "0x"]
    cells = list(fixed)
    while len(cells) < count:
        value = rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-20, 20)
        cells.append(rng.choice([repr(value), f"{value:.17g}", f"{value:.6f}", f"{value:e}", str(int(value))]))
    return cells


def _parse_each(cells: list[str]) -> tuple[np.ndarray, np.ndarray]:
    values, bad = np.full(len(cells), np.nan), np.zeros(len(cells), dtype=bool)
    for i, cell in enumerate(cells):
        try:
            values[i] = parse_number(cell)
        except ValueError:
            bad[i] = True
    return values, bad


def test_parse_cells_is_bit_identical_to_parse_number():
    cells = _cell_strings(5000)
    expected, expected_bad = _parse_each(cells)
    values, bad = parse_cells(np.array(cells, dtype=object))
    assert (bad == expected_bad).all()
    assert (values.view(np.int64) == expected.view(np.int64)).all()
    clean = [cell for cell, is_bad in zip(cells, expected_bad, strict=True) if not is_bad and cell.strip()]
    fast, fast_bad = parse_cells(np.array(clean, dtype=object))  # the vectorised path only
    assert not fast_bad.any()
    assert (fast.view(np.int64) == _parse_each(clean)[0].view(np.int64)).all()


def test_loaded_values_equal_the_stream_decoder(tmp_path):
    cells = [cell for cell in _cell_strings(400, seed=1) if "," not in cell]
    lines = [cic_row(i, duration=cell) for i, cell in enumerate(cells)]
    header = CIC_HEADER.replace("Flow Duration", "flow_duration")  # with the seconds conversion
    table = load_flows([generated(tmp_path, lines, header=header)])
    expected, bad = _parse_each(cells)
    kept = expected[~bad] * 1_000_000.0
    assert (table.numeric["Flow Duration"].to_numpy().view(np.int64) == kept.view(np.int64)).all()
    decoder = FlowDecoder(list(table.numeric.columns))
    names = header.split(",")
    kept_lines = [line for line, is_bad in zip(lines, bad, strict=True) if not is_bad]
    for line, row in zip(kept_lines, table.numeric.to_numpy(), strict=True):
        decoded = decoder.decode_mapping(dict(zip(names, line.split(","), strict=True)))
        assert decoded.numeric.view(np.int64).tolist() == row.view(np.int64).tolist()


# ---- timestamps


def test_parse_timestamps_formats():
    values = pd.Series(
        ["2017-07-05 18:12:15.650811", "5/7/2017 8:12", "14/02/2018 08:31:01", "2024-11-22T15:43:02+01:00", "", "later"]
    )
    parsed = parse_timestamps(values)
    assert parsed.dtype == "datetime64[ns]"
    assert parsed.tolist()[:4] == [
        pd.Timestamp("2017-07-05 18:12:15.650811"),
        pd.Timestamp("2017-07-05 08:12"),
        pd.Timestamp("2018-02-14 08:31:01"),
        pd.Timestamp("2024-11-22 14:43:02"),
    ]
    assert parsed.iloc[4:].isna().all()


def test_parse_timestamps_epoch_seconds_and_absent_values():
    assert parse_timestamps(pd.Series(["1421927414", "1421927414.5"])).tolist() == [
        pd.Timestamp("2015-01-22 11:50:14"),
        pd.Timestamp("2015-01-22 11:50:14.5"),
    ]
    assert parse_timestamps(pd.Series([np.nan, np.nan], dtype=str)).isna().all()


def test_table_summary_is_json_ready(tmp_path):
    import json

    table = load_flows([generated(tmp_path, [cic_row(0), "", cic_row(1, label="DoS")])])
    summary = json.loads(json.dumps(table.summary()))
    assert summary["rows_read"] == 3 and summary["rows_kept"] == 2 and summary["dropped"] == {BLANK_LINE: 1}
    assert summary["files"][0]["path"].endswith("generated_flows.csv")


def test_an_unclosed_quote_is_a_data_error(tmp_path):
    # Read loosely, the quote would swallow the following lines into one field, and they would vanish.
    path = generated(tmp_path, [cic_row(0), '"f1,10.0.0.1,80,2017-07-05 18:12:15,100,1,2.5,BENIGN', cic_row(2)])
    message = r"generated_flows\.csv: not a readable CSV: the record that starts on line 3: unexpected end"
    with pytest.raises(DataError, match=message):
        load_flows([path])


def test_a_fully_quoted_file_loads_like_a_plain_one(tmp_path):
    lines = [cic_row(i) for i in range(3)]
    plain = load_flows([generated(tmp_path, lines, "generated_plain.csv")])

    def quote(line: str) -> str:
        return ",".join(f'"{cell}"' for cell in line.split(","))

    quoted = load_flows([generated(tmp_path, [quote(x) for x in lines], "generated_q.csv", quote(CIC_HEADER))])
    pd.testing.assert_frame_equal(plain.numeric, quoted.numeric)
    assert quoted.labels.tolist() == plain.labels.tolist()


def test_a_semicolon_separated_file_says_it_is_not_comma_separated(tmp_path):
    path = generated(tmp_path, ["80;10;BENIGN"], header="Dst Port;Flow Duration;Label")
    with pytest.raises(DataError, match="the file is not comma-separated"):
        load_flows([path])
