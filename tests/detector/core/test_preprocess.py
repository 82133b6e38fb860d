import json
import math

import numpy as np
import pytest

from detector.core.preprocess import PreprocessingError, Preprocessor


def fitted(log_scale=False):
    train = np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 3.0], [5.0, 5.0, math.inf]])
    return Preprocessor.fit(train, ["a", "constant", "rate"], log_scale=log_scale)


def test_min_max_uses_the_training_range_and_clips_outside_it():
    out = fitted().transform(np.array([[5.0, 5.0, 2.0], [20.0, 5.0, 0.0], [-3.0, 5.0, 1.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], [0.5, 1.0, 0.0])
    np.testing.assert_allclose(out[:, 2], [0.5, 0.0, 0.0])


def test_nonfinite_rule_nan_is_zero_and_infinities_are_range_ends():
    out = fitted().transform(np.array([[math.nan, 5.0, math.inf], [1.0, 5.0, -math.inf]]))
    assert out[0, 0] == 0.0  # NaN -> raw 0 -> bottom of [0, 10]
    assert out[0, 2] == 1.0  # +inf -> top of the range
    assert out[1, 2] == 0.0
    assert np.isfinite(out).all()


def test_training_infinities_do_not_stretch_the_range():
    pre = fitted()
    assert pre.maximum[2] == 3.0


def test_a_column_constant_in_training_always_maps_to_zero():
    out = fitted().transform(np.array([[1.0, 999.0, 1.0], [1.0, -5.0, 1.0], [1.0, math.inf, 1.0]]))
    assert (out[:, 1] == 0).all()


def test_signed_log_is_monotonic_and_keeps_outputs_in_unit_range():
    pre = fitted(log_scale=True)
    out = pre.transform(np.array([[0.0, 5.0, 1.0], [1.0, 5.0, 2.0], [10.0, 5.0, 3.0]]))
    assert out[0, 0] < out[1, 0] < out[2, 0] == 1.0


def test_signed_log_scales_on_the_log_of_the_magnitude_keeping_the_sign():
    """sign(x)·log1p(|x|) before min-max: 1 lands at log(2)/log(11) of the way from 0 to 10, not at 1/10."""
    pre = Preprocessor.fit(np.array([[-10.0], [10.0]]), ["a"], log_scale=True)
    out = pre.transform(np.array([[1.0], [-1.0], [0.0]]))
    half = 0.5 * math.log1p(1) / math.log1p(10)
    np.testing.assert_allclose(out[:, 0], [0.5 + half, 0.5 - half, 0.5], rtol=1e-6)


def test_categories_are_one_hot_and_unknown_categories_are_all_zero():
    pre = Preprocessor.fit(np.zeros((3, 1)), ["n"], {"proto": ["tcp", "udp", "tcp"]})
    assert pre.output_names == ("n", "proto=tcp", "proto=udp")
    out = pre.transform(np.zeros((3, 1)), {"proto": ["udp", "sctp", " tcp "]})
    np.testing.assert_array_equal(out[:, 1:], [[0, 1], [0, 0], [1, 0]])


def test_json_round_trip_gives_the_same_transform():
    pre = fitted(log_scale=True)
    again = Preprocessor.from_json(json.loads(json.dumps(pre.to_json())))
    rows = np.array([[3.0, 5.0, 2.5], [math.nan, 1.0, math.inf]])
    np.testing.assert_array_equal(pre.transform(rows), again.transform(rows))


@pytest.mark.parametrize(
    "change",
    [{"format": "other/9"}, {"minimum": [0.0]}, {"maximum": [-1.0, 0.0, 0.0]}, {"numeric": None}],
)
def test_malformed_parameters_are_refused(change):
    data = {**fitted().to_json(), **change}
    with pytest.raises(PreprocessingError):
        Preprocessor.from_json(data)


def test_wrong_width_input_is_an_error():
    with pytest.raises(PreprocessingError, match="3 numeric columns"):
        fitted().transform(np.zeros((2, 4)))


def test_only_the_most_frequent_categories_get_a_column():
    values = ["tcp"] * 5 + ["udp"] * 3 + ["ospf"] * 2 + ["sctp"]
    pre = Preprocessor.fit(np.zeros((len(values), 1)), ["n"], {"proto": values}, max_categories=2)
    assert pre.categories == {"proto": ("tcp", "udp")}
    out = pre.transform(np.zeros((2, 1)), {"proto": ["ospf", "udp"]})
    np.testing.assert_array_equal(out[:, 1:], [[0, 0], [0, 1]])
