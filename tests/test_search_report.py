"""Hyperparameter-search reports: the search table and figure on synthetic frames, and `unlearn-grid
tables` / `figures` end to end on a sqlite MLflow store holding one searched cell (~10 s on 2 cores)."""

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import figures
from analysis import statistics
from analysis.tables import HOLDOUT_COLUMNS, search_table, to_markdown
from grid import cli
from grid.plan import config
from grid.reports import best as best_grid, report
from grid.tracking import mlflow_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, width_in, height_in):
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (round(width_in * figures.DPI), round(height_in * figures.DPI))


def parent_row(dataset, forget, method, seed=0, **best):
    """A tidy `stage=search` run as mlflow_runs.search_runs returns it (tags and metrics as columns)."""
    row = {"dataset": dataset, "arch": "small_cnn", "forget_classes": forget, "method": method, "seed": str(seed),
           "objective": "retrain_gap", "split": "validation", "searched_params": ",".join(best),
           "default_objective": 7.5, "best_objective": 2.34, "trials": 20.0, "stopped_early": 6.0}
    row.update({f"best.{name}": value for name, value in best.items()})
    return row


def test_search_table_rows_order_and_best_params():
    parents = pd.DataFrame([
        parent_row("digits", "8", "trw", epochs="12", lam="3.2145", lr="0.0031234", temperature="0.05"),
        parent_row("digits", "1,2", "ft", epochs="7", lr="0.01"),
        parent_row("digits", "8", "ft", epochs="9.0", lr="1e-3"),
        parent_row("cifar10", "8", "trw", lam="20", optimizer="sgd"),
    ])
    table = search_table(parents, method_order=["ft", "trw"])
    assert list(table.columns) == ["Dataset", "Forget", "Method", "Objective", "Split", "Default", "Best",
                                   "Best params", "Trials", "Stopped early"] + [
        f"{title} {statistic}" for title in HOLDOUT_COLUMNS for statistic in ("mean", "std", "ci_low", "ci_high", "n")]
    assert table["Default on holdout n"].tolist() == [0] * 4 and table["Best on holdout mean"].isna().all()
    # dataset/arch, then one class before two, then the given method order
    assert list(zip(table["Dataset"], table["Forget"], table["Method"])) == [
        ("cifar10/small_cnn", "8", "trw"), ("digits/small_cnn", "8", "ft"), ("digits/small_cnn", "8", "trw"),
        ("digits/small_cnn", "1+2", "ft")]
    assert table["Best params"].tolist() == [
        "lam=20, optimizer=sgd", "epochs=9, lr=0.001", "epochs=12, lam=3.21, lr=0.00312, temperature=0.05",
        "epochs=7, lr=0.01"]
    assert table["Trials"].tolist() == [20] * 4 and table["Stopped early"].tolist() == [6] * 4
    markdown = to_markdown(table, index=False)
    assert "| digits/small_cnn | 8 | trw | retrain_gap | validation | 7.5 | 2.3 | epochs=12, lam=3.21" in markdown


def test_search_table_class_names_and_seed_column():
    parents = pd.DataFrame([parent_row("digits", "8", "trw", seed=1, lam="5"),
                            parent_row("digits", "8", "trw", seed=0, lam="10")])
    table = search_table(parents, class_names={"digits": [str(i) + "!" for i in range(10)]})
    assert table["Seed"].tolist() == ["0", "1"] and table["Forget"].tolist() == ["8!", "8!"]
    assert "Seed" not in search_table(parents.iloc[:1])


def holdout_frame():
    """The `-best` experiment of one trw cell (digits, forget 8): Retrain and unlearn runs on the holdout
    half over seeds 0-2 (unlearning seed 0), at the default point (lam 10) and the best (lam 3.2145);
    plus a run on the whole test split that must not count."""
    rows = []
    for seed, (retrain_r, retrain_f) in enumerate([(98.0, 0.0), (97.0, 1.0), (99.0, 0.5)]):
        base = {"dataset": "digits", "arch": "small_cnn", "forget_classes": "8", "seed": str(seed),
                "evaluation_split": "holdout"}
        rows.append({**base, "stage": "retrain", "method": "retrain", "acc_r_test": retrain_r, "acc_f_test": retrain_f})
        for lam, shift in (("10.0", 4.0), ("3.2145", 1.0 + seed)):
            rows.append({**base, "stage": "unlearn", "method": "trw", "unlearn_seed": "0", "params.lam": lam,
                         "params.epochs": "10", "acc_r_test": retrain_r - shift, "acc_f_test": retrain_f + 2 * shift,
                         "mia_nn": 30.0 + 3 * shift, "mia_nn_reference": 30.0})
    rows.append({**rows[1], "evaluation_split": "test", "seed": "3", "acc_r_test": 0.0})
    return pd.DataFrame(rows)


def test_search_table_holdout_columns_are_the_objective_per_unit_with_its_bootstrap_interval():
    parent = parent_row("digits", "8", "trw", lam="3.2145")
    parent["params.lam"] = "10"                                  # the default point, as the parent logs it
    table = search_table(pd.DataFrame([parent]), holdout=holdout_frame())
    # retrain_gap per unit: (|Δacc_r| + |Δacc_f| + |Δmia_nn|) / 3 = (s + 2s + 3s) / 3 = 2s
    expected = {"Default on holdout": [8.0, 8.0, 8.0], "Best on holdout": [2.0, 4.0, 6.0],
                "Best − Default on holdout": [-6.0, -4.0, -2.0]}
    for title, values in expected.items():
        interval = statistics.bootstrap_mean(values, seed=statistics.cell_seed(
            0, "search", "digits", "small_cnn", "8", "trw", "0", title))
        row = table.iloc[0]
        assert row[f"{title} mean"] == pytest.approx(np.mean(values)) == pytest.approx(interval.estimate)
        assert (row[f"{title} ci_low"], row[f"{title} ci_high"]) == (interval.low, interval.high)
        assert row[f"{title} n"] == 3 and row[f"{title} std"] == pytest.approx(np.std(values, ddof=1))
    assert table.iloc[0]["Best on holdout ci_low"] < table.iloc[0]["Best on holdout ci_high"]
    # mia_nn_gap reads MIA-NN only: 3s per unit
    table = search_table(pd.DataFrame([{**parent, "objective": "mia_nn_gap"}]), holdout=holdout_frame())
    assert table.iloc[0]["Best on holdout mean"] == pytest.approx(np.mean([3.0, 6.0, 9.0]))
    # a search that kept the default: the same runs are default and best, the difference is 0
    tie = search_table(pd.DataFrame([{**parent, "best.lam": "10.0"}]), holdout=holdout_frame()).iloc[0]
    assert tie["Best on holdout mean"] == tie["Default on holdout mean"] == 8.0
    assert tie["Best − Default on holdout mean"] == 0.0 and tie["Best − Default on holdout n"] == 3


def test_search_csv_keeps_every_column_at_full_precision(tmp_path):
    parents = pd.DataFrame([{**parent_row("digits", "8", "trw", lam="10"), "default_objective": 10.010961,
                             "best_objective": 10.010961}])
    report.write_tables(report.build_search_tables(parents), tmp_path)
    csv = pd.read_csv(tmp_path / "search.csv")
    assert csv["Default"].iloc[0] == 10.010961 and csv["Best"].iloc[0] == 10.010961
    assert "n/a, no holdout runs yet" in report.build_search_tables(parents)[0][1]


BEST_SEARCH = {"name": "s", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0, 1],
               "train": {"epochs": 1}, "methods": {"trw": {"lr": 0.01}},
               "search": {"methods": {"trw": {"lam": {"loguniform": [0.1, 50]}, "epochs": {"int": [2, 20]}},
                                      "ft": {"epochs": {"int": [2, 20]}}}}}


def test_best_grid_holds_the_default_and_the_best_params_and_collapses_a_tie(tmp_path, monkeypatch):
    grid_file = tmp_path / "s.yaml"
    grid_file.write_text(yaml.safe_dump(BEST_SEARCH))
    plan = config.load(str(grid_file))
    found = {c["key"]: ({"lam": 3.2145, "epochs": 12} if c["spec"]["method"] == "trw"
                        else {"epochs": c["spec"]["params"]["epochs"]}) for c in plan.search}   # ft kept its default
    monkeypatch.setattr(best_grid, "best_params", lambda plan, uri: found)
    [path] = best_grid.write(str(grid_file), tmp_path / "best.yaml", "sqlite:///unused.db")
    written = yaml.safe_load(path.read_text())
    trw_default = next(c for c in plan.search if c["spec"]["method"] == "trw")["spec"]["params"]
    assert written["name"] == "s-best" and written["evaluation"]["split"] == "holdout"
    assert written["methods"]["trw"] == [{"lr": 0.01, "lam": trw_default["lam"], "epochs": trw_default["epochs"]},
                                         {"lr": 0.01, "lam": 3.2145, "epochs": 12}]
    assert isinstance(written["methods"]["ft"], dict)             # best == default: one entry
    final = config.load(str(path))
    searched = [t for t in final.unlearn if t["spec"]["method"] in ("trw", "ft")]
    assert len(searched) == 2 * (2 + 1)                           # 2 seeds x (trw default, trw best, ft)
    assert "default params (first entry)" in path.read_text()


def synthetic_trials(count, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"objective": rng.uniform(1, 10, count), "lam": rng.uniform(0.1, 50, count).astype(str),
                          "epochs": rng.integers(2, 20, count), "optimizer": rng.choice(["sgd", "adam"], count),
                          "default": np.arange(count) == 0, "stopped_early": np.arange(count) % 3 == 2})
    frame["best"] = frame["objective"] == frame["objective"].min()
    return frame


@pytest.mark.parametrize("count,series", [(12, True), (12, False), (1, False)])
def test_search_objective_figure(tmp_path, count, series):
    trials = synthetic_trials(count)
    if series:                                     # two searched cells of one method, one colour each
        trials["series"] = ["8", "1+2"] * (count // 2)
    spaces = {"lam": "loguniform [0.1, 50]", "epochs": "int [2, 20]", "optimizer": "choice [sgd, adam]"}
    path = figures.search_objective(trials, spaces, tmp_path / "f" / "search.png",
                                    title="trw: retrain_gap on the validation split")
    assert path == tmp_path / "f" / "search.png"
    assert_png(path, figures.PANEL * 3, figures.PANEL)


# -- end to end: one searched cell in a sqlite store --------------------------------------------------

EXPERIMENT = "search-only"
SPACES = {"epochs": "int [2, 20]", "lam": "loguniform [0.1, 50]", "lr": "loguniform [0.0001, 0.1]"}
# (params, objective per epoch, default point, stopped early by ASHA)
TRIALS = [({"epochs": 10, "lam": 1.0, "lr": 0.01}, [9.0, 8.0, 7.5], True, False),
          ({"epochs": 12, "lam": 3.2145, "lr": 0.0031234}, [6.0, 3.0, 2.34], False, False),
          ({"epochs": 5, "lam": 40.0, "lr": 0.05}, [15.0], False, True)]
CELL = {"grid": EXPERIMENT, "key": "cell-1", "dataset": "digits", "arch": "small_cnn", "forget_classes": "8",
        "method": "trw", "seed": "0"}


@pytest.fixture(scope="module")
def search_store(tmp_path_factory):
    """A sqlite store with an experiment holding 1 finished search parent + 3 trials (the default point,
    the best, one KILLED by ASHA), logged in the schema of the search stage, and an empty experiment."""
    folder = tmp_path_factory.mktemp("search")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment_id = mlflow_runs.ensure_experiment(uri, EXPERIMENT)
    mlflow_runs.ensure_experiment(uri, "empty")
    with mlflow.start_run(experiment_id=experiment_id, run_name="search trw") as parent:
        mlflow.set_tags({**CELL, "stage": "search", "objective": "retrain_gap", "split": "validation",
                         "algorithm": "optuna", "searched_params": ",".join(SPACES),
                         **{f"space.{name}": space for name, space in SPACES.items()}})
    for params, objective, default, stopped in TRIALS:
        tags = {**CELL, "key": f"trial-{params['lam']}", "stage": "search_trial", "search_key": CELL["key"],
                "mlflow.parentRunId": parent.info.run_id, "default": str(default).lower(),
                "stopped_early": str(stopped).lower()}
        with mlflow.start_run(experiment_id=experiment_id, tags=tags) as child:
            # the flat trial config: it names the objective, which must not hide the metric of that name
            mlflow.log_params({"method": "trw", "objective": "retrain_gap",
                               **{f"params.{name}": value for name, value in params.items()}})
            for epoch, value in enumerate(objective):
                mlflow.log_metrics({"objective": value, "gap_acc_r": value / 2}, step=epoch)
        if stopped:
            mlflow.MlflowClient().set_terminated(child.info.run_id, status="KILLED")
    client = mlflow.MlflowClient()
    for name, value in {"epochs": "12", "lam": "3.2145", "lr": "0.0031234"}.items():
        client.set_tag(parent.info.run_id, f"best.{name}", value)
    for name, value in {"default_objective": 7.5, "best_objective": 2.3412345, "trials": 3, "stopped_early": 1}.items():
        client.log_metric(parent.info.run_id, name, value)
    client.set_tag(parent.info.run_id, "best_objective", "2.3412")   # as older runs tagged it: rounded
    return uri, folder


def test_search_runs_frames(search_store):
    uri, _ = search_store
    parents, children = mlflow_runs.search_runs(uri, EXPERIMENT)
    assert len(parents) == 1 and parents["objective"].iloc[0] == "retrain_gap"
    assert sorted(children["status"]) == ["FINISHED", "FINISHED", "KILLED"]
    assert sorted(children["objective"]) == [2.34, 7.5, 15.0]         # the metric's last value, not the param
    assert sorted(children["params.lam"].astype(float)) == [1.0, 3.2145, 40.0]
    trials = report._search_trials(parents.iloc[0], children, "8")
    assert trials.loc[trials["best"], "lam"].tolist() == ["3.2145"]
    assert trials.loc[trials["default"], "objective"].tolist() == [7.5]
    assert trials["stopped_early"].sum() == 1
    empty_parents, empty_children = mlflow_runs.search_runs(uri, "empty")
    assert empty_parents.empty and empty_children.empty
    with pytest.raises(LookupError, match="no experiment 'nope'"):
        mlflow_runs.search_runs(uri, "nope")


def test_tables_and_figures_of_a_search_only_experiment(search_store, tmp_path):
    uri, _ = search_store
    assert cli.main(["tables", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "tables")]) == 0
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["search.csv", "search.md", "search.tex"]
    markdown = (tmp_path / "tables" / "search.md").read_text()
    assert ("| digits/small_cnn | 8 | trw | retrain_gap | validation | 7.5 | 2.3 | epochs=12, lam=3.21, lr=0.00312 "
            "| 3 | 1 |") in markdown
    csv = pd.read_csv(tmp_path / "tables" / "search.csv")
    assert csv["Best"].iloc[0] == 2.3412345 and csv["Default"].iloc[0] == 7.5   # the metric, not the rounded tag

    assert cli.main(["figures", EXPERIMENT, "--tracking-uri", uri, "--out", str(tmp_path / "figures")]) == 0
    png = tmp_path / "figures" / "search_digits_small_cnn_trw.png"
    assert [p.name for p in (tmp_path / "figures").iterdir()] == [png.name]
    assert_png(png, figures.PANEL * len(SPACES), figures.PANEL)
    # both logged to the experiment's one run 'report': tables/ and figures/, the markdown as its description
    mlflow.set_tracking_uri(uri)
    logged = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.stage = 'report'")
    assert len(logged) == 1 and logged["tags.mlflow.runName"].iloc[0] == "report"
    client = mlflow.MlflowClient(uri)
    run_id = logged["run_id"].iloc[0]
    assert sorted(a.path for a in client.list_artifacts(run_id, "tables")) == [
        "tables/search.csv", "tables/search.md", "tables/search.tex"]
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == [f"figures/{png.name}"]
    assert markdown.strip() in client.get_run(run_id).data.tags["mlflow.note.content"]


def test_experiment_with_neither_runs_nor_searches(search_store, tmp_path, capsys):
    uri, _ = search_store
    assert cli.main(["tables", "empty", "--tracking-uri", uri, "--out", str(tmp_path)]) == 1
    assert "no finished unlearn runs" in capsys.readouterr().err
