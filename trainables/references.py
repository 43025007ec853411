"""Computations over stored logits that run on the workers: MIA-NN's reference and U-LiRA's attacks.

**MIA-NN's reference** (c*, A_c* and every A_c, analysis.attacks.nearest_neighbour_class over the
Retrain models' test logits) is what every unlearn trial of a forget set needs for its MIA-NN. The
unlearn trial gets it itself, on its worker (`get`): it reads the reference stored at
`{storage}/references/{id}/reference.json`, or computes it and stores it there. So the unlearn stage
starts at once, with no driver-side barrier; trials of a forget set whose reference exists read it
in milliseconds. The grid schedules the unlearn trials round-robin over their references
(grid/plan/order.py), so the first trials of the stage, one per slot, compute different references
side by side.

`id` is the SHA-256 of (version, the Retrain models' keys (model keys, trainables/keys.py: the
evaluation is not part of them), the SHA-256 of each Retrain model's stored test logits, forget
classes, evaluation settings). The file also keeps each Retrain model's own {c: A_c} (model_scores),
which the Retrain noise floor is built from. The logits' hashes are in the key because a Retrain
model trained again (its files were corrupt) may give other logits on a GPU: the reference is always
that of the logits in storage. The file is written like every stored file (trainables/store.py: a
temporary name renamed, then its SHA-256 beside it); one that fails its hash or does not parse is
computed again and rewritten.

Two trials may find no reference and compute the same one at once: the computation is deterministic,
so both write the same bytes. That costs no cluster time a lock would save: a trial waiting for the
other's result would hold its slot idle for as long. A reference that cannot be written (storage
full, a race between the two writes) is still used: the write only saves a later trial the work.

**U-LiRA** (`ulira_attack`): one attack's likelihood ratio from the stored forget-set training logits
of its "in" (unlearned) and "out" (Retrain) models; the driver runs one Ray task per attack
(grid/execution/stages.py run_ulira).
"""
import hashlib
import json
import logging
import time
from typing import NamedTuple

import numpy as np

from analysis.attacks import NeighbourClass, nearest_neighbour_class
from trainables import data, store
from trainables.evaluate import svm_class_weight

SECTION = "references"
REFERENCE_FILE = "reference.json"
# Part of every reference's id: bump it when the computation changes, so stored references of the old
# computation are not read as the new one's. 2: each Retrain model's {c: A_c} is stored (model_scores),
# and the Retrain keys are model keys (trainables/keys.py).
VERSION = 2

log = logging.getLogger(__name__)


class Reference(NamedTuple):
    neighbour: NeighbourClass    # c*, A_c*, {c: A_c}
    computed: bool               # False: read from storage
    seconds: float               # what getting it took (computing, or reading)


def compute(storage, retrain_keys, forget_classes, evaluation, threads=1):
    """c*, A_c*, {c: A_c} of every retained class and each model's {c: A_c} (a NeighbourClass) from the
    Retrain models' stored (whole) test logits (`retrain_keys`: their model keys), on the test samples of evaluation.split only: the reference must be computed
    on the samples the unlearn trials report on. `threads`: SVM fits at once (a trial's cores)."""
    logits = [store.load_logits(storage, key) for key in retrain_keys]
    labels = logits[0][1]
    reported = data.evaluation_indices(labels, evaluation)
    return nearest_neighbour_class([z[reported] for z, _ in logits], labels[reported], forget_classes,
                                   svm_class_weight(evaluation), threads=threads)


def reference_id(storage, retrain_keys, forget_classes, evaluation):
    """The id the reference is stored under (see the module docstring). Reads the Retrain logits' recorded
    hashes only (StoreIntegrityError when one has none: its write did not finish)."""
    hashes = [store.recorded_hash(storage, key, store.LOGITS_FILE) for key in retrain_keys]
    defining = {"version": VERSION, "retrain_keys": list(retrain_keys), "retrain_logits_sha256": hashes,
                "forget_classes": sorted(int(c) for c in forget_classes), "evaluation": evaluation}
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()


def encode(neighbour, retrain_keys, forget_classes, evaluation):
    """The stored JSON of a reference: deterministic bytes (two trials computing it write the same file);
    floats as repr, which reads back to the same float. The inputs are kept for whoever opens the file."""
    return json.dumps({"neighbour_class": int(neighbour.neighbour_class),
                       "reference_score": float(neighbour.reference_score),
                       "class_scores": {str(int(c)): float(a) for c, a in sorted(neighbour.class_scores.items())},
                       "model_scores": [{str(int(c)): float(a) for c, a in sorted(scores.items())}
                                        for scores in neighbour.model_scores],
                       "retrain_keys": list(retrain_keys), "forget_classes": [int(c) for c in forget_classes],
                       "evaluation": evaluation}, sort_keys=True, indent=1).encode()


def decode(payload):
    """encode's bytes back to a NeighbourClass (a file without model_scores, written before VERSION 2
    stored them, gives ())."""
    stored = json.loads(payload)
    model_scores = tuple({int(c): float(a) for c, a in scores.items()} for scores in stored.get("model_scores", []))
    return NeighbourClass(int(stored["neighbour_class"]), float(stored["reference_score"]),
                          {int(c): float(a) for c, a in stored["class_scores"].items()}, model_scores)


def get(storage, retrain_keys, forget_classes, evaluation, threads=1):
    """The forget set's Reference: read from storage, or computed (and stored) when there is none or the
    stored one fails its hash or does not parse; `threads` as in compute."""
    started = time.perf_counter()
    key = reference_id(storage, retrain_keys, forget_classes, evaluation)
    try:
        return Reference(decode(store.read(storage, key, REFERENCE_FILE, section=SECTION)), False,
                         time.perf_counter() - started)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as error:   # StoreIntegrityError is an OSError
        log.warning("computing the MIA-NN reference %s again: the stored one is unusable (%s)", key, error)
    neighbour = compute(storage, retrain_keys, forget_classes, evaluation, threads)
    try:
        store.write(storage, key, REFERENCE_FILE, encode(neighbour, retrain_keys, forget_classes, evaluation),
                    section=SECTION)
    except OSError as error:
        log.warning("could not store the MIA-NN reference %s (%s); it is used all the same", key, error)
    return Reference(neighbour, True, time.perf_counter() - started)


def ulira_attack(storage, in_keys, out_keys, variance, fprs=None):
    """One U-LiRA attack (analysis.ulira.ulira: accuracy, AUC, TPR at each of `fprs` with their spreads,
    and the per-sample log likelihood ratios): φ of the forget-set training samples under the K in
    (unlearned) and K out (Retrain) models, from their stored forget-set logits. fprs None: ulira's."""
    from analysis.ulira import FPRS, logit_scaled_confidence, ulira

    def scores(keys):
        return np.stack([logit_scaled_confidence(*store.load_logits(storage, key, store.FORGET_TRAIN_LOGITS_FILE))
                         for key in keys])
    return ulira(scores(in_keys), scores(out_keys), variance=variance, fprs=FPRS if fprs is None else fprs)
