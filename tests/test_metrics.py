"""analysis/metrics.py on arrays small enough to work out by hand (each expected value is derived in the
comment beside it)."""
import math

import numpy as np
import pytest

from analysis.metrics import accuracy, forget_mask, per_class_accuracy, retain_forget_accuracy, softmax

# 6 samples, 3 classes; argmax per row: 0, 1, 1, 2, 0, 2
LOGITS = np.array([[2.0, 1.0, 0.0],
                   [0.0, 3.0, 1.0],
                   [1.0, 2.0, 0.0],
                   [0.0, 0.0, 5.0],
                   [4.0, 0.0, 1.0],
                   [1.0, 1.0, 2.0]])
LABELS = np.array([0, 1, 2, 2, 1, 2])
# right: yes, yes, no (2 -> 1), yes, no (1 -> 0), yes: 4 of 6


def test_softmax_of_hand_computed_rows():
    # [0, ln 3] -> e^0 : e^ln3 = 1 : 3 -> [0.25, 0.75]; [ln 2, ln 2, 0] -> 2 : 2 : 1 -> [0.4, 0.4, 0.2]
    np.testing.assert_allclose(softmax([[0.0, math.log(3.0)]]), [[0.25, 0.75]], rtol=1e-12)
    np.testing.assert_allclose(softmax([[math.log(2.0), math.log(2.0), 0.0]]), [[0.4, 0.4, 0.2]], rtol=1e-12)


def test_softmax_is_stable_for_huge_logits_and_returns_float64():
    # [1000, 1000 + ln 3]: a naive exp overflows; shifted by the max it is [0, ln 3] -> [0.25, 0.75]
    probabilities = softmax(np.array([[1000.0, 1000.0 + math.log(3.0)]], dtype=np.float32))
    assert probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities, [[0.25, 0.75]], rtol=1e-4)   # float32 input: ln 3 to ~1e-4


def test_forget_mask_takes_one_class_or_several():
    assert forget_mask(LABELS, 2).tolist() == [False, False, True, True, False, True]
    assert forget_mask(LABELS, [0, 1]).tolist() == [True, True, False, False, True, False]
    assert forget_mask(LABELS, []).tolist() == [False] * 6


def test_accuracy_counts_argmax_hits_in_percent():
    assert accuracy(LOGITS, LABELS) == pytest.approx(100 * 4 / 6)
    assert math.isnan(accuracy(LOGITS[:0], LABELS[:0]))   # no samples: not 0, not 100


def test_retain_forget_accuracy_splits_by_the_forget_classes():
    # forget {2}: samples 2, 3, 5 -> right: no, yes, yes = 2/3; retained 0, 1, 4 -> yes, yes, no = 2/3
    acc_r, acc_f = retain_forget_accuracy(LOGITS, LABELS, [2])
    assert (acc_r, acc_f) == pytest.approx((200 / 3, 200 / 3))
    # forget {1}: samples 1, 4 -> yes, no = 50; retained 0, 2, 3, 5 -> yes, no, yes, yes = 75
    assert retain_forget_accuracy(LOGITS, LABELS, 1) == pytest.approx((75.0, 50.0))
    # forget {0, 1}: samples 0, 1, 4 -> 2 of 3; retained 2, 3, 5 -> 2 of 3 (order: Acc_r first)
    assert retain_forget_accuracy(LOGITS, LABELS, [0, 1]) == pytest.approx((200 / 3, 200 / 3))


def test_retain_forget_accuracy_is_not_symmetric():
    # a model right on every retained sample and wrong on every forget sample: (100, 0), never (0, 100)
    labels = np.array([0, 0, 1, 1])
    logits = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])   # always predicts 0
    assert retain_forget_accuracy(logits, labels, [1]) == (100.0, 0.0)


def test_per_class_accuracy_is_nan_for_a_class_without_samples():
    # class 0: sample 0 right -> 100; class 1: samples 1 (right), 4 (wrong) -> 50;
    # class 2: samples 2 (wrong), 3, 5 (right) -> 66.67; class 3: no samples -> NaN
    out = per_class_accuracy(LOGITS, LABELS, 4)
    np.testing.assert_allclose(out[:3], [100.0, 50.0, 200 / 3])
    assert math.isnan(out[3])
