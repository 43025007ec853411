"""Eight trials logging per-epoch metrics at once, as Ray runs them (one Ray task each, 0.25 CPU) to the
local SQLite store: every metric step logged must arrive, once (~30 s on 2 cores). The eight meet at a
barrier (a file each in a shared folder) before they write, so they provably ran at once. The same
through `unlearn-grid server` on PostgreSQL: tests/test_multinode.py counts the steps of its trials,
eight at once."""
import ray


TRIALS, EPOCHS = 8, 10


@ray.remote(num_cpus=0.25)
def log_like_a_trial(tracking_uri, experiment_id, name, barrier):
    """The trial's pattern (trainables/trial.py): tags, params, then metrics at every epoch; first, wait at
    the barrier until all eight tasks are there."""
    import os
    import time

    import mlflow
    open(os.path.join(barrier, name), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(barrier)) < TRIALS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(os.listdir(barrier))} of {TRIALS} writers ran at once")
        time.sleep(0.01)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.set_tags({"stage": "original", "key": name})
        mlflow.log_params({"train.lr": 0.05, "seed": name})
        for epoch in range(1, EPOCHS + 1):
            mlflow.log_metrics({"train_loss": 1.0 / epoch, "lr": 0.05}, step=epoch)
    return run.info.run_id


def _count_steps(tracking_uri, run_ids):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    return {run_id: sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) for run_id in run_ids}


def _write_concurrently(tracking_uri, barrier):
    import mlflow
    from grid.tracking import mlflow_runs
    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, "writers")
    barrier.mkdir()
    run_ids = ray.get([log_like_a_trial.remote(tracking_uri, experiment_id, str(i), str(barrier)) for i in range(TRIALS)])
    mlflow.set_tracking_uri(tracking_uri)
    assert len(set(run_ids)) == TRIALS
    return _count_steps(tracking_uri, run_ids)


def test_eight_concurrent_trials_lose_no_metric_step_on_sqlite(tmp_path, ray_instance):
    steps = _write_concurrently(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "barrier")
    assert all(logged == list(range(1, EPOCHS + 1)) for logged in steps.values()), steps
