"""Property: any Kafka message value ends as a decoded flow or a typed rejection, never an exception.

``decode_bytes`` turns a decoder failure into ``Rejected("decoder_error")`` so that one record cannot stop a worker;
that net must never be what catches a hostile record: a ``decoder_error`` here is a bug the net hid.
"""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from detector.core.decode import DecodedFlow, FlowDecoder, Rejected
from tests.support.decoding import assert_same_results
from tests.support.generated import FEATURES, generated_rows
from tests.support.properties import HOSTILE, flow_like_records, json_values, message_values, scalars, to_json_bytes

CIC = FlowDecoder(FEATURES, max_record_bytes=4096)
# UNSW-NB15's categories go through their own path (strings, never containers).
UNSW = FlowDecoder(("dur", "sbytes", "dbytes"), ("proto", "service", "state"), max_record_bytes=4096)

CODES = {"empty", "oversized", "not_json", "not_object", "schema_version", "missing_features", "wrong_type"}


def assert_verdict_or_rejection(result: object, decoder: FlowDecoder) -> None:
    if isinstance(result, Rejected):
        assert result.code in CODES, result
        assert result.reason.strip()
        return
    assert isinstance(result, DecodedFlow)
    assert result.numeric.shape == (len(decoder.numeric),)
    assert result.numeric.dtype == np.float64
    assert len(result.categorical) == len(decoder.categorical)
    assert all(isinstance(category, str) for category in result.categorical)
    assert result.label is None or isinstance(result.label, str)
    assert all(not isinstance(value, dict | list) for value in result.flow.values())


@HOSTILE
@given(message_values)
@example(b"\xef\xbb\xbf")  # a byte-order mark and nothing else
@example(b'{"Dst Port": 1e400}')
def test_any_message_value_is_a_flow_or_a_typed_rejection(raw):
    for decoder in (CIC, UNSW):
        assert_verdict_or_rejection(decoder.decode_bytes(raw), decoder)


@HOSTILE
@given(json_values)
def test_any_json_value_is_a_flow_or_a_typed_rejection(value):
    result = CIC.decode_bytes(to_json_bytes(value))
    assert_verdict_or_rejection(result, CIC)
    if not isinstance(value, dict):
        assert isinstance(result, Rejected) and result.code in {"not_object", "not_json", "oversized"}


@HOSTILE
@given(flow_like_records())
def test_a_flow_like_record_with_hostile_fields_is_a_flow_or_a_typed_rejection(record):
    assert_verdict_or_rejection(CIC.decode_bytes(to_json_bytes(record)), CIC)


UNSW_VALID = {"dur": 0.5, "sbytes": 100, "dbytes": 200, "proto": "tcp", "service": "-", "state": "FIN"}


@HOSTILE
@given(st.dictionaries(st.sampled_from(sorted(UNSW_VALID)), scalars | st.lists(scalars, max_size=2), max_size=6))
def test_a_unsw_record_with_hostile_categories_is_a_flow_or_a_typed_rejection(changed):
    record = {**UNSW_VALID, **changed}
    result = UNSW.decode_bytes(to_json_bytes(record))
    assert_verdict_or_rejection(result, UNSW)
    if not changed:
        assert isinstance(result, DecodedFlow)


def _primed(decoder: FlowDecoder, records: list[bytes]) -> FlowDecoder:
    decoder.decode_many(records)  # the fast path learns this producer's key set
    return decoder


_CIC_ROWS = [orjson.dumps(row) for row in generated_rows()[:6]]
CIC_FAST = _primed(FlowDecoder(FEATURES, max_record_bytes=4096), _CIC_ROWS)
UNSW_FAST = _primed(FlowDecoder(UNSW.numeric, UNSW.categorical, max_record_bytes=4096), [orjson.dumps(UNSW_VALID)] * 4)


@HOSTILE
@given(st.lists(message_values, max_size=4))
def test_a_batch_decodes_as_each_of_its_records_decodes_alone(values):
    """The fast path (decode_many) against the careful one (decode_bytes): same flows to the bit, same reasons."""
    batch = [*_CIC_ROWS[:3], *values]
    assert_same_results(CIC_FAST.decode_many(batch), [CIC.decode_bytes(value) for value in batch])


@HOSTILE
@given(st.dictionaries(st.sampled_from(sorted(UNSW_VALID)), scalars, max_size=6))
def test_a_unsw_batch_decodes_as_each_of_its_records_decodes_alone(changed):
    batch = [orjson.dumps(UNSW_VALID)] * 3 + [to_json_bytes({**UNSW_VALID, **changed})]
    assert_same_results(UNSW_FAST.decode_many(batch), [UNSW.decode_bytes(value) for value in batch])
