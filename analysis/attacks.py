"""Membership-inference attacks on saved logits: SVM MIA (Kodge et al.) and MIA-NN (the paper's).

Semantics as docs/metrics.md states them; every choice the paper leaves open is a keyword argument
whose value callers record next to the score.
"""
from typing import NamedTuple

import numpy as np

from analysis.metrics import forget_mask, softmax


def _subsample(n, max_samples, rng):
    """Indices of at most `max_samples` of n items (all of them, in order, when n is small)."""
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def svm_mia(train_logits, train_labels, test_logits, test_labels, forget_classes,
            max_samples=10_000, seed=0):
    """SVM MIA score in [0, 100]; 100 = the forget set looks like non-members (Retrain ≈ 100).

    Feature: softmax probability of the true label. SVC(C=3, gamma='auto', rbf) is fitted on the
    evaluated model's train-retain (label 1) vs train-forget (label 0) samples, then predicts the
    test-forget samples: MIA = 100 · (1 − mean prediction) = 100 · mean(svm_mia_predictions). SVC is
    quadratic in samples, so each side is subsampled to `max_samples` with `seed` (digits never hits the cap).
    """
    bits = svm_mia_predictions(train_logits, train_labels, test_logits, test_labels, forget_classes,
                               max_samples, seed)
    return 100.0 * float(bits.mean())


def svm_mia_predictions(train_logits, train_labels, test_logits, test_labels, forget_classes,
                        max_samples=10_000, seed=0):
    """svm_mia's per-sample outcome: one 0/1 int per test-forget sample (in test order), 1 = the SVM
    labels it a non-member (1 − prediction), so svm_mia = 100 · mean(bits). What a bootstrap resamples
    within a unit instead of refitting the SVM."""
    rng = np.random.default_rng(seed)
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    confidence_train = softmax(train_logits)[np.arange(len(train_labels)), train_labels]
    confidence_test = softmax(test_logits)[np.arange(len(test_labels)), test_labels]
    is_forget_train = forget_mask(train_labels, forget_classes)
    retain_conf = confidence_train[~is_forget_train]
    forget_conf = confidence_train[is_forget_train]
    retain_conf = retain_conf[_subsample(len(retain_conf), max_samples, rng)]
    forget_conf = forget_conf[_subsample(len(forget_conf), max_samples, rng)]
    features = np.concatenate([retain_conf, forget_conf])[:, None]
    targets = np.concatenate([np.ones(len(retain_conf)), np.zeros(len(forget_conf))])
    from sklearn.svm import SVC   # scikit-learn costs ~1 s to import: paid by the attacks, not by their callers' imports
    classifier = SVC(C=3, gamma="auto", kernel="rbf").fit(features, targets)
    test_forget = confidence_test[forget_mask(test_labels, forget_classes)][:, None]
    if not len(forget_conf) or not len(test_forget):
        classes = np.atleast_1d(forget_classes).tolist()
        raise ValueError(f"SVM MIA needs samples of the forget classes {classes} in both splits; "
                         f"got {len(forget_conf)} train and {len(test_forget)} test samples")
    return 1 - classifier.predict(test_forget).astype(int)


def class_logit_attack(logits, labels, forget_classes, candidate_class, class_weight="balanced"):
    """A_c: % of forget-class test samples an SVM on the class-c logit labels as class c, i.e.
    100 · mean(class_logit_predictions(...)).
    """
    bits = class_logit_predictions(logits, labels, forget_classes, candidate_class, class_weight)
    return 100.0 * float(bits.mean())


def class_logit_predictions(logits, labels, forget_classes, candidate_class, class_weight="balanced"):
    """class_logit_attack's per-sample outcome: one 0/1 int per forget-class test sample (in test
    order), 1 = the SVM labels it as `candidate_class`.

    Positives: test samples of `candidate_class`; negatives: test samples of the other retained
    classes (neither c nor a forget class). Feature: the scalar logit z_c, standardised; RBF SVC.
    class_weight='balanced' makes the score independent of how many classes remain (our default;
    the paper does not say how the 1 : (C-2) imbalance is handled).
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    is_forget = forget_mask(labels, forget_classes)
    feature = logits[:, candidate_class][:, None]
    positive = labels == candidate_class
    train = ~is_forget
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    classifier = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight=class_weight))
    classifier.fit(feature[train], positive[train].astype(int))
    return classifier.predict(feature[is_forget]).astype(int)


class NeighbourClass(NamedTuple):
    neighbour_class: int      # c* = argmax_c A_c
    reference_score: float    # A_{c*}, mean over the Retrain models
    class_scores: dict        # {c: A_c} for every retained class
    # ({c: A_c} of each Retrain model, in input order): class_scores is their mean; the noise floor
    # (a Retrain model against the others) needs each. () where a caller does not have them.
    model_scores: tuple = ()


def nearest_neighbour_class(retrain_logits, labels, forget_class, class_weight="balanced", threads=1):
    """c*, A_{c*} and every A_c from the Retrain models' test logits (list of (N, C) arrays).

    `labels` are the test labels shared by all the logit arrays; `forget_class` is an int or a
    list of ints (multi-class forgetting: forget samples are those of any forget class).
    `threads`: how many of the (retained classes × models) SVM fits run at once; libsvm releases the
    GIL while it fits, so they use that many cores. Each fit is deterministic: the result does not
    depend on it.
    """
    if len(retrain_logits) == 0:
        raise ValueError("nearest_neighbour_class needs at least one Retrain model's logits")
    forget = [int(c) for c in np.atleast_1d(forget_class)]
    num_classes = np.asarray(retrain_logits[0]).shape[1]
    retained = [c for c in range(num_classes) if c not in forget]
    fits = [(c, z) for c in retained for z in retrain_logits]

    def attack(fit):
        return class_logit_attack(fit[1], labels, forget, fit[0], class_weight)
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(threads) as pool:
            scores = list(pool.map(attack, fits))
    else:
        scores = [attack(fit) for fit in fits]
    models = len(retrain_logits)
    class_scores = {c: float(np.mean(scores[i * models:(i + 1) * models])) for i, c in enumerate(retained)}
    neighbour = max(retained, key=lambda c: class_scores[c])  # ties: the lowest class index
    model_scores = tuple({c: float(scores[i * models + m]) for i, c in enumerate(retained)} for m in range(models))
    return NeighbourClass(neighbour, class_scores[neighbour], class_scores, model_scores)


def mia_nn(logits, labels, forget_class, neighbour_class, class_weight="balanced"):
    """MIA-NN(u) = A_{c*}^u in [0, 100], the attack of nearest_neighbour_class on one model's logits."""
    return class_logit_attack(logits, labels, forget_class, neighbour_class, class_weight)


def mia_nn_predictions(logits, labels, forget_class, neighbour_class, class_weight="balanced"):
    """mia_nn's per-sample outcome (class_logit_predictions for c*): mia_nn = 100 · mean(bits)."""
    return class_logit_predictions(logits, labels, forget_class, neighbour_class, class_weight)
