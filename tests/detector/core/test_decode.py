import math

import orjson
import pytest

from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from tests.support.generated import FEATURES, generated_rows


@pytest.fixture
def decoder():
    return FlowDecoder(FEATURES, max_record_bytes=4096)


def record():
    return dict(generated_rows()[0])


def test_a_valid_record_decodes_to_numbers_in_bundle_order(decoder):
    row = record()
    flow = decoder.decode_bytes(orjson.dumps(row))
    assert isinstance(flow, DecodedFlow)
    assert flow.numeric.tolist() == [float(row[name]) for name in FEATURES]
    assert flow.flow["src_ip"] == row["Src IP"]
    assert flow.flow["dst_port"] == row["Dst Port"]
    assert flow.label == row["Label"].replace("\u2013", "-")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"x" * 5000, "oversized"),
        (b"{not json", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"just a string"', "not_object"),
    ],
)
def test_undecodable_messages_are_rejected_with_a_code(decoder, raw, code):
    result = decoder.decode_bytes(raw)
    assert isinstance(result, Rejected)
    assert result.code == code
    assert result.reason


def test_a_wrong_schema_version_is_rejected(decoder):
    result = decoder.decode_mapping({**record(), "schema_version": 2})
    assert isinstance(result, Rejected) and result.code == "schema_version"
    assert isinstance(decoder.decode_mapping({**record(), "schema_version": 1}), DecodedFlow)
    result = decoder.decode_mapping({**record(), "schema_version": True})  # Python's True == 1; JSON's true is not
    assert isinstance(result, Rejected) and result.code == "schema_version"


@pytest.mark.parametrize("field", ["Src IP", "Flow ID", "Timestamp", "Label"])
@pytest.mark.parametrize("value", [{"a": 1}, [1, 2]])
def test_an_identity_or_label_field_holding_a_json_container_is_a_wrong_type(decoder, field, value):
    result = decoder.decode_mapping({**record(), field: value})
    assert isinstance(result, Rejected) and result.code == "wrong_type"
    assert repr(field) in result.reason


def test_a_record_behind_a_utf8_byte_order_mark_decodes(decoder):
    assert isinstance(decoder.decode_bytes(b"\xef\xbb\xbf" + orjson.dumps(record())), DecodedFlow)


@pytest.mark.parametrize("value", [{"a": 1}, ["tcp"], True])
def test_a_category_that_is_not_a_name_is_a_wrong_type(value):
    decoder = FlowDecoder(FEATURES, ["proto"])
    assert isinstance(decoder.decode_mapping({**record(), "proto": "tcp"}), DecodedFlow)
    assert decoder.decode_mapping({**record(), "proto": 6}).categorical == ("6",)  # a number reads as its text
    result = decoder.decode_mapping({**record(), "proto": value})
    assert isinstance(result, Rejected) and result.code == "wrong_type" and "'proto'" in result.reason


def test_missing_features_are_named(decoder):
    row = record()
    del row["Flow Duration"], row["Protocol"]
    result = decoder.decode_mapping(row)
    assert isinstance(result, Rejected) and result.code == "missing_features"
    assert "Flow Duration" in result.reason and "Protocol" in result.reason


def test_text_in_a_numeric_field_is_a_wrong_type(decoder):
    result = decoder.decode_mapping({**record(), "Flow Duration": "fast"})
    assert isinstance(result, Rejected) and result.code == "wrong_type"
    assert "Flow Duration" in result.reason


def test_meter_tokens_for_infinity_and_nan_are_accepted(decoder):
    result = decoder.decode_mapping({**record(), "Flow Bytes/s": "Infinity", "Flow Packets/s": None})
    assert isinstance(result, DecodedFlow)
    values = dict(zip(FEATURES, result.numeric, strict=True))
    assert values["Flow Bytes/s"] == math.inf
    assert math.isnan(values["Flow Packets/s"])


def test_a_decoder_failure_on_one_record_rejects_that_record_instead_of_raising(decoder, monkeypatch):
    def decoder_bug(value):
        raise OverflowError("a bug the decoder did not foresee")

    monkeypatch.setattr("detector.core.decode.parse_number", decoder_bug)
    result = decoder.decode_bytes(orjson.dumps(record()))
    assert isinstance(result, Rejected) and result.code == "decoder_error"
    assert "OverflowError: a bug the decoder did not foresee" in result.reason


def test_a_hex_number_too_large_for_a_float_decodes_as_infinity_instead_of_failing(decoder):
    result = decoder.decode_mapping({**record(), "Flow Duration": "0x" + "f" * 300})
    assert isinstance(result, DecodedFlow)
    assert dict(zip(FEATURES, result.numeric, strict=True))["Flow Duration"] == math.inf


def test_python_cicflowmeter_records_are_converted_to_microseconds():
    decoder = FlowDecoder(["Flow Duration", "Total Fwd Packet"])
    result = decoder.decode_mapping({"flow_duration": 1.5, "tot_fwd_pkts": 3, "src_ip": "10.0.0.1"})
    assert isinstance(result, DecodedFlow)
    assert result.numeric.tolist() == [1_500_000.0, 3.0]
    assert result.flow == {"src_ip": "10.0.0.1"}
    assert result.label is None


def test_unsw_categorical_features_are_kept_as_text():
    decoder = FlowDecoder(["dur", "sbytes"], ["proto", "service"])
    result = decoder.decode_mapping({"dur": 0.1, "sbytes": 10, "proto": "tcp", "service": "-", "attack_cat": ""})
    assert isinstance(result, DecodedFlow)
    assert result.categorical == ("tcp", "-")
    assert result.label is None
