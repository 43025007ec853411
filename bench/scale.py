"""How the grid machinery scales with the number of trials, and lookups/tables over tens of thousands of runs.

    .venv/bin/python bench/scale.py                        # everything below: ~35 min on 2 cores
    .venv/bin/python bench/scale.py --sizes 100 1000 --runs 2000 --stores sqlite   # ~6 min

Part 1, per grid size (about 100, 1,000 and 5,000 trials): a synthetic grid of real, tiny trials
(digits, mlp, one training epoch, one unlearning epoch of ft/rl/trw; the trial count grows
through unlearn_seeds) runs through `unlearn-grid run` (grid.cli.main, a local Ray on every core,
resources.cpu 1) in a child process with a fresh SQLite store. Printed per size:
  wall          the child's `run` from call to return (Ray's start-up included)
  compute       Σ over trials of the work a plain loop would also do: training / unlearning
                (compute_seconds) + evaluation (evaluate_seconds), as logged by each trial
  overhead      (wall × cores − compute) / trials: core-seconds per trial spent on anything else
                (Ray, Tune, MLflow logging, storage, the driver, idle cores)
  efficiency    compute / (wall × cores)
  driver RSS    the driver process's peak resident memory (ru_maxrss)
  pending       deciding what is pending on the finished store, as `run` does (mlflow_runs.pending for
                every stage: what a rerun of the grid spends before scheduling anything)
  tables        `unlearn-grid tables` on the finished store (in a child process, from call to return)

Part 3 (--labels, alone: `bench/scale.py --labels`): the table builders on synthetic tidy frames of a
λ sweep with many row labels (330 λ values, like issue 28's 993-run sweep), 1,000 and 20,000 runs, every
attack score with its per-sample predictions (50 test samples) so the intervals resample samples too.
Printed: seconds of analysis.tables' builders (accuracy, λ, running time, MIA-NN) and of the
comparisons and noise-floor tables + formatting, after imports, bootstrap intervals (1,000 resamples)
included (targets: <= 10 s at 1,000 runs, <= 30 s at 20,000), and at 1,000 runs
the same for main's old builders (no intervals) loaded from --old-tables, as a ratio.

Part 2, per store (SQLite, and the PostgreSQL-backed `unlearn-grid server`): a store holding --runs
runs of one grid, filled directly through MLflow's client in batches (log_batch; 20,000 real trials
would take ~1.5 h here) from the finished runs of part 1's smallest grid: each filled run is a trial
of a grid with as many unlearn seeds as needed, with that trial's real key, tags and params and the
metrics of the real run it copies. Printed: fill time, `pending` and `tables` on it.
"""
import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CORES = os.cpu_count()
METHODS = ("ft", "rl", "trw")
ARCH = "mlp"   # small_cnn's trials compute ~3x longer: 5,000 of them took ~17 min of this bench's ~35
FORGET_CLASSES = list(range(10))


def grid_for(trials, name="scale"):
    """A digits grid of about `trials` trials: 1 original, 10 Retrain models and, per forget class,
    the Original row + 3 methods × U unlearn seeds."""
    unlearn_seeds = max(1, round((trials - 1 - 10 - 10) / (10 * len(METHODS))))
    return {"name": name, "datasets": "digits", "archs": ARCH, "forget_classes": FORGET_CLASSES,
            "seeds": [0], "unlearn_seeds": list(range(unlearn_seeds)),
            "train": {"epochs": 1, "lr": 0.05, "batch_size": 64},
            "methods": {m: {"epochs": 1} for m in METHODS},
            "resources": {"cpu": 1, "gpu": 0}}


def pending_seconds(plan, tracking_uri, storage):
    """Seconds `run` spends deciding what is pending over every stage of `plan`, and how many are."""
    import mlflow

    from grid.tracking import mlflow_runs
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.get_experiment_by_name(plan.name)
    started = time.perf_counter()
    todo = sum(len(mlflow_runs.pending(trials, stage, tracking_uri, experiment and experiment.experiment_id, storage))
               for stage, trials in plan.stages().items())
    return time.perf_counter() - started, todo


def child_run(grid, folder, result_path):
    """In a fresh process: `unlearn-grid run` on a fresh store; the driver's numbers to result_path."""
    from grid import cli
    from grid.plan import config
    tracking_uri, storage = f"sqlite:///{folder}/mlflow.db", f"{folder}/storage"
    started = time.perf_counter()
    code = cli.main(["run", grid, "--tracking-uri", tracking_uri, "--storage", storage])
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if code != 0:
        raise SystemExit(f"unlearn-grid run failed with {code}")
    pending, _ = pending_seconds(config.load(grid), tracking_uri, storage)
    Path(result_path).write_text(json.dumps({"wall": wall, "peak_mb": peak_mb, "pending": pending}))


def finished_compute(tracking_uri):
    """(trials, Σ over finished runs of compute_seconds + evaluate_seconds)."""
    import mlflow
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'FINISHED'",
                              max_results=100_000)
    runs = runs[runs["tags.stage"].isin(["original", "retrain", "unlearn"])]   # not parent or report runs
    return len(runs), float(runs["metrics.compute_seconds"].sum() + runs["metrics.evaluate_seconds"].sum())


def tables_seconds(tracking_uri, name, out):
    """Seconds of `unlearn-grid tables` in a child process, from start to exit."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "unlearn-grid"), "tables", name, "--tracking-uri", tracking_uri,
                    "--out", str(out)], check=True, capture_output=True, cwd=out.parent,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})   # this checkout's code, installed or not
    return time.perf_counter() - started


def measure_grid(grid, name, folder):
    """Run `grid` (a bundled name, or a grid dict written to a file) in a child; its row of numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(grid, dict):
        (folder / "grid.yaml").write_text(yaml.safe_dump(grid))
        grid = str(folder / "grid.yaml")
    result_path = folder / "driver.json"
    subprocess.run([sys.executable, __file__, "--child", grid, str(folder), str(result_path)],
                   check=True, cwd=folder, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    driver = json.loads(result_path.read_text())
    tracking_uri = f"sqlite:///{folder}/mlflow.db"
    count, compute = finished_compute(tracking_uri)
    return {"grid": name, "trials": count, "wall": driver["wall"], "compute": compute,
            "overhead": (driver["wall"] * CORES - compute) / count, "efficiency": compute / (driver["wall"] * CORES),
            "driver_mb": driver["peak_mb"], "pending": driver["pending"],
            "tables": tables_seconds(tracking_uri, name, folder / "tables")}

def fill_store(tracking_uri, source_uri, runs, name="scale"):
    """A store holding about `runs` finished runs of one grid, written straight into MLflow's tables
    through its SQLAlchemy models in batched inserts (the client's create_run + log_batch +
    set_terminated, three transactions per run, would take ~10 min for 20,000 runs here). Every run
    is a real trial of grid_for(...) with as many unlearn seeds as it takes: its key, tags and params
    are the trial's, its metrics those of the source store's finished run of the same cell (the
    source: a finished store of grid_for's smallest grid). Originals and Retrain models are copied
    with their artifacts' location. Returns the plan whose trials the store holds."""
    import uuid

    from mlflow.store.tracking.dbmodels import models as tables
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy import insert

    from grid.plan import config
    from trainables.trial import flatten

    source = _source_runs(source_uri)
    plan = config.build_plan(grid_for(runs, name))
    backend = tracking_uri
    if tracking_uri.startswith("postgresql://"):
        backend = "postgresql+psycopg://" + tracking_uri[len("postgresql://"):]
    store = SqlAlchemyStore(backend, tempfile.mkdtemp(prefix="ug-artifacts-"))   # runs keep their sources' artifacts
    experiment_id = store.create_experiment(name)
    now = int(time.time() * 1000)
    rows = {"runs": [], "tags": [], "params": [], "metrics": [], "latest": []}

    def add(trial, copied):
        run_id = uuid.uuid4().hex
        rows["runs"].append({"run_uuid": run_id, "name": copied["tags"].get("mlflow.runName", ""),
                             "source_type": "LOCAL", "source_name": "", "entry_point_name": "", "user_id": "bench",
                             "status": "FINISHED", "start_time": now, "end_time": now + 1000,
                             "source_version": "", "lifecycle_stage": "active",
                             "artifact_uri": copied["artifact_uri"], "experiment_id": int(experiment_id)})
        tags = {**copied["tags"], "key": trial["key"]}
        if "unlearn_seed" in trial["spec"]:
            tags["unlearn_seed"] = str(trial["spec"]["unlearn_seed"])
        params = {**copied["params"], **{k: str(v) for k, v in flatten(trial["spec"]).items()}}
        rows["tags"] += [{"key": k, "value": str(v), "run_uuid": run_id} for k, v in tags.items()]
        rows["params"] += [{"key": k, "value": str(v)[:6000], "run_uuid": run_id} for k, v in params.items()]
        for k, v in copied["metrics"].items():
            metric = {"key": k, "value": float(v), "timestamp": now, "step": 0, "is_nan": False, "run_uuid": run_id}
            rows["metrics"].append(metric)
            rows["latest"].append(metric)

    for trial in plan.original + plan.retrain:
        add(trial, source[(trial["spec"]["stage"], tuple(trial["spec"].get("forget_classes", ())), None, 0)])
    for trial in plan.unlearn:
        spec = trial["spec"]
        copied = source.get((spec["stage"], tuple(spec["forget_classes"]), spec["method"], spec["unlearn_seed"] % 3)) \
            or source[(spec["stage"], tuple(spec["forget_classes"]), spec["method"], 0)]
        add(trial, copied)
    started = time.perf_counter()
    with store.ManagedSessionMaker() as session:
        for table, model in (("runs", tables.SqlRun), ("tags", tables.SqlTag), ("params", tables.SqlParam),
                             ("metrics", tables.SqlMetric), ("latest", tables.SqlLatestMetric)):
            for start in range(0, len(rows[table]), 20_000):
                session.execute(insert(model.__table__), rows[table][start:start + 20_000])
    store.engine.dispose()
    return plan, len(rows["runs"]), time.perf_counter() - started


def _source_runs(source_uri):
    """{(stage, forget classes, method, unlearn seed): {"tags", "params", "metrics", "artifact_uri"}} of
    a finished store's runs."""
    from mlflow import MlflowClient
    client = MlflowClient(source_uri)
    found = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000):
            tags = run.data.tags
            forget = tuple(int(c) for c in tags["forget_classes"].split(",")) if tags.get("forget_classes") else ()
            method = tags.get("method") if tags["stage"] == "unlearn" else None
            seed = int(tags.get("unlearn_seed") or 0) if tags["stage"] == "unlearn" else 0
            found[(tags["stage"], forget, method, seed)] = {"tags": dict(tags), "params": dict(run.data.params),
                                                            "metrics": dict(run.data.metrics),
                                                            "artifact_uri": run.info.artifact_uri}
    return found


def measure_store(kind, runs, source_folder, base):
    """Fill a store of `kind` with `runs` runs, then time pending and tables on it; its row of numbers."""
    source_uri, storage = f"sqlite:///{source_folder}/mlflow.db", str(source_folder / "storage")
    with contextlib.ExitStack() as stack:
        if kind == "sqlite":
            db_uri = tracking_uri = f"sqlite:///{base}/store-{runs}.db"
        else:
            import services   # tests/services.py: a throwaway PostgreSQL and `unlearn-grid server` on it
            db_uri = stack.enter_context(services.postgresql())
        plan, count, fill = fill_store(db_uri, source_uri, runs)
        if kind == "postgresql":
            tracking_uri = stack.enter_context(services.tracking_server(db_uri, base / "server-artifacts",
                                                                         base / "server.log"))
        pending, _ = pending_seconds(plan, tracking_uri, storage)
        out = base / f"tables-{kind}"
        out.mkdir(parents=True, exist_ok=True)
        tables = tables_seconds(tracking_uri, "scale", out)
    return {"store": "SQLite file" if kind == "sqlite" else "PostgreSQL via unlearn-grid server",
            "runs": count, "fill": fill, "pending": pending, "tables": tables}


def label_sweep(runs, labels=330, samples=50, seed=0):
    """A tidy frame of about `runs` runs: trw at `labels` λ values × forget sets × seeds, plus a Retrain
    and an Original per (forget set, seed); attack scores with their per-sample predictions."""
    import numpy as np
    import pandas as pd

    from analysis import statistics
    rng = np.random.default_rng(seed)
    cells = max(1, round(runs / labels))
    seeds = 3 if cells >= 3 else 1
    forget_sets = max(1, cells // seeds)
    rows = []

    def bits_row(method, stage, forget, s, lam=None):
        svm, nn = rng.random(samples) < 0.6, rng.random(samples) < 0.4
        row = {"stage": stage, "method": method, "dataset": "toy", "arch": "mlp", "forget_classes": str(forget),
               "seed": str(s), "unlearn_seed": None if stage == "retrain" else "0",
               "acc_r_test": 90 + rng.normal(), "acc_f_test": rng.random(), "mia_svm": 100.0 * svm.mean(),
               "mia_svm_predictions": statistics.pack_bits(svm), "wall_seconds": rng.random(),
               "compute_seconds": rng.random(), "device": "cpu",
               "forget_mean_probs": json.dumps(list(np.round(rng.dirichlet(np.ones(10)), 6)))}
        if stage == "unlearn":
            row.update({"mia_nn": 100.0 * nn.mean(), "mia_nn_predictions": statistics.pack_bits(nn),
                        "mia_nn_reference": 50.0, "mia_nn_gap": abs(100.0 * nn.mean() - 50.0), "neighbour_class": 1})
        if lam is not None:
            row["params.lam"] = str(lam)
        return row
    for forget in range(forget_sets):
        for s in range(seeds):
            rows.append(bits_row("retrain", "retrain", forget % 10, s) | {"forget_classes": str(forget)})
            rows.append(bits_row("original", "unlearn", forget, s))
            rows += [bits_row("trw", "unlearn", forget, s, lam=lam / 10) for lam in range(labels)]
    return pd.DataFrame(rows)


def tables_work(module, runs, with_intervals=True):
    """Every table builder of `module` (analysis.tables or main's old copy) on `runs`, formatted."""
    order = ["trw"]
    kwargs = {"uncertainty": None} if with_intervals else {}
    built = [module.accuracy_table(runs, order, **kwargs), module.lambda_table(runs, "trw", **kwargs),
             module.running_time_table(runs, order, **kwargs), module.mia_nn_table(runs, None, order, **kwargs)]
    if with_intervals:   # the tables only the new code has: paired comparisons, the noise floor
        from grid.reports import statistics_tables
        built += [item[2] for item in statistics_tables.items(runs, None, order)]
    return [module.to_markdown(module.format_mean_std(t)) for t in built]


def measure_labels(old_tables):
    """Part 3's table of seconds (module docstring)."""
    import importlib.util

    from analysis import tables
    old = None
    if old_tables and Path(old_tables).exists():
        spec = importlib.util.spec_from_file_location("old_tables", old_tables)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    print(f"{'runs':>7} {'labels':>7} {'tables s':>9} {'old tables s':>13} {'ratio':>6}")
    for runs_wanted in (1_000, 20_000):
        runs = label_sweep(runs_wanted)
        started = time.perf_counter()
        tables_work(tables, runs)
        seconds = time.perf_counter() - started
        old_seconds = float("nan")
        if old is not None and runs_wanted <= 1_000:   # the old code at 20,000 runs takes minutes
            started = time.perf_counter()
            # main's mia_nn_table needs a neighbour class in every unlearn row (the Original's here)
            tables_work(old, runs.fillna({"neighbour_class": 1}), with_intervals=False)
            old_seconds = time.perf_counter() - started
        print(f"{len(runs):7d} {runs['params.lam'].nunique():7d} {seconds:9.2f} {old_seconds:13.2f} "
              f"{old_seconds / seconds:6.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the bundled demo grid (default: on)")
    parser.add_argument("--runs", type=int, default=20_000, help="runs in the filled stores (0: skip them)")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--labels", action="store_true",
                        help="only part 3: the table builders on many-label frames (seconds, no grids run)")
    parser.add_argument("--old-tables", default=None,
                        help="part 3: a copy of an older analysis/tables.py to compare with "
                             "(e.g. `git show main:analysis/tables.py > /tmp/old_tables.py`)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(*args.child)
        return
    if args.labels:
        measure_labels(args.old_tables)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    started = time.perf_counter()
    print(f"{CORES} cores; `unlearn-grid run` on a fresh SQLite store per grid; synthetic grids: digits/{ARCH}, "
          f"1 epoch, ft/rl/trw")
    print(f"{'grid':>8} {'trials':>7} {'wall s':>8} {'compute s':>10} {'overhead s':>11} {'efficiency':>10} "
          f"{'driver MB':>10} {'pending s':>10} {'tables s':>9}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ug-scale-") as base:
        base = Path(base)
        grids = ([("demo", "demo")] if args.demo else []) + [(str(n), grid_for(n)) for n in sorted(args.sizes)]
        for name, grid in grids:
            row = measure_grid(grid, "demo" if name == "demo" else "scale", base / f"grid-{name}")
            rows.append({**row, "grid": name})
            print(f"{name:>8} {row['trials']:7d} {row['wall']:8.1f} {row['compute']:10.1f} {row['overhead']:11.3f} "
                  f"{row['efficiency']:10.2f} {row['driver_mb']:10.0f} {row['pending']:10.2f} {row['tables']:9.1f}",
                  flush=True)
        sized = [r for r in rows if r["grid"] != "demo"]
        if sized and args.runs:
            print(f"\nstores of {args.runs} runs, filled from the {sized[0]['trials']}-trial grid's runs "
                  "(batched inserts into MLflow's tables)")
            print(f"{'store':>36} {'runs':>7} {'fill s':>7} {'pending s':>10} {'tables s':>9}")
            for kind in args.stores:
                row = measure_store(kind, args.runs, base / f"grid-{sized[0]['grid']}", base)
                print(f"{row['store']:>36} {row['runs']:7d} {row['fill']:7.1f} {row['pending']:10.2f} "
                      f"{row['tables']:9.1f}", flush=True)
        if len(sized) > 1:
            first, last = sized[0], sized[-1]
            print(f"\noverhead per trial at {last['trials']} / at {first['trials']} trials: "
                  f"{last['overhead'] / first['overhead']:.2f}x (goal <= 1.2x, and <= 0.5 s: {last['overhead']:.3f} s)")
            print(f"driver peak memory, {last['trials']} minus {first['trials']} trials: "
                  f"{last['driver_mb'] - first['driver_mb']:+.0f} MB (goal <= 100 MB)")
    print(f"bench/scale.py took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
