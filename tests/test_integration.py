"""A tiny grid end to end through Ray Tune + MLflow (sqlite in a temp dir): ~40 s on 2 cores."""
import mlflow
import pandas as pd
import pytest

from grid import cli

TINY = {
    "name": "tiny",
    "datasets": "digits",
    "archs": "small_cnn",
    "forget_classes": [8],
    "seeds": [0, 1],
    "train": {"epochs": 6, "lr": 0.05, "batch_size": 64},
    "methods": {"trw": {"epochs": 2, "lr": 0.01, "lam": [0, 10]}, "ft": {"epochs": 1}},
    "checkpoint_minutes": 0,     # checkpoint every epoch, so the checkpoint path runs too
}


@pytest.fixture(scope="module")
def finished_grid(run_grid, tmp_path_factory):
    """Run TINY once; returns (folder, grid file, tracking_uri, storage)."""
    folder = tmp_path_factory.mktemp("grid")
    return (folder, *run_grid(folder, TINY))


def all_runs(tracking_uri):
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(search_all_experiments=True, max_results=1000)


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


def test_weights_and_logits_are_stored_by_key_and_logged_as_artifacts(finished_grid):
    _, _, tracking_uri, storage = finished_grid
    runs = all_runs(tracking_uri)
    for key in runs["tags.key"]:
        assert (storage / "models" / key / "model.pt").is_file()
        assert (storage / "models" / key / "test_logits.npz").is_file()
    # checkpoint_minutes: 0 -> every training epoch went through tune.Checkpoint (Tune keeps the last)
    assert list((storage / "ray").glob("train-*/*/checkpoint_*/state.pt"))
    client = mlflow.MlflowClient(tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(runs["run_id"].iloc[0])}
    assert {"model.pt", "test_logits.npz"} <= artifacts


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
    assert "0 original, 0 retrain, 0 unlearn trials run" in out
    assert len(all_runs(tracking_uri)) == 12


def test_another_grid_reuses_originals_and_retrain_models(finished_grid, run_grid, capsys):
    folder, _, tracking_uri, _ = finished_grid
    capsys.readouterr()
    run_grid(folder, {**TINY, "name": "other", "methods": {"rescale": {"epochs": 1}}})
    out = capsys.readouterr().out
    assert "0 original, 0 retrain, 4 unlearn trials run" in out
    assert cli.main(["tables", "other", "--tracking-uri", tracking_uri, "--out", str(folder / "other")]) == 0
    table = pd.read_csv(folder / "other" / "accuracy.csv", index_col=0)
    assert list(table.index) == ["Original", "Retrain", "rescale"]   # Retrain runs live in experiment 'tiny'


def test_tables_have_the_papers_rows(finished_grid):
    folder, _, tracking_uri, _ = finished_grid
    out = folder / "tables"
    assert cli.main(["tables", "tiny", "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    accuracy = pd.read_csv(out / "accuracy.csv", index_col=0)
    assert list(accuracy.index) == ["Original", "Retrain", "ft", "trw (lam=0.0)", "trw (lam=10.0)"]
    assert accuracy.loc["Retrain", "digits/small_cnn Acc_f"] == "0.00 ± 0.00"
    assert float(accuracy.loc["Original", "digits/small_cnn MIA"].split(" ± ")[0]) < 50
    mia_nn = pd.read_csv(out / "mia_nn.csv")
    # one row per forget set, then each method's mean gap to the Retrain reference
    assert len(mia_nn) == 2 and float(mia_nn.loc[0, "Forget"]) == 8
    assert mia_nn.loc[1, "Dataset"] == "mean abs. gap to Retrain" and mia_nn.loc[1, "ft"] >= 0
    assert {"c*", "Retrain", "Original", "trw (lam=0.0)", "trw (lam=10.0)", "ft"} <= set(mia_nn.columns)
    assert "± " in (out / "accuracy.md").read_text()
    assert "| digits/small_cnn | 8 |" in (out / "mia_nn.md").read_text()


def test_tables_for_an_unknown_experiment_is_an_error(finished_grid, capsys):
    _, _, tracking_uri, _ = finished_grid
    assert cli.main(["tables", "nope", "--tracking-uri", tracking_uri]) == 2
    assert "tiny" in capsys.readouterr().err
