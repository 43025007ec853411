"""evaluation.split = holdout: the half of each test class that searches never read, and every
test-side number (metrics, MIA-NN reference, table titles) computed on it (~5 s with tiny_problem)."""
import numpy as np
import pandas as pd
import pytest
import torch

from analysis.attacks import mia_nn, nearest_neighbour_class, svm_mia
from analysis.metrics import retain_forget_accuracy
from grid.reports import report
from trainables import data, references, store
from trainables.evaluate import evaluate_forgetting

EVALUATION = {"seed": 0, "class_weight": "balanced", "svm_max_samples": 10_000}
HOLDOUT = {**EVALUATION, "split": "holdout"}


def test_holdout_split_halves_each_class_disjointly_and_deterministically():
    # class sizes 7, 4, 1, 10: odd sizes check the rounding (down to validation)
    labels = np.random.default_rng(1).permutation(np.repeat([0, 1, 2, 3], [7, 4, 1, 10]))
    split = data.holdout_split(labels, seed=0)
    assert np.intersect1d(split.validation, split.holdout).size == 0
    assert np.array_equal(np.sort(np.concatenate([split.validation, split.holdout])), np.arange(len(labels)))
    assert np.all(np.diff(split.validation) > 0) and np.all(np.diff(split.holdout) > 0)   # sorted
    for label, size in ((0, 7), (1, 4), (2, 1), (3, 10)):
        assert np.sum(labels[split.validation] == label) == size // 2
        assert np.sum(labels[split.holdout] == label) == size - size // 2
    again = data.holdout_split(labels, seed=0)
    assert np.array_equal(again.validation, split.validation) and again.hash == split.hash
    other = data.holdout_split(labels, seed=1)
    assert not np.array_equal(other.validation, split.validation)
    assert other.hash != split.hash


def test_evaluation_indices_are_all_test_samples_unless_holdout():
    labels = np.repeat(np.arange(3), 5)
    assert np.array_equal(data.evaluation_indices(labels, EVALUATION), np.arange(15))
    assert np.array_equal(data.evaluation_indices(labels, {**EVALUATION, "split": "test"}), np.arange(15))
    assert np.array_equal(data.evaluation_indices(labels, HOLDOUT), data.holdout_split(labels, 0).holdout)


def test_evaluate_forgetting_on_holdout_equals_the_metrics_of_the_holdout_logits(tiny_problem):
    dataset, forget = tiny_problem.dataset, [tiny_problem.forget_class]
    test_y, train_y = dataset.test_y.numpy(), dataset.train_y.numpy()
    neighbour = (3, 50.0)
    metrics, test_logits, train_logits, _ = evaluate_forgetting(tiny_problem.original, dataset, forget, HOLDOUT,
                                                             torch.device("cpu"), neighbour)
    assert test_logits.shape[0] == len(test_y)          # the stored logits stay the whole test set
    holdout = data.holdout_split(test_y, HOLDOUT["seed"]).holdout
    acc_r, acc_f = retain_forget_accuracy(test_logits[holdout], test_y[holdout], forget)
    assert metrics["acc_r_test"] == pytest.approx(acc_r) and metrics["acc_f_test"] == pytest.approx(acc_f)
    assert metrics["mia_nn"] == pytest.approx(mia_nn(test_logits[holdout], test_y[holdout], forget, 3))
    assert metrics["mia_svm"] == pytest.approx(svm_mia(train_logits, train_y, test_logits[holdout], test_y[holdout],
                                                       forget, max_samples=10_000, seed=0))
    # train metrics do not depend on the split
    assert metrics["acc_r_train"] == pytest.approx(retain_forget_accuracy(train_logits, train_y, forget)[0])
    full, _, _, _ = evaluate_forgetting(tiny_problem.original, dataset, forget, EVALUATION, torch.device("cpu"), neighbour)
    assert full["acc_r_test"] == pytest.approx(retain_forget_accuracy(test_logits, test_y, forget)[0])
    assert full["acc_r_test"] != pytest.approx(metrics["acc_r_test"])


def test_mia_nn_reference_is_computed_on_the_holdout_samples(tiny_problem, tmp_path):
    dataset, forget = tiny_problem.dataset, [tiny_problem.forget_class]
    test_y = dataset.test_y.numpy()
    # two "Retrain models": the original and a noisy copy of its logits (what matters is the subset)
    logits = [tiny_problem.original_test_logits,
              tiny_problem.original_test_logits + np.random.default_rng(0).normal(0, 1, tiny_problem.original_test_logits.shape)]
    for key, z in zip(("a", "b"), logits):
        store.save_logits(str(tmp_path), key, z, test_y)
    holdout = data.holdout_split(test_y, 0).holdout
    expected = nearest_neighbour_class([z[holdout] for z in logits], test_y[holdout], forget)
    got = references.compute(str(tmp_path), ("a", "b"), forget, HOLDOUT)
    assert got[:2] == (expected.neighbour_class, pytest.approx(expected.reference_score))
    assert got[2] == pytest.approx(expected.class_scores)   # every A_c: the unlearn trials log them


def test_table_titles_name_the_split_of_the_runs():
    old = pd.DataFrame({"dataset": ["digits"] * 2})                      # runs made before the tags
    assert report.split_note(old) == " — test split (all test samples)"
    test = pd.DataFrame({"dataset": ["digits"] * 2, "evaluation_split": ["test"] * 2, "evaluation_samples": ["360"] * 2})
    assert report.split_note(test) == " — test split (all 360 test samples)"
    holdout = test.assign(evaluation_split="holdout", evaluation_samples="184")
    assert "holdout split" in report.split_note(holdout) and "184 samples" in report.split_note(holdout)
    mixed = pd.concat([old, holdout], ignore_index=True)               # an untagged run counts as test
    assert "mixed splits" in report.split_note(mixed)
