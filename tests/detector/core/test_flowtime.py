"""Flow timestamps: one rule for every form a flow meter writes, the same in training and in serving."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from detector.core.flowtime import flow_time, flow_times
from trainer.load import parse_timestamps

CASES = [
    ("2017-07-03 11:00:00.5", datetime(2017, 7, 3, 11, 0, 0, 500000, tzinfo=UTC)),
    ("2017-07-05 18:12:15.650811", datetime(2017, 7, 5, 18, 12, 15, 650811, tzinfo=UTC)),
    ("2024-11-22T10:00:00+01:00", datetime(2024, 11, 22, 9, 0, tzinfo=UTC)),
    ("2024-11-22T10:00:00Z", datetime(2024, 11, 22, 10, 0, tzinfo=UTC)),
    ("14/02/2018 08:31:01", datetime(2018, 2, 14, 8, 31, 1, tzinfo=UTC)),
    ("3/7/2017 8:59", datetime(2017, 7, 3, 8, 59, tzinfo=UTC)),  # CICFlowMeter: day first
    ("5/7/2017 8:12", datetime(2017, 7, 5, 8, 12, tzinfo=UTC)),  # ambiguous: day first, the documented rule
    ("31/12/2017 10:00", datetime(2017, 12, 31, 10, 0, tzinfo=UTC)),
    ("12/31/2017 10:00", datetime(2017, 12, 31, 10, 0, tzinfo=UTC)),  # the day can only be second
    ("07/13/2017 01:02:03 PM", datetime(2017, 7, 13, 13, 2, 3, tzinfo=UTC)),
    ("13/07/2017 12:05 AM", datetime(2017, 7, 13, 0, 5, tzinfo=UTC)),
    ("1421927377", datetime(2015, 1, 22, 11, 49, 37, tzinfo=UTC)),  # UNSW-NB15 Stime: seconds
    ("1421927377000", datetime(2015, 1, 22, 11, 49, 37, tzinfo=UTC)),  # milliseconds
    ("1421927377000000", datetime(2015, 1, 22, 11, 49, 37, tzinfo=UTC)),  # microseconds
    ("1421927377000000000", datetime(2015, 1, 22, 11, 49, 37, tzinfo=UTC)),  # nanoseconds
]
NOT_TIMES = ["", "not a time", "31/31/2017 10:00", "13/13/2017", "2017-02-30 10:00", "NaN", "inf", None, True]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[text for text, _ in CASES])
def test_each_form_reads_as_its_moment(text, expected):
    assert flow_time(text) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize("value", NOT_TIMES)
def test_what_is_no_time_reads_as_none(value):
    assert flow_time(value) is None


def test_json_numbers_read_like_their_text():
    assert flow_time(1421927377) == flow_time("1421927377") == 1421927377.0
    assert flow_time(1421927377000.0) == 1421927377.0


def test_training_reads_every_form_as_serving_does():
    texts = [text for text, _ in CASES] + [value for value in NOT_TIMES if isinstance(value, str)]
    trained = parse_timestamps(pd.Series(texts, dtype=object))
    served = flow_times(texts)
    for text, moment, seconds in zip(texts, trained, served, strict=True):
        if np.isnan(seconds):
            assert pd.isna(moment), text
        else:
            assert moment == pd.Timestamp(round(seconds * 1e6), unit="us"), text
