"""Comparing decoder results: the fast path must give what the careful path gives, to the bit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.core.decode import DecodedFlow, Rejected


def assert_same_results(got: Sequence[DecodedFlow | Rejected], expected: Sequence[DecodedFlow | Rejected]) -> None:
    """Equal flows (numbers bit for bit, NaN and the sign of zero included; categories, flow fields and their
    types, label) and equal rejections (code and reason), position by position."""
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert type(a) is type(b), (index, a, b)
        if isinstance(b, Rejected):
            assert a == b, index
            continue
        assert isinstance(a, DecodedFlow)
        assert a.numeric.dtype == b.numeric.dtype == np.float64 and a.numeric.shape == b.numeric.shape, index
        assert a.numeric.tobytes() == b.numeric.tobytes(), (index, a.numeric, b.numeric)
        assert a.categorical == b.categorical, index
        assert a.flow == b.flow and {k: type(v) for k, v in a.flow.items()} == {k: type(v) for k, v in b.flow.items()}
        assert a.label == b.label, index
