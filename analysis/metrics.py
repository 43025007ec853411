"""Accuracy and probability helpers on saved logits (numpy only)."""
import numpy as np


def softmax(logits):
    """Row-wise softmax of an (N, C) array, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def forget_mask(labels, forget_classes):
    """Boolean mask of samples whose label is one of `forget_classes` (int or iterable of ints)."""
    return np.isin(np.asarray(labels), np.atleast_1d(forget_classes))


def accuracy(logits, labels):
    """Top-1 accuracy in percent; NaN for an empty set (e.g. no forget samples)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    return 100.0 * float(np.mean(np.argmax(logits, axis=1) == labels))


def retain_forget_accuracy(logits, labels, forget_classes):
    """(Acc_r, Acc_f) in percent on one split."""
    mask = forget_mask(labels, forget_classes)
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    return accuracy(logits[~mask], labels[~mask]), accuracy(logits[mask], labels[mask])


def per_class_accuracy(logits, labels, num_classes):
    """Accuracy in percent of each class (NaN where a class has no samples)."""
    labels = np.asarray(labels)
    predictions = np.argmax(logits, axis=1)
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            out[c] = 100.0 * float(np.mean(predictions[mask] == c))
    return out
