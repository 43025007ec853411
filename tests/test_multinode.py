"""Scale-out end to end on one machine: a Ray head plus two worker nodes (separate node processes, one
fake GPU each), PostgreSQL, and `unlearn-grid server` with proxied artifacts; a grid of 0.25-GPU
trials runs through `unlearn-grid run --address … --tracking-uri http://…` in a subprocess, as a user
runs it on a cluster (`--address auto`, as on a cluster's head). Eight of its unlearn trials wait at a
gate (tests/plugins/gates.py) until all eight are there: four per GPU at once, proven, not hoped for.
~3 min on 2 cores (printed with -s).
"""
import hashlib
import subprocess
import time
from pathlib import Path

from gates import Gates

import mlflow
import pandas as pd
import psycopg
import pytest

from grid import cli
import services   # tests/services.py: PostgreSQL, the tracking server, a multi-node Ray cluster

pytestmark = pytest.mark.system   # the system tier: make test-system

GRID = {
    "name": "multinode",
    "datasets": "toy2d",
    "archs": "mlp",
    "forget_classes": [0],
    "seeds": [0, 1],
    "train": {"epochs": 3, "lr": 0.05, "batch_size": 64},
    # four `gate` trials per seed (tests/plugins/gates.py): 8, as many as the 8 slots (2 GPUs / 0.25); they
    # wait at the gate until the test has seen all eight there, then log 20 epochs each, all at once
    "methods": {"ft": {"epochs": 3}, "trw": {"epochs": 3, "lr": 0.01},
                "gate": {"epochs": 20, "lr": [0.01, 0.02, 0.03, 0.04]}},
    "resources": {"cpu": 1, "gpu": 0.25},    # four trials share each (fake) GPU
}
TRIALS = 2 + 2 + 2 * 7     # originals, Retrain models, (Original row + ft + trw + 4 gate) x 2 seeds
GATED = 2 * 4
TABLES = ("accuracy.csv", "mia_nn.csv", "per_class_drop.csv")


def peak_overlap(frame):
    """Most runs of `frame` alive at one instant (MLflow start/end times)."""
    events = sorted([(t, 1) for t in frame["start_time"]] + [(t, -1) for t in frame["end_time"]],
                    key=lambda event: (event[0], event[1]))     # an end before a start at the same instant
    alive = peak = 0
    for _, step in events:
        alive += step
        peak = max(peak, alive)
    return peak


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Run GRID on the 3-node cluster against PostgreSQL + the tracking server; yields what the tests read."""
    import yaml
    folder = tmp_path_factory.mktemp("multinode")
    grid_file = folder / "multinode.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    gate = Gates(folder / "gates", method={"stage": "method"})
    started = time.perf_counter()
    with services.postgresql() as db_uri, \
            services.tracking_server(db_uri, folder / "artifacts", folder / "server.log") as url, \
            services.ray_cluster(workers=2, worker_cpus=4) as cluster:
        ready = time.perf_counter() - started
        # --address auto: the cluster recorded on "this machine" (its RAY_TMPDIR), as after `ray start`
        with open(folder / "driver.log", "w") as log:
            driver = subprocess.Popen([str(services.BIN / "unlearn-grid"), "run", str(grid_file), "--address", "auto",
                                       "--tracking-uri", url, "--storage", str(folder / "storage")],
                                      stdout=log, stderr=subprocess.STDOUT, env={**cluster["driver_env"], **gate.env})
        try:
            held = gate.wait("method", count=GATED, process=driver)
            gpu_free = cluster["gpu_free"]()       # Ray's account while all eight wait
            gate.release("method")
            returncode = driver.wait(timeout=400)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        grid_seconds = time.perf_counter() - started - ready
        output = (folder / "driver.log").read_text()
        assert returncode == 0, output[-6000:]
        mlflow.set_tracking_uri(url)
        runs = mlflow.search_runs(experiment_names=[GRID["name"]], max_results=1000)
        runs = runs[runs["tags.stage"].notna()]    # the trials, not their parent runs (grid/execution/parents.py)
        with psycopg.connect(db_uri) as connection:
            stored = connection.execute(
                "SELECT r.run_uuid, r.status, r.experiment_id, count(m.key) FROM runs r "
                "JOIN experiments e ON e.experiment_id = r.experiment_id "
                # the trials: not their parent runs (no stage tag, grid/execution/parents.py)
                "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'stage' AND s.value <> 'report' "
                "LEFT JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key IN ('acc_test', 'acc_r_test') "
                "WHERE e.name = %s GROUP BY r.run_uuid, r.status, r.experiment_id", (GRID["name"],)).fetchall()
            # every per-epoch step each trial logged, counted in the server's own table
            steps = dict(connection.execute(
                "SELECT m.run_uuid, count(DISTINCT m.step) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                "JOIN experiments e ON e.experiment_id = r.experiment_id WHERE e.name = %s AND m.key = 'train_loss' "
                "GROUP BY m.run_uuid", (GRID["name"],)).fetchall())
        # after reading the trials' runs above: `tables` adds the experiment's run 'report' (grid/reports/report_run.py)
        assert cli.main(["tables", GRID["name"], "--tracking-uri", url, "--out", str(folder / "tables")]) == 0
    peaks = {node[:8]: peak_overlap(frame) for node, frame in runs.groupby("tags.ray_node_id")}
    print(f"\nmulti-node: services up in {ready:.1f} s, grid {grid_seconds:.1f} s; "
          f"trials per node: {runs['tags.ray_node_id'].str[:8].value_counts().to_dict()}; "
          f"most trials running at once per GPU: {peaks}; GPU free while the gate held {GATED}: {gpu_free}")
    yield {"folder": folder, "runs": runs, "cluster": cluster, "stored": stored, "output": output,
           "steps": steps, "held": held, "gpu_free": gpu_free}


def test_trials_ran_on_both_worker_nodes_and_record_where(cluster_run):
    runs, cluster = cluster_run["runs"], cluster_run["cluster"]
    assert len(runs) == TRIALS and (runs["status"] == "FINISHED").all()
    nodes = set(runs["tags.ray_node_id"])
    assert nodes == set(cluster["workers"])     # both workers; none on the head, which offers no CPU
    assert runs["tags.hostname"].notna().all()
    assert (runs["tags.gpu_ids"] == "0").all()  # each worker's one GPU, as Ray assigned it


def test_four_quarter_gpu_trials_share_one_gpu(cluster_run):
    # all eight gate trials were at the gate at once, four on each worker node's one GPU (as Ray placed them)
    held, workers = cluster_run["held"], cluster_run["cluster"]["workers"]
    assert sorted((h["node_id"], h["gpu_ids"]) for h in held) == sorted((w, "0") for w in workers for _ in range(4))
    # Ray's own account meanwhile: 0.25 GPU per trial, so each worker's whole GPU was taken
    assert {node: cluster_run["gpu_free"][node] for node in workers} == {node: 0.0 for node in workers}
    # and their MLflow runs overlapped: four at once on each GPU, never more
    runs = cluster_run["runs"]
    peaks = {gpu: peak_overlap(frame) for gpu, frame in runs.groupby(["tags.ray_node_id", "tags.gpu_ids"])}
    assert sorted(peaks.values()) == [4, 4], peaks


def test_runs_metrics_and_artifacts_are_in_postgresql_and_the_artifact_store(cluster_run):
    runs, stored, folder = cluster_run["runs"], cluster_run["stored"], cluster_run["folder"]
    assert {row[0] for row in stored} == set(runs["run_id"])
    assert all(status == "FINISHED" and metrics == 1 for _, status, _, metrics in stored)
    tags = runs.set_index("run_id")
    for run_uuid, _, experiment_id, _ in stored:    # proxied: the server wrote them under its destination
        artifacts = folder / "artifacts" / str(experiment_id) / run_uuid / "artifacts"
        # weights and logits are stored once, in storage: the run points at them (not a copy through the server)
        assert not (artifacts / "model.pt").exists() and not (artifacts / "test_logits.npz").exists(), run_uuid
        for name in ("model.pt", "test_logits.npz"):
            path = Path(tags.loc[run_uuid, f"tags.stored.{name}"])
            assert path.is_relative_to((folder / "storage").resolve()) and path.is_file(), run_uuid
            assert hashlib.sha256(path.read_bytes()).hexdigest() == tags.loc[run_uuid, f"tags.stored.{name}.sha256"]


def test_every_epoch_of_every_concurrent_trial_reached_the_server(cluster_run):
    """Up to eight trials log per-epoch metrics to the server at once: every step arrives."""
    runs, steps = cluster_run["runs"], cluster_run["steps"]
    for _, run in runs.iterrows():
        stage, method = run["tags.stage"], run["tags.method"]
        expected = (GRID["train"]["epochs"] if stage in ("original", "retrain")
                    else 0 if method == "original" else GRID["methods"][method]["epochs"])
        assert steps.get(run["run_id"], 0) == expected, (stage, method)


def test_running_time_table_counts_the_nodes_each_rows_trials_ran_on(cluster_run):
    """Each row's Nodes is the number of distinct Ray nodes its trials' runs were tagged with. Which node a
    trial lands on is Ray's choice (a row's two trials may share one), so the test recomputes it from the
    tags instead of expecting a number; only the gate trials' spread is known: four per worker."""
    table = pd.read_csv(cluster_run["folder"] / "tables" / "running_time.csv", index_col=0)
    runs = cluster_run["runs"]
    unlearn = runs[runs["tags.stage"] == "unlearn"]
    expected = {method: unlearn.loc[unlearn["tags.method"] == method, "tags.ray_node_id"].nunique() for method in ("ft", "trw")}
    gate = unlearn[unlearn["tags.method"] == "gate"]
    for lr, trials in gate.groupby("params.params.lr"):
        expected[f"gate (lr={lr})"] = trials["tags.ray_node_id"].nunique()
    assert {row: table.loc[row, "Nodes"] for row in expected} == expected
    assert gate["tags.ray_node_id"].nunique() == 2        # the eight gate trials: four on each worker


def test_tables_through_the_server_equal_the_same_grid_on_local_sqlite(cluster_run, run_grid, tmp_path, gates):
    # same grid and seeds, one machine, embedded SQLite; no GPU here, so no GPU share (not part of a trial's key)
    gates(method={"stage": "method"}).release()
    _, tracking_uri, _ = run_grid(tmp_path, {**GRID, "resources": {"cpu": 1, "gpu": 0}})
    assert cli.main(["tables", GRID["name"], "--tracking-uri", tracking_uri, "--out", str(tmp_path / "tables")]) == 0
    for name in TABLES:
        assert (cluster_run["folder"] / "tables" / name).read_text() == (tmp_path / "tables" / name).read_text(), name
