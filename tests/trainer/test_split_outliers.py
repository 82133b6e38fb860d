import re

import numpy as np
import pandas as pd
import pytest

from trainer.outliers import remove_benign_outliers
from trainer.split import SplitError, stratified_split, temporal_split


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = pd.Series(["a"] * 700 + ["b"] * 280 + ["c"] * 20)
    split = stratified_split(labels, 0.3, seed=7)
    assert len(split.test) == 300
    assert set(split.train).isdisjoint(split.test)
    assert labels.iloc[split.test].value_counts().to_dict() == {"a": 210, "b": 84, "c": 6}
    again = stratified_split(labels, 0.3, seed=7)
    np.testing.assert_array_equal(split.test, again.test)


def test_a_single_row_class_goes_to_train_and_is_reported():
    labels = pd.Series(["a"] * 50 + ["b"] * 50 + ["lonely"])
    split = stratified_split(labels, 0.3, seed=0)
    assert split.train_only_classes == ("lonely",)
    assert 100 in split.train


def test_temporal_split_tests_on_the_latest_flows():
    times = pd.Series(pd.date_range("2017-07-03", periods=10, freq="h")).sample(frac=1, random_state=1)
    labels = pd.Series(["x"] * 10)
    split = temporal_split(labels, times.reset_index(drop=True), 0.3)
    tested = times.reset_index(drop=True).iloc[split.test]
    trained = times.reset_index(drop=True).iloc[split.train]
    assert tested.min() > trained.max()


def test_temporal_split_reports_a_class_that_only_the_test_side_has():
    times = pd.Series(pd.date_range("2017-07-03", periods=10, freq="h"))
    labels = pd.Series(["early"] * 7 + ["late"] * 3)
    split = temporal_split(labels, times, 0.3)
    assert split.test_only_classes == ("late",)
    assert split.train_only_classes == ("early",)


def test_a_test_size_that_leaves_too_few_training_rows_says_so():
    labels = pd.Series(["a"] * 50 + ["b"] * 50)
    with pytest.raises(SplitError, match=re.escape("a test size of 0.995 leaves 0 of 100 rows for training")):
        stratified_split(labels, 0.995, seed=0)


def test_temporal_split_without_timestamps_is_a_clear_error():
    with pytest.raises(SplitError, match="needs flow timestamps"):
        temporal_split(pd.Series(["a", "b"]), pd.Series([pd.NaT, pd.NaT]), 0.5)


def test_isolation_forest_only_removes_benign_rows():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(300, 3)), [[40, 40, 40]], rng.normal(10, 5, size=(30, 3))])
    labels = np.array(["BENIGN"] * 301 + ["attack"] * 30)
    result = remove_benign_outliers(x, labels, "BENIGN", contamination=0.02, seed=0)
    assert not result.keep[300]  # the far-away benign row is gone
    assert result.keep[labels == "attack"].all()
    assert result.removed == (~result.keep).sum() > 0


def test_benign_rows_are_judged_against_benign_traffic_not_against_the_attacks():
    # Ten benign rows sit inside a dense attack cluster: unusual for benign traffic (and likely mislabeled),
    # ordinary among all rows. A forest fitted on every row would keep them.
    rng = np.random.default_rng(0)
    benign_core, benign_odd = rng.normal(size=(300, 3)), rng.normal(10, 0.3, size=(10, 3))
    attacks = rng.normal(10, 0.3, size=(300, 3))
    x = np.vstack([benign_core, benign_odd, attacks])
    labels = np.array(["BENIGN"] * 310 + ["DDoS"] * 300)
    result = remove_benign_outliers(x, labels, "BENIGN", contamination=0.04, seed=0)
    assert not result.keep[300:310].any()
    assert result.keep[labels == "DDoS"].all()
