"""MIA-NN references: serial on the driver before the unlearn stage (the old way) against each unlearn
trial getting its own on its worker (trainables/references.py), trials in round-robin order over
forget sets (grid/plan/order.py), on a local Ray with the machine's cores.

    .venv/bin/python bench/references.py                 # ~4 min on 2 idle cores, 7.5 min on shared ones
    .venv/bin/python bench/references.py --repeats 1 --forget-sets 2 --per-class 10   # ~30 s look

Fixture: synthetic Retrain test logits of 100 classes (CIFAR-100's shape), 3 Retrain models, one
forget class per forget set, `--per-class` test samples per class (20: 2,000 samples, ~25 ms per
SVM fit here): each reference is 99 classes x 3 models of RBF-SVM fits, seconds of one core.

- serial (baseline): the driver computes the forget sets' references one after another
  (references.compute, the driver's old code), and only then does the stage start: the first unlearn
  trial can start, and has its reference, when all of them exist.
- workers, round-robin: the unlearn trials (`--trials-per-set` per forget set) as Ray tasks of one CPU
  each, a slot per core, in round-robin order; each calls references.get (read from storage, or
  compute and store). Times from submission: the first trial started; the first trial had its
  reference; every reference was stored.
- workers, plan order: the same in the plan's order (every trial of a forget set, then the next
  set's): what the round-robin buys.

Each repeat runs the three in one process on fresh storage; ratios are against that repeat's serial
time. The trials do nothing but get their reference: the unlearning work is not what is measured.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import ray

from grid.plan import order
from trainables import references, store

CLASSES, MODELS = 100, 3
EVALUATION = {"class_weight": "balanced", "seed": 0, "svm_max_samples": 10_000}


def fixture(storage, forget_sets, per_class, trials_per_set):
    """Stored Retrain logits of every forget set, and the unlearn trials ({"retrain_keys", "forget"}) in
    the plan's order."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(CLASSES), per_class)
    trials = []
    for forget in range(forget_sets):
        keys = [f"retrain-f{forget}-s{seed}" for seed in range(MODELS)]
        for key in keys:
            logits = rng.normal(0, 1, (len(labels), CLASSES)).astype(np.float32)
            logits[np.arange(len(labels)), labels] += 3
            store.save_logits(storage, key, logits, labels)
        trials += [{"retrain_keys": keys, "forget": [forget]} for _ in range(trials_per_set)]
    return trials


def serial(storage, trials):
    """Seconds until every reference exists, computed one after another as the driver did."""
    started = time.perf_counter()
    for keys, forget in {tuple(t["retrain_keys"]): t["forget"] for t in trials}.items():
        references.compute(storage, keys, forget, EVALUATION)
    return time.perf_counter() - started


def unlearn_trial(storage, keys, forget):
    """A trial's start of the unlearn stage: (wall time it started, wall time it had its reference, the
    reference's id, whether it computed it)."""
    started = time.time()
    got = references.get(storage, keys, forget, EVALUATION)
    return started, time.time(), references.reference_id(storage, keys, forget, EVALUATION), got.computed


def on_workers(storage, trials):
    """(first trial started, first trial had its reference, every reference stored), seconds from
    submission, with the trials as one-CPU Ray tasks in the given order."""
    task = ray.remote(unlearn_trial).options(num_cpus=1)
    submitted = time.time()
    results = ray.get([task.remote(storage, t["retrain_keys"], t["forget"]) for t in trials])
    first_stored = {}
    for _, got, reference, computed in results:
        if computed:
            first_stored[reference] = min(got, first_stored.get(reference, got))
    return (min(r[0] for r in results) - submitted, min(r[1] for r in results) - submitted,
            max(first_stored.values()) - submitted)


def warm_up(cores):
    """Every worker process started and its imports done (torch, scikit-learn: seconds), as on a stage's
    workers, which import the trial's code before it runs (either way); and the driver's own imports."""
    def imported():
        import trainables.references  # noqa: F401
        from analysis.attacks import class_logit_attack
        labels = np.arange(20) % 4
        class_logit_attack(np.eye(4)[labels] + 0.1 * labels[:, None], labels, [0], 1)   # its lazy imports
        time.sleep(1.0)   # held, so the next task goes to another worker
        return os.getpid()
    task = ray.remote(imported).options(num_cpus=1)
    ray.get([task.remote() for _ in range(cores)])
    imported()


def spread(values):
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forget-sets", type=int, default=4)
    parser.add_argument("--trials-per-set", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=20, help="test samples per class")
    args = parser.parse_args(argv)
    cores = os.cpu_count()
    ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    warm_up(cores)
    print(f"{cores} cores, load average {os.getloadavg()[0]:.1f} (on a shared machine the parallel side gets "
          f"less than a core per slot); {args.forget_sets} forget sets of "
          f"{CLASSES} classes x {MODELS} Retrain models, {CLASSES * args.per_class} test samples; "
          f"{args.trials_per_set} unlearn trials per forget set, one slot per core", flush=True)
    ratios = {"first start": [], "first reference": [], "all references": [],
              "plan order: first reference": [], "plan order: all references": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            storages = {side: os.path.join(folder, side) for side in ("serial", "round-robin", "plan")}
            trials = {side: fixture(path, args.forget_sets, args.per_class, args.trials_per_set)
                      for side, path in storages.items()}
            baseline = serial(storages["serial"], trials["serial"])
            start, first, every = on_workers(storages["round-robin"], order.round_robin(trials["round-robin"]))
            _, plan_first, plan_every = on_workers(storages["plan"], trials["plan"])
        ratios["first start"].append(start / baseline)
        ratios["first reference"].append(first / baseline)
        ratios["all references"].append(every / baseline)
        ratios["plan order: first reference"].append(plan_first / baseline)
        ratios["plan order: all references"].append(plan_every / baseline)
        print(f"repeat {repeat + 1}: serial {baseline:.1f}s (first trial starts then, all references exist); "
              f"workers, round-robin: first trial started {start:.2f}s, had its reference {first:.1f}s, "
              f"all references {every:.1f}s; plan order: first reference {plan_first:.1f}s, "
              f"all references {plan_every:.1f}s", flush=True)
    print(f"ratios to serial (lower is better; load average now {os.getloadavg()[0]:.1f}):")
    for name, values in ratios.items():
        print(f"  {name}: {spread(values)}")
    ray.shutdown()


if __name__ == "__main__":
    main()
