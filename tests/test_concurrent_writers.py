"""Eight trials logging per-epoch metrics at once, as Ray runs them (one Ray task each, 0.25 CPU, all
started together) to the local SQLite store: every metric step logged must arrive, once (~30 s on 2
cores). The same through `unlearn-grid server` on PostgreSQL: tests/test_multinode.py counts the
steps of its 16 trials, up to 8 at once."""
import ray


TRIALS, EPOCHS = 8, 30


@ray.remote(num_cpus=0.25)
def log_like_a_trial(tracking_uri, experiment_id, name, start):
    """The trial's pattern (trainables/trial.py): tags, params, then metrics at every epoch."""
    import time

    import mlflow
    while time.time() < start:   # all eight begin writing in the same instant
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


def _write_concurrently(tracking_uri):
    import time

    import mlflow
    from grid import tracking
    experiment_id = tracking.ensure_experiment(tracking_uri, "writers")
    start = time.time() + 3   # time for the eight workers to start
    run_ids = ray.get([log_like_a_trial.remote(tracking_uri, experiment_id, str(i), start) for i in range(TRIALS)])
    mlflow.set_tracking_uri(tracking_uri)
    assert len(set(run_ids)) == TRIALS
    return _count_steps(tracking_uri, run_ids)


def test_eight_concurrent_trials_lose_no_metric_step_on_sqlite(tmp_path, ray_instance):
    steps = _write_concurrently(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert all(logged == list(range(1, EPOCHS + 1)) for logged in steps.values()), steps
