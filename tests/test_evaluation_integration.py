"""The paper's evaluation end to end on digits (conftest's EVALUATION: on the holdout half of the test
split): U-LiRA stage, λ sweep, multi-class forget set, diagnostics artifacts, every table in three
formats, figures (~40 s on 2 cores). Its metrics, recomputed from what it stored: test_wiring.py."""
import mlflow
import pandas as pd
import pytest
from matplotlib.image import imread

from grid import cli

@pytest.fixture(scope="module")
def evaluated(evaluation_grid):
    """conftest's EVALUATION (run in TINY's store), its tables and figures."""
    folder, _, tracking_uri, _ = evaluation_grid
    assert cli.main(["tables", "evaluation", "--tracking-uri", tracking_uri, "--out", str(folder / "evaluation-tables")]) == 0
    assert cli.main(["figures", "evaluation", "--tracking-uri", tracking_uri, "--out", str(folder / "evaluation-figures")]) == 0
    mlflow.set_tracking_uri(tracking_uri)
    return folder, tracking_uri, mlflow.search_runs(experiment_names=["evaluation"], max_results=1000)


def test_ulira_stage_logs_one_attack_per_forget_set_and_method(evaluated):
    _, _, runs = evaluated
    ulira = runs[runs["tags.stage"] == "ulira"]
    # 2 forget sets x (original, trw lam 0, trw lam 10, rl)
    assert len(ulira) == 8
    parent = runs[runs["tags.parent_of"] == "ulira"]      # the MLflow UI nests the attacks under it
    assert len(parent) == 1 and parent["metrics.trials"].iloc[0] == 8
    assert (ulira["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert ulira["metrics.ulira_accuracy"].between(0, 100).all()
    assert ulira["metrics.ulira_auc"].between(0, 100).all()
    original = ulira[ulira["tags.method"] == "original"]["metrics.ulira_accuracy"]
    assert original.min() > 80      # the untouched Original is easy to tell from a Retrain model


def test_unlearn_runs_log_diagnostics_and_device(evaluated):
    _, tracking_uri, runs = evaluated
    trw = runs[(runs["tags.stage"] == "unlearn") & (runs["tags.method"] == "trw")]
    assert trw["tags.device"].str.startswith("cpu").all()
    client = mlflow.MlflowClient(tracking_uri)
    paths = {a.path for a in client.list_artifacts(trw["run_id"].iloc[0], "diagnostics")}
    assert paths == {"diagnostics/confusion_matrix.json", "diagnostics/forget_redistribution.json",
                     "diagnostics/per_class_drop.csv"}
    mlflow.set_tracking_uri(tracking_uri)   # conftest.py's own_mlflow_store clears the module fixture's after each test
    shares = mlflow.artifacts.load_dict(f"runs:/{trw['run_id'].iloc[0]}/diagnostics/forget_redistribution.json")
    assert sum(shares["share_percent"]) == pytest.approx(100)


def test_every_table_is_written_in_three_formats(evaluated):
    folder, _, _ = evaluated
    for name in ("accuracy", "mia_nn", "running_time", "ulira", "lambda_trw", "multiclass", "per_class_drop"):
        for suffix in ("csv", "md", "tex"):
            assert (folder / "evaluation-tables" / f"{name}.{suffix}").stat().st_size > 0, f"{name}.{suffix}"
    lam = pd.read_csv(folder / "evaluation-tables" / "lambda_trw.csv", index_col=0)
    assert list(lam.index) == ["Retrain", "λ=0", "λ=10"]
    multiclass = pd.read_csv(folder / "evaluation-tables" / "multiclass.csv")
    assert sorted(multiclass["Forgotten classes"].unique()) == [1, 2]
    ulira = pd.read_csv(folder / "evaluation-tables" / "ulira.csv", index_col=0)
    # a column group per method (the CSV's numeric convention: <label>_mean, _std, _ci_low, _ci_high, _n)
    assert {f"{label}_{stat}" for label in ("rl", "trw (lam=0.0)", "trw (lam=10.0)")
            for stat in ("mean", "std", "ci_low", "ci_high", "n")} <= set(ulira.columns)
    assert ulira.filter(like="_mean").loc["U-LiRA accuracy (%)"].between(0, 100).all()


def test_figures_are_written_and_logged(evaluated):
    folder, tracking_uri, _ = evaluated
    names = sorted(p.name for p in (folder / "evaluation-figures").glob("*.png"))
    assert "running_time.png" in names and "lambda_trw.png" in names
    assert any(n.startswith("confusion_digits_small_cnn_f8_") for n in names)
    assert "redistribution_digits_small_cnn_f8.png" in names and "mia_nn_digits_small_cnn_f8.png" in names
    for name in names:
        height, width = imread(folder / "evaluation-figures" / name).shape[:2]
        assert height >= 300 and width >= 300, name
    # tables and figures in the experiment's one run 'report'
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["evaluation"], filter_string="tags.stage = 'report'")
    assert len(runs) == 1 and runs["tags.mlflow.runName"].iloc[0] == "report"
    client = mlflow.MlflowClient(tracking_uri)
    logged = client.list_artifacts(runs["run_id"].iloc[0], "figures")
    assert sorted(a.path for a in logged) == [f"figures/{name}" for name in names]
    tables = {a.path for a in client.list_artifacts(runs["run_id"].iloc[0], "tables")}
    assert {"tables/accuracy.md", "tables/accuracy.csv", "tables/ulira.tex"} <= tables
