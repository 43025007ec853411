"""Real faults, injected for real: a driver SIGKILLed mid-grid (with the local Ray it started) and a
trial's worker process SIGKILLed mid-training. After each, the grid finishes, every trial key has
exactly one FINISHED run and no run is left RUNNING (~60-80 s on 2 cores)."""
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import yaml
from mlflow.tracking import MlflowClient

from grid import orphans
from services import kill_session, wait_for

GRID = {"name": "faults", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": 15, "lr": 0.05, "batch_size": 64, "lr_step": 10},
        "methods": {"ft": {"epochs": 20}, "rl": {}, "trw": {"lr": 0.01}},
        "resources": {"cpu": 1, "gpu": 0}}


def _runs(client, experiment, where=""):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], where, max_results=10_000)


def test_orphans_are_runs_of_dead_drivers_on_this_machine_only():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = orphans.this_driver().rsplit(":", 1)[0]
    assert orphans.is_orphan(f"{host}:{dead.pid}")
    assert not orphans.is_orphan(orphans.this_driver())            # alive: maybe a concurrent driver
    assert not orphans.is_orphan(f"another-host:{dead.pid}")       # cannot tell from here: left alone
    assert not orphans.is_orphan("") and not orphans.is_orphan(None)


def test_a_driver_killed_mid_grid_leaves_nothing_running_and_the_rerun_finishes_it(tmp_path, run_grid, capsys):
    grid_file = tmp_path / "faults.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    client = MlflowClient(tracking_uri)
    ray_tmp = tempfile.mkdtemp(prefix="ug-")   # its own Ray session folder (short: Ray's socket paths)
    driver = subprocess.Popen([sys.executable, "-m", "grid.cli", "run", str(grid_file), "--tracking-uri", tracking_uri,
                               "--storage", str(storage)], env={**os.environ, "RAY_TMPDIR": ray_tmp},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: driver.poll() is not None
                  or _runs(client, "faults", "tags.stage = 'unlearn' and attributes.status = 'RUNNING'"),
                  240, "an unlearn trial running")
        assert driver.poll() is None, "the grid ended before the driver could be killed"
        kill_session(driver.pid)   # the driver, the Ray it started and its workers: only what we started
        driver.wait()
    finally:
        if driver.poll() is None:
            kill_session(driver.pid)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    left_running = [r.info.run_id for r in _runs(client, "faults", "attributes.status = 'RUNNING'")]
    assert left_running, "the kill left no run RUNNING: nothing was tested"
    capsys.readouterr()
    run_grid(tmp_path, str(grid_file))
    assert f"marked {len(left_running)} run(s) KILLED that a driver which died" in capsys.readouterr().out
    runs = _runs(client, "faults")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert all(client.get_run(run_id).info.status == "KILLED" for run_id in left_running)
    finished = collections.Counter(r.data.tags["key"] for r in runs if r.info.status == "FINISHED" and "key" in r.data.tags)
    assert len(finished) == 1 + 1 + 1 + len(GRID["methods"])   # original, Retrain, Original row, methods
    assert set(finished.values()) == {1}, "a key has two FINISHED runs"


def test_a_killed_trial_worker_is_retried_from_its_checkpoint(tmp_path, run_grid):
    """SIGKILL the Ray worker training an original (checkpoints every epoch): Tune retries the trial,
    which resumes its MLflow run from the last checkpoint's epoch, not from epoch 0."""
    grid = {**GRID, "name": "worker-kill", "train": {**GRID["train"], "epochs": 40}, "methods": {"ft": {"epochs": 1}},
            "checkpoint_minutes": 0, "forget_classes": [3]}
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = {}

    def kill_the_original_worker():
        client = MlflowClient(tracking_uri)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            try:
                for run in _runs(client, "worker-kill", "tags.stage = 'original' and attributes.status = 'RUNNING'"):
                    steps = client.get_metric_history(run.info.run_id, "train_loss")
                    if len(steps) >= 3 and "pid" in run.data.tags:
                        os.kill(int(run.data.tags["pid"]), signal.SIGKILL)
                        killed.update(run_id=run.info.run_id, epoch=len(steps))
                        return
            except Exception:   # the store is being created by the driver: try again
                pass
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_original_worker, daemon=True)
    killer.start()
    run_grid(tmp_path, grid)
    killer.join(timeout=5)
    assert killed, "the worker was never killed: nothing was tested"
    client = MlflowClient(tracking_uri)
    originals = _runs(client, "worker-kill", "tags.stage = 'original'")
    assert [r.info.run_id for r in originals] == [killed["run_id"]]        # one run for the key: resumed, not new
    run = client.get_run(killed["run_id"])
    assert run.info.status == "FINISHED"
    assert 1 <= int(run.data.tags["resumed_from_epoch"]) <= killed["epoch"] + 1
    assert run.data.tags["pid"] != ""                                      # the retry's worker
    epochs_logged = {m.step for m in client.get_metric_history(run.info.run_id, "train_loss")}
    assert epochs_logged == set(range(1, 41))
