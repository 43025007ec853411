"""Where predictions go after unlearning: confusion matrices, forget-class redistribution, per-class drops.

Paper Figure 6 (confusion matrices), Figure 7 (where forget-class predictions go) and Table 6 (the
retained classes whose accuracy drops most against the Original). Inputs are saved test logits
(N, C) and integer labels (N,), as in analysis.metrics.
"""
import numpy as np
import pandas as pd

from analysis.metrics import forget_mask, per_class_accuracy


def confusion_matrix(logits, labels, num_classes):
    """(C, C) int counts: entry [t, p] = samples of true class t predicted (argmax) as p."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.argmax(np.asarray(logits), axis=1) if labels.size else np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def forget_redistribution(logits, labels, forget_classes, num_classes):
    """(C,) share in percent of the forget-class samples (all forget classes pooled) predicted as each
    class; sums to 100. All NaN when there is no forget-class sample."""
    mask = forget_mask(labels, forget_classes)
    if not mask.any():
        return np.full(num_classes, np.nan)
    predictions = np.argmax(np.asarray(logits)[mask], axis=1)
    return 100.0 * np.bincount(predictions, minlength=num_classes) / mask.sum()


def per_class_drop(original_logits, logits, labels, num_classes, forget_classes, top=5, class_names=None):
    """Table 6 layout: one row per retained class with columns class, original_acc, acc (percent) and
    drop = original_acc - acc (percentage points; negative = improved), sorted by drop descending (ties
    by class index), first `top` rows (all when top is None). Forget classes and classes without test
    samples are left out. class_names: a name per class index to show in `class` instead of the index."""
    original = per_class_accuracy(original_logits, labels, num_classes)
    new = per_class_accuracy(logits, labels, num_classes)
    classes = np.setdiff1d(np.arange(num_classes), np.atleast_1d(forget_classes).astype(np.int64))
    classes = classes[~np.isnan(original[classes])]
    frame = pd.DataFrame({"class": classes, "original_acc": original[classes], "acc": new[classes]})
    frame["drop"] = frame["original_acc"] - frame["acc"]
    frame = frame.sort_values(["drop", "class"], ascending=[False, True], kind="stable")
    if top is not None:
        frame = frame.head(top)
    if class_names is not None:
        frame["class"] = [class_names[c] for c in frame["class"]]
    return frame.reset_index(drop=True)
