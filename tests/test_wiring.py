"""Wiring: the metrics and tags the tables read, recomputed by this file from what the trials stored (their
weights and logits) with the definitions written out again (tests/recompute.py), never the product's code,
and compared with what each run logged. A metric logged under another's name, a tag computed from
swapped arguments, a reference taken on the wrong half of the test split, an attack scored on other
logits: each fails here. (tests/mutants.py applies such bugs one at a time and names the test that must
catch each.)

The grids: conftest's TINY (digits, small_cnn, forget 8, seeds 0 and 1, ft and trw, U-LiRA with K = 2,
the whole test split) and EVALUATION (forget 8 and {8, 3}, on the holdout half of each test class), both
run once per session. ~10 s on 2 cores once they have run."""
import json

import mlflow
import numpy as np
import pytest
import torch

from analysis.statistics import unpack_bits
from recompute import (accuracy, class_attack, class_attack_predictions, log_odds, reference, svm_member_predictions,
                       svm_mia, ulira)
from trainables import data, models, store


def forget_classes(run):
    return [int(c) for c in run["tags.forget_classes"].split(",")]


# ------------------------------------------------------------ what the trials stored

@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def model_logits(storage, key, digits):
    """(train logits, test logits) of the model stored under `key`, by a forward pass of this file's own."""
    model = models.build("small_cnn", 10, digits.info.input_shape)
    model.load_state_dict(store.load_model_state(str(storage), key))
    model.eval()
    with torch.no_grad():
        return model(digits.train_x).numpy(), model(digits.test_x).numpy()


def trial_runs(tracking_uri, experiment):
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=1000)
    return runs[runs["tags.stage"].notna()]


def check_final_metrics(runs, storage, digits, reported):
    """Every Retrain and unlearn run's accuracies and SVM MIA, recomputed on the test samples `reported`."""
    train_y, test_y = digits.train_y.numpy(), digits.test_y.numpy()
    checked = 0
    for _, run in runs[runs["tags.stage"].isin(["retrain", "unlearn"])].iterrows():
        forget = forget_classes(run)
        retain_train, forget_train = ~np.isin(train_y, forget), np.isin(train_y, forget)
        train_logits, test_logits = model_logits(storage, run["tags.model_key"], digits)
        stored, _ = store.load_logits(str(storage), run["tags.model_key"])
        np.testing.assert_allclose(stored, test_logits, atol=1e-4)       # the stored logits are this model's
        logits, labels = stored[reported], test_y[reported]
        retain, is_forget = ~np.isin(labels, forget), np.isin(labels, forget)
        expected = {"acc_r_test": accuracy(logits[retain], labels[retain]),
                    "acc_f_test": accuracy(logits[is_forget], labels[is_forget]),
                    "acc_r_train": accuracy(train_logits[retain_train], train_y[retain_train]),
                    "acc_f_train": accuracy(train_logits[forget_train], train_y[forget_train]),
                    "mia_svm": svm_mia(train_logits, train_y, logits, labels, forget)}
        for name, value in expected.items():
            assert run[f"metrics.{name}"] == pytest.approx(value, abs=1e-6), (run["tags.mlflow.runName"], name)
        checked += 1
    return checked


def check_mia_nn(runs, storage, labels, reported):
    """Each unlearn run's MIA-NN reference from its Retrain models' stored test logits on `reported`, its
    own MIA-NN from its stored logits, the gap, and the tag with every A_c."""
    checked = 0
    for _, run in runs[runs["tags.stage"] == "unlearn"].iterrows():
        retrain = [store.load_logits(str(storage), key)[0][reported] for key in run["tags.retrain_model_keys"].split(",")]
        neighbour, reference_score, scores = reference(retrain, labels[reported], forget_classes(run))
        assert int(run["params.neighbour_class"]) == neighbour
        assert run["metrics.mia_nn_reference"] == pytest.approx(reference_score, abs=1e-9)
        logged = {int(c): a for c, a in json.loads(run["tags.retrain_class_scores"]).items()}
        assert logged == pytest.approx(scores, abs=1e-4)
        own = class_attack(store.load_logits(str(storage), run["tags.model_key"])[0][reported], labels[reported],
                           forget_classes(run), neighbour)
        assert run["metrics.mia_nn"] == pytest.approx(own, abs=1e-9)
        assert run["metrics.mia_nn_gap"] == pytest.approx(abs(own - reference_score), abs=1e-9)
        checked += 1
    return checked


def check_per_class_drop(runs, storage, labels, reported):
    """Each unlearn run's per_class_drop tag: for every retained class, the Original's accuracy on it minus
    the run's, from both stored test logits on `reported`."""
    checked = 0
    for _, run in runs[runs["tags.stage"] == "unlearn"].iterrows():
        original = store.load_logits(str(storage), run["tags.original_key"])[0][reported]
        own = store.load_logits(str(storage), run["tags.model_key"])[0][reported]
        expected = {}
        for c in range(10):
            if c not in forget_classes(run):
                members = labels[reported] == c
                expected[c] = accuracy(original[members], c) - accuracy(own[members], c)
        logged = dict(json.loads(run["tags.per_class_drop"]))
        assert {int(c): d for c, d in logged.items()} == pytest.approx(expected, abs=1e-4), run["tags.mlflow.runName"]
        checked += 1
    return checked


# ------------------------------------------------------------ TINY: evaluation.split test

def test_accuracies_and_svm_mia_of_every_run_recomputed_from_its_stored_model(tiny_grid, digits):
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    everything = np.arange(len(digits.test_y))
    assert check_final_metrics(runs, storage, digits, everything) == 2 + 8   # 2 Retrain models, 8 unlearn runs


def test_mia_nn_reference_and_gap_recomputed_from_all_the_retrain_models(tiny_grid, digits):
    """From the stored test logits of every Retrain model a run's retrain_keys name (both seeds'): a
    reference from one seed's model, from other logits (the Original's, the train split) or a gap
    against another number fails here."""
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    retrain_keys = set(runs[runs["tags.stage"] == "retrain"]["tags.key"])
    unlearn = runs[runs["tags.stage"] == "unlearn"]
    assert all(set(keys.split(",")) == retrain_keys for keys in unlearn["tags.retrain_keys"])
    everything = np.arange(len(digits.test_y))
    assert check_mia_nn(runs, storage, digits.test_y.numpy(), everything) == 8


def test_per_class_drop_tag_recomputed_from_the_stored_logits(tiny_grid, digits):
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    everything = np.arange(len(digits.test_y))
    assert check_per_class_drop(runs, storage, digits.test_y.numpy(), everything) == 8


def test_ulira_accuracy_and_auc_recomputed_from_the_stored_forget_logits(tiny_grid):
    """Each attack's in models (the method's unlearned models of seeds 0 and 1) and out models (the Retrain
    models of the same seeds), φ of their stored forget-sample training logits, the leave-one-out attack."""
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    attacks = runs[runs["tags.stage"] == "ulira"]
    unlearn = runs[runs["tags.stage"] == "unlearn"].set_index("tags.key")
    retrain = runs[runs["tags.stage"] == "retrain"].set_index("tags.model_key")   # out_keys: stored models' keys
    assert len(attacks) == 4                           # the Original row, ft, trw (λ 0), trw (λ 10)
    for _, attack in attacks.iterrows():
        in_keys, out_keys = attack["tags.in_keys"].split(","), attack["tags.out_keys"].split(",")
        assert [unlearn.loc[k, "tags.seed"] for k in in_keys] == [retrain.loc[k, "tags.seed"] for k in out_keys] \
            == ["0", "1"]
        assert set(unlearn.loc[in_keys, "tags.method"]) == {attack["tags.method"]}

        def phi(keys):
            return np.stack([log_odds(*store.load_logits(str(storage), key, store.FORGET_TRAIN_LOGITS_FILE))
                             for key in keys])
        expected_accuracy, expected_auc = ulira(phi(in_keys), phi(out_keys))
        assert attack["metrics.ulira_accuracy"] == pytest.approx(expected_accuracy, abs=1e-9), attack["tags.method"]
        assert attack["metrics.ulira_auc"] == pytest.approx(expected_auc, abs=1e-9), attack["tags.method"]


def test_per_sample_attack_outcomes_and_forget_distribution_recomputed_from_the_stored_models(tiny_grid, digits):
    """Each Retrain and unlearn run's mia_svm_predictions (and an unlearn run's mia_nn_predictions): the
    attack's outcome on every forget-class test sample, whose 100 · mean is exactly the logged metric (what
    the tables' bootstrap resamples); forget_mean_probs: the mean softmax over those samples."""
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    labels = digits.test_y.numpy()
    checked = 0
    for _, run in runs[runs["tags.stage"].isin(["retrain", "unlearn"])].iterrows():
        forget = forget_classes(run)
        train_logits, test_logits = model_logits(storage, run["tags.model_key"], digits)
        svm_bits = unpack_bits(run["tags.mia_svm_predictions"])
        assert len(svm_bits) == np.isin(labels, forget).sum()
        assert 100.0 * svm_bits.mean() == run["metrics.mia_svm"]
        member = svm_member_predictions(train_logits, digits.train_y.numpy(), test_logits, labels, forget)
        assert svm_bits.tolist() == (member == 0).tolist()
        z = test_logits[np.isin(labels, forget)].astype(np.float64)
        probabilities = np.exp(z - z.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        assert json.loads(run["tags.forget_mean_probs"]) == pytest.approx(probabilities.mean(axis=0).tolist(), abs=2e-6)
        if run["tags.stage"] == "retrain":
            assert not isinstance(run.get("tags.mia_nn_predictions"), str)   # no reference to attack with
        else:
            nn_bits = unpack_bits(run["tags.mia_nn_predictions"])
            assert 100.0 * nn_bits.mean() == run["metrics.mia_nn"]
            stored = store.load_logits(str(storage), run["tags.model_key"])[0]
            expected = class_attack_predictions(stored, labels, forget, int(run["params.neighbour_class"]))
            assert nn_bits.tolist() == (expected == 1).tolist()
        checked += 1
    assert checked == 2 + 8


def test_each_retrain_models_own_scores_and_neighbour_class(tiny_grid, digits):
    """retrain_model_scores on the unlearn runs: every Retrain model's A_c (the reference is their mean),
    with the models' training seeds; own_neighbour_class and own_reference_score on each Retrain run:
    that model's own argmax_c A_c and its value (the trial that computed the reference set them)."""
    _, _, tracking_uri, storage = tiny_grid
    runs = trial_runs(tracking_uri, "tiny")
    labels = digits.test_y.numpy()
    retrain = runs[runs["tags.stage"] == "retrain"].set_index("tags.seed")
    own = {}
    for seed, run in retrain.iterrows():
        logits = store.load_logits(str(storage), run["tags.model_key"])[0]
        own[int(seed)] = {c: class_attack(logits, labels, [8], c) for c in range(10) if c != 8}
        best = max(own[int(seed)], key=lambda c: (own[int(seed)][c], -c))
        assert run["tags.own_neighbour_class"] == str(best)
        assert float(run["tags.own_reference_score"]) == pytest.approx(own[int(seed)][best], abs=1e-9)
    for _, run in runs[runs["tags.stage"] == "unlearn"].iterrows():
        tag = json.loads(run["tags.retrain_model_scores"])
        assert tag["seeds"] == [0, 1] and tag["classes"] == [c for c in range(10) if c != 8]
        for seed, scores in zip(tag["seeds"], tag["scores"]):
            assert scores == pytest.approx([own[seed][c] for c in tag["classes"]], abs=1e-3)
        mean = dict(zip(tag["classes"], np.mean(tag["scores"], axis=0)))
        logged = {int(c): a for c, a in json.loads(run["tags.retrain_class_scores"]).items()}
        assert mean == pytest.approx(logged, abs=1e-3)


# ------------------------------------------------------------ EVALUATION: evaluation.split holdout

def test_an_evaluation_on_the_holdout_half_reports_every_metric_on_it(evaluation_grid, digits):
    """Accuracies, SVM MIA, MIA-NN and its reference, and the per-class drop of every run, for forget
    sets {8} and {8, 3}, all on the holdout half of each test class (evaluation.seed 0): the same
    quantities on the whole test split, or on the validation half, differ."""
    _, _, tracking_uri, storage = evaluation_grid
    runs = trial_runs(tracking_uri, "evaluation")
    labels = digits.test_y.numpy()
    holdout = data.holdout_split(labels, 0).holdout
    assert len(holdout) < len(labels)
    trials = runs[runs["tags.stage"].isin(["retrain", "unlearn"])]
    assert (trials["tags.evaluation_split"] == "holdout").all()
    assert (trials["tags.evaluation_samples"] == str(len(holdout))).all()
    # 4 Retrain models; per forget set and seed the Original row, trw λ 0 and 10, rl
    assert check_final_metrics(runs, storage, digits, holdout) == 4 + 16
    assert check_mia_nn(runs, storage, labels, holdout) == 16
    assert check_per_class_drop(runs, storage, labels, holdout) == 16
    for _, run in trials.iterrows():   # the per-sample outcomes are those of the holdout half too
        forget = np.isin(labels[holdout], forget_classes(run))
        assert len(unpack_bits(run["tags.mia_svm_predictions"])) == forget.sum()


def test_a_grid_evaluated_another_way_reuses_the_stored_retrain_models(tiny_grid, evaluation_grid):
    """EVALUATION differs from TINY only in how it evaluates forget set {8}'s Retrain models: its runs
    are its own (another trial key, holdout metrics, checked above), the models are TINY's (the same
    model key; evaluated, not trained: no training epochs logged). {8, 3} has no stored model: trained."""
    tiny = trial_runs(tiny_grid[2], "tiny")
    evaluation = trial_runs(evaluation_grid[2], "evaluation")
    tiny_retrain = tiny[tiny["tags.stage"] == "retrain"].set_index("tags.seed")
    retrain = evaluation[evaluation["tags.stage"] == "retrain"]
    reused = retrain[retrain["tags.forget_classes"] == "8"]
    assert len(reused) == 2 and (reused["tags.reused_model"] == "true").all()
    for _, run in reused.iterrows():
        assert run["tags.model_key"] == tiny_retrain.loc[run["tags.seed"], "tags.model_key"]
        assert run["tags.key"] != tiny_retrain.loc[run["tags.seed"], "tags.key"]
        assert run["tags.stored.model.pt.sha256"] == tiny_retrain.loc[run["tags.seed"], "tags.stored.model.pt.sha256"]
        assert np.isnan(run["metrics.train_loss"])
    trained = retrain[retrain["tags.forget_classes"] != "8"]              # forget set {8, 3}
    assert len(trained) == 2 and not trained["tags.reused_model"].eq("true").any()
    assert trained["metrics.train_loss"].notna().all()


def test_svm_mia_is_scored_on_the_holdout_half_only():
    """SVM-MIA on digits is 0 or 100 for every run above (the attack puts all forget samples on one side),
    so no choice of test samples can change it there. Here a lookup model makes the two halves differ:
    the forget class's holdout samples look like the forgotten training samples (non-members), its
    validation samples like the retained ones (members). On the holdout half SVM-MIA is 100; on the
    whole test split it would be about 50."""
    from trainables.evaluate import evaluate_forgetting

    def logits_of(labels, true_probability):
        """Logits whose softmax gives each sample's true class `true_probability`, the rest split evenly."""
        probabilities = np.tile((1.0 - true_probability[:, None]) / 2, (1, 3))
        probabilities[np.arange(len(labels)), labels] = true_probability
        return np.log(probabilities)

    class Lookup(torch.nn.Module):        # input: the sample's row in a table of logits
        def __init__(self, table):
            super().__init__()
            self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))

        def forward(self, x):
            return self.table[x[:, 0].long()]

    rng = np.random.default_rng(0)
    train_y, test_y = np.repeat([0, 1, 2], 40), np.repeat([0, 1, 2], 20)
    split = data.holdout_split(test_y, 0)
    train_p = np.where(train_y == 2, rng.uniform(0.1, 0.3, len(train_y)), rng.uniform(0.95, 0.99, len(train_y)))
    test_p = rng.uniform(0.95, 0.99, len(test_y))
    forgotten_looking = np.intersect1d(split.holdout, np.flatnonzero(test_y == 2))
    test_p[forgotten_looking] = rng.uniform(0.1, 0.3, len(forgotten_looking))
    table = np.concatenate([logits_of(train_y, train_p), logits_of(test_y, test_p)])
    info = data.DatasetInfo("lookup", 3, ("a", "b", "c"), (1,), loader=None)
    rows = torch.arange(len(table), dtype=torch.float32)[:, None]
    dataset = data.Dataset(info, rows[:len(train_y)], torch.tensor(train_y), rows[len(train_y):], torch.tensor(test_y))
    evaluation = {"split": "holdout", "seed": 0, "svm_max_samples": 10_000, "class_weight": "balanced"}
    metrics, _, _, _ = evaluate_forgetting(Lookup(table), dataset, [2], evaluation, torch.device("cpu"))
    held = split.holdout
    assert metrics["mia_svm"] == pytest.approx(svm_mia(table[:len(train_y)], train_y, table[len(train_y):][held],
                                                       test_y[held], [2]))
    assert metrics["mia_svm"] == 100.0
    assert svm_mia(table[:len(train_y)], train_y, table[len(train_y):], test_y, [2]) == pytest.approx(50.0)
