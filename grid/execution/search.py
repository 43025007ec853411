"""Run a grid's searches on Ray Tune, one cell after another (grid/plan/search_space.py says what a cell is).

Per cell: Optuna's TPE (or random) sampler through Ray's OptunaSearch, seeded from the grid's
search.seed and the cell, behind a ConcurrencyLimiter; ASHA over epochs when early_stopping is set.
The method's default params are the first point and ASHA never stops them: the search can only match
or beat the default. MLflow: a parent run per cell (stage=search), every trial a child run.

Resume: a rerun skips cells whose parent run finished its budget, and a cell that was interrupted
continues — its finished child runs go back into a fresh Optuna study as evaluated points (trials
stopped early count with the objective they reached), and only the rest of the budget runs.
"""
import os
import time

import mlflow
import optuna
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from analysis import objective
from grid.execution import leases
from grid.plan import search_space
from grid.execution.faults import StageFailed, error_line
from trainables import data, store
from trainables.evaluate import svm_class_weight
from trainables.search_trial import run_search_trial
from trainables.trial import flatten

optuna.logging.set_verbosity(optuna.logging.WARNING)   # one line per trial comes from SearchProgress
REDUCTION_FACTOR = 3   # ASHA keeps the best third at each rung: grace 2 -> rungs at epochs 2, 6, 18


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


class SparingDefault(ASHAScheduler):
    """ASHA that never stops the default point: it is the baseline every other trial is compared with."""

    def __init__(self, default, **options):
        super().__init__(**options)
        self.default = default

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)   # records the result at its rung
        if all(trial.config.get(k) == v for k, v in self.default.items()):
            return TrialScheduler.CONTINUE
        return decision


class SearchProgress(tune.Callback):
    """One line per trial; tags the child runs ASHA stopped (their trainable may never report again)."""

    def __init__(self, client, total, echo, space):
        self.client, self.total, self.echo, self.space, self.done = client, total, echo, space, 0

    def __getstate__(self):   # as stages.Progress: Tune pickles callbacks; echo and the client are not state
        return {"tracking_uri": self.client.tracking_uri,
                "total": self.total, "space": self.space, "done": self.done}

    def __setstate__(self, state):
        uri = state.pop("tracking_uri")
        self.__dict__.update(state, echo=print, client=MlflowClient(uri))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        result = trial.last_result or {}
        stopped = not result.get("finished")
        if stopped and result.get("run_id"):
            self.client.set_tag(result["run_id"], "stopped_early", "true")
            if self.client.get_run(result["run_id"]).info.status == "RUNNING":
                self.client.set_terminated(result["run_id"], "KILLED")
        values = ", ".join(f"{k}={trial.config[k]:.3g}" if isinstance(trial.config[k], float) else f"{k}={trial.config[k]}"
                           for k in self.space)
        self.echo(f"  [{self.done}/{self.total}] {values}: objective={result.get('objective', float('nan')):.2f} "
                  f"at epoch {result.get('epoch', '?')}" + (" (stopped early)" if stopped else ""))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.echo(f"  [{self.done}/{self.total}] FAILED {trial.config and {k: trial.config.get(k) for k in self.space}}")


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


def _parent_run(client, experiment_id, cell, grid_name, reference, driver):
    """The cell's parent run: the existing one (a rerun continues it) or a new one."""
    found = client.search_runs([experiment_id], f"tags.stage = 'search' and tags.key = '{cell['key']}'", max_results=1)
    if found:
        client.set_tag(found[0].info.run_id, "driver", driver)
        return found[0]
    spec = cell["spec"]
    forget = ",".join(str(c) for c in spec["forget_classes"])
    tags = {"stage": "search", "grid": grid_name, "key": cell["key"], "dataset": spec["dataset"], "arch": spec["arch"],
            "forget_classes": forget, "method": spec["method"], "seed": str(spec["seed"]),
            "objective": spec["objective"], "split": spec["split"], "algorithm": spec["algorithm"],
            "searched_params": ",".join(sorted(spec["space"])), "neighbour_class": str(reference["neighbour_class"]),
            "driver": driver,
            **{f"space.{k}": search_space.describe(s) for k, s in spec["space"].items()}}
    run = client.create_run(experiment_id, run_name=f"search/{spec['method']}/{spec['dataset']}/{spec['arch']}/f"
                            + forget.replace(",", "+"), tags=tags)
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in
                                              flatten({k: v for k, v in spec.items() if k != "space"}).items()])
    client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0) for k, v in
                                               {"retrain_acc_r_val": reference["acc_r"], "retrain_acc_f_val": reference["acc_f"],
                                                "mia_nn_reference_val": reference["mia_nn"]}.items()])
    return run


def validation_reference(storage, cell):
    """Retrain's side of the objective: its stored test logits on the validation half of the test split."""
    spec = cell["spec"]
    logits, labels = store.load_logits(storage, cell["retrain_key"])
    validation = data.holdout_split(labels, spec["evaluation"]["seed"]).validation
    return objective.reference(logits[validation], labels[validation], spec["forget_classes"],
                               svm_class_weight(spec["evaluation"]))


def run_cell(cell, budget, base_context, resources, storage, echo, parents):
    """Search one cell to its budget; returns the number of trials run now."""
    spec, space = cell["spec"], cell["spec"]["space"]
    client = MlflowClient(base_context["tracking_uri"])
    experiment_id = base_context["experiment_id"]
    reference = validation_reference(storage, cell)
    parent = _parent_run(client, experiment_id, cell, base_context["grid"], reference, base_context["driver"])
    parent_id = parent.info.run_id
    done = evaluated_trials(client, experiment_id, parent_id, space)
    label = parent.info.run_name
    if len(done) >= budget["samples"] and parent.info.status == "FINISHED":
        echo(f"  {label}: finished ({len(done)} trials)")
        return 0
    client.update_run(parent_id, status="RUNNING")
    default = {k: spec["params"][k] for k in space}
    remaining = budget["samples"] - len(done)
    echo(f"  {label}: {remaining} trials to run, {len(done)} already evaluated; Retrain on validation: "
         f"Acc_r {reference['acc_r']:.1f}, Acc_f {reference['acc_f']:.1f}, c*={reference['neighbour_class']} "
         f"A_c*={reference['mia_nn']:.1f}")
    if remaining > 0:
        # the cell's parent (kept across reruns) goes under this invocation's search parent (grid/execution/parents.py)
        client.set_tag(parent_id, "mlflow.parentRunId", parents.run_id("search", remaining))
        searcher = OptunaSearch(space=distributions(space), metric="objective", mode="min", sampler=sampler_for(cell, len(done)),
                                points_to_evaluate=None if any(t["default"] for t in done) else [default])
        for trial in done:
            searcher.add_evaluated_point(trial["params"], trial["objective"])   # as Tune tells Optuna: complete
        scheduler = None
        if budget["grace_epochs"]:
            scheduler = SparingDefault(default, time_attr="epoch", metric="objective", mode="min",
                                       max_t=search_space.max_epochs(spec), grace_period=budget["grace_epochs"],
                                       reduction_factor=REDUCTION_FACTOR)
        context = {**base_context, "parent_run_id": parent_id, "reference": reference,
                   "original_key": cell["original_key"]}
        tuner = tune.Tuner(
            tune.with_resources(run_search_trial, {"cpu": resources["cpu"], "gpu": resources["gpu"]}),
            param_space={"cell": {"spec": spec, "key": cell["key"], "context": context}},
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=budget["max_concurrent"]),
                                        scheduler=scheduler, num_samples=remaining, reuse_actors=True),
            run_config=tune.RunConfig(name=f"search-{cell['key']}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                                      storage_path=store.join(storage, "ray"),
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[SearchProgress(client, remaining, echo, space)], verbose=0))
        # Tune lets a non-random searcher keep only one trial pending by default, so an autoscaling
        # cluster would see a demand of one trial at a time: let it see the search's real concurrency
        previous = os.environ.get("TUNE_MAX_PENDING_TRIALS_PG")
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(budget["max_concurrent"]))
        try:
            results = tuner.fit()
        finally:
            if previous is None:
                os.environ.pop("TUNE_MAX_PENDING_TRIALS_PG", None)
        if results.num_errors:
            client.set_terminated(parent_id, "FAILED")
            raise StageFailed(f"{results.num_errors} search trial(s) of {label} failed:\n"
                              + "\n".join(f"  {error_line(r.error)}" for r in results if r.error))
    finish_parent(client, experiment_id, parent_id, space)
    return max(remaining, 0)


def finish_parent(client, experiment_id, parent_id, space):
    """Best params and objective on the parent run: the best trial that ran to its end (a trial stopped
    early was measured before its last epoch), the default point's objective beside it."""
    trials = evaluated_trials(client, experiment_id, parent_id, space)
    complete = [t for t in trials if not t["stopped"]]
    best = min(complete, key=lambda t: (t["objective"], not t["default"]))   # a tie keeps the default params
    default = next(t for t in trials if t["default"])
    client.log_batch(parent_id, metrics=[mlflow.entities.Metric(k, float(v), int(time.time() * 1000), 0) for k, v in
                                         {"best_objective": best["objective"], "default_objective": default["objective"],
                                          "trials": len(trials), "stopped_early": len(trials) - len(complete)}.items()])
    client.log_batch(parent_id, tags=[mlflow.entities.RunTag(f"best.{k}", str(v)) for k, v in best["params"].items()]
                     + [mlflow.entities.RunTag("best_objective", f"{best['objective']:.4f}")])
    client.set_terminated(parent_id, "FINISHED")


def run_searches(plan, base_context, resources, storage, echo, claims, parents):
    """Every search cell of the plan, in order, each claimed first (a cell another driver is searching
    is waited for, then found finished); returns the number of search trials run."""
    search = plan.grid["search"]
    budget = {"samples": search["samples"], "max_concurrent": search["max_concurrent"],
              "grace_epochs": search["grace_epochs"]}
    echo(f"stage search: {len(plan.search)} cells, {budget['samples']} trials each, objective {search['objective']} "
         f"on the validation split")
    searched, trials = set(), []

    def run(cells):
        for cell in cells:
            trials.append(run_cell(cell, budget, base_context, resources, storage, echo, parents))
            searched.add(cell["key"])
    leases.run_claimed("stage search", lambda: [c for c in plan.search if c["key"] not in searched], run, claims, echo)
    return sum(trials)
