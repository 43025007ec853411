"""SVM MIA and MIA-NN on synthetic logits whose answer is known (docs/metrics.md, SVM-MIA and MIA-NN)."""
import numpy as np
import pytest

from analysis.attacks import (NeighbourClass, class_logit_attack, class_logit_predictions, mia_nn, mia_nn_predictions,
                              nearest_neighbour_class, svm_mia, svm_mia_predictions)

NUM_CLASSES = 5


def balanced_labels(per_class, num_classes=NUM_CLASSES):
    return np.repeat(np.arange(num_classes), per_class)


# --- SVM MIA ---------------------------------------------------------------------------------


def confident_logits(labels, forget_classes, forget_confident, rng):
    """Noise logits plus a large true-class logit; forget samples get a low one unless forget_confident."""
    logits = rng.normal(0.0, 0.5, (len(labels), NUM_CLASSES))
    boost = rng.normal(6.0, 1.0, len(labels))
    is_forget = np.isin(labels, forget_classes)
    if not forget_confident:
        boost[is_forget] = rng.normal(-2.0, 1.0, is_forget.sum())
    logits[np.arange(len(labels)), labels] += boost
    return logits


@pytest.mark.parametrize("forget_classes", [2, [1, 3]])
def test_svm_mia_is_100_when_the_model_never_saw_the_forget_classes(forget_classes):
    rng = np.random.default_rng(0)
    train_labels, test_labels = balanced_labels(200), balanced_labels(50)
    train_logits = confident_logits(train_labels, forget_classes, forget_confident=False, rng=rng)
    test_logits = confident_logits(test_labels, forget_classes, forget_confident=False, rng=rng)
    score = svm_mia(train_logits, train_labels, test_logits, test_labels, forget_classes)
    assert score >= 95.0


def test_svm_mia_is_0_for_the_original_model():
    rng = np.random.default_rng(0)
    train_labels, test_labels = balanced_labels(200), balanced_labels(50)
    train_logits = confident_logits(train_labels, 2, forget_confident=True, rng=rng)
    test_logits = confident_logits(test_labels, 2, forget_confident=True, rng=rng)
    score = svm_mia(train_logits, train_labels, test_logits, test_labels, 2)
    assert score <= 5.0


def test_svm_mia_is_a_percentage_and_deterministic():
    rng = np.random.default_rng(3)
    train_labels, test_labels = balanced_labels(100), balanced_labels(40)
    train_logits = rng.normal(size=(len(train_labels), NUM_CLASSES))
    test_logits = rng.normal(size=(len(test_labels), NUM_CLASSES))
    first = svm_mia(train_logits, train_labels, test_logits, test_labels, 2, max_samples=50, seed=1)
    second = svm_mia(train_logits, train_labels, test_logits, test_labels, 2, max_samples=50, seed=1)
    assert 0.0 <= first <= 100.0
    assert first == second


def test_svm_mia_without_forget_test_samples_says_so():
    rng = np.random.default_rng(0)
    train_labels, test_labels = balanced_labels(20), balanced_labels(5)
    keep = test_labels != 2                                      # e.g. a tiny split that lacks the class
    logits = rng.normal(size=(len(train_labels), NUM_CLASSES))
    with pytest.raises(ValueError, match=r"forget classes \[2\].* 0 test samples"):
        svm_mia(logits, train_labels, logits[:keep.sum()], test_labels[keep], 2)


# --- MIA-NN ----------------------------------------------------------------------------------


def neighbour_logits(labels, forget_classes, look_alike, rng):
    """Test logits where every retained class c has a high logit z_c (well separated) and forget
    sample i has a high logit for class look_alike[i] (None: no high logit at all)."""
    logits = rng.normal(0.0, 0.5, (len(labels), NUM_CLASSES))
    is_forget = np.isin(labels, forget_classes)
    retained = np.flatnonzero(~is_forget)
    logits[retained, labels[retained]] += 5.0
    for i, target in zip(np.flatnonzero(is_forget), look_alike):
        if target is not None:
            logits[i, target] += 5.0
    return logits


def forget_count(labels, forget_classes):
    return int(np.isin(labels, forget_classes).sum())


LABELS = balanced_labels(40)
FORGET = 4


def model_sending_forget_to(targets_fraction, rng, labels=LABELS, forget=FORGET):
    """Logits of one model whose forget samples look like class c for a fraction of them."""
    n = forget_count(labels, forget)
    look_alike = []
    for target, fraction in targets_fraction.items():
        look_alike += [target] * int(round(fraction * n))
    look_alike += [None] * (n - len(look_alike))
    return neighbour_logits(labels, forget, look_alike, rng)


def test_nearest_neighbour_is_the_class_forget_samples_look_like():
    rng = np.random.default_rng(0)
    retrain_logits = [model_sending_forget_to({2: 1.0}, rng) for _ in range(2)]
    result = nearest_neighbour_class(retrain_logits, LABELS, FORGET)
    assert isinstance(result, NeighbourClass)
    assert result.neighbour_class == 2
    assert set(result.class_scores) == {0, 1, 2, 3}            # retained classes only
    assert result.reference_score == result.class_scores[2]
    assert result.reference_score > 80.0
    assert all(result.class_scores[c] < 20.0 for c in (0, 1, 3))


def test_nearest_neighbour_averages_scores_over_retrain_models():
    rng = np.random.default_rng(1)
    # Two of three models mostly send forget samples to class 2, one sends all of them to class 3:
    # per-model argmax votes for 2, but the mean score A_c (about 47 vs 53) picks 3.
    retrain_logits = [model_sending_forget_to({2: 0.7, 3: 0.3}, rng),
                      model_sending_forget_to({2: 0.7, 3: 0.3}, rng),
                      model_sending_forget_to({3: 1.0}, rng)]
    result = nearest_neighbour_class(retrain_logits, LABELS, FORGET)
    for c in (0, 1, 2, 3):
        per_model = [class_logit_attack(z, LABELS, [FORGET], c) for z in retrain_logits]
        assert result.class_scores[c] == pytest.approx(np.mean(per_model))
    assert result.neighbour_class == 3
    assert result.reference_score == pytest.approx(result.class_scores[3])
    assert 40.0 < result.class_scores[2] < result.class_scores[3] < 65.0


def test_nearest_neighbour_with_a_multi_class_forget_set():
    rng = np.random.default_rng(2)
    forget = [3, 4]
    n = forget_count(LABELS, forget)
    retrain_logits = [neighbour_logits(LABELS, forget, [1] * n, rng) for _ in range(2)]
    result = nearest_neighbour_class(retrain_logits, LABELS, forget)
    assert set(result.class_scores) == {0, 1, 2}
    assert result.neighbour_class == 1
    assert result.reference_score > 80.0
    assert result.class_scores[0] < 20.0 and result.class_scores[2] < 20.0


def test_nearest_neighbour_needs_at_least_one_model():
    with pytest.raises(ValueError):
        nearest_neighbour_class([], LABELS, FORGET)


def test_class_logit_attack_does_not_train_on_forget_samples():
    """Negatives are the other retained classes only: 120 forget samples with a high z_2 would
    outvote the 40 class-2 positives (unweighted SVM) if they were used as negatives."""
    rng = np.random.default_rng(4)
    labels = np.concatenate([balanced_labels(40, num_classes=4), np.full(120, FORGET)])
    logits = neighbour_logits(labels, FORGET, [2] * 120, rng)
    assert class_logit_attack(logits, labels, FORGET, 2, class_weight=None) > 80.0


def test_mia_nn_is_low_when_forget_samples_do_not_look_like_the_neighbour():
    rng = np.random.default_rng(5)
    unlearned = model_sending_forget_to({0: 1.0}, rng)          # forget samples look like class 0, not c* = 2
    score = mia_nn(unlearned, LABELS, FORGET, neighbour_class=2)
    assert 0.0 <= score <= 100.0
    assert score < 10.0


def test_mia_nn_on_a_retrain_models_logits_equals_its_reference():
    rng = np.random.default_rng(6)
    retrain = model_sending_forget_to({2: 0.8}, rng)
    reference = nearest_neighbour_class([retrain], LABELS, FORGET)
    assert reference.neighbour_class == 2
    assert mia_nn(retrain.copy(), LABELS, FORGET, reference.neighbour_class) == reference.reference_score
    assert 70.0 < reference.reference_score < 90.0


def test_mia_nn_on_one_of_several_retrain_models_equals_that_models_score():
    rng = np.random.default_rng(7)
    retrain_logits = [model_sending_forget_to({2: 0.9}, rng), model_sending_forget_to({2: 0.5}, rng)]
    reference = nearest_neighbour_class(retrain_logits, LABELS, FORGET)
    scores = [mia_nn(z, LABELS, FORGET, reference.neighbour_class) for z in retrain_logits]
    assert scores[0] > scores[1]
    assert np.mean(scores) == pytest.approx(reference.reference_score)


def test_nearest_neighbour_ties_go_to_the_lowest_retained_class():
    rng = np.random.default_rng(8)
    n = forget_count(LABELS, 0)
    retrain_logits = [neighbour_logits(LABELS, 0, [None] * n, rng)]    # forget samples look like nothing
    result = nearest_neighbour_class(retrain_logits, LABELS, 0)
    assert all(score == 0.0 for score in result.class_scores.values())
    assert result.neighbour_class == 1


# --- per-sample outcomes and per-model scores -------------------------------------------------


def test_per_sample_outcomes_are_the_scores_sample_by_sample():
    """One 0/1 per forget-class test sample, whose 100 · mean is the score exactly (a bootstrap over test
    samples resamples them; an SVM refit would cost minutes per resample)."""
    rng = np.random.default_rng(3)
    labels = balanced_labels(40)
    train_labels = balanced_labels(60)
    train_logits = confident_logits(train_labels, 2, forget_confident=False, rng=rng)
    # half of the forget test samples look forgotten (low confidence): the score is neither 0 nor 100
    test_logits = confident_logits(labels, 2, forget_confident=True, rng=rng)
    forget_rows = np.flatnonzero(labels == 2)[:20]
    test_logits[forget_rows, 2] -= 9.0
    bits = svm_mia_predictions(train_logits, train_labels, test_logits, labels, 2)
    assert len(bits) == (labels == 2).sum() and set(bits.tolist()) <= {0, 1}
    score = svm_mia(train_logits, train_labels, test_logits, labels, 2)
    assert 100.0 * bits.mean() == score and 0 < score < 100
    assert bits[:20].mean() > bits[20:].mean()     # the forgotten-looking samples are the "non-members"

    logits = model_sending_forget_to({2: 0.5}, rng)
    nn_bits = class_logit_predictions(logits, LABELS, [FORGET], 2)
    assert len(nn_bits) == (LABELS == FORGET).sum()
    assert 100.0 * nn_bits.mean() == class_logit_attack(logits, LABELS, [FORGET], 2)
    assert mia_nn_predictions(logits, LABELS, FORGET, 2).tolist() == nn_bits.tolist()
    assert 100.0 * nn_bits.mean() == mia_nn(logits, LABELS, FORGET, 2)


def test_each_models_scores_are_kept_and_average_to_the_class_scores():
    rng = np.random.default_rng(1)
    retrain_logits = [model_sending_forget_to({2: 0.7, 3: 0.3}, rng), model_sending_forget_to({3: 1.0}, rng)]
    result = nearest_neighbour_class(retrain_logits, LABELS, FORGET)
    assert len(result.model_scores) == 2                                   # in input order
    for z, scores in zip(retrain_logits, result.model_scores):
        assert scores == {c: class_logit_attack(z, LABELS, [FORGET], c) for c in (0, 1, 2, 3)}
    for c in (0, 1, 2, 3):
        assert result.class_scores[c] == pytest.approx(np.mean([s[c] for s in result.model_scores]))
    assert NeighbourClass(1, 50.0, {1: 50.0}).model_scores == ()           # callers without them still work
