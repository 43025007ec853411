"""Per-trial overhead of Ray Tune + MLflow against the same compute run plainly in one process.

    .venv/bin/python bench/trial_overhead.py [GRID]       # default: the bundled demo; ~2 min here

Both sides run every trial of GRID one at a time on one CPU thread (Ray with num_cpus=1), in fresh
temporary stores: (a) baseline, in this process, no Ray, no MLflow: train / unlearn / evaluate;
(b) the grid through `run_grid` (Ray Tune trials logging to a sqlite MLflow store). Prints both
wall times, their ratio, and (b - a) / trials = the overhead a trial pays for scheduling, logging,
checkpointing and storage. Ray's start-up is reported apart from it.
"""
import sys
import tempfile
import time

import torch

from grid.plan import config
from trainables import data, methods, models
from trainables.evaluate import evaluate_forgetting, evaluate_overall
from trainables.recipe import Recipe
from trainables.train import seed_everything, train_classifier


def baseline(plan):
    """Every trial's compute, in order, with the same functions the trainable calls."""
    torch.set_num_threads(1)
    trained = {}
    for trial in plan.original + plan.retrain:
        spec = trial["spec"]
        dataset = data.load(spec["dataset"])
        x, y = dataset.train_x, dataset.train_y
        if spec["stage"] == "retrain":
            split = data.forget_split(y.numpy(), spec["forget_classes"])
            x, y = x[split.retain], y[split.retain]
        seed_everything(spec["seed"])
        model = models.build(spec["arch"], dataset.info.num_classes, dataset.info.input_shape)
        train_classifier(model, x, y, Recipe(**spec["train"]), generator=torch.Generator().manual_seed(spec["seed"]),
                         device="cpu")
        if spec["stage"] == "retrain":
            evaluate_forgetting(model, dataset, spec["forget_classes"], spec["evaluation"], "cpu")
        else:
            evaluate_overall(model, dataset, "cpu")
        trained[trial["key"]] = model
    for trial in plan.unlearn:
        spec = trial["spec"]
        dataset = data.load(spec["dataset"])
        original = trained[trial["original_key"]]
        split = data.forget_split(dataset.train_y.numpy(), spec["forget_classes"])
        model = original
        if spec["method"] != "original":
            task = methods.UnlearnTask(original, dataset.train_x[split.retain], dataset.train_y[split.retain],
                                       dataset.train_x[split.forget], dataset.train_y[split.forget],
                                       spec["forget_classes"], dataset.info.num_classes, spec["unlearn_seed"])
            model = methods.unlearn(spec["method"], task, spec["params"])
        evaluate_forgetting(model, dataset, spec["forget_classes"], spec["evaluation"], "cpu", neighbour=(0, 0.0))


def main(grid="demo"):
    import ray
    from grid.execution.stages import run_grid
    plan = config.load(grid)
    trials = len(plan.original) + len(plan.retrain) + len(plan.unlearn)
    started = time.perf_counter()
    baseline(plan)
    plain = time.perf_counter() - started

    started = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        run_grid(plan, f"sqlite:///{folder}/mlflow.db", f"{folder}/storage", echo=lambda line: None)
        gridded = time.perf_counter() - started
    ray.shutdown()
    print(f"grid {plan.name}: {trials} trials, one at a time, 1 CPU thread each")
    print(f"  baseline (plain loop, no Ray/MLflow): {plain:7.1f} s")
    print(f"  Ray Tune + MLflow (run_grid):         {gridded:7.1f} s   (+ ray.init {ray_start:.1f} s)")
    print(f"  ratio grid/baseline: {gridded / plain:.2f}x; overhead per trial: {(gridded - plain) / trials:.2f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])
