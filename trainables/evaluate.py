"""Evaluate one model on one forget set: the final metrics every retrain/unlearn trial logs."""
from typing import NamedTuple

import numpy as np

from analysis.attacks import mia_nn_predictions, svm_mia_predictions
from analysis.metrics import accuracy, forget_mask, retain_forget_accuracy, softmax
from trainables import data
from trainables.train import predict_logits


def svm_class_weight(evaluation):
    """evaluation.class_weight as scikit-learn takes it: 'balanced' or None (the grid's 'none')."""
    return None if evaluation["class_weight"] == "none" else evaluation["class_weight"]


def evaluate_overall(model, dataset, device):
    """Original models: plain train/test accuracy (they have no forget set). Returns (metrics, test logits)."""
    test_logits = predict_logits(model, dataset.test_x, device, prepare=dataset.model_input).numpy()
    train_logits = predict_logits(model, dataset.train_x, device, prepare=dataset.model_input).numpy()
    metrics = {"acc_test": accuracy(test_logits, dataset.test_y.numpy()),
               "acc_train": accuracy(train_logits, dataset.train_y.numpy())}
    return metrics, test_logits


class PerSample(NamedTuple):
    """What evaluate_forgetting saw sample by sample on the evaluation split's forget-class test samples
    (in the order of data.evaluation_indices): the attacks' 0/1 outcomes, whose 100 · mean is the logged
    metric (a bootstrap resamples them instead of refitting an SVM), and the mean softmax."""
    mia_svm: np.ndarray           # 1 = SVM MIA labels the sample a non-member
    mia_nn: object                # 1 = MIA-NN's SVM labels the sample as c*; None without a reference
    forget_mean_probs: list       # mean softmax over those samples, one float per class


def evaluate_forgetting(model, dataset, forget_classes, evaluation, device, neighbour=None):
    """Acc_r/Acc_f (train, test), SVM MIA and, given the MIA-NN reference, mia_nn and its gap.

    neighbour: None or (neighbour_class, reference_score). Returns (metrics, test logits, train logits,
    PerSample). Test metrics use only the test samples of evaluation.split (data.evaluation_indices: all
    of them, or the holdout half); the returned test logits are the whole test set, since they are
    stored and shared between grids, and each consumer takes its own subset.
    """
    test_y, train_y = dataset.test_y.numpy(), dataset.train_y.numpy()
    test_logits = predict_logits(model, dataset.test_x, device, prepare=dataset.model_input).numpy()
    train_logits = predict_logits(model, dataset.train_x, device, prepare=dataset.model_input).numpy()
    reported = data.evaluation_indices(test_y, evaluation)
    split_logits, split_y = test_logits[reported], test_y[reported]
    acc_r_test, acc_f_test = retain_forget_accuracy(split_logits, split_y, forget_classes)
    acc_r_train, acc_f_train = retain_forget_accuracy(train_logits, train_y, forget_classes)
    svm_bits = svm_mia_predictions(train_logits, train_y, split_logits, split_y, forget_classes,
                                   max_samples=evaluation["svm_max_samples"], seed=evaluation["seed"])
    metrics = {
        "acc_r_test": acc_r_test, "acc_f_test": acc_f_test,
        "acc_r_train": acc_r_train, "acc_f_train": acc_f_train,
        "mia_svm": 100.0 * float(svm_bits.mean()),   # = analysis.attacks.svm_mia
    }
    nn_bits = None
    if neighbour is not None:
        neighbour_class, reference = neighbour
        nn_bits = mia_nn_predictions(split_logits, split_y, forget_classes, neighbour_class, svm_class_weight(evaluation))
        score = 100.0 * float(nn_bits.mean())   # = analysis.attacks.mia_nn
        metrics.update(mia_nn=score, mia_nn_reference=reference, mia_nn_gap=abs(score - reference))
    forget_probs = softmax(split_logits[forget_mask(split_y, forget_classes)]).mean(axis=0)
    per_sample = PerSample(svm_bits, nn_bits, [round(float(p), 6) for p in forget_probs])
    return metrics, test_logits, train_logits, per_sample
