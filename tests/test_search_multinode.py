"""Search cells side by side on the multi-node cluster of tests/test_multinode.py (a Ray head plus two worker
nodes with one fake GPU each, PostgreSQL, `unlearn-grid server`): a search grid of four cells (forget class
0 or 1 x ft or trw on toy2d/mlp), each at max_concurrent 2, at gpu 0.25 (8 slots). Every search trial waits
after its first epoch until eight are there at once (a rendezvous gate, tests/plugins/gates.py): they
can only all be there if the four cells ran side by side, two trials each. Then the same four cells
again, ungated, in one invocation and one invocation per cell (as cells ran before: one Tuner each),
and the wall times are printed (with -s); no timing is asserted. ~10 min on 2 busy cores.
"""
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from gates import Gates

import services   # tests/services.py: PostgreSQL, the tracking server, a multi-node Ray cluster
from test_multinode import peak_overlap

# the system tier; six `unlearn-grid run`s in one fixture: more than the suite's 600 s on a busy machine
pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
CELLS, LIMIT, SAMPLES = 4, 2, 4
GRID = {
    "name": "search-multinode",
    "datasets": "toy2d",
    "archs": "mlp",
    "forget_classes": [0, 1],
    "seeds": [0],
    "train": {"epochs": 3, "lr": 0.05, "batch_size": 64},
    "methods": {"ft": {"epochs": 3}, "trw": {"epochs": 3, "lr": 0.01}},
    "search": {"budget": {"samples": SAMPLES, "max_concurrent": LIMIT}, "seed": 0,
               "methods": {"ft": {"lr": {"loguniform": [0.001, 0.1]}}, "trw": {"lam": {"loguniform": [0.1, 50]}}}},
    "resources": {"cpu": 1, "gpu": 0.25},    # four trials share each (fake) GPU: 8 slots on the two workers
}


def _run(folder, grid, url, cluster, env=None):
    """`unlearn-grid run` of `grid` on the cluster; returns (the process, its log file). The cluster's own
    address, not `auto`: other Ray instances on this machine would make `auto` pick the latest. The
    driver imports this checkout's code (PYTHONPATH: the console script does not put the working folder
    on sys.path), and Ray puts the driver's working folder on its workers' sys.path."""
    grid_file = folder / f"{grid['name']}.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    log = open(folder / f"{grid['name']}.log", "w")
    process = subprocess.Popen([str(services.BIN / "unlearn-grid"), "run", str(grid_file), "--address", cluster["address"],
                                "--tracking-uri", url, "--storage", str(folder / "storage")],
                               stdout=log, stderr=subprocess.STDOUT, env={**cluster["driver_env"], "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})},
                               cwd=ROOT)
    return process, log


def _finish(process, log, timeout=400):
    try:
        returncode = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    output = open(log.name).read()
    assert returncode == 0, output[-6000:]
    return output


def _search_seconds(experiment):
    """The search stage's seconds of each invocation: its `search` parent run (grid/execution/parents.py),
    from its first cell's trials being scheduled to the end of the stage."""
    parents = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.parent_of = 'search'")
    return [(end - start).total_seconds() for start, end in zip(parents["start_time"], parents["end_time"])]


@pytest.fixture(scope="module")
def searched_side_by_side(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search-multinode")
    gate = Gates(folder / "gates", together={"stage": "search_trial", "epoch": 1, "parties": CELLS * LIMIT})
    with services.postgresql() as db_uri, \
            services.tracking_server(db_uri, folder / "artifacts", folder / "server.log") as url, \
            services.ray_cluster(workers=2, worker_cpus=4) as cluster:
        driver, log = _run(folder, GRID, url, cluster, gate.env)
        try:
            held = gate.wait("together", count=CELLS * LIMIT, process=driver)
        except AssertionError as error:   # with what the driver said
            raise AssertionError(f"{error}\n{open(log.name).read()[-6000:]}") from None
        finally:
            gate.release("together")   # a failed wait lets nothing hang
        output = _finish(driver, log)
        mlflow.set_tracking_uri(url)
        trials = mlflow.search_runs(experiment_names=[GRID["name"]], filter_string="tags.stage = 'search_trial'")
        parents = mlflow.search_runs(experiment_names=[GRID["name"]], filter_string="tags.stage = 'search'")

        # the same four cells (another search seed: cells of their own), ungated: in one invocation, then
        # one invocation per cell, each a Tuner of its own, as cells ran one after another before
        timings = {}
        together = {**GRID, "name": "search-together", "search": {**GRID["search"], "seed": 1}}
        started = time.perf_counter()
        _finish(*_run(folder, together, url, cluster))
        timings["side by side"] = (time.perf_counter() - started, sum(_search_seconds("search-together")))
        started = time.perf_counter()
        for forget in GRID["forget_classes"]:
            for method, space in GRID["search"]["methods"].items():
                one = {**GRID, "name": "search-one-by-one", "forget_classes": [forget],
                       "methods": {method: GRID["methods"][method]},
                       "search": {**GRID["search"], "seed": 2, "methods": {method: space}}}
                _finish(*_run(folder, one, url, cluster))
        timings["one after another"] = (time.perf_counter() - started, sum(_search_seconds("search-one-by-one")))
    print("\nsearch of 4 cells x 4 trials (max_concurrent 2 each) on 2 nodes x 4 slots: "
          + "; ".join(f"{name}: search stage {stage:.1f} s ({wall:.1f} s with driver start-up)"
                      for name, (wall, stage) in timings.items()))
    yield {"held": held, "trials": trials, "parents": parents, "output": output, "cluster": cluster}


def test_trials_of_all_four_cells_ran_at_once_each_within_its_limit(searched_side_by_side):
    trials, parents, held = (searched_side_by_side[k] for k in ("trials", "parents", "held"))
    assert len(parents) == CELLS and (parents["status"] == "FINISHED").all()
    assert len(trials) == CELLS * SAMPLES and (trials["status"] == "FINISHED").all()
    # eight trials were at the gate at once, two of each cell (the gate let none go before all eight came)
    cell_of = dict(zip(trials["run_id"], trials["tags.mlflow.parentRunId"]))
    at_gate = [cell_of[arrival["run_id"]] for arrival in held[:CELLS * LIMIT]]
    assert sorted(at_gate.count(parent) for parent in set(parents["run_id"])) == [LIMIT] * CELLS
    # spread over both worker nodes, four per (fake) GPU
    workers = searched_side_by_side["cluster"]["workers"]
    assert sorted(arrival["node_id"] for arrival in held[:CELLS * LIMIT]) == sorted(workers * 4)
    # MLflow's start and end times agree: eight at once in all, never more than two of one cell
    assert peak_overlap(trials) == CELLS * LIMIT
    assert {parent: peak_overlap(frame) for parent, frame in trials.groupby("tags.mlflow.parentRunId")} \
        == {parent: LIMIT for parent in parents["run_id"]}


def test_each_cell_kept_its_default_point_and_best_params(searched_side_by_side):
    trials, parents = searched_side_by_side["trials"], searched_side_by_side["parents"]
    for _, parent in parents.iterrows():
        children = trials[trials["tags.mlflow.parentRunId"] == parent["run_id"]]
        assert (children["tags.default"] == "true").sum() == 1                       # its own default, once
        assert set(children["tags.method"]) == {parent["tags.method"]}
        assert set(children["tags.forget_classes"]) == {parent["tags.forget_classes"]}
        assert parent["metrics.best_objective"] == pytest.approx(children["metrics.objective"].min())
    assert "4 cell(s) side by side" in searched_side_by_side["output"]
