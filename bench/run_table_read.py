"""Reading a grid's runs: mlflow.search_runs against grid/tracking/run_table.py, directly and through the server.

    .venv/bin/python bench/run_table_read.py [--runs 5000] [--server [--no-rest]] [--database URI]

Fills a new SQLite store (or an empty database at --database, e.g. postgresql://…) with --runs
synthetic FINISHED unlearn runs of a grid's shape (29 params, 25 tags, 12 metrics), written with
SQLAlchemy Core straight into MLflow's tables (MlflowClient would take minutes), then times:
  mlflow.search_runs               what mlflow_runs.finished_runs called before (all columns)
  run_table.read_runs              the same frame read with SQL (all columns; and tags.key only)
  mlflow_runs.finished_runs/_keys     what tables and `pending` call now
--server also starts `unlearn-grid server` on that store and times mlflow_runs.finished_runs/_keys
over HTTP (the run-table route) and mlflow.search_runs over MLflow's REST API (the fallback a plain
`mlflow server` gets). Every reading is checked to give the same frame as mlflow.search_runs.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from grid.tracking import run_table, mlflow_runs

N_PARAMS, N_TAGS, N_METRICS = 29, 25, 12


def fill(uri, runs):
    """An experiment "bench" with `runs` finished unlearn runs; returns its id."""
    experiment_id = MlflowClient(uri).create_experiment("bench")   # MLflow creates the schema
    tables = run_table._tables()
    runs_table, _, tags, params, metrics = tables
    start = 1_750_000_000_000
    run_rows, tag_rows, param_rows, metric_rows = [], [], [], []
    for i in range(runs):
        run_id = uuid.uuid4().hex
        run_rows.append({"run_uuid": run_id, "name": f"unlearn-{i}", "source_type": "LOCAL", "source_name": "",
                         "entry_point_name": "", "user_id": "bench", "status": "FINISHED",
                         "start_time": start + 1000 * i, "end_time": start + 1000 * i + 500,
                         "source_version": "", "lifecycle_stage": "active",
                         "artifact_uri": f"/tmp/bench/artifacts/{experiment_id}/{run_id}/artifacts",
                         "experiment_id": int(experiment_id)})
        named = {"stage": "unlearn", "key": f"unlearn-{i:06d}-{uuid.uuid4().hex[:12]}", "mlflow.runName": f"unlearn-{i}",
                 "method": ("ft", "rl", "ga", "trw")[i % 4], "dataset": "cifar10", "arch": "resnet18",
                 "retrain_keys": f"retrain-{i % 50},retrain-{i % 50 + 1}"}
        for k in range(N_TAGS):
            key = list(named)[k] if k < len(named) else f"tag_{k}"
            tag_rows.append({"run_uuid": run_id, "key": key, "value": named.get(key, f"value-{i % 97}-{k}")})
        for k in range(N_PARAMS):
            param_rows.append({"run_uuid": run_id, "key": f"method.param_{k}", "value": str(0.001 * (i % 13 + k))})
        for k in range(N_METRICS):
            metric_rows.append({"run_uuid": run_id, "key": f"metric_{k}", "value": (i * 7 + k) % 1000 / 1000,
                                "timestamp": start + 1000 * i, "step": 0, "is_nan": False})
    with run_table.engine(uri).begin() as connection:
        for table, rows in ((runs_table, run_rows), (tags, tag_rows), (params, param_rows), (metrics, metric_rows)):
            connection.execute(table.insert(), rows)
    return experiment_id


def timed(what, function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"  {what:<66} {time.perf_counter() - started:7.2f} s")
    return result


def same(frame, reference, what):
    columns = sorted(reference.columns)
    assert sorted(frame.columns) == columns, what
    pd.testing.assert_frame_equal(frame[columns].sort_values("run_id").reset_index(drop=True),
                                  reference[columns].sort_values("run_id").reset_index(drop=True), obj=what)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_server(uri, folder, read):
    """Start `unlearn-grid server` on `uri`, call read(url), stop the server (its process group)."""
    port, log = free_port(), open(folder / "server.log", "w")
    process = subprocess.Popen([str(Path(sys.executable).parent / "unlearn-grid"), "server", "--backend-store-uri",
                                uri, "--artifacts-destination", str(folder / "artifacts"), "--port", str(port),
                                "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "server.log").read_text()[-2000:])
                time.sleep(0.3)
        read(url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--server", action="store_true", help="also read through `unlearn-grid server`")
    parser.add_argument("--no-rest", action="store_true", help="with --server: skip mlflow.search_runs over REST")
    parser.add_argument("--database", help="an empty database URI to fill (default: a new SQLite file)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="run-table-bench-"))
    try:
        run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args, folder):
    uri = run_table.sqlalchemy_uri(args.database or f"sqlite:///{folder / 'mlflow.db'}")
    started = time.perf_counter()
    experiment_id = fill(uri, args.runs)
    print(f"{args.runs} runs ({N_PARAMS} params, {N_TAGS} tags, {N_METRICS} metrics) written to "
          f"{uri.split('@')[-1]} in {time.perf_counter() - started:.1f} s")
    mlflow.set_tracking_uri(uri)
    reference = timed("mlflow.search_runs (all columns)", mlflow.search_runs,
                      filter_string="tags.stage = 'unlearn' and attributes.status = 'FINISHED'",
                      search_all_experiments=True, max_results=100_000)
    engine = run_table.engine(uri)
    same(timed("run_table.read_runs (all columns)", run_table.read_runs, engine, "unlearn"), reference, "all")
    keys = timed("run_table.read_runs (tags.key only)", run_table.read_runs, engine, "unlearn", columns=["tags.key"])
    same(keys, reference[run_table.BASE_COLUMNS + ["tags.key"]], "tags.key")
    same(timed("mlflow_runs.finished_runs (tables)", mlflow_runs.finished_runs, uri, "unlearn", experiment_id),
         reference, "finished_runs")
    assert timed("mlflow_runs.finished_keys (pending)", mlflow_runs.finished_keys, uri, "unlearn", experiment_id) \
        == set(reference["tags.key"])
    if args.server:
        def read(url):
            print(f"through `unlearn-grid server` ({url}):")
            # three rounds: the first request opens the server's store, and MLflow's server starts a job
            # runner and huey consumers that keep a small machine's cores busy for a while after /health
            for round in (1, 2, 3):
                assert timed(f"mlflow_runs.finished_keys over HTTP (run-table route), round {round}",
                             mlflow_runs.finished_keys, url, "unlearn", experiment_id) == set(reference["tags.key"])
                same(timed(f"mlflow_runs.finished_runs over HTTP (run-table route), round {round}",
                           mlflow_runs.finished_runs, url, "unlearn", experiment_id), reference, "server")
            if args.no_rest:
                return
            mlflow.set_tracking_uri(url)
            same(timed("mlflow.search_runs over REST (plain server's fallback)", mlflow.search_runs,
                       experiment_ids=[experiment_id], max_results=100_000,
                       filter_string="tags.stage = 'unlearn' and attributes.status = 'FINISHED'"), reference, "REST")
        with_server(uri, folder, read)


if __name__ == "__main__":
    main()
