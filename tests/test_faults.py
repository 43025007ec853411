"""Real faults, injected for real while a trial is known to wait at a gate (tests/plugins/gates.py): a
driver SIGKILLed mid-grid (with the local Ray it started) and a trial's worker process SIGKILLed
mid-training. After each, the grid finishes, every trial key has exactly one FINISHED run and no run is
left RUNNING (~60 s on 2 cores)."""
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from grid.execution import orphans
from services import kill_session

GRID = {"name": "faults", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": 3, "lr": 0.05, "batch_size": 64, "lr_step": 10},
        # `gate` (the gates plugin) waits at its gate until released, then fine-tunes as FT does
        "methods": {"ft": {"epochs": 1}, "rl": {"epochs": 1}, "gate": {}},
        "resources": {"cpu": 1, "gpu": 0}}


def _runs(client, experiment, where=""):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], where, max_results=10_000)


def _kill_driver_at(gate, name, grid_file, tracking_uri, storage):
    """`unlearn-grid run` in a process of its own (with the local Ray it starts), SIGKILLed with that Ray
    and its workers once a trial waits at gate `name`; returns that trial's arrival."""
    ray_tmp = tempfile.mkdtemp(prefix="ug-")   # its own Ray session folder (short: Ray's socket paths)
    driver = subprocess.Popen([sys.executable, "-m", "grid.cli", "run", str(grid_file), "--tracking-uri", tracking_uri,
                               "--storage", str(storage)], env={**os.environ, **gate.env, "RAY_TMPDIR": ray_tmp},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        (held,) = gate.wait(name, process=driver)
        kill_session(driver.pid)   # the driver, the Ray it started and its workers: only what we started
        driver.wait()
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return held


def test_orphans_are_runs_of_dead_drivers_on_this_machine_only():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = orphans.this_driver().rsplit(":", 1)[0]
    assert orphans.is_orphan(f"{host}:{dead.pid}")
    assert not orphans.is_orphan(orphans.this_driver())            # alive: maybe a concurrent driver
    assert not orphans.is_orphan(f"another-host:{dead.pid}")       # cannot tell from here: left alone
    assert not orphans.is_orphan("") and not orphans.is_orphan(None)


@pytest.mark.system
def test_a_driver_killed_mid_grid_leaves_nothing_running_and_the_rerun_finishes_it(tmp_path, run_grid, gates,
                                                                                   capsys):
    grid_file = tmp_path / "faults.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    client = MlflowClient(tracking_uri)
    gate = gates(method={"stage": "method"})
    held = _kill_driver_at(gate, "method", grid_file, tracking_uri, storage)   # its method waiting, its run RUNNING
    left_running = [r.info.run_id for r in _runs(client, "faults", "attributes.status = 'RUNNING'")]
    assert held["run_id"] in left_running
    gate.release("method")                     # the rerun's gate trial goes straight through
    capsys.readouterr()
    run_grid(tmp_path, str(grid_file))
    assert f"marked {len(left_running)} run(s) KILLED that a dead driver" in capsys.readouterr().out
    runs = _runs(client, "faults")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert all(client.get_run(run_id).info.status == "KILLED" for run_id in left_running)
    finished = collections.Counter(r.data.tags["key"] for r in runs if r.info.status == "FINISHED" and "key" in r.data.tags)
    assert len(finished) == 1 + 1 + 1 + len(GRID["methods"])   # original, Retrain, Original row, methods
    assert set(finished.values()) == {1}, "a key has two FINISHED runs"


@pytest.mark.system
def test_a_driver_killed_mid_training_resumes_on_rerun_from_the_trials_checkpoint(tmp_path, run_grid, gates):
    """SIGKILL the driver (and the Ray it started) while an original waits after epoch 2 of 4, every epoch
    checkpointed: the rerun is a new driver with a new Tuner, and the original resumes in its own MLflow run
    from epoch 2 (its checkpoint is in storage by trial key, trainables/checkpoints.py), not from epoch 0."""
    grid = {**GRID, "name": "driver-kill-training", "train": {**GRID["train"], "epochs": 4},
            "methods": {"ft": {"epochs": 1}}, "checkpoint_minutes": 0}
    grid_file = tmp_path / "faults.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    client = MlflowClient(tracking_uri)
    gate = gates(epoch2={"stage": "original", "epoch": 2})
    held = _kill_driver_at(gate, "epoch2", grid_file, tracking_uri, storage)
    assert client.get_run(held["run_id"]).info.status == "RUNNING"
    gate.release("epoch2")
    run_grid(tmp_path, str(grid_file))
    run = client.get_run(held["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "2"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2, 3, 4]
    runs = _runs(client, "driver-kill-training")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = collections.Counter(r.data.tags["key"] for r in runs if r.info.status == "FINISHED" and "key" in r.data.tags)
    assert len(finished) == 1 + 1 + 1 + 1 and set(finished.values()) == {1}   # original, Retrain, Original row, ft
    assert [r.info.run_id for r in runs if r.data.tags.get("stage") == "original"] == [held["run_id"]]


@pytest.mark.system
def test_a_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, run_grid, gates):
    """SIGKILL the Ray worker training an original while it waits after epoch 3 (every epoch checkpointed):
    Tune retries the trial, which resumes its MLflow run from epoch 3's checkpoint, not from epoch 0."""
    epochs = 6
    grid = {**GRID, "name": "worker-kill", "train": {**GRID["train"], "epochs": epochs},
            "methods": {"ft": {"epochs": 1}}, "checkpoint_minutes": 0, "forget_classes": [3]}
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gate = gates(epoch3={"stage": "original", "epoch": 3})
    killed = {}

    def kill_the_waiting_worker():
        (held,) = gate.wait("epoch3")
        os.kill(held["pid"], signal.SIGKILL)
        killed.update(held)
        gate.release("epoch3")

    killer = threading.Thread(target=kill_the_waiting_worker, daemon=True)
    killer.start()
    run_grid(tmp_path, grid)
    killer.join(timeout=5)
    assert killed, "the worker was never killed: nothing was tested"
    client = MlflowClient(tracking_uri)
    originals = _runs(client, "worker-kill", "tags.stage = 'original'")
    assert [r.info.run_id for r in originals] == [killed["run_id"]]        # one run for the key: resumed, not new
    run = client.get_run(killed["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == "3"                      # the checkpoint it was killed after
    assert run.data.tags["pid"] != str(killed["pid"])                      # the retry's worker
    epochs_logged = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(epochs_logged) == list(range(1, epochs + 1))             # each epoch once: no gap, no repeat


def test_runs_of_a_driver_on_another_machine_are_orphans_once_its_heartbeat_is_stale_or_missing(tmp_path, monkeypatch):
    """A replaced head's runs: their driver ran on another machine, so only its lease heartbeat in the
    shared storage tells whether it still runs (grid/execution/orphans.py)."""
    from grid.execution import leases
    monkeypatch.setattr(leases, "RENEW_S", 3600)   # no heartbeat rewritten behind the test's back
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "storage")
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("orphans")
    drivers = {"fresh": "old-head:41", "stale": "old-head:42", "missing": "old-head:43"}

    def running(driver, run_storage=storage):
        return client.create_run(experiment_id, tags={"driver": driver, "storage": run_storage}).info.run_id

    runs = {name: running(driver) for name, driver in drivers.items()}
    runs["elsewhere"] = running("old-head:44", str(tmp_path / "another-storage"))   # its heartbeats are not here
    runs["untagged"] = client.create_run(experiment_id, tags={"driver": "old-head:45"}).info.run_id   # older versions
    with leases.Leases(storage, "old-head:41"), leases.Leases(storage, "old-head:42"), \
            leases.Leases(storage, orphans.this_driver()) as ours:
        heartbeats = tmp_path / "storage" / "leases" / "drivers"
        stale = time.time() - leases.STALE_S - 5
        os.utime(heartbeats / "old-head:42", (stale, stale))   # stopped beating a minute ago, by the store's clock
        now = ours.store_now()
        marked = orphans.mark_orphans(tracking_uri, experiment_id, storage, lambda driver: ours.gone(driver, now))
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {"fresh": "RUNNING", "stale": "KILLED", "missing": "KILLED", "elsewhere": "RUNNING",
                      "untagged": "RUNNING"}
    assert marked == 2 and client.get_run(runs["stale"]).data.tags["orphaned"] == "true"
