"""One search cell's own parts: its Optuna searcher (seeded from search.seed and the cell, the default
params first, behind its ConcurrencyLimiter), its MLflow parent run, and the child runs it already has.

Resume: a cell that was interrupted continues — its finished child runs go back into a fresh Optuna
study as evaluated points (trials stopped early count with the objective they reached), and only the
rest of the budget runs.
"""
import time

import mlflow
import optuna
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from grid.plan import search_space
from trainables.trial import flatten

optuna.logging.set_verbosity(optuna.logging.WARNING)   # one line per trial comes from SearchProgress


def distributions(space):
    """Optuna distributions of a cell's space {param: (kind, values)}."""
    out = {}
    for name, (kind, values) in space.items():
        if kind == "choice":
            out[name] = optuna.distributions.CategoricalDistribution(values)
        elif kind == "int":
            out[name] = optuna.distributions.IntDistribution(values[0], values[1])
        else:
            out[name] = optuna.distributions.FloatDistribution(values[0], values[1], log=kind == "loguniform")
    return out


def sampler_for(cell, evaluated=0):
    """TPE or random, seeded from search.seed, the cell key and how many trials it already has: the same
    grid proposes the same points (exactly so with max_concurrent 1; with more, the order results
    arrive in also matters). A continued search needs a new seed: points added as evaluated do not
    move the sampler's random state, so the first seed would propose its first points again."""
    spec = cell["spec"]
    seed = (spec["search_seed"] * 1_000_003 + int(cell["key"][:8], 16) + evaluated * 7919) % 2**32
    if spec["algorithm"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def default_point(cell):
    """The method's default values of the searched params: the cell's first trial."""
    return {k: cell["spec"]["params"][k] for k in cell["spec"]["space"]}


def searcher(cell, done, max_concurrent):
    """The cell's ConcurrencyLimiter(OptunaSearch): the default point first unless `done` (the cell's
    evaluated trials, evaluated_trials below) has it; every done trial added as an evaluated point."""
    space = cell["spec"]["space"]
    optuna_search = OptunaSearch(space=distributions(space), metric="objective", mode="min",
                                 sampler=sampler_for(cell, len(done)),
                                 points_to_evaluate=None if any(t["default"] for t in done) else [default_point(cell)])
    for trial in done:
        optuna_search.add_evaluated_point(trial["params"], trial["objective"])   # as Tune tells Optuna: complete
    return ConcurrencyLimiter(optuna_search, max_concurrent=max_concurrent)


def evaluated_trials(client, experiment_id, parent_run_id, space):
    """Child runs of a cell that count: finished, or stopped early by ASHA; not those a dead driver left
    (KILLED by grid/execution/orphans.py: their points run again). [{params, objective, default, stopped}]"""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50_000)
    out = []
    for run in runs:
        tags, status = run.data.tags, run.info.status
        if status == "RUNNING":   # in flight elsewhere, or left by a dead driver (grid/execution/orphans.py marks those)
            continue
        stopped = tags.get("stopped_early") == "true"
        if "objective" not in run.data.metrics or not (status == "FINISHED" or stopped):
            continue
        out.append({"params": {k: search_space.typed_value(s, run.data.params[f"params.{k}"]) for k, s in space.items()},
                    "objective": run.data.metrics["objective"], "default": tags.get("default") == "true",
                    "stopped": stopped})
    return out


def find_parent(client, experiment_id, cell):
    """The cell's parent run from an earlier invocation (a rerun continues it), or None."""
    found = client.search_runs([experiment_id], f"tags.stage = 'search' and tags.key = '{cell['key']}'", max_results=1)
    return found[0] if found else None


def create_parent(client, experiment_id, cell, grid_name, reference, driver):
    """(`driver`: the driver's tags, trainables/trial.py driver_tags)"""
    """A new parent run for the cell: its fields as tags and params, Retrain's validation reference."""
    spec = cell["spec"]
    forget = ",".join(str(c) for c in spec["forget_classes"])
    tags = {"stage": "search", "grid": grid_name, "key": cell["key"], "dataset": spec["dataset"], "arch": spec["arch"],
            "forget_classes": forget, "method": spec["method"], "seed": str(spec["seed"]),
            "objective": spec["objective"], "split": spec["split"], "algorithm": spec["algorithm"],
            "searched_params": ",".join(sorted(spec["space"])), "neighbour_class": str(reference["neighbour_class"]),
            **driver,
            **{f"space.{k}": search_space.describe(s) for k, s in spec["space"].items()}}
    run = client.create_run(experiment_id, run_name=f"search/{spec['method']}/{spec['dataset']}/{spec['arch']}/f"
                            + forget.replace(",", "+"), tags=tags)
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in
                                              flatten({k: v for k, v in spec.items() if k != "space"}).items()])
    client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0) for k, v in
                                               {"retrain_acc_r_val": reference["acc_r"], "retrain_acc_f_val": reference["acc_f"],
                                                "mia_nn_reference_val": reference["mia_nn"]}.items()])
    return run


def best_of(trials):
    """The best of a cell's evaluated trials ({objective, default, stopped}, as evaluated_trials gives
    them): the lowest objective among those that ran to their end (a trial stopped early was measured
    before its last epoch); a tie keeps the default params."""
    return min((t for t in trials if not t["stopped"]), key=lambda t: (t["objective"], not t["default"]))


def finish_parent(client, experiment_id, parent_id, space):
    """Best params and objective on the parent run: the best trial that ran to its end (a trial stopped
    early was measured before its last epoch), the default point's objective beside it."""
    trials = evaluated_trials(client, experiment_id, parent_id, space)
    complete = [t for t in trials if not t["stopped"]]
    best = best_of(trials)
    default = next(t for t in trials if t["default"])
    client.log_batch(parent_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0) for k, v in
                                         {"best_objective": best["objective"], "default_objective": default["objective"],
                                          "trials": len(trials), "stopped_early": len(trials) - len(complete)}.items()])
    client.log_batch(parent_id, tags=[mlflow.entities.RunTag(f"best.{k}", str(v)) for k, v in best["params"].items()]
                     # full precision (repr): the tag reads the same number as the metric beside it
                     + [mlflow.entities.RunTag("best_objective", repr(float(best["objective"])))])
    client.set_terminated(parent_id, "FINISHED")
