"""Neighbour-class agreement (issue 12): the pure table (analysis/neighbours.py) from hand-made numbers,
and its inputs in grid/reports/neighbours.py from the runs' retrain_class_scores tag or Retrain logits, and Original weights (artifact readers replaced:
no MLflow, no Ray; digits ships with scikit-learn)."""
import functools

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.neighbours import agreement_table, ranking
from grid.reports import neighbours
from trainables import data, models, similarity

NAMES = {"digits": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]}
SIMILARITIES = ["weight_pca_cosine", "original_softmax"]


def scores_with_top(top, second, num_classes=10):
    """A score vector over 10 classes whose top class is `top`, then `second`."""
    out = np.full(num_classes, 0.01)
    out[top], out[second] = 0.6, 0.3
    return out


def cells():
    eight = {c: 5.0 for c in range(10) if c != 8}
    eight.update({3: 73.9, 5: 60.0, 0: 12.5})
    one_two = {c: 1.0 for c in range(10) if c not in (1, 2)}
    one_two.update({7: 50.0, 4: 20.0})
    return [
        {"dataset": "digits", "arch": "small_cnn", "forget": "8", "class_scores": eight,
         # two Originals: the paper's score picks five for both on average (one of them picks three)
         "scores": {"weight_pca_cosine": np.stack([scores_with_top(5, 3), scores_with_top(3, 5) * 0.5 + 0.02]),
                    "original_softmax": np.stack([scores_with_top(3, 5), scores_with_top(3, 0)])}},
        {"dataset": "digits", "arch": "small_cnn", "forget": "1,2", "class_scores": one_two,
         "scores": {"weight_pca_cosine": scores_with_top(4, 7), "original_softmax": None}},
    ]


def test_ranking_highest_first_ties_to_the_lower_class_nan_last():
    assert ranking([0.1, 0.5, 0.5, np.nan, 0.2], [0, 1, 2, 3, 4]) == [1, 2, 4, 0, 3]
    assert ranking([0.9, 0.5, 0.7], [1, 2]) == [2, 1]           # only the classes asked for


def test_agreement_table_per_forget_set():
    table = agreement_table(cells(), SIMILARITIES, NAMES)
    assert list(table.columns[:5]) == ["Dataset", "Forget", "c*", "A_c*", "A_c ranking"]
    for name in SIMILARITIES:
        assert [f"{name} top", f"{name} rank of c*", f"{name} agrees"] == \
            [c for c in table.columns if c.startswith(name)]
    eight = table.iloc[0]
    assert (eight["Dataset"], eight["Forget"], eight["c*"], eight["A_c*"]) == ("digits/small_cnn", "eight", "three", 73.9)
    ranked = eight["A_c ranking"].split(" > ")
    assert ranked[:3] == ["three (73.9)", "five (60.0)", "zero (12.5)"] and len(ranked) == 9   # every retained class
    assert "eight" not in eight["A_c ranking"]
    # the paper's score: the mean over the two Originals puts five first, three second; one Original agrees
    assert (eight["weight_pca_cosine top"], eight["weight_pca_cosine rank of c*"],
            eight["weight_pca_cosine agrees"]) == ("five", 2, "1/2")
    assert (eight["original_softmax top"], eight["original_softmax rank of c*"],
            eight["original_softmax agrees"]) == ("three", 1, "2/2")
    one_two = table.iloc[1]
    assert (one_two["Forget"], one_two["c*"]) == ("one+two", "seven")
    assert (one_two["weight_pca_cosine top"], one_two["weight_pca_cosine rank of c*"],
            one_two["weight_pca_cosine agrees"]) == ("four", 2, "0/1")
    # not computed (e.g. no training data on the machine that made the tables)
    assert (one_two["original_softmax top"], one_two["original_softmax agrees"]) == ("–", "–")


def test_agreement_table_ends_with_the_agreement_rate_per_similarity():
    table = agreement_table(cells(), SIMILARITIES, NAMES)
    assert len(table) == 3
    summary = table.iloc[-1]
    assert summary["Dataset"] == "agreement rate"
    # over (forget set, Original), with the 95% bootstrap interval over those 3 units
    assert summary["weight_pca_cosine agrees"] == "33.3% [0.0, 100.0] (1/3)"
    assert summary["weight_pca_cosine rank of c*"] == "mean 2.0"
    assert summary["original_softmax agrees"] == "100.0% (2/2)"     # only where it was computed; 2 units: no interval
    assert summary["original_softmax rank of c*"] == "mean 1.0"


def test_agreement_table_in_latex_keeps_the_ranking_readable():
    from analysis.tables import to_latex
    latex = to_latex(agreement_table(cells(), SIMILARITIES, NAMES), index=False)
    assert "three (73.9) $>$ five (60.0)" in latex and "33.3\\% [0.0, 100.0] (1/3)" in latex


def test_agreement_table_without_names_and_without_cells():
    table = agreement_table(cells()[:1], SIMILARITIES)
    assert (table.loc[0, "Forget"], table.loc[0, "c*"], table.loc[0, "weight_pca_cosine top"]) == ("8", "3", "5")
    assert agreement_table([], SIMILARITIES).empty


def test_agreement_table_c_star_ties_go_to_the_lower_class():
    cell = {"dataset": "d", "arch": "a", "forget": "0", "class_scores": {2: 40.0, 1: 40.0, 3: 1.0},
            "scores": {"s": np.array([0.0, 0.2, 0.7, 0.1])}}
    row = agreement_table([cell], ["s"]).iloc[0]
    assert row["c*"] == "1" and row["s top"] == "2" and row["s rank of c*"] == 2


# ---------------------------------------------------------------- inputs from the runs (grid/reports/neighbours.py)

FORGET, NEIGHBOUR = 8, 3


@functools.lru_cache(maxsize=1)
def digits_test_labels():
    return data.load("digits").test_y.numpy()


def fake_retrain_logits(seed):
    """Digits test logits of a 'Retrain model' that sends the forget class to NEIGHBOUR: its z_3 is high
    on class-3 samples and on forget samples, low elsewhere."""
    labels = digits_test_labels()
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), 10))
    logits[labels == NEIGHBOUR, NEIGHBOUR] += 6.0
    logits[labels == FORGET, NEIGHBOUR] += 6.0
    return logits, labels


def original_state(seed):
    torch.manual_seed(seed)
    info = data.DATASETS["digits"]
    return models.build("small_cnn", info.num_classes, info.input_shape).state_dict()


def tidy_runs(forget_sets=("8",)):
    rows = [{"stage": "retrain", "method": "retrain", "dataset": "digits", "arch": "small_cnn",
             "forget_classes": f, "seed": str(s), "key": f"r{f}{s}", "run_id": f"R{f}{s}"}
            for f in forget_sets for s in (0, 1)]
    rows += [{"stage": "unlearn", "method": "trw", "dataset": "digits", "arch": "small_cnn", "forget_classes": f,
              "seed": str(s), "key": f"u{f}{s}", "run_id": f"U{f}{s}", "original_key": f"o{s}",
              "retrain_keys": f"r{f}0,r{f}1", "neighbour_class": str(NEIGHBOUR), "params.rank": "None"}
             for f in forget_sets for s in (0, 1)]
    return pd.DataFrame(rows)


@pytest.fixture
def readers(monkeypatch):
    """grid/reports/neighbours.py's artifact readers -> the fake logits and states above; returns the Originals read."""
    read = []
    digits_test_labels()   # before any test replaces data.load

    def test_logits(run_id):
        if run_id.startswith("R9"):
            raise FileNotFoundError("no test_logits.npz")
        return fake_retrain_logits(int(run_id[-1]))

    def state(key, runs, original_run_ids=None):
        read.append(key)
        return original_state(int(key[1:]))
    monkeypatch.setattr(neighbours, "_test_logits", test_logits)
    monkeypatch.setattr(neighbours, "_original_state", state)
    return read


def test_report_computes_a_c_and_every_similarity_of_every_original(readers):
    lines = []
    cells = neighbours.neighbour_agreement_cells(tidy_runs(), echo=lines.append)
    assert len(cells) == 1 and not lines
    cell = cells[0]
    assert max(cell["class_scores"], key=cell["class_scores"].get) == NEIGHBOUR
    assert set(cell["class_scores"]) == set(range(10)) - {FORGET}
    assert set(cell["scores"]) == set(similarity.SIMILARITIES)
    assert sorted(readers) == ["o0", "o1"]                       # each Original read once
    digits = data.load("digits")
    for index, seed in enumerate((0, 1)):
        model = models.build("small_cnn", 10, (1, 8, 8))
        model.load_state_dict(original_state(seed))
        model.eval()
        with torch.no_grad():
            mean = torch.softmax(model(digits.train_x[digits.train_y == FORGET]).double(), dim=1).mean(dim=0)
        expected = similarity.score_matrix("original_softmax", similarity.SimilarityContext(probabilities=
                                           torch.stack([mean] * 10)), [FORGET])[FORGET]
        assert np.allclose(cell["scores"]["original_softmax"][index], expected.numpy(), atol=1e-5)
        weight = models.final_layer(model).weight
        assert np.allclose(cell["scores"]["weight_pca_cosine"][index],
                           similarity.score_matrix("weight_pca_cosine", weight, [FORGET])[FORGET].numpy(), atol=1e-6)
    table = neighbours.neighbour_agreement_table(tidy_runs(), echo=lines.append)
    assert list(table["Dataset"]) == ["digits/small_cnn", "agreement rate"]
    assert table.loc[0, "c*"] == str(NEIGHBOUR)
    assert {f"{name} agrees" for name in similarity.SIMILARITIES} <= set(table.columns)


def test_report_leaves_out_a_forget_set_whose_models_it_cannot_read(readers):
    lines = []
    cells = neighbours.neighbour_agreement_cells(tidy_runs(("8", "9")), echo=lines.append)
    assert [c["forget"] for c in cells] == ["8"]
    assert len(lines) == 1 and "forget 9 left out (FileNotFoundError" in lines[0]


def test_report_without_the_dataset_keeps_the_weight_only_scores(readers, monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("no data here")
    monkeypatch.setattr(neighbours.data, "load", missing)
    lines = []
    cells = neighbours.neighbour_agreement_cells(tidy_runs(), echo=lines.append)
    # the Retrain logits come from the runs; only the similarities that read training data are missing
    assert cells[0]["scores"]["weight_pca_cosine"].shape == (2, 10)
    assert cells[0]["scores"]["original_softmax"] is None and cells[0]["scores"]["centroid_distance"] is None
    assert any("not loadable" in line for line in lines)


def test_report_reads_the_evaluation_split_and_the_trw_rank_from_the_runs():
    assert neighbours._evaluation_of(pd.Series({"evaluation.seed": "3", "evaluation.class_weight": "none",
                                            "evaluation.split": "holdout"})) == \
        {"seed": 3, "class_weight": "none", "split": "holdout"}
    assert neighbours._evaluation_of(pd.Series({"evaluation.split": np.nan})) == {"seed": 0, "class_weight": "balanced"}
    runs = tidy_runs()
    assert neighbours._trw_rank(runs) is None
    assert neighbours._trw_rank(runs.assign(**{"params.rank": "4"})) == 4
    assert neighbours._trw_rank(runs.assign(**{"params.rank": ["4", "5", "4", "5"]})) is None


def test_neighbour_agreement_from_an_mlflow_store(tmp_path):
    """The models as the grid logs them: the Original's model.pt and the Retrain models' test_logits.npz
    as artifacts of their runs in a shared experiment, the unlearn runs in the grid's."""
    import mlflow
    from grid.tracking import mlflow_runs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    shared, grid = mlflow_runs.ensure_experiment(uri, "models"), mlflow_runs.ensure_experiment(uri, "grid")
    common = {"dataset": "digits", "arch": "small_cnn", "seed": "0", "grid": "grid"}

    def logged(experiment_id, tags, name=None, write=None):
        with mlflow.start_run(experiment_id=experiment_id, tags={**common, **tags}) as run:
            if name:
                path = tmp_path / name
                write(path)
                mlflow.log_artifact(str(path))
        return run.info.run_id

    logged(shared, {"stage": "original", "key": "o0", "method": "original"}, "model.pt",
           lambda path: torch.save(original_state(0), path))
    for seed in (0, 1):
        logits, labels = fake_retrain_logits(seed)
        logged(shared, {"stage": "retrain", "key": f"r{seed}", "method": "retrain", "forget_classes": "8"},
               "test_logits.npz", lambda path: np.savez(path, logits=logits, labels=labels))
    logged(grid, {"stage": "unlearn", "key": "u0", "method": "trw", "forget_classes": "8", "original_key": "o0",
                  "retrain_keys": "r0,r1"})
    runs = mlflow_runs.experiment_runs(uri, "grid")
    assert sorted(runs["stage"]) == ["retrain", "retrain", "unlearn"]
    lines = []
    table = neighbours.neighbour_agreement_table(runs, echo=lines.append)
    assert not lines
    assert list(table["Dataset"]) == ["digits/small_cnn", "agreement rate"] and table.loc[0, "c*"] == str(NEIGHBOUR)
    state = neighbours._original_state("o0", runs)
    assert all(torch.equal(state[k], v) for k, v in original_state(0).items())
    with pytest.raises(LookupError, match="no finished run of the Original o9"):
        neighbours._original_state("o9", runs)


def test_class_scores_are_nearest_neighbour_class_s_serial_or_spread_over_cpus(monkeypatch):
    from analysis.attacks import nearest_neighbour_class
    logits = [fake_retrain_logits(seed)[0][:120] for seed in (0, 1)]
    labels = digits_test_labels()[:120]
    expected = nearest_neighbour_class(logits, labels, [FORGET]).class_scores
    assert neighbours.class_scores(logits, labels, [FORGET], "balanced") == expected
    monkeypatch.setattr(neighbours, "PARALLEL_FITS", 0)      # joblib processes: the same numbers
    assert neighbours.class_scores(logits, labels, [FORGET], "balanced") == expected


def test_a_c_is_kept_in_the_cache_between_calls(readers, monkeypatch, tmp_path):
    cache = tmp_path / "cache" / "scores.json"
    first = neighbours.neighbour_agreement_cells(tidy_runs(), cache=cache)
    assert cache.exists()

    def unread(run_id):
        raise AssertionError("A_c should come from the cache")
    monkeypatch.setattr(neighbours, "_test_logits", unread)
    again = neighbours.neighbour_agreement_cells(tidy_runs(), cache=cache)
    assert again[0]["class_scores"] == first[0]["class_scores"]
    # other evaluation settings are another entry
    lines = []
    neighbours.neighbour_agreement_cells(tidy_runs().assign(**{"evaluation.class_weight": "none"}), cache=cache,
                                     echo=lines.append)
    assert lines and "left out (AssertionError" in lines[0]


def test_a_c_comes_from_the_runs_tag_without_reading_logits_or_fitting(readers, monkeypatch):
    """Runs logged with the driver's A_c (trainables.trial's retrain_class_scores tag): no Retrain
    logits read, no SVM fit; c* and every A_c are the tag's (here deliberately not the logits' c*)."""
    from trainables.trial import class_scores_tag

    def refuse(*args, **kwargs):
        raise AssertionError("A_c should come from the retrain_class_scores tag")
    monkeypatch.setattr(neighbours, "_test_logits", refuse)
    monkeypatch.setattr(neighbours, "class_scores", refuse)
    logged = {c: 10.0 + c for c in range(10) if c != FORGET}
    logged[5] = 81.23456
    runs = tidy_runs().assign(neighbour_class="5")
    runs["retrain_class_scores"] = [class_scores_tag(logged) if stage == "unlearn" else None
                                    for stage in runs["stage"]]
    runs.loc[runs["run_id"] == "U81", "retrain_class_scores"] = np.nan     # one run without it: the others' tag
    lines = []
    cells = neighbours.neighbour_agreement_cells(runs, echo=lines.append)
    assert not lines and len(cells) == 1
    assert cells[0]["class_scores"] == {c: round(a, 4) for c, a in logged.items()}
    table = neighbours.neighbour_agreement_table(runs, echo=lines.append)
    assert table.loc[0, "c*"] == "5" and table.loc[0, "A_c*"] == pytest.approx(81.2, abs=0.05)
    assert table.loc[0, "A_c ranking"].startswith("5 (81.2) > 9 (19.0)")
    # no Retrain rows at all (e.g. they live in another experiment): the tag still suffices
    assert len(neighbours.neighbour_agreement_cells(runs[runs["stage"] == "unlearn"], echo=lines.append)) == 1
    assert not lines


def test_class_scores_tag_is_compact_json_that_fits_an_mlflow_tag():
    import json
    from trainables.trial import class_scores_tag
    tag = class_scores_tag({np.int64(3): 73.91234567, 0: 12.5, 10: 1 / 3})
    assert tag == '{"0":12.5,"3":73.9123,"10":0.3333}'
    assert neighbours.logged_class_scores(pd.DataFrame({"retrain_class_scores": [tag]})) == \
        {0: 12.5, 3: 73.9123, 10: 0.3333}
    # CIFAR-100-sized and beyond: 199 retained classes of A_c with 4 decimals stay under MLflow's 8000
    widest = class_scores_tag({c: 100 * (1 - 1 / (c + 7)) + 1e-9 for c in range(200) if c != 7})
    assert len(json.loads(widest)) == 199 and len(widest) < 8000
