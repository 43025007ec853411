"""`unlearn-grid tables` makes a fixed number of MLflow store queries and artifact downloads, whatever the
number of runs: tables over 20 000 runs take seconds, not one request per run. A SQLite store laid out
like a finished grid (one Original with its model.pt, one Retrain, unlearn runs with the tags, params,
metrics and per_class_drop.csv artifact that trainables/trial.py logs) is written twice, the second
with 3x the unlearn runs, and the store's calls are counted while the tables are made. No Ray, no
training: the runs are written with MlflowClient."""
import collections
import inspect
import shutil
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from analysis import diagnostics
from grid import cli
from grid.execution import stages
from grid.plan import config
from grid.reports import report
from grid.tracking import run_table, mlflow_runs
from trainables import methods, models
from trainables.trial import class_scores_tag, flatten, per_class_drop_tag, tags_for

FORGET, NEIGHBOUR, REFERENCE = 8, 3, 73.9
METHODS = {"ft": {}, "rl": {}, "trw": {"lam": 10}}
UNLEARN_SEEDS = 4          # 3 methods x 4 unlearn seeds = N = 12 unlearn runs (+ the Original row); 3N: 12 seeds


def plan_of(unlearn_seeds):
    """A digits grid: one Original (seed 0), one Retrain, forget set {8}, METHODS x unlearn seeds."""
    return config.build_plan({"name": "queries", "datasets": "digits", "archs": "small_cnn", "forget_classes": [FORGET],
                              "seeds": [0], "unlearn_seeds": list(range(unlearn_seeds)), "methods": METHODS})


def fake_per_class_drop(index):
    """analysis.diagnostics.per_class_drop (every retained class, as trainables/trial.py logs it) of
    random logits: drops with many decimals (37 test samples per class), different for every run."""
    rng = np.random.default_rng(index)
    labels = np.repeat(np.arange(10), 37)
    original, unlearned = rng.normal(size=(2, len(labels), 10)) + 2.5 * np.eye(10)[labels]
    return diagnostics.per_class_drop(original, unlearned, labels, 10, [FORGET], top=None)


def log_run(client, experiment_id, trial, tags=(), metrics=(), params=(), artifacts=(), texts=()):
    """A finished run of `trial` with the tags and params trainables/trial.py gives every run."""
    run = client.create_run(experiment_id, run_name=trial["key"][:12], tags={"driver": "test"})
    run_id = run.info.run_id
    all_tags = {**tags_for(trial), "hostname": "node", "ray_node_id": "n0", "gpu_ids": "", "pid": "1",
                "device": "cpu", **dict(tags)}
    all_params = {**flatten(trial["spec"]), **dict(params)}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in dict(metrics).items()],
                     params=[Param(k, str(v)) for k, v in all_params.items()],
                     tags=[RunTag(k, str(v)) for k, v in all_tags.items()])
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    for path, text in texts:
        client.log_text(run_id, text, path)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def write_store(folder, unlearn_seeds, empty_store):
    """(tracking URI, plan): a finished grid's runs in a SQLite store in `folder`, a copy of the
    migrated `empty_store` (MLflow's table migrations take seconds per new database)."""
    plan = plan_of(unlearn_seeds)
    shutil.copy(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment_id = mlflow_runs.ensure_experiment(uri, plan.name)
    client = MlflowClient(uri)
    context = {"grid": plan.name}
    evaluation = {"evaluation_split": "test", "evaluation_samples": "360"}
    accuracy = {"compute_seconds": 1.0, "wall_seconds": 2.0}

    torch.manual_seed(0)
    weights = folder / "model.pt"
    torch.save(models.build("small_cnn", 10, (1, 8, 8)).state_dict(), weights)
    (original,) = plan.original
    log_run(client, experiment_id, {**original, "context": context}, metrics={"acc_test": 97.0, "acc_train": 99.0,
                                                                               **accuracy}, artifacts=[weights])
    (retrain,) = plan.retrain
    log_run(client, experiment_id, {**retrain, "context": context}, tags={"split_hash": "h", **evaluation},
            metrics={"acc_r_test": 96.0, "acc_f_test": 0.0, "acc_r_train": 99.0, "acc_f_train": 0.0,
                     "mia_svm": 100.0, **accuracy})

    scores = {c: 10.0 + c for c in range(10) if c != FORGET}
    scores[NEIGHBOUR] = REFERENCE
    for index, trial in enumerate(plan.unlearn):
        drop = fake_per_class_drop(index)
        tags = {"split_hash": "h", **evaluation, "retrain_class_scores": class_scores_tag(scores),
                report.PER_CLASS_DROP_TAG: per_class_drop_tag(drop)}
        mia_nn = 40.0 + index
        log_run(client, experiment_id,
                {**trial, "context": {**context, **stages.unlearn_context(trial)}},
                tags=tags, params={"neighbour_class": NEIGHBOUR},
                metrics={"acc_r_test": 90.0 + index % 7, "acc_f_test": index % 3, "acc_r_train": 95.0,
                         "acc_f_train": 1.0, "mia_svm": 90.0, "mia_nn": mia_nn, "mia_nn_reference": REFERENCE,
                         "mia_nn_gap": abs(mia_nn - REFERENCE), **accuracy},
                texts=[(report.PER_CLASS_DROP_ARTIFACT, drop.to_csv(index=False))])
    return uri, plan


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A new SQLite MLflow store's file, its tables created."""
    path = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def grid_store(tmp_path_factory, empty_store, unlearn_seeds):
    folder = tmp_path_factory.mktemp(f"seeds{unlearn_seeds}")
    return (folder, *write_store(folder, unlearn_seeds, empty_store))


@pytest.fixture(scope="module")
def store_n(tmp_path_factory, empty_store):
    """(folder, tracking URI, plan) of a finished grid with N = 12 unlearn runs (+ the Original row)."""
    return grid_store(tmp_path_factory, empty_store, UNLEARN_SEEDS)


@pytest.fixture(scope="module")
def store_3n(tmp_path_factory, empty_store):
    """The same grid with 3N unlearn runs (3x the unlearn seeds)."""
    return grid_store(tmp_path_factory, empty_store, 3 * UNLEARN_SEEDS)


@pytest.fixture
def store_calls(monkeypatch):
    """Counts of the MLflow store's run queries and artifact downloads from here on (a Counter), and
    the filter string of every run search (under 'filters')."""
    calls = collections.Counter()
    filters = []

    def count(owner, name, label):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            calls[label] += 1
            if name == "search_runs":
                filters.append(inspect.signature(original).bind(*args, **kwargs).arguments.get("filter_string"))
            if name == "read_columns":   # recorded as the filter MLflow's search would have had
                arguments = inspect.signature(original).bind(*args, **kwargs).arguments
                filters.append(f"tags.stage = '{arguments.get('stage')}'")
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    count(SqlAlchemyStore, "search_runs", "store.search_runs")
    count(run_table, "read_columns", "run_table.read_columns")   # the SQL reads that replace MLflow's search
    count(SqlAlchemyStore, "get_run", "store.get_run")
    count(mlflow.artifacts, "download_artifacts", "mlflow.artifacts.download_artifacts")
    count(LocalArtifactRepository, "download_artifacts", "repository.download_artifacts")
    count(LocalArtifactRepository, "list_artifacts", "repository.list_artifacts")
    calls.filters = filters
    return calls


def tables_and_pending(uri, plan, out, calls):
    """What `unlearn-grid tables` and a rerun's unlearn-stage check make of the store: (store calls,
    the run-search filter strings)."""
    calls.clear()
    calls.filters.clear()
    assert cli.main(["tables", plan.name, "--tracking-uri", uri, "--out", str(out), "--data-root", str(out / "data")]) == 0
    experiment_id = mlflow.get_experiment_by_name(plan.name).experiment_id
    assert mlflow_runs.pending(plan.unlearn, "unlearn", uri, experiment_id, str(out / "storage")) == []
    return dict(calls), list(calls.filters)


def expected_per_class_drop(tags_by_method):
    """The per_class_drop table's (Method, Rank, Class, Accuracy drop) rows from the tags alone: per
    method, the mean drop per class over its runs (each lists every retained class), the 5 largest
    (ties: the lower class)."""
    rows = []
    for method in methods.display_order():
        if method not in tags_by_method:
            continue
        drops = pd.concat([report.parse_per_class_drop_tag(tag) for tag in tags_by_method[method]])
        mean = drops.groupby("class")["drop"].mean().sort_values(ascending=False, kind="stable").head(5)
        rows += [(method, rank, str(cls), drop) for rank, (cls, drop) in enumerate(mean.items(), 1)]
    return rows


def test_tables_make_the_same_store_calls_for_3x_the_runs(store_n, store_3n, store_calls):
    counts = {}
    for name, (folder, uri, plan), seeds in (("n", store_n, UNLEARN_SEEDS), ("3n", store_3n, 3 * UNLEARN_SEEDS)):
        assert len(plan.unlearn) == len(METHODS) * seeds + 1                   # + the Original row
        out = folder / "tables"
        counts[name], filters = tables_and_pending(uri, plan, out, store_calls)
        # the Originals' run ids: one search of the finished Originals, none by key
        assert sum("tags.stage = 'original'" in str(f) for f in filters) == 1
        assert not any("tags.key" in str(f) for f in filters)
        # per_class_drop.csv: the tags' numbers (no artifact read for them)
        runs = mlflow_runs.experiment_runs(uri, plan.name)
        unlearn = runs[(runs["stage"] == "unlearn") & (runs["method"] != "original")]
        tags = {m: list(group[report.PER_CLASS_DROP_TAG]) for m, group in unlearn.groupby("method")}
        written = pd.read_csv(out / "per_class_drop.csv", dtype={"Class": str})
        assert [(r.Method, r.Rank, r.Class) for r in written.itertuples()] == \
            [row[:3] for row in expected_per_class_drop(tags)]
        assert list(written["Accuracy drop_mean"]) == pytest.approx([row[3] for row in expected_per_class_drop(tags)],
                                                               abs=1e-12)
        assert (out / "neighbour_agreement.csv").exists()                    # the Original's weights were read
    # runs are read with SQL on a database store, never through MLflow's ORM search (a minute for 20,000
    # runs); its one search is grid/reports/report_run.py's for the experiment's run 'report' (stage=report: one run)
    assert counts["n"].get("run_table.read_columns", 0) > 0 and counts["n"]["store.search_runs"] == 1
    assert [f for f in filters if "report" in str(f)] == ["tags.stage = 'report'"]
    assert counts["n"]["mlflow.artifacts.download_artifacts"] == 1            # the Original's model.pt only
    assert counts["3n"] == counts["n"]


def test_a_run_without_the_tag_gives_the_same_per_class_drop_row(store_n, store_calls):
    """Runs logged before the per_class_drop tag: the table reads their artifact (one download per such
    run, rounded as the tag rounds) and is the same as from the tags."""
    _, uri, plan = store_n
    runs = mlflow_runs.experiment_runs(uri, plan.name)
    unlearn = runs["stage"] == "unlearn"
    order = methods.display_order()
    store_calls.clear()
    tagged = report.per_class_drop_table(runs, order)
    assert store_calls["mlflow.artifacts.download_artifacts"] == 0
    assert len(tagged) == 5 * len(METHODS)

    untagged = runs.copy()
    untagged.loc[unlearn & (runs["method"] == "ft"), report.PER_CLASS_DROP_TAG] = np.nan   # one method: all old runs
    untagged.loc[unlearn & (runs["method"] == "rl") & (runs["unlearn_seed"] == "0"), report.PER_CLASS_DROP_TAG] = None
    pd.testing.assert_frame_equal(report.per_class_drop_table(untagged, order), tagged, check_exact=True)
    assert store_calls["mlflow.artifacts.download_artifacts"] == UNLEARN_SEEDS + 1   # every ft run, one rl run
    # no tag column at all (a store where no run has it): every run from its artifact, the same table
    pd.testing.assert_frame_equal(report.per_class_drop_table(runs.drop(columns=report.PER_CLASS_DROP_TAG), order),
                                  tagged, check_exact=True)


def test_per_class_drop_tag_parses_to_the_rows_in_order():
    frame = report.parse_per_class_drop_tag("[[3,12.5],[5,4.0],[1,0.0],[2,-1.25],[4,-2.0]]")
    assert list(frame["class"]) == [3, 5, 1, 2, 4]
    assert list(frame["drop"]) == [12.5, 4.0, 0.0, -1.25, -2.0]
    for missing in (None, np.nan, "", " "):
        assert report.parse_per_class_drop_tag(missing) is None
    assert report.PER_CLASS_DROP_TAG == "per_class_drop"
    drop = fake_per_class_drop(0)
    parsed = report.parse_per_class_drop_tag(per_class_drop_tag(drop))
    assert list(parsed["class"]) == list(drop["class"])
    assert list(parsed["drop"]) == [round(d, 4) for d in drop["drop"]]
