"""CSV rows → JSON flow records: what a replay publishes and what ``detector score`` scores."""

import json
from pathlib import Path

import orjson
from jsonschema import Draft202012Validator

from detector.core.flowrecord import cell_value, layout_for, record_key, row_label, to_record

SCHEMA = json.loads((Path(__file__).parents[3] / "schemas" / "flow-record.schema.json").read_text())

CIC_ROW = {
    "id": "12",
    "Flow ID": "192.168.10.5-8.8.8.8-50000-53-17",
    "Src IP": "192.168.10.5",
    "Src Port": "50000",
    "Dst IP": "8.8.8.8",
    "Dst Port": "53",
    "Protocol": "17",
    "Timestamp": "2017-07-03 11:00:00.5",
    "Flow Duration": "120",
    "Flow Bytes/s": "Infinity",
    "Flow Packets/s": "NaN",
    "Packet Length Mean": "61.5",
    "Fwd Header Length": "",
    "Label": "Web Attack \u2013 XSS",
}
UNSW_ROW = {
    "id": "1",
    "dur": "0.121478",
    "proto": "tcp",
    "service": "-",
    "state": "FIN",
    "sport": "0x000b",
    "spkts": "6",
    "attack_cat": "",
    "label": "0",
}


def test_numbers_become_json_numbers_and_tokens_stay_text():
    assert cell_value("80") == 80 and isinstance(cell_value("80"), int)
    assert cell_value("1.5") == 1.5
    assert cell_value("-3e2") == -300.0
    assert cell_value(" 7 ") == 7
    for token in ("Infinity", "-Infinity", "inf", "NaN", "nan", "0x000b", "abc"):
        assert cell_value(token) == token
    assert cell_value("") is None
    assert cell_value("123456789012345678901234567890") == "123456789012345678901234567890"


def test_a_cic_row_keeps_its_column_names_and_drops_the_label_by_default():
    layout = layout_for(tuple(CIC_ROW))
    record = to_record(CIC_ROW, layout, with_labels=False)
    assert list(record) == [name for name in CIC_ROW if name != "Label"]
    assert record["Dst Port"] == 53 and record["Protocol"] == 17 and record["Src Port"] == 50000
    assert record["Flow Bytes/s"] == "Infinity" and record["Flow Packets/s"] == "NaN"
    assert record["Fwd Header Length"] is None
    assert record["Flow ID"] == CIC_ROW["Flow ID"] and record["Timestamp"] == CIC_ROW["Timestamp"]
    Draft202012Validator(SCHEMA).validate(orjson.loads(orjson.dumps(record)))


def test_with_labels_the_label_is_kept_as_text():
    layout = layout_for(tuple(CIC_ROW))
    record = to_record(CIC_ROW, layout, with_labels=True)
    assert record["Label"] == CIC_ROW["Label"]
    assert row_label(CIC_ROW, layout) == "Web Attack - XSS"


def test_unsw_categories_stay_text_and_both_label_columns_go():
    layout = layout_for(tuple(UNSW_ROW))
    record = to_record(UNSW_ROW, layout, with_labels=False)
    assert "attack_cat" not in record and "label" not in record
    assert record["proto"] == "tcp" and record["service"] == "-" and record["state"] == "FIN"
    assert record["sport"] == "0x000b" and record["spkts"] == 6
    assert row_label(UNSW_ROW, layout) == "BENIGN"
    labelled = to_record(UNSW_ROW, layout, with_labels=True)
    assert labelled["attack_cat"] == "" and labelled["label"] == "0"
    Draft202012Validator(SCHEMA).validate(labelled)


def test_the_key_is_the_flow_id_else_the_five_tuple_else_none():
    assert record_key(CIC_ROW, layout_for(tuple(CIC_ROW))) == CIC_ROW["Flow ID"].encode()
    without_id = {k: v for k, v in CIC_ROW.items() if k != "Flow ID"}
    assert record_key(without_id, layout_for(tuple(without_id))) == b"192.168.10.5-8.8.8.8-50000-53-17"
    assert record_key({"Flow Duration": "1"}, layout_for(("Flow Duration",))) is None
    port_only = {" Destination Port": "80", " Flow Duration": "1"}
    assert record_key(port_only, layout_for(tuple(port_only))) is None, "a port alone is no flow identity"
