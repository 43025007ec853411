"""A cluster on one machine that shares nothing a real one would not: data on every node, training that
survives a lost node and a lost driver.

- Nodes: one `ray start --block` per node (a head with no trial resources, two workers with a fake GPU
  each), each with its own HOME, TMPDIR, working directory and environment. (ray.cluster_utils.Cluster
  cannot give nodes environments of their own, and root ignores file permissions: separate paths are
  the isolation.) The driver runs in a folder of its own too.
- Data and storage only in a bucket (moto's S3 server on 127.0.0.1): a real-format MNIST fixture is
  staged with `unlearn-grid stage-data`, then its local copy deleted, so no node can read it from disk;
  each node fetches it into its own cache (trainables/data_cache.py). Tracking: an MLflow server on
  127.0.0.1 (artifacts proxied).
- Faults, injected while trials are known to be mid-training (the gates plugin, tests/plugins/gates.py):
  SIGKILL every process of the worker node that trains the original after its epoch 2 (checkpointed
  every epoch): the trial finishes on the other node, resumed from its checkpoint in the bucket. Then
  SIGKILL the driver while the ft trial is in its method's epoch 2, and run again: ft resumes, in the
  same MLflow run.
- The result: one FINISHED run per key, none RUNNING, and tables equal to those of the same grid run on
  the same cluster without faults (time columns excepted).
~3-4 min on 2 cores."""
import collections
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from services import _serving, free_port, kill_session, s3_bucket, wait_for
from test_vision_datasets import write_mnist

pytestmark = pytest.mark.system

RAY = str(Path(sys.executable).parent / "ray")
EPOCHS = 4
GRID = {"datasets": "mnist", "archs": "small_cnn", "forget_classes": [8], "seeds": [0],
        "train": {"epochs": EPOCHS, "lr": 0.05, "batch_size": 64},
        "methods": {"ft": {"epochs": 3}},
        "resources": {"cpu": 1, "gpu": 0.25},
        "checkpoint_minutes": 0}          # every epoch: the faults below land after known checkpoints
# Lost nodes are noticed by the head's health checks: every 1 s, dead after 3 misses (Ray's defaults
# take ~15 s); the test waits on what happens, never on these times
HEAD_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_initial_delay_ms": "0"}


class Node:
    """A `ray start --block` in a session of its own, with its own HOME, TMPDIR and working directory."""

    def __init__(self, folder, args, env):
        self.folder = Path(folder)
        for sub in ("home", "tmp", "work"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.env = {**env, "HOME": str(self.folder / "home"), "TMPDIR": str(self.folder / "tmp")}
        self.log = open(self.folder / "ray.log", "w")
        self.process = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args],
                                        cwd=self.folder / "work", env=self.env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def holds(self, pid):
        """Whether process `pid` (a trial's worker) belongs to this node's processes."""
        try:
            return os.getsid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def kill(self):
        kill_session(self.process.pid)   # the raylet, its workers and agents: a machine gone at once
        self.process.wait()
        self.log.close()


@pytest.fixture
def bucket():
    with s3_bucket() as (uri, _):
        yield uri


@pytest.fixture
def cluster(tmp_path):
    """(address, env for drivers, {name: Node}) of a head and two GPU workers."""
    temp = tempfile.mkdtemp(prefix="ug-rc-")   # short: Ray's socket paths must stay under 107 bytes
    port = free_port()
    # Token auth with one token for every node and driver: each node has its own HOME, so a token file in
    # ~/.ray would differ between them
    # PYTHONUNBUFFERED: a driver's log must hold what it printed before it was SIGKILLed
    base = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_raylet_start_wait_time_s": "120"}   # a loaded 2-core machine: Ray's 30 s is not always enough
    address = f"127.0.0.1:{port}"
    nodes = {"head": Node(tmp_path / "head", ["--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                              "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false"],
                          {**base, **HEAD_ENV})}
    try:
        wait_for(lambda: _gpus(address, base) is not None, 120, "the Ray head")
        try:
            for count, name in enumerate(("a", "b"), start=1):   # one at a time: 2 cores start one raylet well
                nodes[name] = Node(tmp_path / name, [f"--address={address}", "--node-ip-address=127.0.0.1",
                                                     "--num-cpus=4", "--num-gpus=1"], base)
                wait_for(lambda count=count: _gpus(address, base) == count, 180, f"GPU worker node {name}")
        except TimeoutError as error:
            logs = {name: (node.folder / "ray.log").read_text()[-1500:] for name, node in nodes.items()}
            raise TimeoutError(f"{error}; `ray status`: {_gpus(address, base)} GPUs; node logs: {logs}") from None
        yield address, base, nodes
    finally:
        for node in reversed(list(nodes.values())):
            if node.process.poll() is None:
                node.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _gpus(address, env):
    """The cluster's GPU total as `ray status` reports it, or None while it does not answer."""
    found = subprocess.run([RAY, "status", f"--address={address}"], env=env, capture_output=True, text=True)
    if found.returncode != 0:
        return None
    for line in found.stdout.splitlines():
        if line.strip().endswith(" GPU") and "/" in line:
            return float(line.split("/")[1].split()[0])
    return 0.0


def _driver(tmp_path, grid_file, address, tracking_uri, storage, env, log_name):
    work = tmp_path / "driver"
    (work / "home").mkdir(parents=True, exist_ok=True)
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "grid.cli", "run", str(grid_file), "--address", address,
                             "--tracking-uri", tracking_uri, "--storage", storage],
                            cwd=work, env={**env, "HOME": str(work / "home")}, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True), log


def _finish(process, log, timeout=600):
    try:
        assert process.wait(timeout) == 0, Path(log.name).read_text()[-3000:]
    finally:
        log.close()


def _tables(name, tracking_uri, out):
    from grid import cli
    assert cli.main(["tables", name, "--tracking-uri", tracking_uri, "--out", str(out)]) == 0
    tables = {}
    for path in sorted(Path(out).glob("*.csv")):
        frame = pd.read_csv(path)
        # times ("Wall s_mean", "Compute s_ci_low", ...; in a units CSV the rows of those metrics), and where
        # trials ran: not results
        timed = [c for c in frame.columns if c.startswith(("Wall s", "Compute s")) or c in ("Nodes", "Device")]
        if "metric" in frame:
            frame = frame[~frame["metric"].isin(["Wall s", "Compute s"])].reset_index(drop=True)
        tables[path.name] = frame.drop(columns=timed)
    return tables


def test_a_grid_survives_a_lost_node_and_a_lost_driver_with_data_only_in_a_bucket(tmp_path, bucket, cluster, gates):
    address, env, nodes = cluster
    data_uri = bucket("data")
    fixture = tmp_path / "mnist-files"
    write_mnist(fixture, n_train=300, n_test=100)
    from grid import cli
    assert cli.main(["stage-data", "mnist", "--from", str(fixture), "--to", data_uri]) == 0
    shutil.rmtree(fixture)                          # from here on only the bucket has the images

    gate = gates(trained2={"stage": "original", "epoch": 2}, unlearn2={"stage": "unlearn", "epoch": 2})
    driver_env = {**env, **gate.env}
    with _serving([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path / "artifacts"),
                   "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port := free_port()),
                   "--workers", "2"], port, tmp_path / "mlflow.log", "MLflow tracking server"):
        tracking_uri = f"http://127.0.0.1:{port}"
        client = MlflowClient(tracking_uri)
        grid_file = tmp_path / "faults.yaml"
        grid_file.write_text(yaml.safe_dump({**GRID, "name": "cluster-faults", "data": {"root": data_uri}}))
        driver, log = _driver(tmp_path, grid_file, address, tracking_uri, bucket("runs"), driver_env, "run1.log")
        try:
            # 1. a worker node dies under a trial mid-training
            (trained,) = gate.wait("trained2", process=driver)
            (lost,) = [node for name, node in nodes.items() if name != "head" and node.holds(trained["pid"])]
            lost.kill()
            gate.release("trained2")
            # 2. the driver dies while ft is in its method's epoch 2 (the other node: the lost one is gone)
            (unlearning,) = gate.wait("unlearn2", process=driver)
            kill_session(driver.pid)
            driver.wait()
        finally:
            if driver.poll() is None:
                kill_session(driver.pid)
            log.close()
        # Ray ends a dead driver's trials; wait for it, so no old attempt runs beside the rerun's
        wait_for(lambda: not os.path.exists(f"/proc/{unlearning['pid']}"), 120, "the dead driver's trial to end")
        assert client.get_run(unlearning["run_id"]).info.status == "RUNNING"
        gate.release("unlearn2")
        # the retry policy knew the node was lost, not a worker killed on a live node (grid/execution/retries.py)
        assert re.search(r"retrying original/mnist/small_cnn/s0( \(and \d+ more of its pack\))?: node lost",
                         (tmp_path / "run1.log").read_text())
        rerun, log = _driver(tmp_path, grid_file, address, tracking_uri, bucket("runs"), driver_env, "run2.log")
        _finish(rerun, log)

        runs = client.search_runs([client.get_experiment_by_name("cluster-faults").experiment_id], "",
                                  max_results=1000)
        by_key = collections.defaultdict(list)
        for run in runs:
            if "key" in run.data.tags:
                by_key[run.data.tags["key"]].append(run)
        assert not [r for r in runs if r.info.status == "RUNNING"]
        assert len(by_key) == 4                          # original, Retrain, Original row, ft
        finished = collections.Counter(r.data.tags["key"] for r in runs if r.info.status == "FINISHED" and "key" in r.data.tags)
        assert set(finished.values()) == {1} and len(finished) == 4
        # the trials the faults hit kept their one run each; another trial that was in flight without a
        # checkpoint yet (the Original row's evaluation) may have a KILLED run beside its FINISHED one
        assert [r.info.run_id for r in by_key[trained["key"]]] == [trained["run_id"]]
        assert [r.info.run_id for r in by_key[unlearning["key"]]] == [unlearning["run_id"]]
        # the original finished on the other node, resumed from epoch 2's checkpoint, in its own run
        original = client.get_run(trained["run_id"])
        assert original.data.tags["stage"] == "original" and original.info.status == "FINISHED"
        assert int(original.data.tags["resumed_from_epoch"]) >= 1
        assert original.data.tags["ray_node_id"] != trained["node_id"]
        steps = sorted(m.step for m in client.get_metric_history(original.info.run_id, "train_loss"))
        assert steps == list(range(1, EPOCHS + 1))
        # ft resumed its method's loop after the driver died (its checkpoint: epoch 1, written before
        # epoch 2, at whose end the gate held it)
        unlearned = client.get_run(unlearning["run_id"])
        assert unlearned.data.tags["method"] == "ft" and unlearned.info.status == "FINISHED"
        assert int(unlearned.data.tags["resumed_from_epoch"]) >= 1

        # 3. the same grid without faults, on the same cluster (what is left of it), in storage of its own
        reference_file = tmp_path / "reference.yaml"
        reference_file.write_text(yaml.safe_dump({**GRID, "name": "cluster-reference", "data": {"root": data_uri}}))
        reference, log = _driver(tmp_path, reference_file, address, tracking_uri, bucket("reference"), env, "ref.log")
        _finish(reference, log)
        faulted = _tables("cluster-faults", tracking_uri, tmp_path / "tables-faults")
        clean = _tables("cluster-reference", tracking_uri, tmp_path / "tables-reference")
    assert faulted.keys() == clean.keys() and {"accuracy.csv", "mia_nn.csv", "running_time.csv"} <= set(faulted)
    for name, table in clean.items():
        pd.testing.assert_frame_equal(faulted[name], table, obj=name)
    # every node that trained fetched the dataset into its own cache, from the bucket
    fetched = [name for name in ("a", "b") if list((tmp_path / name / "home").glob(".cache/unlearn-grid/data/**/*.json"))]
    assert fetched, "no node fetched the dataset into its own cache"
