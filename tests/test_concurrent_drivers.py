"""Concurrent drivers (grid/execution/leases.py; the leases themselves: tests/test_leases.py): three real
`unlearn-grid run` processes at once (the same grid twice and a grid sharing its originals), made to meet:
the one training the original waits at a gate until the other two are waiting for its keys. All finish,
no key is trained twice, tables count each key once (~70 s on 2 cores)."""
import collections
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml
from mlflow.tracking import MlflowClient

from grid.tracking import mlflow_runs
from services import kill_session


GRID = {"name": "drivers", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": 8, "lr": 0.05, "batch_size": 64},
        "methods": {"ft": {"epochs": 3}, "rl": {"epochs": 2}}, "resources": {"cpu": 1, "gpu": 0}}
# a second grid on the same original and Retrain model, with its own unlearn trials
SHARING = {**GRID, "name": "sharing", "methods": {"ga": {"epochs": 1}}}


@pytest.mark.system
def test_three_drivers_at_once_finish_and_train_no_key_twice(tmp_path, gates):
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    # whichever driver claims the shared original trains it and waits after its first epoch
    gate = gates(train={"stage": "original", "epoch": 1})
    commands, drivers, folders = [], [], []
    for name, grid in (("a", GRID), ("b", GRID), ("c", SHARING)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(grid))
        commands.append([sys.executable, "-m", "grid.cli", "run", str(tmp_path / f"{name}.yaml"),
                         "--tracking-uri", tracking_uri, "--storage", str(storage)])
    try:
        for number, command in enumerate(commands):
            folders.append(tempfile.mkdtemp(prefix="ug-"))   # each driver's own Ray session folder
            drivers.append(subprocess.Popen(command, env={**os.environ, **gate.env, "RAY_TMPDIR": folders[-1],
                                                          "PYTHONUNBUFFERED": "1"},
                                            stdout=open(tmp_path / f"out{number}", "w"), stderr=subprocess.STDOUT,
                                            start_new_session=True))

        def both_others_wait():
            return sum("held by another driver" in (tmp_path / f"out{n}").read_text() for n in range(3)) >= 2
        # one driver is training the original (at the gate); the other two wait for its keys: they met
        gate.wait("train", also=both_others_wait)
        gate.release("train")
        codes = [driver.wait(timeout=400) for driver in drivers]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                kill_session(driver.pid)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    outputs = [(tmp_path / f"out{n}").read_text() for n in range(3)]
    assert codes == [0, 0, 0], "\n=====\n".join(output[-2000:] for output in outputs)

    client = MlflowClient(tracking_uri)
    # the two grids' experiments (originals and Retrain models are logged in whichever trained them first)
    own = [client.get_experiment_by_name(name).experiment_id for name in (GRID["name"], SHARING["name"])]
    everything = client.search_runs(own, max_results=10_000)
    assert {r.info.status for r in everything} == {"FINISHED"}
    runs = [r for r in everything if "stage" in r.data.tags]   # the trials, not their parents (grid/execution/parents.py)
    stages = collections.Counter(r.data.tags["stage"] for r in runs)
    # one original, one Retrain model, and per grid its Original row and methods: each run once, by one driver
    assert stages == {"original": 1, "retrain": 1, "unlearn": 1 + 2 + 1 + 1}, stages
    assert len({(r.info.experiment_id, r.data.tags["key"]) for r in runs}) == len(runs)
    assert len({r.data.tags["driver"] for r in runs}) >= 2, "one driver ran everything: the test shows no sharing"
    lease_folder = storage / "leases"
    assert not list((lease_folder / "drivers").iterdir()), "a driver left its heartbeat"
    newest = {}
    for path in (lease_folder / "keys").iterdir():
        key, _, generation = path.name.rpartition(".")
        newest[key] = max(newest.get(key, (-1, "")), (int(generation), path.read_text()))
    assert {state for _, state in newest.values()} == {"free\n"}, "a key is still held"

    for name, methods in (("drivers", {"original", "ft", "rl"}), ("sharing", {"original", "ga"})):
        frame = mlflow_runs.experiment_runs(tracking_uri, name)   # what `unlearn-grid tables` reads
        unlearn = frame[frame["stage"] == "unlearn"]
        assert sorted(unlearn["method"]) == sorted(methods) and frame["key"].is_unique


def test_tables_count_a_key_once_even_when_it_has_two_finished_runs(tmp_path):
    """A second FINISHED run of a key (a driver from before leases, or a run copied by hand) is not a
    second result: the first finished run counts."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, "twice")
    assert mlflow_runs.ensure_experiment(tracking_uri, "twice") == experiment_id
    first = []
    for number, key in enumerate(["k1", "k1", "k2"]):
        run = client.create_run(experiment_id, tags={"stage": "unlearn", "key": key, "method": "ft"})
        client.log_metric(run.info.run_id, "acc_f_test", float(number))
        client.set_terminated(run.info.run_id, "FINISHED", end_time=1_000 + number)
        first.append(run.info.run_id)
    frame = mlflow_runs.finished_runs(tracking_uri, "unlearn", experiment_id)
    assert sorted(frame["run_id"]) == sorted([first[0], first[2]])
    assert mlflow_runs.finished_keys(tracking_uri, "unlearn", experiment_id) == {"k1", "k2"}
