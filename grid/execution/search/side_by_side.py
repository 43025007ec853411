"""The search stage: every cell this driver claimed, side by side in one Tuner.

1. Claim the pending cells (grid/execution/leases.py); cells another driver holds are waited for, then
   found finished.
2. Skip cells whose parent run finished its budget; compute the others' Retrain validation references
   (SVM fits) as parallel Ray tasks on the workers: no trial runs yet, so nothing waits on them.
3. One Tuner over all those cells: CellSearchers (each cell's own Optuna searcher and concurrency limit)
   and, with early stopping, CellSchedulers (each cell's own ASHA). The trials share the cluster: up to
   the sum of the cells' max_concurrent run at once, as many as there are slots.
4. Each cell's parent gets its best params (cell.finish_parent); a cell whose trials failed is marked
   FAILED, and the stage fails naming their errors.
"""
import contextlib
import os
import time

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from grid.execution import leases
from grid.execution.faults import StageFailed, error_line
from grid.execution.search.cell import (create_parent, default_point, evaluated_trials, find_parent, finish_parent,
                                         searcher as cell_searcher)
from grid.execution.search.cell_schedulers import CellSchedulers, sparing_default
from grid.execution.search.cell_searchers import CellSearchers
from grid.execution.search.progress import SearchProgress
from trainables import store
from trainables.search_trial import run_search_trial, validation_reference
from trainables.trial import driver_tags


@contextlib.contextmanager
def max_pending_trials(count):
    """Tune lets a non-random searcher keep one trial pending by default, so an autoscaling cluster
    would see a demand of one trial at a time: let it see every cell's concurrency (unless the user set
    TUNE_MAX_PENDING_TRIALS_PG)."""
    previous = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(count))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TUNE_MAX_PENDING_TRIALS_PG", None)


def references(storage, cells):
    """Retrain's validation reference of each cell, computed as parallel Ray tasks (one CPU each)."""
    task = ray.remote(num_cpus=1)(validation_reference)
    return ray.get([task.remote(storage, cell) for cell in cells])


def open_cells(cells, budget, base_context, storage, echo, parents):
    """The cells with trials left to run, each with its parent run, reference and evaluated trials; a
    cell whose budget is spent is finished here (its parent may not be, if its driver died)."""
    client = MlflowClient(base_context["tracking_uri"])
    experiment_id = base_context["experiment_id"]
    found = {}
    for cell in cells:
        parent = find_parent(client, experiment_id, cell)
        if parent is not None:
            done = evaluated_trials(client, experiment_id, parent.info.run_id, cell["spec"]["space"])
            if len(done) >= budget["samples"] and parent.info.status == "FINISHED":
                echo(f"  {parent.info.run_name}: finished ({len(done)} trials)")
                continue
            for name, value in driver_tags(base_context).items():
                client.set_tag(parent.info.run_id, name, value)
        found[cell["key"]] = parent
    todo = [cell for cell in cells if cell["key"] in found]
    out = []
    for cell, reference in zip(todo, references(storage, todo) if todo else []):
        parent = found[cell["key"]] or create_parent(client, experiment_id, cell, base_context["grid"], reference,
                                                     driver_tags(base_context))
        parent_id, label, space = parent.info.run_id, parent.info.run_name, cell["spec"]["space"]
        done = evaluated_trials(client, experiment_id, parent_id, space)
        remaining = budget["samples"] - len(done)
        echo(f"  {label}: {max(remaining, 0)} trials to run, {len(done)} already evaluated; Retrain on validation: "
             f"Acc_r {reference['acc_r']:.1f}, Acc_f {reference['acc_f']:.1f}, c*={reference['neighbour_class']} "
             f"A_c*={reference['mia_nn']:.1f}")
        if remaining <= 0:
            finish_parent(client, experiment_id, parent_id, space)
            continue
        client.update_run(parent_id, status="RUNNING")
        # the cell's parent (kept across reruns) goes under this invocation's search parent (grid/execution/parents.py)
        client.set_tag(parent_id, "mlflow.parentRunId", parents.run_id("search", remaining))
        context = {**base_context, "parent_run_id": parent_id, "reference": reference,
                   "original_key": cell["original_key"]}
        out.append({"cell": cell, "parent_id": parent_id, "label": label, "done": done, "remaining": remaining,
                    "trial_cell": {"spec": cell["spec"], "key": cell["key"], "context": context}})
    return out


def scheduler_for(cells, grace_epochs):
    """The Tuner's scheduler: each cell's own ASHA (CellSchedulers) with early stopping, else None (Tune's
    FIFO: every trial runs to its end). Validation refuses early stopping when epochs is searched
    (search_space._check_stopping_with_epochs), so ASHA only ever compares trials of one epoch budget."""
    if not grace_epochs:
        return None
    return CellSchedulers([sparing_default(cell, default_point(cell), grace_epochs) for cell in cells])


def search_side_by_side(todo, budget, base_context, resources, storage, echo):
    """One Tuner over the open cells (open_cells); returns the number of trials run."""
    client = MlflowClient(base_context["tracking_uri"])
    searcher = CellSearchers([cell_searcher(t["cell"], t["done"], budget["max_concurrent"]) for t in todo],
                             [t["remaining"] for t in todo])
    scheduler = scheduler_for([t["cell"] for t in todo], budget["grace_epochs"])
    total = sum(t["remaining"] for t in todo)
    progress = SearchProgress(client, total, echo, [{"label": t["label"], "space": t["cell"]["spec"]["space"]}
                                                    for t in todo])
    # the cells go to the object store once; a trial's config is its cell's index and its searched values
    trainable = tune.with_parameters(run_search_trial, cells=[t["trial_cell"] for t in todo])
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": resources["cpu"], "gpu": resources["gpu"]}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=total, reuse_actors=True),
        run_config=tune.RunConfig(name=f"search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                  storage_path=store.join(storage, "ray"),
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[progress], verbose=0))
    with max_pending_trials(len(todo) * budget["max_concurrent"]):
        tuner.fit()
    experiment_id = base_context["experiment_id"]
    for index, t in enumerate(todo):
        if index not in progress.failed:
            finish_parent(client, experiment_id, t["parent_id"], t["cell"]["spec"]["space"])
    if progress.failed:
        lines = []
        for index, trials in sorted(progress.failed.items()):
            client.set_terminated(todo[index]["parent_id"], "FAILED")
            lines.append(f"  {len(trials)} search trial(s) of {todo[index]['label']} failed:")
            lines += [f"    {error_line(trial.get_pickled_error() or trial.get_error())}" for trial in trials]
        raise StageFailed("\n".join(lines))
    return total


def run_searches(plan, base_context, resources, storage, echo, claims, parents):
    """Every search cell of the plan, side by side: the batch this driver claims runs in one Tuner (a
    cell another driver is searching is waited for, then found finished); returns the number of
    search trials run."""
    search = plan.grid["search"]
    budget = {"samples": search["samples"], "max_concurrent": search["max_concurrent"],
              "grace_epochs": search["grace_epochs"]}
    echo(f"stage search: {len(plan.search)} cells, {budget['samples']} trials each, objective {search['objective']} "
         f"on the validation split")
    searched, trials = set(), []

    def run(cells):
        todo = open_cells(cells, budget, base_context, storage, echo, parents)
        if todo:
            echo(f"  {len(todo)} cell(s) side by side, up to {budget['max_concurrent']} trials of each at once")
            trials.append(search_side_by_side(todo, budget, base_context, resources, storage, echo))
        searched.update(cell["key"] for cell in cells)
    leases.run_claimed("stage search", lambda: [c for c in plan.search if c["key"] not in searched], run, claims, echo)
    return sum(trials)
