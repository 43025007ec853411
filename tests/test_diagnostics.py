"""Confusion matrices, forget-class redistribution and per-class drops on hand-made logits."""
import numpy as np
import pandas as pd
import pytest

from analysis.diagnostics import confusion_matrix, forget_redistribution, per_class_drop


def one_hot_logits(predictions, num_classes):
    """Logits whose argmax is `predictions`."""
    logits = np.zeros((len(predictions), num_classes))
    logits[np.arange(len(predictions)), predictions] = 5.0
    return logits


def test_confusion_matrix_hand_made():
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    predicted = [0, 0, 1, 1, 2, 2, 2, 0]
    matrix = confusion_matrix(one_hot_logits(predicted, 4), labels, 4)
    expected = np.array([[2, 1, 0, 0],
                         [0, 1, 1, 0],
                         [1, 0, 2, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype.kind == "i"
    assert matrix.sum() == len(labels)


def test_confusion_matrix_rows_are_true_class():
    # All samples of class 1 predicted as 3: the count sits in row 1, column 3.
    matrix = confusion_matrix(one_hot_logits([3, 3], 4), [1, 1], 4)
    assert matrix[1, 3] == 2 and matrix.sum() == 2


def test_forget_redistribution_single_class_matches_hand_count():
    labels = np.array([2, 2, 2, 2, 0, 1])
    predicted = [1, 1, 0, 3, 0, 1]   # forget class 2: two -> 1, one -> 0, one -> 3
    shares = forget_redistribution(one_hot_logits(predicted, 4), labels, 2, 4)
    np.testing.assert_allclose(shares, [25.0, 50.0, 0.0, 25.0])
    assert shares.sum() == pytest.approx(100.0)


def test_forget_redistribution_pools_multiple_forget_classes():
    labels = np.array([1, 1, 2, 2, 2, 0, 3])
    predicted = [0, 3, 3, 3, 2, 1, 1]   # forget {1, 2}: 0 once, 3 three times, 2 once (of 5)
    shares = forget_redistribution(one_hot_logits(predicted, 4), labels, [1, 2], 4)
    np.testing.assert_allclose(shares, [20.0, 0.0, 20.0, 60.0])
    assert shares.sum() == pytest.approx(100.0)


def test_forget_redistribution_random_sums_to_100():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    shares = forget_redistribution(rng.normal(size=(500, 10)), labels, [3, 7], 10)
    assert shares.shape == (10,)
    assert shares.sum() == pytest.approx(100.0)


def test_forget_redistribution_without_forget_samples_is_nan():
    shares = forget_redistribution(one_hot_logits([0, 1], 3), [0, 1], 2, 3)
    assert np.isnan(shares).all()


def drop_problem():
    """10 samples per class for 5 classes; forget classes 1 and 3. Original accuracy per class
    90, 100, 80, 70, 60 %; new accuracy 90, 0, 50, 0, 40 % (classes 2 and 4 lose 30 and 20 points)."""
    num_classes, per_class = 5, 10
    labels = np.repeat(np.arange(num_classes), per_class)
    def predictions(correct):
        out = labels.copy()
        for c, k in enumerate(correct):
            wrong = np.flatnonzero(labels == c)[k:]
            out[wrong] = (c + 1) % num_classes
        return out
    original = one_hot_logits(predictions([9, 10, 8, 7, 6]), num_classes)
    new = one_hot_logits(predictions([9, 0, 5, 0, 4]), num_classes)
    return original, new, labels, num_classes


def test_per_class_drop_orders_and_excludes_forget_classes():
    original, new, labels, num_classes = drop_problem()
    frame = per_class_drop(original, new, labels, num_classes, [1, 3])
    assert list(frame.columns) == ["class", "original_acc", "acc", "drop"]
    assert frame["class"].tolist() == [2, 4, 0]
    np.testing.assert_allclose(frame["original_acc"], [80.0, 60.0, 90.0])
    np.testing.assert_allclose(frame["acc"], [50.0, 40.0, 90.0])
    np.testing.assert_allclose(frame["drop"], [30.0, 20.0, 0.0])
    assert frame["drop"].is_monotonic_decreasing


def test_per_class_drop_top_k_and_names():
    original, new, labels, num_classes = drop_problem()
    frame = per_class_drop(original, new, labels, num_classes, 1, top=2,
                           class_names=["a", "b", "c", "d", "e"])
    # Forget class 1 only: class 3 drops 70 points, then class 2 (30).
    assert frame["class"].tolist() == ["d", "c"]
    np.testing.assert_allclose(frame["drop"], [70.0, 30.0])
    assert per_class_drop(original, new, labels, num_classes, 1, top=None).shape[0] == 4


def test_per_class_drop_ties_by_class_index_and_negative_drops():
    labels = np.array([0, 1, 2, 3])
    original = one_hot_logits([1, 2, 2, 3], 4)   # class 0 wrong, 1 wrong, 2 right, 3 right
    new = one_hot_logits([0, 0, 0, 0], 4)        # class 0 right now; 2 and 3 wrong
    frame = per_class_drop(original, new, labels, 4, [1], top=None)
    assert frame["class"].tolist() == [2, 3, 0]
    np.testing.assert_allclose(frame["drop"], [100.0, 100.0, -100.0])
    assert isinstance(frame, pd.DataFrame) and frame.index.tolist() == [0, 1, 2]
