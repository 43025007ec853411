"""The paper's evaluation end to end on digits: U-LiRA stage, λ sweep, multi-class forget set,
diagnostics artifacts, every table in three formats, figures (~40 s on 2 cores)."""
import mlflow
import pandas as pd
import pytest
from matplotlib.image import imread

from analysis.metrics import retain_forget_accuracy
from grid import cli
from trainables import data, store

GRID = {
    "name": "evaluation",
    "datasets": "digits",
    "archs": "small_cnn",
    "forget_classes": [8, [8, 3]],
    "seeds": [0, 1],
    "train": {"epochs": 6, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 2, "lr": 0.01, "lam": [0, 10]}, "rl": {"epochs": 2}},
    "ulira": {"shadow_models": 2},
}


@pytest.fixture(scope="module")
def evaluated(run_grid, tiny_grid):
    """GRID run in tiny_grid's store (conftest.py): its originals and forget-8 Retrain models are reused."""
    folder = tiny_grid[0]
    _, tracking_uri, _ = run_grid(folder, GRID)
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
    assert {"rl", "trw (lam=0.0)", "trw (lam=10.0)"} <= set(ulira.columns)


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


# evaluation.split = holdout on the same store: the originals are reused (their keys have no
# evaluation), the Retrain and unlearn trials are new (the split is part of their keys)
HOLDOUT_GRID = {**GRID, "name": "holdout", "forget_classes": [8], "seeds": [0], "methods": {"rl": {"epochs": 1}},
                "ulira": {"shadow_models": 0}, "evaluation": {"split": "holdout"}}


def test_holdout_grid_reports_on_the_holdout_half_of_the_stored_test_logits(evaluated, run_grid, capsys):
    folder, _, _ = evaluated
    _, tracking_uri, storage = run_grid(folder, HOLDOUT_GRID)
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=["holdout"], max_results=100)
    runs = runs[runs["tags.stage"].notna()]     # the trials, not their parent runs (grid/parents.py)
    assert sorted(runs["tags.stage"]) == ["retrain", "unlearn", "unlearn"]    # Original row + rl
    assert (runs["tags.evaluation_split"] == "holdout").all()
    for _, run in runs.iterrows():
        logits, labels = store.load_logits(store.resolve(storage), run["tags.key"])
        split = data.holdout_split(labels, 0)
        assert len(logits) == len(labels) > len(split.holdout)               # stored logits stay whole
        acc_r, acc_f = retain_forget_accuracy(logits[split.holdout], labels[split.holdout], [8])
        assert run["metrics.acc_r_test"] == pytest.approx(acc_r) and run["metrics.acc_f_test"] == pytest.approx(acc_f)
        assert run["tags.evaluation_split_hash"] == split.hash
        assert run["tags.evaluation_samples"] == str(len(split.holdout))
    capsys.readouterr()
    assert cli.main(["tables", "holdout", "--tracking-uri", tracking_uri, "--out", str(folder / "holdout_tables")]) == 0
    assert f"— holdout split (the half of each test class that searches never read; {len(split.holdout)} samples)" \
        in capsys.readouterr().out
