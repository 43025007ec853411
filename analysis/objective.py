"""Search objectives: how far an unlearned model is from Retrain, on the validation split (lower is better).

    retrain_gap = ( |Acc_r − Retrain Acc_r| + |Acc_f − Retrain Acc_f| + |MIA-NN − A_c*| ) / 3
    mia_nn_gap  =   |MIA-NN − A_c*|

All in percentage points. Retrain's Acc_r, Acc_f and A_c* (with c*) come from the Retrain model of the
same training seed as the original being unlearned, computed on the same validation samples.
"""
import numpy as np

from analysis.attacks import mia_nn, nearest_neighbour_class
from analysis.metrics import retain_forget_accuracy

OBJECTIVES = ("retrain_gap", "mia_nn_gap")


def reference(retrain_logits, labels, forget_classes, class_weight="balanced"):
    """Retrain's side of the objective from its logits on the validation samples:
    {acc_r, acc_f, neighbour_class (c*), mia_nn (A_c*)}."""
    acc_r, acc_f = retain_forget_accuracy(retrain_logits, labels, forget_classes)
    neighbour = nearest_neighbour_class([retrain_logits], labels, forget_classes, class_weight)
    return {"acc_r": acc_r, "acc_f": acc_f, "neighbour_class": int(neighbour.neighbour_class),
            "mia_nn": neighbour.reference_score}


def components(logits, labels, forget_classes, ref, class_weight="balanced"):
    """The unlearned model's validation metrics and their gaps to `ref` (from `reference`)."""
    acc_r, acc_f = retain_forget_accuracy(logits, labels, forget_classes)
    score = mia_nn(logits, labels, forget_classes, ref["neighbour_class"], class_weight)
    return {"acc_r_val": acc_r, "acc_f_val": acc_f, "mia_nn_val": score,
            "gap_acc_r": abs(acc_r - ref["acc_r"]), "gap_acc_f": abs(acc_f - ref["acc_f"]),
            "gap_mia_nn": abs(score - ref["mia_nn"])}


def objective(name, parts):
    """The named objective from `components(...)`."""
    if name == "retrain_gap":
        return float(np.mean([parts["gap_acc_r"], parts["gap_acc_f"], parts["gap_mia_nn"]]))
    if name == "mia_nn_gap":
        return float(parts["gap_mia_nn"])
    raise ValueError(f"unknown objective {name!r}; allowed: {list(OBJECTIVES)}")
