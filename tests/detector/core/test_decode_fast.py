"""The decoder's fast path (``FlowDecoder.decode_many`` with :class:`RecordShape`) against its careful path
(``decode_bytes`` record by record): the same flows, the same numbers to the bit, the same dead-letter reasons."""

from __future__ import annotations

import json

import orjson
import pytest

from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from detector.core.features import PYTHON_CICFLOWMETER_SECONDS
from detector.core.recordshape import RecordShape
from tests.support.decoding import assert_same_results
from tests.support.generated import FEATURES, generated_rows

ROWS = [dict(row) for row in generated_rows()[:40]]
UNSW_VALID = {"dur": 0.5, "sbytes": 100, "dbytes": 200, "proto": "tcp", "service": "-", "state": "FIN", "label": 0}


def variants(row: dict) -> list[bytes | None]:
    """Records of ``row``'s key set that the careful path accepts in its own way or rejects, one reason each."""
    changed = [
        {"Flow Duration": "12.5"},  # text that is a number: accepted, the careful way
        {"Flow Duration": " Infinity "},
        {"Flow Duration": None},  # a missing value: NaN
        {"Flow Duration": True},
        {"Flow Duration": "fast"},
        {"Flow Duration": [1]},
        {"Dst Port": 2**64},  # orjson reads it as a float, msgspec as an int
        {"Dst Port": 2**64 - 1},
        {"Dst Port": -(2**63) - 1},
        {"Dst Port": 443.0},
        {"Dst Port": False},
        {"Src Port": 2**70},
        {"Src IP": {"a": 1}},
        {"Timestamp": None},
        {"Label": 10**30},
        {"Label": True},
        {"Label": ["BENIGN"]},
        {"Flow Duration": 0.0, "Flow Bytes/s": -0.0},
        {"schema_version": 1},
        {"schema_version": 1.0},
        {"schema_version": 2},
        {"schema_version": True},
        {"schema_version": "1"},
        {"extra key": 1},
        {"extra key": {"nested": [1, 2]}},
    ]
    records = [json.dumps({**row, **change}).encode() for change in changed]  # orjson cannot write 2**64
    missing = {key: value for key, value in row.items() if key != "Protocol"}
    records += [orjson.dumps(missing), orjson.dumps({"Dst Port": 80})]
    plain = orjson.dumps(row)
    records += [
        b"\xef\xbb\xbf" + plain,  # a byte-order mark: the careful path drops it
        b"  " + plain + b"\n",
        plain.replace(b'"Flow Duration":', b'"Flow Duration":1,"Flow Duration":', 1),  # a repeated key: last wins
        plain.replace(b"}", b',"x":1e400}'),
        plain.replace(b"}", b',"x":"\\ud800"}'),
        plain.replace(b'"BENIGN"', b'"BEN\xffIGN"'),
        plain[:-1],
        b"x" * 5000,
        b"[1, 2]",
        b"",
        None,
    ]
    return records


def test_a_batch_of_valid_and_broken_records_decodes_as_the_careful_path_decodes_each():
    fast, careful = FlowDecoder(FEATURES, max_record_bytes=4096), FlowDecoder(FEATURES, max_record_bytes=4096)
    plain = [orjson.dumps(row) for row in ROWS]
    fast.decode_many(plain)  # learns the producer's key set
    batch = [value for row in ROWS[:8] for value in (orjson.dumps(row), *variants(row))]
    results = fast.decode_many(batch)
    assert_same_results(results, [careful.decode_bytes(value) for value in batch])
    assert sum(type(r) is DecodedFlow for r in results) > len(ROWS[:8])  # valid ones and those accepted carefully
    assert {r.code for r in results if isinstance(r, Rejected)} >= {"wrong_type", "missing_features", "not_json"}


@pytest.mark.parametrize(
    "change",
    [
        {"Flow Duration": "12.5"},
        {"Flow Duration": None},
        {"Flow Duration": True},
        {"Dst Port": True},
        {"Dst Port": "80"},
        {"Dst Port": 2**64},
        {"Src Port": -(2**63) - 1},
        {"Label": 10**20},
        {"Src IP": ["10.0.0.1"]},
        {"schema_version": 1.0},
        {"schema_version": 2},
        {"schema_version": True},
        {"extra": 1},
    ],
)
def test_the_shape_leaves_every_doubtful_record_to_the_careful_path(change):
    row = ROWS[0]
    shape = RecordShape(list(row), FEATURES, ())
    assert shape.parse(orjson.dumps(row)) is not None
    assert shape.parse(orjson.dumps({**row, "schema_version": 1})) is not None
    assert shape.parse(json.dumps({**row, **change}).encode()) is None
    missing = {key: value for key, value in row.items() if key != "Flow Duration"}
    assert shape.parse(orjson.dumps(missing)) is None


def test_the_first_batch_of_a_new_key_set_teaches_the_next_one_and_the_old_one_comes_back():
    decoder = FlowDecoder(FEATURES)
    first = decoder.decode_many([orjson.dumps(row) for row in ROWS[:10]])
    renamed = [{key.lower().replace(" ", "_"): value for key, value in row.items()} for row in ROWS[10:20]]
    second = decoder.decode_many([orjson.dumps(row) for row in renamed])
    third = decoder.decode_many([orjson.dumps(row) for row in renamed])
    back = decoder.decode_many([orjson.dumps(row) for row in ROWS[:10]]) + decoder.decode_many(
        [orjson.dumps(row) for row in ROWS[:10]]
    )
    expected = [FlowDecoder(FEATURES).decode_bytes(orjson.dumps(r)) for r in ROWS[:10] + renamed * 2 + ROWS[:10] * 2]
    assert_same_results(first + second + third + back, expected)


def test_python_cicflowmeter_seconds_are_scaled_on_the_fast_path_as_on_the_careful_one():
    seconds = ("flow_duration", "flow_iat_mean")
    assert set(seconds) <= PYTHON_CICFLOWMETER_SECONDS
    decoder = FlowDecoder(("Flow Duration", "Flow IAT Mean", "Dst Port"))
    records = [
        orjson.dumps({**{name: 0.000123 * (i + 1) for name in seconds}, "dst_port": 80 + i, "src_ip": "10.0.0.1"})
        for i in range(6)
    ]
    decoder.decode_many(records)
    results = decoder.decode_many(records)
    assert_same_results(results, [FlowDecoder(decoder.numeric).decode_bytes(value) for value in records])
    assert results[0].numeric[0] == pytest.approx(123.0)


def test_categories_take_the_fast_path_like_the_careful_one():
    decoder = FlowDecoder(("dur", "sbytes", "dbytes"), ("proto", "service", "state"))
    records = [orjson.dumps({**UNSW_VALID, "sbytes": i, "proto": [" tcp ", 6, None, 1.5][i % 4]}) for i in range(8)]
    records += [json.dumps({**UNSW_VALID, "proto": value}).encode() for value in (True, [1], 2**65, "", "\u00e9")]
    decoder.decode_many(records[:4])
    results = decoder.decode_many(records)
    careful = FlowDecoder(decoder.numeric, decoder.categorical)
    assert_same_results(results, [careful.decode_bytes(value) for value in records])
    assert results[1].categorical == ("6", "-", "FIN")
