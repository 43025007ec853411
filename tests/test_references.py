"""MIA-NN references on the workers (trainables/references.py): computed once per forget set and stored,
read back by the trials that follow, computed again when the stored one is damaged; stored under an id
that changes with everything the reference depends on. The unlearn trials' round-robin order
(grid/plan/order.py), and the stage's line per reference (grid/execution/stages.py Progress). ~3 s."""
from pathlib import Path

import numpy as np
import pytest

from analysis.attacks import nearest_neighbour_class
from grid.execution import stages
from grid.plan import config, order
from trainables import references, store

FORGET = [2]
EVALUATION = {"class_weight": "balanced", "seed": 0, "svm_max_samples": 10_000}
KEYS = ("retrain-a", "retrain-b")


@pytest.fixture
def retrain_logits(tmp_path):
    """(storage, [logits per Retrain model], labels): 5 classes, the forget class 2 close to class 3."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 30)
    logits = []
    for key in KEYS:
        z = rng.normal(0, 1, (len(labels), 5))
        z[np.arange(len(labels)), labels] += 3
        z[labels == 2, 3] += 2.5   # forget samples look like class 3 to the class-3 logit
        store.save_logits(str(tmp_path), key, z, labels)
        logits.append(z)
    return str(tmp_path), logits, labels


@pytest.fixture
def counted(monkeypatch):
    """The calls of references.compute (the SVM fits), counted."""
    calls = []
    compute = references.compute

    def counting(*args):
        calls.append(args)
        return compute(*args)
    monkeypatch.setattr(references, "compute", counting)
    return calls


def stored_file(storage, key=None):
    key = key or references.reference_id(storage, KEYS, FORGET, EVALUATION)
    return Path(storage) / references.SECTION / key / references.REFERENCE_FILE


def test_a_reference_is_computed_once_then_read_back_the_same(retrain_logits, counted):
    storage, logits, labels = retrain_logits
    expected = nearest_neighbour_class(logits, labels, FORGET)
    first = references.get(storage, KEYS, FORGET, EVALUATION)
    assert first.computed and first.neighbour == expected and first.neighbour.neighbour_class == 3
    second = references.get(storage, KEYS, FORGET, EVALUATION)
    assert not second.computed and len(counted) == 1
    # the same floats, not rounded ones: a trial that reads it logs what the trial that computed it logged
    assert second.neighbour == expected and stored_file(storage).is_file()


def test_a_damaged_stored_reference_is_computed_again_and_rewritten(retrain_logits, counted):
    storage, logits, labels = retrain_logits
    expected = nearest_neighbour_class(logits, labels, FORGET)
    references.get(storage, KEYS, FORGET, EVALUATION)
    path = stored_file(storage)
    path.write_bytes(path.read_bytes().replace(b'"neighbour_class": 3', b'"neighbour_class": 4'))   # fails its hash
    again = references.get(storage, KEYS, FORGET, EVALUATION)
    assert again.computed and again.neighbour == expected and len(counted) == 2
    assert not references.get(storage, KEYS, FORGET, EVALUATION).computed   # healed: read back again

    key = references.reference_id(storage, KEYS, FORGET, EVALUATION)
    store.write(storage, key, references.REFERENCE_FILE, b'{"neighbour_class": 3}', section=references.SECTION)
    parsed = references.get(storage, KEYS, FORGET, EVALUATION)        # its hash matches but it is no reference
    assert parsed.computed and parsed.neighbour == expected and len(counted) == 3


def test_the_id_changes_with_the_evaluation_the_forget_set_and_the_retrain_logits(retrain_logits):
    storage, logits, labels = retrain_logits
    base = references.reference_id(storage, KEYS, FORGET, EVALUATION)
    assert references.reference_id(storage, list(KEYS), [2], dict(EVALUATION)) == base      # the same inputs
    others = [references.reference_id(storage, KEYS, FORGET, {**EVALUATION, "class_weight": "none"}),
              references.reference_id(storage, KEYS, FORGET, {**EVALUATION, "split": "holdout"}),
              references.reference_id(storage, KEYS, FORGET, {**EVALUATION, "split": "holdout", "seed": 1}),
              references.reference_id(storage, KEYS, [2, 3], EVALUATION),
              references.reference_id(storage, KEYS[:1], FORGET, EVALUATION)]
    assert len({base, *others}) == 1 + len(others)
    # a Retrain model trained again (its files were corrupt) with other logits: another reference
    store.save_logits(storage, KEYS[0], logits[0] + 1e-3, labels)
    assert references.reference_id(storage, KEYS, FORGET, EVALUATION) != base


def test_a_retrain_model_without_stored_logits_fails_the_trial_with_the_stores_error(retrain_logits):
    storage, _, _ = retrain_logits
    with pytest.raises(FileNotFoundError, match="test_logits.npz"):
        references.get(storage, (*KEYS, "never-trained"), FORGET, EVALUATION)
    (store.model_dir(storage, KEYS[1]) / (store.LOGITS_FILE + store.HASH_SUFFIX)).unlink()   # a write that died
    with pytest.raises(store.StoreIntegrityError, match="test_logits.npz"):
        references.get(storage, KEYS, FORGET, EVALUATION)


GRID = {"name": "order", "datasets": "toy2d", "archs": "mlp", "forget_classes": ["a", "b", "c"], "seeds": [0, 1],
        "train": {"epochs": 1}, "methods": {"ft": {"epochs": 1}, "rl": {"epochs": 1}}}


def test_unlearn_trials_are_ordered_round_robin_over_forget_sets():
    trials = config.build_plan(GRID).unlearn          # the plan: every trial of a forget set, then the next set's
    ordered = order.round_robin(trials)
    assert sorted(t["key"] for t in ordered) == sorted(t["key"] for t in trials)
    sets = [tuple(t["spec"]["forget_classes"]) for t in ordered]
    per_set = len(trials) // 3
    # the first three trials (the first slots) cover the three forget sets, and so does every next three
    assert all(len(set(sets[i:i + 3])) == 3 for i in range(0, len(sets), 3))
    for forget in set(sets):   # within a forget set, the plan's order
        assert [t["key"] for t in ordered if tuple(t["spec"]["forget_classes"]) == forget] == \
               [t["key"] for t in trials if tuple(t["spec"]["forget_classes"]) == forget]
    assert per_set > 1 and order.round_robin([]) == []


def test_the_stage_prints_each_forget_sets_reference_once():
    lines = []
    progress = stages.Progress(4, lines.append)
    reported = {"reference": "toy2d/mlp forget [0]", "neighbour_class": 1, "reference_score": 42.25,
                "reference_computed": True, "reference_seconds": 3.0}
    progress.on_trial_result(0, [], None, reported)
    progress.on_trial_result(0, [], None, {**reported, "reference_computed": False})      # another trial of the set
    progress.on_trial_result(0, [], None, {**reported, "reference": "toy2d/mlp forget [1]", "reference_computed": False})
    assert lines == ["  MIA-NN reference toy2d/mlp forget [0]: c*=1 A_c*=42.2 (computed on a worker in 3.0s)",
                     "  MIA-NN reference toy2d/mlp forget [1]: c*=1 A_c*=42.2 (stored)"]
    assert progress.done == 0   # not a finished trial


def test_fits_on_several_threads_give_the_same_reference(retrain_logits):
    """A trial fits on its cores at once (threads = its cpus): the reference must not depend on it."""
    storage, _, _ = retrain_logits
    assert references.compute(storage, KEYS, FORGET, EVALUATION, threads=3) == \
        references.compute(storage, KEYS, FORGET, EVALUATION)


def test_the_progress_callback_keeps_the_printed_references_when_tune_pickles_it():
    import pickle
    progress = stages.Progress(1, print)
    progress.references.add("toy2d/mlp forget [0]")
    assert pickle.loads(pickle.dumps(progress)).references == {"toy2d/mlp forget [0]"}


def test_a_reference_keeps_each_models_scores_and_reads_files_without_them(retrain_logits):
    """reference.json holds every Retrain model's {c: A_c} (what the Retrain noise floor is built from); a
    file written before they were stored still decodes, with none."""
    import json
    storage, logits, labels = retrain_logits
    got = references.get(storage, KEYS, FORGET, EVALUATION)
    assert got.neighbour.model_scores == nearest_neighbour_class(logits, labels, FORGET).model_scores
    stored = json.loads(stored_file(storage).read_bytes())
    assert len(stored["model_scores"]) == len(KEYS)
    del stored["model_scores"]
    old = references.decode(json.dumps(stored).encode())
    assert old.model_scores == () and old.class_scores == got.neighbour.class_scores
