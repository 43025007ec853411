"""grid/tracking/run_table.py reads the frame mlflow.search_runs gives straight from MLflow's tables, and
grid/tracking/mlflow_runs.py reads runs through it (a database URI), through `unlearn-grid server`'s route (http), or
through mlflow.search_runs (a plain `mlflow server`). Equivalence on a SQLite store of varied runs
(stages, statuses, a deleted run and experiment, metrics over steps, NaN, missing params/tags), then
one `unlearn-grid server` on PostgreSQL and one plain `mlflow server` (~40 s in all on 2 cores)."""
import gzip
import json
import math
import urllib.error
import urllib.request
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

import services   # tests/services.py: PostgreSQL, the tracking server
from grid.tracking import run_table, mlflow_runs

BASE = run_table.BASE_COLUMNS


def populate(uri, folder):
    """Runs of every kind the readers must tell apart; returns {experiment name: id}."""
    client = MlflowClient(run_table.sqlalchemy_uri(uri))
    ids = {name: client.create_experiment(name, artifact_location=(folder / "artifacts" / name).as_uri())
           for name in ("grid", "other", "gone")}

    def run(experiment, status, tags, params=(), metrics=(), end_time=None):
        """metrics: (key, value, step) in the order logged."""
        run_id = client.create_run(ids[experiment], tags=tags).info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params],
                         metrics=[Metric(k, v, 1_000 + step, step) for k, v, step in metrics])
        if status != "RUNNING":
            client.set_terminated(run_id, status, end_time=end_time)
        return run_id

    unlearn = {"stage": "unlearn", "method": "ft"}
    run("grid", "FINISHED", {**unlearn, "key": "k1"}, [("lr", "0.1"), ("epochs", "3")],
        # the step logged last is not the latest: latest_metrics keeps step 2; NaN and inf as MLflow stores them
        [("acc", 0.5, 0), ("acc", 0.9, 2), ("acc", 0.7, 1), ("loss", math.nan, 0), ("big", math.inf, 0)],
        end_time=2_000)
    run("grid", "FINISHED", {**unlearn, "key": "k1"}, [("lr", "0.2")], [("acc", 0.6, 0)], end_time=3_000)  # k1 again
    run("grid", "FINISHED", {"stage": "unlearn", "key": "k2", "note": ""}, metrics=[("mia", 0.3, 0)])
    run("grid", "FINISHED", {"stage": "unlearn"}, [("lr", "0.3")])                         # no key
    run("grid", "KILLED", {**unlearn, "key": "k3", "stopped_early": "true"}, [("lr", "0.1")], [("acc", 0.1, 0)])
    run("grid", "RUNNING", {**unlearn, "key": "k4"}, [("only_running", "x")])
    run("grid", "FAILED", {**unlearn, "key": "k5"})
    client.delete_run(run("grid", "FINISHED", {**unlearn, "key": "k6"}, [("deleted", "1")]))
    run("grid", "FINISHED", {"stage": "retrain", "key": "rk1"}, [("epochs", "5")], [("acc", 0.8, 3)])
    run("grid", "FINISHED", {"stage": "search", "key": "cell1"}, [("samples", "3")], [("objective", 0.2, 0)])
    run("grid", "FINISHED", {"stage": "search_trial", "key": "t1"}, [("objective", "retrain_gap")],
        [("objective", 0.25, 4)])
    run("grid", "KILLED", {"stage": "search_trial", "key": "t2", "stopped_early": "true"}, metrics=[("objective", 0.4, 1)])
    run("grid", "KILLED", {"stage": "search_trial", "key": "t3"}, metrics=[("objective", 0.5, 1)])   # interrupted
    run("grid", "RUNNING", {"stage": "waiting", "key": "w1"})                             # no end_time at all
    run("other", "FINISHED", {**unlearn, "key": "k1"}, [("lr", "0.1")], [("acc", 0.55, 0)])
    run("other", "FINISHED", {"stage": "retrain", "key": "rk1"}, [("epochs", "5")])
    run("gone", "FINISHED", {**unlearn, "key": "kg"}, [("lr", "9")])
    client.delete_experiment(ids["gone"])
    client.set_tag(run("grid", "FINISHED", {"stage": "tagged_later"}), "late", "yes")
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run_table")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return SimpleNamespace(uri=uri, ids=populate(uri, folder), folder=folder)


# (stage, statuses, experiments: None = search_all_experiments)
CASES = [
    ("unlearn", ["FINISHED"], None),
    ("unlearn", ["FINISHED"], ["grid"]),
    ("unlearn", ["FINISHED"], ["grid", "other"]),
    ("unlearn", ["FINISHED", "KILLED"], ["grid"]),
    ("unlearn", ["RUNNING"], None),
    ("unlearn", ["FAILED"], None),
    ("unlearn", ["FINISHED"], ["gone"]),          # named: MLflow searches it whatever its lifecycle stage
    ("retrain", ["FINISHED"], None),
    ("search_trial", ["FINISHED", "KILLED"], ["grid"]),
    ("waiting", ["RUNNING"], None),               # end_time of only NaT
    ("tagged_later", ["FINISHED"], None),
    ("absent", ["FINISHED"], None),               # no runs: MLflow's empty frame
    (None, ["FINISHED"], None),                   # any stage
]


def mlflow_frame(uri, ids, stage, statuses, experiments):
    """The reference: mlflow.search_runs as grid/tracking/mlflow_runs.py called it. MLflow's filters take one status
    (`IN` only for run ids): several are searched one by one, the frames joined in MLflow's row order."""
    mlflow.set_tracking_uri(run_table.sqlalchemy_uri(uri))
    scope = {"experiment_ids": [ids[e] for e in experiments]} if experiments else {"search_all_experiments": True}
    frames = []
    for status in statuses:
        stage_filter = f"tags.stage = '{stage}' and " if stage else ""
        frames.append(mlflow.search_runs(filter_string=f"{stage_filter}attributes.status = '{status}'",
                                         max_results=100_000, **scope))
    found = [frame for frame in frames if len(frame)]
    if len(found) <= 1:
        return found[0] if found else frames[0]
    joined = pd.concat(found, ignore_index=True)
    return joined.sort_values(["start_time", "run_id"], ascending=[False, True]).reset_index(drop=True)


def assert_same_frame(frame, reference):
    """Same columns (MLflow's column order within metrics/params/tags is a set's), rows in MLflow's
    order, same values and dtypes."""
    assert sorted(frame.columns) == sorted(reference.columns)
    assert list(frame["run_id"]) == list(reference["run_id"])
    columns = sorted(reference.columns)
    pd.testing.assert_frame_equal(frame[columns].reset_index(drop=True), reference[columns].reset_index(drop=True))


def check_cases(uri, ids):
    engine = run_table.engine(uri)
    for stage, statuses, experiments in CASES:
        experiment_ids = [ids[e] for e in experiments] if experiments else None
        reference = mlflow_frame(uri, ids, stage, statuses, experiments)
        frame = run_table.read_runs(engine, stage, statuses, experiment_ids)
        assert_same_frame(frame, reference)
        # what `unlearn-grid server` sends, read back on the client: the same frame
        sent = json.loads(run_table.to_json(run_table.read_columns(engine, stage, statuses, experiment_ids)))
        pd.testing.assert_frame_equal(run_table.to_frame(sent), frame)


def test_read_runs_is_mlflow_search_runs_frame_on_sqlite(store):
    check_cases(store.uri, store.ids)
    frame = run_table.read_runs(run_table.engine(store.uri), "unlearn", experiment_ids=[store.ids["grid"]])
    first = frame[frame["tags.key"] == "k1"].sort_values("end_time").iloc[0]
    assert first["metrics.acc"] == 0.9 and math.isnan(first["metrics.loss"])   # the latest step; NaN stays NaN
    assert str(frame["start_time"].dtype).endswith("UTC]")


def test_columns_restrict_metrics_params_and_tags(store):
    engine = run_table.engine(store.uri)
    full = run_table.read_runs(engine, "unlearn")
    some = run_table.read_runs(engine, "unlearn", columns=["tags.key", "metrics.acc", "params.absent", "run_id"])
    assert list(some.columns) == BASE + ["metrics.acc", "tags.key"]
    pd.testing.assert_frame_equal(some, full[list(some.columns)])
    assert list(run_table.read_runs(engine, "unlearn", columns=[]).columns) == BASE
    assert list(mlflow_runs.finished_runs(store.uri, "unlearn", columns=[]).columns) == BASE + ["tags.key"]  # the dedupe's


def reads(uri, ids):
    """Everything grid/tracking/mlflow_runs.py reads for pending and tables."""
    return {"unlearn (all experiments)": mlflow_runs.finished_runs(uri, "unlearn"),
            "unlearn (grid)": mlflow_runs.finished_runs(uri, "unlearn", ids["grid"]),
            "retrain": mlflow_runs.finished_runs(uri, "retrain"),
            "absent": mlflow_runs.finished_runs(uri, "absent"),
            "keys": mlflow_runs.finished_keys(uri, "unlearn", ids["grid"]),
            "keys (all experiments)": mlflow_runs.finished_keys(uri, "unlearn"),
            "experiment_runs": mlflow_runs.experiment_runs(uri, "grid"),
            "search parents": mlflow_runs.search_runs(uri, "grid")[0],
            "search children": mlflow_runs.search_runs(uri, "grid")[1]}


def assert_same_reads(got, expected):
    assert got.keys() == expected.keys()
    for what, frame in expected.items():
        if isinstance(frame, set):
            assert got[what] == frame, what
        else:
            columns = sorted(frame.columns)
            assert sorted(got[what].columns) == columns, what
            pd.testing.assert_frame_equal(got[what][columns], frame[columns], obj=what)


def test_tracking_reads_the_same_through_sql_as_through_mlflow_search(store, monkeypatch):
    direct = reads(store.uri, store.ids)
    assert direct["keys"] == {"k1", "k2"} and direct["keys (all experiments)"] == {"k1", "k2"}
    assert len(direct["unlearn (grid)"]) == 3                       # k1 once (its first finished run), k2, no key
    assert direct["unlearn (grid)"].set_index("tags.key").loc["k1", "params.lr"] == "0.1"
    assert sorted(direct["search children"]["key"]) == ["t1", "t2"]   # t3: KILLED, not stopped early
    monkeypatch.setattr(run_table, "is_database_uri", lambda uri: False)   # as for a file store
    assert_same_reads(direct, reads(store.uri, store.ids))


def test_no_store_yet_reads_no_runs_and_creates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow_runs.finished_keys(uri, "unlearn") == set() and mlflow_runs.finished_runs(uri, "retrain").empty
    assert list(tmp_path.iterdir()) == []


@pytest.mark.system
def test_unlearn_grid_server_on_postgresql_serves_mlflow_and_the_run_table(tmp_path, monkeypatch):
    with services.postgresql() as db_uri:
        ids = populate(db_uri, tmp_path)
        check_cases(db_uri, ids)                                       # run_table on PostgreSQL
        direct = reads(run_table.sqlalchemy_uri(db_uri), ids)       # postgresql+psycopg:// as MLflow needs it
        with services.tracking_server(db_uri, tmp_path / "artifacts", tmp_path / "server.log", workers=1) as url:
            assert {e.name for e in MlflowClient(url).search_experiments()} == {"Default", "grid", "other"}
            request = urllib.request.Request(f"{url}{run_table.SERVER_ROUTE}?stage=unlearn&status=FINISHED"
                                             f"&experiment_id={ids['grid']}&columns=tags.key",
                                             headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
                sent = json.loads(gzip.decompress(response.read()))
            assert list(sent) == BASE + ["tags.key"] and sorted(map(str, sent["tags.key"])) == ["None", "k1", "k1", "k2"]

            def no_fallback(*args):
                raise AssertionError("the run-table route was not used")
            monkeypatch.setattr(mlflow_runs, "_runs_from_mlflow", no_fallback)
            over_http = reads(url, ids)
    assert_same_reads(over_http, direct)


@pytest.mark.system
def test_a_plain_mlflow_server_is_read_through_mlflow_search(store, tmp_path):
    with services.tracking_server(store.uri, tmp_path / "artifacts", tmp_path / "server.log", workers=1,
                                  plain_mlflow=True) as url:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{url}{run_table.SERVER_ROUTE}?stage=unlearn", timeout=30)
        assert answer.value.code == 404
        over_http = reads(url, store.ids)
    assert_same_reads(over_http, reads(store.uri, store.ids))
