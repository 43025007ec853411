"""A tiny grid end to end through Ray Tune + MLflow (sqlite in a temp dir, conftest.py tiny_grid): ~40 s on 2 cores."""
import hashlib
import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

import services
from conftest import TINY
from grid import cli
from grid.plan import config
from trainables import references, store


@pytest.fixture(scope="module")
def finished_grid(tiny_grid):
    """TINY (conftest.py) run once per session; (folder, grid file, tracking_uri, storage)."""
    return tiny_grid


TINY_EVALUATION = config.build_plan(TINY).unlearn[0]["spec"]["evaluation"]   # the grid's defaults


def all_runs(tracking_uri, experiment="tiny"):
    """The experiment's trial runs: not their parent runs (grid/execution/parents.py) nor the report run."""
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=1000)
    return runs[runs["tags.stage"].isin(["original", "retrain", "unlearn"])]


def parent_runs(tracking_uri, experiment="tiny"):
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.parent_of LIKE '%'", max_results=100)


def test_every_trial_has_a_finished_run_with_its_tags_and_metrics(finished_grid):
    _, _, tracking_uri, storage = finished_grid
    runs = all_runs(tracking_uri)
    assert (runs["status"] == "FINISHED").all()
    counts = runs["tags.stage"].value_counts().to_dict()
    # 2 originals, 2 Retrain models, (Original eval + trw x2 + ft) x 2 seeds
    assert counts == {"original": 2, "retrain": 2, "unlearn": 8}
    unlearn = runs[runs["tags.stage"] == "unlearn"]
    assert set(unlearn["tags.method"]) == {"original", "trw", "ft"}
    for tag in ("dataset", "arch", "forget_classes", "seed", "key", "grid", "original_key", "retrain_keys"):
        assert unlearn[f"tags.{tag}"].notna().all(), tag
    assert (unlearn["tags.forget_classes"] == "8").all()
    for metric in ("acc_r_test", "acc_f_test", "acc_r_train", "acc_f_train", "mia_svm", "mia_nn",
                   "mia_nn_gap", "mia_nn_reference", "wall_seconds"):
        values = unlearn[f"metrics.{metric}"]
        assert values.notna().all() and values.between(0, 100 if metric != "wall_seconds" else 1e4).all(), metric
    # the Original still knows class 8; TRW forgets it
    original = unlearn[unlearn["tags.method"] == "original"]
    trw = unlearn[unlearn["tags.method"] == "trw"]
    assert original["metrics.acc_f_test"].min() > 60
    assert trw["metrics.acc_f_test"].max() < original["metrics.acc_f_test"].min()
    # one reference per forget set, shared by every unlearn run
    assert unlearn["metrics.mia_nn_reference"].nunique() == 1
    assert unlearn["params.neighbour_class"].nunique() == 1


def test_each_unlearn_run_carries_the_reference_its_retrain_models_give(finished_grid):
    """c*, A_c* and every A_c of each unlearn run, which its trial read or computed on its worker
    (trainables/references.py), are those the driver used to compute before the stage (references.compute
    is that computation), and the reference is stored once for the forget set."""
    _, _, tracking_uri, storage = finished_grid
    unlearn = all_runs(tracking_uri).query("`tags.stage` == 'unlearn'")
    (retrain_keys,) = set(unlearn["tags.retrain_model_keys"])   # the keys their logits are stored under
    keys, evaluation = retrain_keys.split(","), TINY_EVALUATION
    expected = references.compute(str(storage), keys, [8], evaluation)
    assert (unlearn["params.neighbour_class"] == str(expected.neighbour_class)).all()
    assert unlearn["metrics.mia_nn_reference"].tolist() == [expected.reference_score] * len(unlearn)
    for tag in unlearn["tags.retrain_class_scores"]:
        assert {int(c): a for c, a in json.loads(tag).items()} == pytest.approx(expected.class_scores, abs=1e-4)
    stored = references.get(str(storage), keys, [8], evaluation)
    assert not stored.computed and stored.neighbour == expected


def test_weights_and_logits_are_stored_once_by_key_and_the_runs_point_at_them(finished_grid):
    _, _, tracking_uri, storage = finished_grid
    runs = all_runs(tracking_uri)
    for key in runs["tags.model_key"]:   # a Retrain model's leaves out its evaluation (trainables/keys.py)
        assert (storage / "models" / key / "model.pt").is_file()
        assert (storage / "models" / key / "test_logits.npz").is_file()
    # checkpoint_minutes: 0 checkpointed every epoch, in storage by key (trainables/checkpoints.py); a
    # finished trial deletes its checkpoint, and Tune keeps none of its own
    assert (storage / "checkpoints").is_dir() and not list((storage / "checkpoints").rglob("state.pt"))
    assert not list((storage / "ray").rglob("checkpoint_*"))
    # no second copy through MLflow: each run's tags name the stored file and the hash written with it
    client = mlflow.MlflowClient(tracking_uri)
    for run_id, key in zip(runs["run_id"], runs["tags.model_key"]):
        assert not {"model.pt", "test_logits.npz", "forget_train_logits.npz"} & {a.path for a in client.list_artifacts(run_id)}
        tags = client.get_run(run_id).data.tags
        for name in ("model.pt", "test_logits.npz"):
            assert Path(tags[f"stored.{name}"]) == (storage / "models" / key / name).resolve()
            assert tags[f"stored.{name}.sha256"] == store.recorded_hash(str(storage), key, name) \
                == hashlib.sha256((storage / "models" / key / name).read_bytes()).hexdigest()


def test_per_epoch_metrics_are_logged(finished_grid):
    _, _, tracking_uri, _ = finished_grid
    runs = all_runs(tracking_uri)
    original = runs[runs["tags.stage"] == "original"]["run_id"].iloc[0]
    history = mlflow.MlflowClient(tracking_uri).get_metric_history(original, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]


def test_rerun_schedules_zero_trials(finished_grid, capsys):
    _, grid_file, tracking_uri, storage = finished_grid
    capsys.readouterr()
    assert cli.main(["run", str(grid_file), "--tracking-uri", tracking_uri, "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "0 original, 0 retrain, 0 unlearn, 0 ulira trials run" in out
    assert len(all_runs(tracking_uri)) == 12
    assert len(parent_runs(tracking_uri)) == 4     # original, retrain, unlearn, ulira: a rerun adds none


def test_tables_refuse_a_baseline_the_experiment_lacks_and_write_nothing(finished_grid, capsys):
    folder, _, tracking_uri, _ = finished_grid
    out = folder / "tables-bad-baseline"
    assert cli.main(["tables", "tiny", "--tracking-uri", tracking_uri, "--out", str(out), "--compare-to", "sgd"]) == 2
    error = capsys.readouterr().err
    assert "--compare-to: unknown baseline 'sgd'; allowed: ['ft', 'original', 'retrain', 'trw']" in error
    assert not out.exists()


def test_tables_have_the_papers_rows(finished_grid):
    folder, _, tracking_uri, _ = finished_grid
    out = folder / "tables"
    assert cli.main(["tables", "tiny", "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    accuracy = pd.read_csv(out / "accuracy.csv", index_col=0)
    assert list(accuracy.index) == ["Original", "Retrain", "ft", "trw (lam=0.0)", "trw (lam=10.0)"]
    assert accuracy.loc["Retrain", "digits/small_cnn Acc_f_mean"] == 0.0            # numeric, full precision
    assert accuracy.loc["Original", "digits/small_cnn MIA_mean"] < 50
    assert {"digits/small_cnn Acc_r_std", "digits/small_cnn Acc_r_ci_low", "digits/small_cnn Acc_r_ci_high",
            "digits/small_cnn Acc_r_n"} <= set(accuracy.columns)
    mia_nn = pd.read_csv(out / "mia_nn.csv")
    # one row per (forget set, method), Retrain (A_c*) first and the Retrain models held out against each
    # other's reference (the noise floor: the grid has 2 seeds), then each row over all forget sets
    assert list(mia_nn["Method"]) == ["Retrain", "Retrain (held-out)", "Original", "ft", "trw (lam=0.0)",
                                      "trw (lam=10.0)", "Retrain (held-out)", "Original", "ft", "trw (lam=0.0)",
                                      "trw (lam=10.0)"]
    assert float(mia_nn.loc[0, "Forget"]) == 8 and (mia_nn.loc[6:, "Forget"] == "all").all()
    assert (mia_nn.loc[6:, "MIA-NN gap_mean"] >= 0).all()
    assert "± " in (out / "accuracy.md").read_text()
    assert "| digits/small_cnn | 8 |" in (out / "mia_nn.md").read_text()
    units = pd.read_csv(out / "accuracy.units.csv")
    assert list(units.columns) == ["dataset", "arch", "label", "seed", "forget_classes", "unlearn_seed", "metric",
                                   "value", "samples"]
    assert set(units["metric"]) == {"Acc_r", "Acc_f", "MIA"}


def test_tables_do_not_depend_on_the_order_the_server_returns_runs(finished_grid):
    """A grid restarted after a fault logs its runs in another order than a clean one: every table, its
    bootstrap intervals and its units CSV must come out the same (CI once failed on units rows that
    followed the runs' order)."""
    from grid.reports import report
    from grid.tracking import mlflow_runs
    _, _, tracking_uri, _ = finished_grid
    runs = mlflow_runs.experiment_runs(tracking_uri, "tiny")
    ulira = mlflow_runs.experiment_ulira_runs(tracking_uri, "tiny")
    reversed_runs, reversed_ulira = runs.iloc[::-1].reset_index(drop=True), ulira.iloc[::-1].reset_index(drop=True)
    assert list(reversed_runs["run_id"]) != list(runs["run_id"])

    def tables(frame, ulira_frame):
        return {item[0]: item for item in report.build_tables(frame, ulira_frame, echo=lambda *_: None)}
    forward, backward = tables(runs, ulira), tables(reversed_runs, reversed_ulira)
    assert forward.keys() == backward.keys() and {"accuracy", "mia_nn", "comparisons"} <= set(forward)
    for name, item in forward.items():
        pd.testing.assert_frame_equal(backward[name][2], item[2], obj=name)
        if len(item) > 4 and item[4] is not None:
            pd.testing.assert_frame_equal(backward[name][4].reset_index(drop=True), item[4].reset_index(drop=True),
                                          obj=f"{name} units")


def test_tables_for_an_unknown_experiment_is_an_error(finished_grid, capsys):
    _, _, tracking_uri, _ = finished_grid
    assert cli.main(["tables", "nope", "--tracking-uri", tracking_uri]) == 2
    assert "tiny" in capsys.readouterr().err


def rows(runs):
    """MlflowClient runs as the rows the REST API's runs/search gives the UI: id, status, tags., params., metrics."""
    return [{"id": r.info.run_id, "status": r.info.status, **{f"tags.{k}": v for k, v in r.data.tags.items()},
             **{f"params.{k}": v for k, v in r.data.params.items()},
             **{f"metrics.{k}": v for k, v in r.data.metrics.items()}} for r in runs]


def check_what_the_ui_shows(runs, trw_of_class_8, table_files):
    """One parent run per stage with the trials as children, the compared params as numbers, the search a
    user types, and the report run with the tables."""
    parents = {r["tags.parent_of"]: r for r in runs if "tags.parent_of" in r and r["tags.parent_of"] != "ulira"}
    assert set(parents) == {"original", "retrain", "unlearn"}
    trials = [r for r in runs if r.get("tags.stage") in parents]
    assert len(trials) == 12
    for trial in trials:   # a trial under another stage's parent (or none) fails here
        assert trial["tags.mlflow.parentRunId"] == parents[trial["tags.stage"]]["id"], trial["tags.mlflow.runName"]
    for stage, parent in parents.items():
        assert parent["status"] == "FINISHED" and "tags.stage" not in parent
        assert parent["metrics.trials"] == sum(t["tags.stage"] == stage for t in trials)
    # the search box: TRW's unlearn runs of forget class 8, λ 0 and 10, 2 seeds (not its U-LiRA attacks)
    assert len(trw_of_class_8) == 4 and {r["params.lam"] for r in trw_of_class_8} == {"0.0", "10.0"}
    # compared params parse as numbers on every run that has them (the parallel-coordinates axes)
    for trial in trials:
        for name in ("lam", "T", "epochs", "lr"):
            if f"params.{name}" in trial:
                float(trial[f"params.{name}"])
        compared = ("acc_test",) if trial["tags.stage"] == "original" else ("acc_r_test", "acc_f_test", "mia_svm")
        for metric in compared + ("compute_seconds",):
            assert isinstance(trial[f"metrics.{metric}"], float), metric
    trw = [t for t in trials if t.get("tags.method") == "trw"]
    assert {(t["params.lam"], t["params.T"], t["params.epochs"], t["params.lr"]) for t in trw} == \
        {("0.0", "0.1", "2", "0.01"), ("10.0", "0.1", "2", "0.01")}
    originals = [t for t in trials if t["tags.stage"] == "original"]
    assert {(t["params.epochs"], t["params.lr"]) for t in originals} == {("6", "0.05")}
    for t in trials:
        if t["tags.stage"] == "unlearn" and t["tags.method"] != "original":
            assert isinstance(t["metrics.mia_nn"], float) and isinstance(t["metrics.mia_nn_gap"], float)
    # the report run holds the tables `tables` wrote
    assert {"tables/accuracy.csv", "tables/accuracy.md", "tables/accuracy.tex"} <= set(table_files)


TRW_OF_CLASS_8 = "tags.stage = 'unlearn' and tags.method = 'trw' and tags.forget_classes = '8'"


def test_runs_are_nested_by_stage_with_numeric_params_and_a_report_run(finished_grid, tmp_path):
    """What the MLflow UI reads, from the store itself (the server in front of it: the test below)."""
    _, _, tracking_uri, _ = finished_grid
    assert cli.main(["tables", "tiny", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "tables")]) == 0
    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    runs = rows(client.search_runs([experiment_id], max_results=1000))
    report = next(r["id"] for r in runs if r.get("tags.stage") == "report")
    check_what_the_ui_shows(runs, rows(client.search_runs([experiment_id], TRW_OF_CLASS_8)),
                            [a.path for a in client.list_artifacts(report, "tables")])


@pytest.mark.system
def test_the_mlflow_ui_server_serves_runs_nested_by_stage_with_numeric_params_and_a_report_run(finished_grid, tmp_path):
    """The same through the REST API of the server `unlearn-grid ui` starts, and the address it prints
    (bench/ui_check.py looks at the rendered page itself)."""
    _, _, tracking_uri, _ = finished_grid
    assert cli.main(["tables", "tiny", "--tracking-uri", tracking_uri, "--out", str(tmp_path / "tables")]) == 0
    experiment_id = mlflow.MlflowClient(tracking_uri).get_experiment_by_name("tiny").experiment_id
    with services.ui_server(tracking_uri, "tiny", tmp_path / "ui.log") as (url, printed):
        # the address printed opens the runs table (MLflow 3.17 would show its GenAI overview without it)
        assert f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in printed

        def search(where=""):
            reply = requests.post(f"{url}/api/2.0/mlflow/runs/search", timeout=30,
                                  json={"experiment_ids": [experiment_id], "filter": where, "max_results": 1000})
            reply.raise_for_status()
            return [{"id": r["info"]["run_id"], "status": r["info"]["status"],
                     **{f"tags.{t['key']}": t["value"] for t in r["data"].get("tags", [])},
                     **{f"params.{p['key']}": p["value"] for p in r["data"].get("params", [])},
                     **{f"metrics.{m['key']}": m["value"] for m in r["data"].get("metrics", [])}}
                    for r in reply.json().get("runs", [])]
        runs = search()
        artifacts = requests.get(f"{url}/api/2.0/mlflow/artifacts/list", timeout=30,
                                 params={"run_id": next(r["id"] for r in runs if r.get("tags.stage") == "report"),
                                         "path": "tables"}).json()
        check_what_the_ui_shows(runs, search(TRW_OF_CLASS_8), [f["path"] for f in artifacts["files"]])
