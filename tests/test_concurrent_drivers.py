"""Concurrent drivers (grid/leases.py): leases on a folder store and on an object store claimed by many
threads at once (each key won exactly once), holders that are gone, and three real `unlearn-grid run`
processes at once (the same grid twice and a grid sharing its originals): all finish, no key is
trained twice, tables count each key once (~70 s on 2 cores)."""
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from grid import leases, orphans, tracking
from services import kill_session

HOST = orphans.this_driver().rsplit(":", 1)[0]
KEYS = [f"{i:016x}" for i in range(200)]


def _store(tmp_path, kind):
    return str(tmp_path / "store") if kind == "folder" else f"file://{tmp_path / 'store'}"


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(leases, "SETTLE_S", 0.3)
    monkeypatch.setattr(leases, "POLL_S", 0.1)


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_drivers_claiming_the_same_keys_at_once_each_win_a_key_exactly_once(tmp_path, kind, quick):
    storage, won, barrier = _store(tmp_path, kind), {}, threading.Barrier(6)

    def driver(number):
        try:
            with leases.Leases(storage, driver=f"{HOST}-thread{number}:1") as claims:
                barrier.wait(timeout=30)
                won[number] = claims.claim(KEYS)
                barrier.wait(timeout=30)   # nobody releases before everyone has claimed
        except BaseException as error:
            won[number] = error
            barrier.abort()
    threads = [threading.Thread(target=driver, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [error for error in won.values() if isinstance(error, BaseException)]
    owners = collections.Counter(key for mine, _ in won.values() for key in mine)
    assert set(owners) == set(KEYS) and set(owners.values()) == {1}
    for number, (mine, held) in won.items():
        assert set(held) == set(KEYS) - mine   # what a driver did not get, it knows is held
        assert f"{HOST}-thread{number}:1" not in held.values()


@pytest.mark.parametrize("kind", ["folder", "object store"])
def test_a_released_key_is_claimed_again_and_a_taken_over_key_stays_taken(tmp_path, kind, quick):
    storage = _store(tmp_path, kind)
    with leases.Leases(storage, driver="host-a:1") as first, leases.Leases(storage, driver="host-b:1") as second:
        assert first.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})
        assert second.claim(KEYS[:2]) == (set(), {KEYS[0]: "host-a:1", KEYS[1]: "host-a:1"})
        assert second.holders(KEYS[:3]) == {KEYS[0]: "host-a:1", KEYS[1]: "host-a:1"}
        first.release([KEYS[0]])
        assert second.claim(KEYS[:2]) == ({KEYS[0]}, {KEYS[1]: "host-a:1"})
        first.release([KEYS[0]])   # not first's any more: nothing changes
        assert second.holders([KEYS[0]]) == {} and first.holders([KEYS[0]]) == {KEYS[0]: "host-b:1"}
    with leases.Leases(storage, driver="host-c:1") as third:   # both left: everything they held is free
        assert third.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})


def test_keys_of_a_driver_that_is_gone_are_taken_over(tmp_path, quick):
    storage = str(tmp_path / "store")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with leases.Leases(storage, driver=f"{HOST}:{dead.pid}") as killed, \
            leases.Leases(storage, driver="elsewhere:7") as other_machine:
        killed.claim([KEYS[0]])
        other_machine.claim([KEYS[1]])
        killed._stop.set(), other_machine._stop.set()   # as if SIGKILLed: no more heartbeats, no release
        with leases.Leases(storage, driver="host-d:1") as rerun:
            # this machine, pid gone: at once; another machine's driver: not while its heartbeat is fresh
            assert rerun.claim(KEYS[:2]) == ({KEYS[0]}, {KEYS[1]: "elsewhere:7"})
            heartbeat = tmp_path / "store" / "leases" / "drivers" / "elsewhere:7"
            stale = time.time() - leases.STALE_S - 5
            os.utime(heartbeat, (stale, stale))   # its last heartbeat, a minute ago by the store's clock
            assert rerun.claim(KEYS[:2]) == ({KEYS[0], KEYS[1]}, {})
        killed.held.clear(), other_machine.held.clear()


def test_run_claimed_waits_for_a_key_another_driver_runs_and_does_not_run_it_again(tmp_path, quick):
    storage, finished, ran, lines = str(tmp_path / "store"), set(), [], []
    items = [{"key": key} for key in KEYS[:3]]
    with leases.Leases(storage, driver="host-a:1") as first, leases.Leases(storage, driver="host-b:1") as second:
        first.claim([KEYS[0]])

        def finish_it():   # the other driver finishes its key a little later
            time.sleep(0.5)
            finished.add(KEYS[0])
            first.release([KEYS[0]])
        threading.Thread(target=finish_it).start()

        def run(batch):
            ran.extend(t["key"] for t in batch)
            finished.update(t["key"] for t in batch)
        done = leases.run_claimed("stage unlearn", lambda: [t for t in items if t["key"] not in finished], run,
                                  second, lines.append)
    assert sorted(ran) == sorted(KEYS[1:3]) and [t["key"] for t in done] == ran
    assert lines == ["  stage unlearn: 1 trial(s) held by another driver (host-a:1): waiting for them"]


def test_run_claimed_stops_when_a_trial_it_ran_is_still_pending(tmp_path, quick):
    items = [{"key": KEYS[0]}]
    with leases.Leases(str(tmp_path / "store"), driver="host-a:1") as claims:
        with pytest.raises(Exception, match="1 trial\\(s\\) ran and are still not finished"):
            leases.run_claimed("stage train", lambda: items, lambda batch: None, claims, print)


GRID = {"name": "drivers", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": 8, "lr": 0.05, "batch_size": 64},
        "methods": {"ft": {"epochs": 3}, "rl": {"epochs": 2}}, "resources": {"cpu": 1, "gpu": 0}}
# a second grid on the same original and Retrain model, with its own unlearn trials
SHARING = {**GRID, "name": "sharing", "methods": {"ga": {"epochs": 1}}}


def test_three_drivers_at_once_finish_and_train_no_key_twice(tmp_path):
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "storage"
    commands, drivers, folders = [], [], []
    for name, grid in (("a", GRID), ("b", GRID), ("c", SHARING)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(grid))
        commands.append([sys.executable, "-m", "grid.cli", "run", str(tmp_path / f"{name}.yaml"),
                         "--tracking-uri", tracking_uri, "--storage", str(storage)])
    try:
        for number, command in enumerate(commands):
            folders.append(tempfile.mkdtemp(prefix="ug-"))   # each driver's own Ray session folder
            drivers.append(subprocess.Popen(command, env={**os.environ, "RAY_TMPDIR": folders[-1]},
                                            stdout=open(tmp_path / f"out{number}", "w"), stderr=subprocess.STDOUT,
                                            start_new_session=True))
        codes = [driver.wait(timeout=400) for driver in drivers]
    finally:
        for driver in drivers:
            if driver.poll() is None:
                kill_session(driver.pid)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    outputs = [(tmp_path / f"out{n}").read_text() for n in range(3)]
    assert codes == [0, 0, 0], "\n=====\n".join(output[-2000:] for output in outputs)
    assert any("held by another driver" in output for output in outputs), "the drivers never met: nothing tested"

    client = MlflowClient(tracking_uri)
    # the two grids' experiments (originals and Retrain models are logged in whichever trained them first)
    own = [client.get_experiment_by_name(name).experiment_id for name in (GRID["name"], SHARING["name"])]
    everything = client.search_runs(own, max_results=10_000)
    assert {r.info.status for r in everything} == {"FINISHED"}
    runs = [r for r in everything if "stage" in r.data.tags]   # the trials, not their parents (grid/parents.py)
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
        frame = tracking.experiment_runs(tracking_uri, name)   # what `unlearn-grid tables` reads
        unlearn = frame[frame["stage"] == "unlearn"]
        assert sorted(unlearn["method"]) == sorted(methods) and frame["key"].is_unique


def test_tables_count_a_key_once_even_when_it_has_two_finished_runs(tmp_path):
    """A second FINISHED run of a key (a driver from before leases, or a run copied by hand) is not a
    second result: the first finished run counts."""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = tracking.ensure_experiment(tracking_uri, "twice")
    assert tracking.ensure_experiment(tracking_uri, "twice") == experiment_id
    first = []
    for number, key in enumerate(["k1", "k1", "k2"]):
        run = client.create_run(experiment_id, tags={"stage": "unlearn", "key": key, "method": "ft"})
        client.log_metric(run.info.run_id, "acc_f_test", float(number))
        client.set_terminated(run.info.run_id, "FINISHED", end_time=1_000 + number)
        first.append(run.info.run_id)
    frame = tracking.finished_runs(tracking_uri, "unlearn", experiment_id)
    assert sorted(frame["run_id"]) == sorted([first[0], first[2]])
    assert tracking.finished_keys(tracking_uri, "unlearn", experiment_id) == {"k1", "k2"}
