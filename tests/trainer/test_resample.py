import numpy as np

from trainer.resample import smote_tomek


def imbalanced(counts, seed=0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(loc=3 * i, scale=0.3, size=(n, 4)) for i, n in enumerate(counts)])
    y = np.concatenate([np.full(n, i) for i, n in enumerate(counts)])
    return x, y


def test_minority_classes_are_raised_towards_the_majority():
    x, y = imbalanced([200, 40, 15])
    result = smote_tomek(x, y, seed=1)
    assert result.counts_before == {"0": 200, "1": 40, "2": 15}
    for label in ("1", "2"):
        assert result.counts_after[label] > 150  # Tomek may remove a few border rows
    assert len(result.labels) == len(result.features)


def test_a_class_smaller_than_k_plus_one_gets_a_smaller_k_of_its_own_and_says_so():
    x, y = imbalanced([100, 50, 4])
    result = smote_tomek(x, y, k_neighbors=5, seed=1)
    assert result.k_neighbors == 5 and result.k_reduced == {"2": 3}
    assert any("k_neighbors reduced from 5 to 3 for 2: it has 4 training rows" in note for note in result.notes)
    assert result.counts_after["2"] > 4


def test_a_tiny_class_does_not_change_how_the_other_classes_are_synthesized():
    x, y = imbalanced([100, 50, 30, 4])
    with_tiny = smote_tomek(x, y, seed=1, tomek=False)
    without = smote_tomek(x[y != 3], y[y != 3], seed=1, tomek=False)

    def rows(result, label):
        mine = result.features[result.labels == label]
        return mine[np.lexsort(mine.T)]

    for label in (1, 2):
        np.testing.assert_array_equal(rows(with_tiny, label), rows(without, label))


def test_a_single_row_class_is_duplicated_not_interpolated():
    x, y = imbalanced([60, 30, 1])
    result = smote_tomek(x, y, seed=1, tomek=False)
    rows = result.features[result.labels == 2]
    assert len(rows) == 60
    assert np.allclose(rows, x[y == 2][0])
    assert any("duplicated" in note for note in result.notes)


def test_notes_name_the_classes_they_are_about():
    x, y = imbalanced([60, 30, 4, 1])
    result = smote_tomek(x, y, seed=1, tomek=False, class_names=("BENIGN", "DoS", "Infiltration", "Heartbleed"))
    assert "duplicated rather than interpolated (one training row): Heartbleed" in result.notes
    assert "k_neighbors reduced from 5 to 3 for Infiltration: it has 4 training rows" in result.notes


def test_the_cap_limits_oversampling_and_rows_come_out_shuffled():
    x, y = imbalanced([300, 20])
    result = smote_tomek(x, y, max_rows_per_class=100, seed=1, tomek=False)
    assert result.counts_after == {"0": 300, "1": 100}
    assert not (np.diff(result.labels) >= 0).all()


def test_same_seed_same_rows():
    x, y = imbalanced([100, 20, 8])
    a, b = smote_tomek(x, y, seed=3), smote_tomek(x, y, seed=3)
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_the_benign_class_is_never_synthesized():
    x, y = imbalanced([200, 120, 15])
    result = smote_tomek(x, y, keep=[1], seed=1, tomek=False)
    assert result.counts_after["1"] == 120
    assert result.counts_after["2"] == 200


def test_without_keep_a_benign_minority_is_oversampled_like_any_class():
    x, y = imbalanced([30, 200, 120])  # class 0 plays an attack-heavy dataset's benign flows
    result = smote_tomek(x, y, seed=1, tomek=False, max_ratio=4)
    assert result.counts_after["0"] == 120
