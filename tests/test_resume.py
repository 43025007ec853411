"""Resume through the trainable (trainables/trial.py run_pack), without Ray: a training trial that dies
mid-training is retried from its last Tune checkpoint in the same MLflow run, its per-epoch metrics
continue without gaps or repeats, and its final weights equal an uninterrupted run's. Tune's session
is replaced by FakeTune, which keeps the last checkpoint reported as Tune does. ~10 s on toy2d/mlp."""
import shutil

import pytest
import torch
from mlflow import MlflowClient
from ray import tune

from grid import config, stages, tracking
from trainables import store
from trainables import trial as trial_module

EPOCHS = 6
GRID = {"name": "resume", "datasets": "toy2d", "archs": "mlp", "forget_classes": ["a"], "seeds": [0],
        "train": {"epochs": EPOCHS, "lr": 0.05, "batch_size": 64}, "methods": {"ft": {"epochs": 1}},
        "resources": {"cpu": 1, "gpu": 0}}


class FakeTune:
    """Tune's session for one trial: reports are collected, the last checkpoint is persisted (copied out
    of the trainable's temporary folder, as Tune uploads it) and handed to the next attempt."""

    def __init__(self, folder, fail_at_checkpoint=None):
        self.folder, self.fail_at_checkpoint = folder, fail_at_checkpoint
        self.checkpoint, self.reports = None, []

    def report(self, metrics, checkpoint=None):
        if checkpoint is not None and metrics.get("epoch") == self.fail_at_checkpoint:
            self.fail_at_checkpoint = None
            # the worker dies while its checkpoint is being saved: the epoch's metrics are logged, its
            # checkpoint is not (the window where a retry would log the epoch a second time)
            raise RuntimeError("worker died")
        self.reports.append(metrics)
        if checkpoint is not None:
            target = self.folder / f"checkpoint_{len(self.reports)}"
            shutil.copytree(checkpoint.path, target)
            self.checkpoint = tune.Checkpoint.from_directory(str(target))

    def get_checkpoint(self):
        return self.checkpoint


def train_original(folder, monkeypatch, fail_at_checkpoint=None):
    """Run the grid's original through run_pack in a fresh store under `folder` (every epoch checkpointed),
    retried once if it fails; returns (tracking URI, storage, key, FakeTune)."""
    plan = config.build_plan(GRID)
    tracking_uri, storage = f"sqlite:///{folder / 'mlflow.db'}", str(folder / "storage")
    session = FakeTune(folder, fail_at_checkpoint)
    monkeypatch.setattr(trial_module.tune, "report", session.report)
    monkeypatch.setattr(trial_module.tune, "get_checkpoint", session.get_checkpoint)
    monkeypatch.setattr(trial_module, "placement_tags", lambda: {"hostname": "test", "pid": "0"})
    original = plan.original[0]
    context = {"grid": plan.name, "tracking_uri": tracking_uri, "storage": storage, "driver": "test", "cpus": 1,
               "experiment_id": tracking.ensure_experiment(tracking_uri, plan.name), "checkpoint_minutes": 0,
               "run_name": stages.run_label(original["spec"])}
    packs = [[{**original, "context": context}]]
    if fail_at_checkpoint is not None:
        with pytest.raises(trial_module.PackFailed, match="worker died"):
            trial_module.run_pack({"pack": 0}, packs)
    trial_module.run_pack({"pack": 0}, packs)       # Tune's retry of the pack
    return tracking_uri, storage, original["key"], session


def test_a_trial_that_dies_mid_training_resumes_its_run_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    (tmp_path / "crashed").mkdir()
    (tmp_path / "whole").mkdir()
    tracking_uri, storage, key, session = train_original(tmp_path / "crashed", monkeypatch, fail_at_checkpoint=4)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id], f"tags.key = '{key}'")
    assert len(runs) == 1                               # the retry continued the run, it did not start another
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "3"
    for name in ("train_loss", "lr"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        # a repeat of epoch 4 (logged before the failed checkpoint, then again by the retry) or a gap fails here
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (name, steps)

    whole_uri, whole_storage, whole_key, _ = train_original(tmp_path / "whole", monkeypatch)
    assert whole_key == key
    resumed, uninterrupted = store.load_model_state(storage, key), store.load_model_state(whole_storage, key)
    for name, value in uninterrupted.items():      # the retry restored the optimizer, scheduler and RNG too
        assert torch.equal(resumed[name], value), name
    whole_client = MlflowClient(whole_uri)
    whole_run = whole_client.search_runs([whole_client.get_experiment_by_name("resume").experiment_id],
                                         f"tags.key = '{key}'")[0]

    def losses(some_client, run_id):
        return [m.value for m in sorted(some_client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]
    assert losses(client, run.info.run_id) == losses(whole_client, whole_run.info.run_id)
