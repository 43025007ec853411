"""Searches: the `search:` block's validation, the objective, ASHA sparing the default point, and a real
search on digits through `unlearn-grid run` (Ray Tune + Optuna + ASHA + MLflow) in conftest's TINY store,
continued with a larger budget, with `unlearn-grid best` after it (~40 s on 2 cores once TINY has run)."""
import types

import numpy as np
import pytest
import torch
import yaml

from analysis import objective
from conftest import TINY
from grid import cli
from grid.plan import config, search_space
from grid.execution import search
from trainables import data, methods, models, store
from trainables.train import predict_logits, seed_everything

# TINY's training recipe (conftest.py): a search run in TINY's store tunes on its original and Retrain model
BASE = {"name": "s", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0, 1],
        "train": dict(TINY["train"])}


def grid_with(search_block, methods_block=None, **extra):
    raw = {**BASE, "search": search_block, **extra}
    if methods_block is not None:
        raw["methods"] = methods_block
    return raw


def problems_of(raw):
    with pytest.raises(config.GridError) as error:
        config.build_plan(raw)
    problems = {}
    for name, message in error.value.problems:
        problems[name] = problems.get(name, "") + message + "\n"
    return problems, str(error.value)


@pytest.mark.parametrize("block, methods_block, field, says", [
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "algorithm": "grid"}, None, "search.algorithm", "['optuna', 'random']"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "objective": "acc"}, None, "search.objective", "retrain_gap"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "split": "test"}, None, "search.split", "['validation']"),
    ({"methods": {"trw": {"lam": {"int": [1, 5]}}}}, None, "search.methods.trw.lam", "loguniform, uniform or choice"),
    ({"methods": {"trw": {"epochs": {"loguniform": [1, 5]}}}}, None, "search.methods.trw.epochs", "int or choice"),
    ({"methods": {"trw": {"lam": {"loguniform": [0, 50]}}}}, None, "search.methods.trw.lam", "low > 0"),
    ({"methods": {"trw": {"lam": {"uniform": [50, 1]}}}}, None, "search.methods.trw.lam", "low < high"),
    ({"methods": {"trw": {"lam": {"loguniform": [20, 50]}}}}, None, "search.methods.trw.lam", "default point"),
    ({"methods": {"trw": {"lamda": {"loguniform": [0.1, 50]}}}}, None, "search.methods.trw.lamda", "unknown parameter"),
    ({"methods": {"trw": {"similarity": {"choice": ["cosine"]}}}}, None, "search.methods.trw.similarity", "must be one of"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}}, {"ft": {}}, "methods.ft", "searches every method"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}}, {"trw": {"lam": [1, 5]}}, "methods.trw.lam", "a list makes cells"),
    ({"methods": {"nope": {"lr": {"loguniform": [0.1, 1]}}}}, None, "search.methods.nope", "unknown method"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "budget": {"samples": 0}}, None, "search.budget.samples", ">= 1"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "early_stopping": {"grace": 2}}, None, "search.early_stopping", "grace_epochs"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}, "budget": {"trials": 3}}, None, "search.budget.trials", "unknown field"),
    ({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}, "ft": {"epochs": {"int": [2, 20]}}},
      "early_stopping": {"grace_epochs": 2}}, {"trw": {}, "ft": {}}, "search.early_stopping", "epochs is searched (ft)"),
])
def test_bad_search_blocks_name_the_field_and_what_is_allowed(block, methods_block, field, says):
    problems, _ = problems_of(grid_with(block, methods_block))
    assert field in problems, problems
    assert says in problems[field]


def test_a_search_grid_cannot_also_ask_for_ulira():
    problems, _ = problems_of(grid_with({"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}}},
                                        ulira={"shadow_models": 2}))
    assert "ulira.shadow_models" in problems


def test_cells_search_on_the_first_seed_and_their_keys_ignore_the_budget():
    block = {"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}}, "ft": {"lr": {"loguniform": [1e-3, 0.1]}}},
             "budget": {"samples": 4}}
    plan = config.build_plan(grid_with(block, {"trw": {"lr": 0.01}}, forget_classes=[8, 3]))
    assert not plan.unlearn and len(plan.original) == 1 and len(plan.retrain) == 2   # seed 0 only
    assert len(plan.search) == 4                                                      # 2 forget sets x 2 methods
    trw = next(c for c in plan.search if c["spec"]["method"] == "trw")
    assert trw["spec"]["params"]["lr"] == 0.01 and trw["spec"]["params"]["lam"] == 10.0   # the default point
    assert trw["original_key"] == plan.original[0]["key"]
    bigger = config.build_plan(grid_with({**block, "budget": {"samples": 40, "max_concurrent": 8}}, {"trw": {"lr": 0.01}},
                                         forget_classes=[8, 3]))
    assert [c["key"] for c in bigger.search] == [c["key"] for c in plan.search]   # a larger budget continues
    wider = config.build_plan(grid_with({**block, "methods": {**block["methods"], "trw": {"lam": {"loguniform": [0.1, 90]}}}},
                                        {"trw": {"lr": 0.01}}, forget_classes=[8, 3]))
    assert wider.search[0]["key"] != plan.search[0]["key"]                        # another space is another search


def test_bundled_search_grids_validate():
    small, paper = config.load("search-trw"), config.load("paper-cifar10-search")
    assert {c["spec"]["method"] for c in small.search} == {"trw", "ft"} and len(small.search) == 2
    assert len(paper.search) == 2 * 10 * 5 and paper.grid["search"]["samples"] == 32


def test_objective_is_the_mean_gap_to_retrain_on_acc_r_acc_f_and_mia_nn():
    parts = {"gap_acc_r": 3.0, "gap_acc_f": 6.0, "gap_mia_nn": 12.0}
    assert objective.objective("retrain_gap", parts) == pytest.approx(7.0)
    assert objective.objective("mia_nn_gap", parts) == 12.0
    with pytest.raises(ValueError, match="retrain_gap"):
        objective.objective("accuracy", parts)


def test_objective_components_of_retrain_itself_are_zero():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    logits = rng.normal(size=(120, 4)) + 4 * np.eye(4)[labels]
    logits[labels == 2, 2] -= 8                                           # a Retrain model: class 2 forgotten
    ref = objective.reference(logits, labels, [2])
    parts = objective.components(logits, labels, [2], ref)
    assert parts["gap_acc_r"] == parts["gap_acc_f"] == parts["gap_mia_nn"] == 0
    assert ref["acc_f"] < 10 and ref["neighbour_class"] != 2


def _trial(trial_id, **config):
    return types.SimpleNamespace(trial_id=trial_id, config=config)


def test_asha_never_stops_the_default_point_but_stops_others_as_bad():
    from ray.tune.schedulers import TrialScheduler
    scheduler = search.SparingDefault({"lam": 10.0}, time_attr="epoch", metric="objective", mode="min", max_t=20,
                                      grace_period=2, reduction_factor=3)
    trials = [_trial(str(i), lam=float(i)) for i in range(1, 7)] + [_trial("default", lam=10.0)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    for trial in trials[:6]:   # six good trials reach the first rung first
        scheduler.on_trial_result(None, trial, {"epoch": 2, "objective": trial.config["lam"], "training_iteration": 1})
    worst = {"epoch": 2, "objective": 99.0, "training_iteration": 1}
    assert scheduler.on_trial_result(None, trials[-1], worst) == TrialScheduler.CONTINUE
    other = _trial("other", lam=11.0)
    scheduler.on_trial_add(None, other)
    assert scheduler.on_trial_result(None, other, worst) == TrialScheduler.STOP


def test_a_point_best_only_at_many_epochs_is_not_eliminated():
    """A long point (18 epochs) that is worse than a short one (2 epochs) at every early epoch and best at
    its end: ASHA over epochs would stop it at the first rung, so validation refuses early stopping when
    epochs is searched; the allowed search (no early stopping) runs it to its end and selects it."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from grid.execution.search.cell import best_of
    from grid.execution.search.side_by_side import scheduler_for
    space = {"epochs": {"int": [2, 18]}, "lam": {"loguniform": [0.1, 50]}}
    short_curve = [6.0, 4.0]                                        # finished after 2 epochs: 4.0
    long_curve = [9.0 - 0.45 * epoch for epoch in range(18)]         # 9.0 at epoch 1 ... 1.35 at epoch 18
    curves = {"default": ({"epochs": 10, "lam": 10.0}, [7.0] * 10),
              "short": ({"epochs": 2, "lam": 1.0}, short_curve),
              "short2": ({"epochs": 2, "lam": 2.0}, [6.5, 4.5]),
              "long": ({"epochs": 18, "lam": 3.0}, long_curve)}
    trials = {name: _trial(name, **params) for name, (params, _) in curves.items()}

    def drive(scheduler):
        """Feed every trial's per-epoch objective, epoch by epoch; {name: (stopped, last objective)}."""
        for trial in trials.values():
            scheduler.on_trial_add(None, trial)
        state = {name: (False, None) for name in curves}
        for epoch in range(1, 19):
            for name, (_, curve) in curves.items():
                stopped, _ = state[name]
                if stopped or epoch > len(curve):
                    continue
                result = {"epoch": epoch, "objective": curve[epoch - 1], "training_iteration": epoch}
                decision = scheduler.on_trial_result(None, trials[name], result)
                state[name] = (decision == TrialScheduler.STOP, curve[epoch - 1])
        return state

    # the configuration that would eliminate it: the long point is stopped at an early rung
    asha = search.SparingDefault({"epochs": 10, "lam": 10.0}, time_attr="epoch", metric="objective", mode="min",
                                 max_t=18, grace_period=2, reduction_factor=3)
    assert drive(asha)["long"][0] is True
    # ... is refused before anything runs
    problems, _ = problems_of(grid_with({"methods": {"trw": space}, "early_stopping": {"grace_epochs": 2}}))
    assert "epochs is searched" in problems["search.early_stopping"]
    # the allowed configuration: no ASHA, so Tune's FIFO runs every trial to its last epoch
    plan = config.build_plan(grid_with({"methods": {"trw": space}}))
    assert scheduler_for(plan.search, plan.grid["search"]["grace_epochs"]) is None
    state = drive(FIFOScheduler())
    assert not any(stopped for stopped, _ in state.values()) and state["long"][1] == long_curve[-1]
    done = [{"params": curves[name][0], "objective": last, "default": name == "default", "stopped": stopped}
            for name, (stopped, last) in state.items()]
    assert best_of(done)["params"] == {"epochs": 18, "lam": 3.0}


def _cells(count, space=None):
    space = space or {"lam": ("loguniform", [0.1, 50])}
    return [{"key": f"{index:08x}" + "0" * 8, "spec": {"search_seed": 0, "algorithm": "optuna", "space": space,
                                                      "params": {"lam": 10.0, "epochs": 10}}}
            for index in range(count)]


def test_tune_sees_every_cells_concurrency_as_its_pending_trials():
    """A non-random searcher gets one pending trial by default; with every cell side by side an
    autoscaling cluster sees the sum of the cells' max_concurrent trials of demand at once."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import SearchGenerator
    from grid.execution.search.cell_searchers import CellSearchers
    from grid.execution.search.side_by_side import max_pending_trials
    searchers = CellSearchers([search.cell.searcher(cell, [], 6) for cell in _cells(3)], [32] * 3)
    with max_pending_trials(3 * 6):
        assert _get_max_pending_trials(SearchGenerator(searchers)) == 18


def test_cell_searchers_share_out_trials_round_robin_each_cell_within_its_limit_and_budget():
    from ray.tune.search import Searcher
    from grid.execution.search.cell_searchers import CELL, CellSearchers
    cells = _cells(3)
    searchers = CellSearchers([search.cell.searcher(cell, [], max_concurrent=2) for cell in cells], [3, 3, 1])
    configs = {f"t{n}": searchers.suggest(f"t{n}") for n in range(6)}
    # round robin, the third cell's budget of 1 spent, then each of the others at its limit of 2
    assert [c[CELL] for c in configs.values() if c] == [0, 1, 2, 0, 1] and configs["t5"] is None
    assert [c["lam"] for c in list(configs.values())[:3]] == [10.0] * 3      # each cell's first point: its default
    searchers.on_trial_complete("t1", {"objective": 1.0})                   # a trial of cell 1 ends: cell 1 may go on
    assert searchers.suggest("t6")[CELL] == 1
    assert searchers.suggest("t7") is None                                   # cell 0 at its limit, 1 and 2 spent
    searchers.on_trial_complete("t0", {"objective": 1.0})
    assert searchers.suggest("t8")[CELL] == 0
    assert searchers.suggest("t9") == Searcher.FINISHED                      # every budget spent
    # a cell's Optuna study saw its own trials only
    studies = [s.searcher._ot_study for s in searchers.cells]
    assert [len(study.trials) for study in studies] == [3, 3, 1]


def test_the_same_cell_proposes_the_same_points_side_by_side_as_alone():
    from grid.execution.search.cell_searchers import CellSearchers
    space = {"lam": ("loguniform", [0.1, 50]), "epochs": ("int", [2, 20])}
    cells = _cells(2, space)
    alone = search.cell.searcher(cells[1], [], max_concurrent=4)
    together = CellSearchers([search.cell.searcher(cell, [], max_concurrent=4) for cell in cells], [4, 4])
    points = [together.suggest(f"t{n}") for n in range(8)]
    assert [{k: p[k] for k in space} for p in points if p["cell"] == 1] == [alone.suggest(f"a{n}") for n in range(4)]


def test_asha_compares_a_trial_only_with_trials_of_its_own_cell():
    from ray.tune.schedulers import TrialScheduler
    from grid.execution.search.cell_schedulers import CellSchedulers
    schedulers = CellSchedulers([search.SparingDefault({"lam": 10.0}, time_attr="epoch", metric="objective", mode="min",
                                                       max_t=20, grace_period=2, reduction_factor=3) for _ in range(2)])
    good = [_trial(str(i), lam=float(i), cell=0) for i in range(1, 7)]
    for trial in good:   # six good trials of cell 0 at the first rung
        schedulers.on_trial_add(None, trial)
        schedulers.on_trial_result(None, trial, {"epoch": 2, "objective": trial.config["lam"], "training_iteration": 1})
    worst = {"epoch": 2, "objective": 99.0, "training_iteration": 1}
    other_cell, same_cell = _trial("b", lam=11.0, cell=1), _trial("a", lam=11.0, cell=0)
    for trial in (other_cell, same_cell):
        schedulers.on_trial_add(None, trial)
    assert schedulers.on_trial_result(None, other_cell, worst) == TrialScheduler.CONTINUE   # first at cell 1's rung
    assert schedulers.on_trial_result(None, same_cell, worst) == TrialScheduler.STOP


def test_the_same_seed_proposes_the_same_points():
    cell = {"key": "0123456789abcdef", "spec": {"search_seed": 3, "algorithm": "optuna"}}
    space = search.distributions({"lam": ("loguniform", [0.1, 50]), "epochs": ("int", [2, 20])})
    import optuna

    def proposals():
        study = optuna.create_study(sampler=search.sampler_for(cell))
        return [study.ask(space).params for _ in range(5)]
    assert proposals() == proposals()


SEARCH = {**BASE, "name": "search-test", "seeds": [0, 1], "methods": {"trw": {"lr": 0.01}},
          "search": {"budget": {"samples": 4, "max_concurrent": 2},   # no ASHA: epochs is searched
                     "methods": {"trw": {"lam": {"loguniform": [0.1, 50]}, "temperature": {"loguniform": [0.02, 2]},
                                         "epochs": {"int": [2, 10]}}}}}


@pytest.fixture(scope="module")
def searched(tiny_grid, run_grid):
    """search-test run with a budget of 4, then rerun with 6 (continues: 2 more trials), in TINY's store: its
    seed-0 original and Retrain model are what the search tunes on (none is trained here)."""
    import mlflow
    folder = tiny_grid[0]
    grid_file, tracking_uri, storage = run_grid(folder, SEARCH)
    mlflow.set_tracking_uri(tracking_uri)
    first = mlflow.search_runs(experiment_names=["search-test"], filter_string="tags.stage = 'search_trial'")
    bigger = {**SEARCH, "search": {**SEARCH["search"], "budget": {"samples": 6, "max_concurrent": 2}}}
    run_grid(folder, bigger)
    return folder, grid_file, tracking_uri, storage, first


def _runs(tracking_uri, stage):
    import mlflow
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=["search-test"], filter_string=f"tags.stage = '{stage}'")


def test_the_search_logs_a_parent_per_cell_with_every_trial_as_its_child(searched):
    _, _, tracking_uri, _, first = searched
    parents, children = _runs(tracking_uri, "search"), _runs(tracking_uri, "search_trial")
    assert len(parents) == 1 and parents["status"].iloc[0] == "FINISHED"
    assert len(first) == 4 and len(children) == 6                         # 4, then 2 more: nothing rerun
    # MLflow UI nesting (grid/execution/parents.py): a `search` parent per invocation that searched (4 trials,
    # then 2), the cell's run under the latest one
    import mlflow
    invocations = mlflow.search_runs(experiment_names=["search-test"], filter_string="tags.parent_of = 'search'")
    assert sorted(invocations["metrics.trials"]) == [2, 4]
    assert parents["tags.mlflow.parentRunId"].iloc[0] == invocations.sort_values("start_time")["run_id"].iloc[-1]
    assert set(first["run_id"]) < set(children["run_id"])
    assert (children["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert (children["tags.default"] == "true").sum() == 1                # the default point ran once, first
    default = children[children["tags.default"] == "true"].iloc[0]
    assert float(default["params.params.lam"]) == 10.0 and float(default["params.params.temperature"]) == 0.1
    # the compared params, as numbers on every trial (MLflow's parallel-coordinates axes)
    assert (default["params.lam"], default["params.T"]) == ("10.0", "0.1")
    assert children[["params.lam", "params.T", "params.epochs"]].astype(float).notna().all().all()
    parent = parents.iloc[0]
    assert parent["metrics.trials"] == 6
    assert parent["metrics.best_objective"] <= parent["metrics.default_objective"]
    assert parent["metrics.default_objective"] == pytest.approx(default["metrics.objective"])
    complete = children[children["tags.stopped_early"] == "false"]
    assert parent["metrics.best_objective"] == pytest.approx(complete["metrics.objective"].min())
    assert parent["metrics.stopped_early"] == (children["tags.stopped_early"] == "true").sum()
    assert (children.loc[children["tags.stopped_early"] == "true", "status"] == "KILLED").all()
    assert len({round(v, 6) for v in children["params.params.lam"].astype(float)}) == 6   # the searcher proposed


def test_the_cells_retrain_reference_is_recomputed_from_the_validation_half(searched):
    """The cell's Retrain reference on its parent run (Acc_r, Acc_f, c*, A_c* on the validation split, what
    every trial's objective is measured against), recomputed from the Retrain model's stored test logits on
    the validation half of each class with tests/recompute.py: taken on the holdout half, the whole test
    split or another model, it differs."""
    from recompute import accuracy, reference
    _, grid_file, tracking_uri, storage, _ = searched
    parent = _runs(tracking_uri, "search").iloc[0]
    cell = config.load(grid_file).search[0]
    logits, labels = store.load_logits(str(storage), cell["retrain_key"])
    validation = data.holdout_split(labels, 0).validation
    logits, labels = logits[validation], labels[validation]
    forget = labels == 8
    neighbour, score, _ = reference([logits], labels, [8])
    assert parent["metrics.retrain_acc_r_val"] == pytest.approx(accuracy(logits[~forget], labels[~forget]), abs=1e-9)
    assert parent["metrics.retrain_acc_f_val"] == pytest.approx(accuracy(logits[forget], labels[forget]), abs=1e-9)
    assert int(parent["tags.neighbour_class"]) == neighbour
    assert parent["metrics.mia_nn_reference_val"] == pytest.approx(score, abs=1e-9)


def test_a_finished_search_is_not_run_again(searched, run_grid):
    folder, *_ = searched
    run_grid(folder, {**SEARCH, "search": {**SEARCH["search"], "budget": {"samples": 6, "max_concurrent": 2}}})
    assert len(_runs(searched[2], "search_trial")) == 6


def test_the_trial_used_its_searched_lam_temperature_and_epochs(searched):
    """Rerun the best complete trial's params by hand on the same original: the same validation
    objective, and as many per-epoch objectives logged as its searched epochs, bar the last one."""
    import mlflow
    _, grid_file, tracking_uri, storage, _ = searched
    children = _runs(tracking_uri, "search_trial")
    complete = children[children["tags.stopped_early"] == "false"].sort_values("metrics.objective")
    trial = complete.iloc[0]
    params = {"lr": 0.01, "lam": float(trial["params.params.lam"]), "temperature": float(trial["params.params.temperature"]),
              "epochs": int(trial["params.params.epochs"])}
    history = mlflow.tracking.MlflowClient(tracking_uri).get_metric_history(trial["run_id"], "objective")
    assert sorted(m.step for m in history) == list(range(1, params["epochs"] + 1))
    plan = config.load(grid_file)
    cell = plan.search[0]
    dataset = data.load("digits")
    original = models.build("small_cnn", 10, dataset.info.input_shape)
    original.load_state_dict(store.load_model_state(str(storage), cell["original_key"]))
    original.eval().requires_grad_(False)
    split = data.forget_split(dataset.train_y.numpy(), [8])
    seed_everything(0)
    torch.set_num_threads(1)   # as the trial ran (resources.cpu 1): the same float reductions
    task = methods.UnlearnTask(original=original, retain_x=dataset.train_x[split.retain], retain_y=dataset.train_y[split.retain],
                               forget_x=dataset.train_x[split.forget], forget_y=dataset.train_y[split.forget],
                               forget_classes=[8], num_classes=10, seed=0)
    try:
        model = methods.unlearn("trw", task, params)
    finally:
        torch.set_num_threads(2)
    validation = data.holdout_split(dataset.test_y.numpy(), 0).validation
    reference = search.validation_reference(str(storage), cell)
    logits = predict_logits(model, dataset.test_x[validation], torch.device("cpu")).numpy()
    parts = objective.components(logits, dataset.test_y.numpy()[validation], [8], reference)
    assert objective.objective("retrain_gap", parts) == pytest.approx(trial["metrics.objective"], abs=1e-6)


def test_best_writes_a_grid_of_the_best_params_on_the_holdout_split(searched, tmp_path, capsys):
    _, grid_file, tracking_uri, _, _ = searched
    out = tmp_path / "best.yaml"
    assert cli.main(["best", grid_file, "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())
    parent = _runs(tracking_uri, "search").iloc[0]
    assert "search" not in written and written["name"] == "search-test-best" and written["seeds"] == [0, 1]
    assert written["evaluation"]["split"] == "holdout"
    entries = written["methods"]["trw"] if isinstance(written["methods"]["trw"], list) else [written["methods"]["trw"]]
    default, trw = entries[0], entries[-1]                  # the default params, then the best (one entry on a tie)
    assert default["lam"] == 10.0 and default["lr"] == 0.01
    assert trw["lr"] == 0.01 and trw["epochs"] == int(parent["tags.best.epochs"])
    assert trw["lam"] == pytest.approx(float(parent["tags.best.lam"]))
    plan = config.load(str(out))
    assert len(plan.unlearn) == 2 * (1 + len(entries))      # 2 seeds x (original + each trw entry)
    assert {t["spec"]["evaluation"].get("split") for t in plan.unlearn} == {"holdout"}


def test_best_before_the_search_says_to_run_it(tmp_path, capsys):
    grid_file = tmp_path / "s.yaml"
    grid_file.write_text(yaml.safe_dump(SEARCH))
    assert cli.main(["best", str(grid_file), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                     "--out", str(tmp_path / "b.yaml")]) == 1
    assert "no finished search" in capsys.readouterr().err and not (tmp_path / "b.yaml").exists()


def test_a_search_space_can_choose_trws_similarity():
    choices = ["weight_pca_cosine", "original_softmax", "centroid_distance"]
    plan = config.build_plan(grid_with({"methods": {"trw": {"similarity": {"choice": choices},
                                                           "lam": {"loguniform": [0.1, 50]}}}}))
    cell = plan.search[0]
    assert cell["spec"]["space"]["similarity"] == ("choice", choices)
    assert cell["spec"]["params"]["similarity"] == "weight_pca_cosine"       # the default point, evaluated first
    distribution = search.distributions(cell["spec"]["space"])["similarity"]
    assert list(distribution.choices) == choices
    assert search_space.typed_value(("choice", choices), "original_softmax") == "original_softmax"
    # without the default in the choice, the default point would be outside the space
    problems, _ = problems_of(grid_with({"methods": {"trw": {"similarity": {"choice": ["original_softmax"]}}}}))
    assert "default point" in problems["search.methods.trw.similarity"]
    problems, _ = problems_of(grid_with({"methods": {"trw": {"similarity": {"choice": ["weight_pca_cosine", "nope"]}}}}))
    assert "original_softmax" in problems["search.methods.trw.similarity"]   # names the registered ones


def test_search_space_ranges_round_trip_through_mlflow_strings():
    assert search_space.typed_value(("int", [2, 10]), "7") == 7
    assert search_space.typed_value(("loguniform", [0.1, 50]), "0.25") == 0.25
    assert search_space.typed_value(("choice", ["a", 3]), "3") == 3


@pytest.mark.system
def test_a_search_killed_mid_way_continues_where_it_stopped(searched, run_grid, gates):
    """SIGKILL the driver (and its local Ray) of `unlearn-grid run` once two trials have finished and the
    third waits at a gate after its first epoch; the rerun keeps those two, marks the trials the dead
    driver left RUNNING as KILLED, runs the rest of the budget and finishes the cell. (In the `searched`
    store: its original and Retrain model are reused.)"""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from mlflow.tracking import MlflowClient
    from services import kill_session
    folder, _, tracking_uri, storage, _ = searched
    # no early stopping: every trial that is not held finishes. λ continuous: no proposed point can equal
    # the default one (an int space alone of 11 values would propose it again, tagged default as well)
    grid = {**SEARCH, "name": "search-killed",
            "search": {"budget": {"samples": 5, "max_concurrent": 2},
                       "methods": {"trw": {"lam": {"loguniform": [0.1, 50]}, "epochs": {"int": [2, 12]}}}}}
    grid_file = folder / "search-killed.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    # the first two trials go on; every later one waits after its first epoch
    gate = gates(third={"stage": "search_trial", "epoch": 1, "pass_first": 2})
    ray_tmp = tempfile.mkdtemp(prefix="ug-")   # its own Ray session folder (short: Ray's socket paths)
    driver = subprocess.Popen([sys.executable, "-m", "grid.cli", "run", str(grid_file), "--tracking-uri", tracking_uri,
                               "--storage", str(storage)], env={**os.environ, **gate.env, "RAY_TMPDIR": ray_tmp},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = MlflowClient(tracking_uri)

    def finished_trials():
        if client.get_experiment_by_name("search-killed") is None:
            return []
        experiment = client.get_experiment_by_name("search-killed").experiment_id
        return client.search_runs([experiment], "tags.stage = 'search_trial' and attributes.status = 'FINISHED'")
    try:
        # two slots (max_concurrent 2): once a third trial waits, at most the first two can finish
        gate.wait("third", count=3, process=driver, also=lambda: len(finished_trials()) == 2)
        kill_session(driver.pid)   # the driver, the Ray it started and its workers, nothing else
        driver.wait()
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    gate.release("third")
    before = {r.info.run_id for r in finished_trials()}
    assert len(before) == 2
    experiment = client.get_experiment_by_name("search-killed").experiment_id
    parent = client.search_runs([experiment], "tags.stage = 'search'")[0]
    assert parent.info.status == "RUNNING"
    run_grid(folder, grid)
    trials = client.search_runs([experiment], "tags.stage = 'search_trial'")
    counted = [r for r in trials if r.info.status == "FINISHED"]
    assert before <= {r.info.run_id for r in counted}                     # what finished before was kept
    assert len(counted) == 5                                              # and only the rest of the budget ran
    assert all(r.info.status in ("FINISHED", "KILLED") for r in trials)   # no run left RUNNING
    assert sum(r.data.tags["default"] == "true" for r in counted) == 1
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 5


@pytest.mark.system
def test_a_cell_whose_trials_fail_fails_alone_beside_a_cell_that_finishes(searched, gates, capsys):
    """Two cells side by side, one of a method that always raises (fails_on_purpose, from the gates
    plugin): the other cell finishes with its best params; the failing cell's parent is FAILED and `run`
    exits 1 naming the cell and the method's error. (In the `searched` store: its models are reused.)"""
    from mlflow.tracking import MlflowClient
    folder, _, tracking_uri, storage, _ = searched
    gates()                                  # the plugin, with no gate: for its method fails_on_purpose
    grid = {**SEARCH, "name": "search-failing", "methods": {"trw": {"lr": 0.01}, "fails_on_purpose": {}},
            "search": {"budget": {"samples": 2, "max_concurrent": 1},
                       "methods": {"trw": {"lam": {"loguniform": [0.1, 50]}},
                                   "fails_on_purpose": {"epochs": {"int": [1, 3]}}}}}
    grid_file = folder / "search-failing.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    capsys.readouterr()
    assert cli.main(["run", str(grid_file), "--tracking-uri", tracking_uri, "--storage", str(storage)]) == 1
    captured = capsys.readouterr()
    assert "2 cell(s) side by side" in captured.out
    assert "2 search trial(s) of search/fails_on_purpose/digits/small_cnn/f8 failed:" in captured.err, captured.err
    assert captured.err.count("RuntimeError: this method fails on purpose") == 2
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("search-failing").experiment_id
    parents = {r.data.tags["method"]: r for r in client.search_runs([experiment], "tags.stage = 'search'")}
    assert parents["fails_on_purpose"].info.status == "FAILED"
    assert parents["trw"].info.status == "FINISHED" and parents["trw"].data.metrics["trials"] == 2
    assert "best.lam" in parents["trw"].data.tags
