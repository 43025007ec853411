"""Run a grid's stages on Ray Tune: original -> retrain -> unlearn (-> U-LiRA).

Each stage is one Tuner over its pending trials, short ones packed several to a Tune trial
(grid/plan/packing.py); a trial whose key already has a finished run (and, for originals/Retrain models,
stored weights) is skipped, so a rerun only runs what is missing. Each unlearn trial gets its forget
set's MIA-NN reference on its worker (trainables/references.py), the trials scheduled round-robin over
forget sets (grid/plan/order.py): nothing is computed on the driver between the stages. The U-LiRA
stage runs one Ray task per attack and logs each as it arrives.
"""
import contextlib
import logging
import os
import time

import ray
from ray import tune
from ray.tune.stopper import CombinedStopper

from grid.execution import capacity, connect, leases, orphans, retries, waiting
from grid.plan import order, packing
from grid.tracking import mlflow_runs
from grid.execution.parents import StageParents
from grid.execution.faults import StageFailed, TrackingWatch, discard_corrupt_models, error_line
from trainables import data, data_cache, models, plugins, references, store, tracking_http, uris
from trainables.trial import PackFailed, run_pack

# Tune warns whenever its experiment snapshot follows our per-epoch checkpoints closely; with short
# trials that is every trial, and the warning drowns the progress lines.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# Tune's new console output ignores verbose=0 and prints a box per stage; our Progress callback
# prints one line per trial instead.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune warns, with a line per trial, about trials that left no results: ones a stopped stage never
# started (TrackingWatch below); run_stage's own summary counts them
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def run_label(spec):
    """Human-readable MLflow run name, e.g. unlearn/trw(lam=10.0)/digits/small_cnn/f8/s0."""
    parts = [spec["stage"]]
    if spec["stage"] == "unlearn":
        params = ",".join(f"{k}={v}" for k, v in sorted(spec["params"].items()) if k in ("lam", "epochs", "lr"))
        parts.append(f"{spec['method']}({params})" if params else spec["method"])
    parts += [spec["dataset"], spec["arch"]]
    if "forget_classes" in spec:
        parts.append("f" + "+".join(str(c) for c in spec["forget_classes"]))
    parts.append(f"s{spec['seed']}" + (f"u{spec['unlearn_seed']}" if spec["stage"] == "unlearn" else ""))
    return "/".join(parts)


class Progress(tune.Callback):
    """One line per finished trial (a pack reports each of its trials as it finishes): count, run label
    (it starts with the stage), the metrics that matter, the trial's seconds. And one line per forget set
    when the first of its unlearn trials has the MIA-NN reference (trainables/trial.py reports it)."""

    def __init__(self, total, echo, packs=()):
        self.total, self.done, self.echo, self.packs = total, 0, echo, packs
        self.references = set()   # the forget sets whose reference line is printed

    def __getstate__(self):
        # Tune pickles callbacks into its experiment state (e.g. after a trial fails); `echo` may be
        # something that does not pickle (a patched print, a bound method): it is not state
        return {"total": self.total, "done": self.done, "references": self.references}

    def __setstate__(self, state):
        self.__dict__.update({"references": set(), **state}, echo=print, packs=())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "reference" in result:
            self._reference(result)
        if not result.get("finished"):   # a checkpoint's report during training, the reference's report
            return
        self.done += 1
        shown = {k: result[k] for k in ("acc_test", "acc_r_test", "acc_f_test", "mia_svm", "mia_nn") if k in result}
        metrics = " ".join(f"{k}={v:.1f}" for k, v in shown.items())
        self.echo(f"  [{self.done}/{self.total}] {result['run_name']} {metrics} ({result.get('wall_seconds', 0):.1f}s)")

    def _reference(self, result):
        if result["reference"] in self.references:
            return
        self.references.add(result["reference"])
        how = (f"computed on a worker in {result['reference_seconds']:.1f}s" if result["reference_computed"]
               else "stored")
        self.echo(f"  MIA-NN reference {result['reference']}: c*={result['neighbour_class']} "
                  f"A_c*={result['reference_score']:.1f} ({how})")

    def on_trial_error(self, iteration, trials, trial, **info):
        pack = self.packs[trial.config["pack"]] if len(self.packs) > trial.config["pack"] else []
        names = [t["context"]["run_name"] for t in pack] or [f"pack {trial.config['pack']}"]
        self.echo(f"  FAILED {names[0]}" + (f" (or another of its pack of {len(names)})" if len(names) > 1 else ""))


# what an unlearn trial's context takes from its plan entry (grid/plan/config.py expand): the keys of the
# models it reads (stored under model keys) and of the Retrain runs it names, and their seeds
UNLEARN_CONTEXT = ("original_key", "retrain_keys", "retrain_model_keys", "retrain_seeds")


def unlearn_context(trial):
    """The context fields an unlearn trial of the plan needs (UNLEARN_CONTEXT), lists copied."""
    return {name: list(trial[name]) if isinstance(trial[name], list) else trial[name] for name in UNLEARN_CONTEXT}


def run_stage(stage, trials, contexts, resources, storage, echo):
    configs = [{"spec": t["spec"], "key": t["key"], "model_key": t.get("model_key", t["key"]), "context": contexts[t["key"]]}
               for t in trials]
    packs = packing.packs(configs, packing.slots(resources, *capacity.clusters()))
    # The packs go to the object store once (with_parameters); a Tune trial's config is its pack's
    # index. As configs, Tune copied every trial's spec and context into each experiment snapshot: 56 MB
    # rewritten again and again at 5,000 trials, which took a core from the trials (bench/scale.py).
    trainable = tune.with_resources(tune.with_parameters(run_pack, packs=packs),
                                    {"cpu": resources["cpu"], "gpu": resources["gpu"]})
    watch = TrackingWatch(configs[0]["context"]["tracking_uri"], echo)
    progress = Progress(len(configs), echo, packs)
    retrying = retries.Retries(lambda trial: _pack_names(trial, packs), echo)
    tuner = tune.Tuner(
        trainable,
        param_space={"pack": tune.grid_search(list(range(len(packs))))},
        tune_config=tune.TuneConfig(reuse_actors=True),   # ~0.5 s per trial instead of ~4 s
        run_config=tune.RunConfig(
            name=f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",   # two drivers may start in one second
            storage_path=store.join(storage, "ray"),   # a folder or a bucket URI, as our own storage
            # retried without limit here, limited by kind in `retrying` (grid/execution/retries.py); a
            # retried trial resumes from its checkpoint in storage (trainables/checkpoints.py)
            failure_config=tune.FailureConfig(max_failures=-1),
            callbacks=[progress, watch, retrying, waiting.Waiting(resources, echo)],
            stop=CombinedStopper(watch, retrying),
            verbose=0),
    )
    results = tuner.fit()
    if watch.outage is not None:
        finished = progress.done
        raise StageFailed(f"the MLflow tracking server {uris.masked(watch.tracking_uri)} stopped answering during the {stage} "
                          f"stage ({watch.outage}): {finished} of {len(configs)} trials finished, the others failed, "
                          f"were stopped or never started; run the same `unlearn-grid run` again once it answers "
                          f"(finished trials are not run again)")
    failed = [f"  {line}" for r in results if r.error for line in _failed_trials(r, packs)]
    failed += [f"  {line}" for lines in retrying.given_up.values() for line in lines.splitlines()]
    if failed:
        raise StageFailed(f"{len(failed)} {stage} trial(s) failed:\n" + "\n".join(failed))


def _pack_names(trial, packs):
    """The run names of a Tune trial's pack ([] when its config is not known)."""
    index = (trial.config or {}).get("pack")
    return [t["context"]["run_name"] for t in packs[index]] if index is not None and index < len(packs) else []


def _failed_trials(result, packs):
    """A line per failed trial of a failed pack: its own lines (PackFailed), or, when the pack itself
    failed (its worker died), its trials named with the pack's error; a pack whose actor never
    started has no config: named by its Tune folder."""
    cause = getattr(result.error, "cause", None) or result.error   # a RayTaskError carries the trial's exception
    if isinstance(cause, PackFailed):
        return str(cause).strip().splitlines()
    names = [t["context"]["run_name"] for t in packs[result.config["pack"]]] if result.config else [result.path]
    return [f"{name}: {error_line(result.error)}" for name in names]


def run_ulira(plan, tracking_uri, experiment_id, storage, echo, claims, parents, start_ray):
    """The U-LiRA stage: per attack, a Ray task computes φ of the forget-set training samples under the
    K in (unlearned) and K out (Retrain) models from storage -> accuracy, AUC and TPR at the grid's
    FPRs, each with its spread (trainables/references.py ulira_attack); the driver logs each as a run
    as it arrives: metrics ulira_<statistic> and ulira_<statistic>_{std,n,ci_low,ci_high}, the variance
    used (param `variance`, tag `ulira_variance`) and the per-sample log likelihood ratios as the
    artifact ulira_llr.npz. An attack that fails does not stop the others: the stage fails at the end,
    naming it."""
    import tempfile

    import mlflow
    import numpy as np
    from trainables.trial import flatten

    def pending():
        return mlflow_runs.pending(plan.ulira, "ulira", tracking_uri, experiment_id, storage)
    todo = pending()
    echo(f"stage ulira: {len(todo)} to run, {len(plan.ulira) - len(todo)} already finished")
    mlflow.set_tracking_uri(tracking_uri)

    def log(attack, result):
        spec = attack["spec"]
        label = f"ulira/{spec['method']}/{spec['dataset']}/{spec['arch']}/f" + "+".join(map(str, spec["forget_classes"]))
        with mlflow.start_run(experiment_id=experiment_id, run_name=label,
                              tags={"mlflow.parentRunId": parents.run_id("ulira", 1)}):
            mlflow.set_tags({"stage": "ulira", "method": spec["method"], "dataset": spec["dataset"],
                             "arch": spec["arch"], "forget_classes": ",".join(map(str, spec["forget_classes"])),
                             "key": attack["key"], "grid": plan.name,
                             "in_keys": ",".join(attack["in_keys"]), "out_keys": ",".join(attack["out_keys"])})
            mlflow.set_tags({"ulira_variance": result.variance, "ulira_models": str(len(attack["in_keys"]))})
            mlflow.log_params(flatten(spec))
            mlflow.log_metrics({**spread_metrics(result.spreads),
                                **{"ulira_accuracy": result.accuracy, "ulira_auc": result.auc}})
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "ulira_llr.npz")
                # [i, j]: the pair (in model i, out model j) held out: in model i's N forget samples, then out j's N
                np.savez_compressed(path, llr=result.llr.astype(np.float32), in_keys=np.array(attack["in_keys"]),
                                    out_keys=np.array(attack["out_keys"]))
                mlflow.log_artifact(path)
        tprs = " ".join(f"{name[len('tpr_at_'):]}:{s.mean:.1f}" for name, s in result.spreads.items()
                        if name.startswith("tpr_at_"))
        echo(f"  [ulira] {label} accuracy={result.accuracy:.1f} auc={result.auc:.1f} tpr@fpr {tprs} ({result.variance})")

    def run(attacks):
        start_ray()
        # numpy over the forget samples of a few models: one core each. No trial runs during this stage,
        # so the tasks cannot wait on resources that trials hold.
        attack_task = ray.remote(references.ulira_attack).options(num_cpus=1, num_gpus=0)
        running = {attack_task.remote(storage, a["in_keys"], a["out_keys"], a["spec"]["variance"],
                                      a["spec"].get("fprs")): a
                   for a in attacks}
        failed = []
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            attack = running.pop(done)
            try:
                result = ray.get(done)
            except Exception as error:   # a RayTaskError carries the task's exception
                failed.append(f"  {attack['key']} (in {','.join(attack['in_keys'])}): {error_line(error)}")
                continue
            log(attack, result)
        if failed:
            raise StageFailed(f"{len(failed)} U-LiRA attack(s) failed:\n" + "\n".join(failed))
    return len(leases.run_claimed("stage ulira", pending, run, claims, echo, todo=todo))


def spread_metrics(spreads):
    """{statistic: analysis.ulira.Spread} -> MLflow metrics: ulira_<statistic> (the mean; NaN when not
    measurable, e.g. a TPR at an FPR with too few negatives) and _std, _n, _ci_low, _ci_high."""
    metrics = {}
    for statistic, spread in spreads.items():
        name = f"ulira_{statistic}"
        metrics.update({name: spread.mean, f"{name}_std": spread.std, f"{name}_n": spread.n,
                        f"{name}_ci_low": spread.ci_low, f"{name}_ci_high": spread.ci_high})
    return metrics


def worker_env(tracking_uri):
    """The environment every trial's worker gets, also on other nodes: MLflow's bounded retries, and the
    UNLEARN_GRID_* variables (plugins and their settings, trainables/plugins.py)."""
    return {**tracking_http.retry_budget(tracking_uri), **plugins.worker_env()}


def check_data_available(plan, data_root, weights):
    """data_cache.DataUnavailable (one line) unless every dataset of the plan, and the weights file when
    an arch starts from pretrained weights, is staged in the bucket or present in the local folder."""
    for dataset in plan.grid["datasets"]:
        data_cache.check_available(dataset, data_root, plan.grid["data"]["download"])
    if weights and any(arch in models.PRETRAINED for arch in plan.grid["archs"]):
        data_cache.check_file_available(weights)


def run_grid(plan, tracking_uri, storage, address=None, echo=print):
    """Run every pending trial of `plan`; returns {stage: number of trials run}."""
    storage = store.resolve(storage)
    # a tracking server that does not answer: one line now, not minutes of MLflow retries, nothing written
    tracking_http.check_reachable(tracking_uri)
    # the driver's own MLflow requests give up after about a minute (a local Ray's workers inherit it)
    os.environ.update(tracking_http.retry_budget(tracking_uri))
    connect.check_reachable(address)   # a cluster that is gone: one line now, not a hang, nothing written
    # absolute: Tune runs each trial in its own working directory; a bucket URI stays as it is
    data_root = store.resolve(plan.grid["data"]["root"] or data.DEFAULT_DATA_ROOT)
    weights = plan.grid["data"]["weights"] and store.resolve(plan.grid["data"]["weights"])
    check_data_available(plan, data_root, weights)   # data the workers cannot read: one line now, nothing written
    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, plan.name)
    grid = plan.grid
    base_context = {"grid": plan.name, "tracking_uri": tracking_uri, "experiment_id": experiment_id,
                    "driver": orphans.this_driver(),
                    "worker_env": worker_env(tracking_uri),
                    "storage": storage, "download": grid["data"]["download"],
                    "data_root": data_root, "weights": weights,
                    "use_gpu": grid["resources"]["gpu"] > 0, "gpu": grid["resources"]["gpu"],
                    "cpus": grid["resources"]["cpu"], "fast_path": grid["resources"]["fast_path"],
                    "compile": grid["resources"]["compile"],
                    "checkpoint_minutes": grid["checkpoint_minutes"]}
    parents = StageParents(tracking_uri, experiment_id, plan.name, base_context["driver"], uris.without_secrets(storage))
    with leases.Leases(storage, base_context["driver"]) as claims:
        # inside the leases: our own heartbeat is written, so the store's clock says how old theirs are
        now = claims.store_now()
        orphaned = orphans.mark_orphans(tracking_uri, experiment_id, storage, lambda driver: claims.gone(driver, now))
        if orphaned:
            echo(f"marked {orphaned} run(s) KILLED that a dead driver (this machine's, or one whose heartbeat in "
                 f"this storage stopped) left RUNNING")
        discard_corrupt_models(plan, tracking_uri, experiment_id, storage, echo, claims)   # retrained below
        try:
            return _run_stages(plan, base_context, storage, address, claims, echo, parents)
        except BaseException as error:
            # one attempt, errors ignored: the tracking server may be what failed (a parent left
            # RUNNING is marked KILLED by the next run, grid/execution/orphans.py)
            with tracking_http.single_attempt(), contextlib.suppress(Exception):
                parents.end_all("FAILED" if isinstance(error, Exception) else "KILLED")
            raise


def _run_stages(plan, base_context, storage, address, claims, echo, parents):
    """The stages of run_grid, each through leases.run_claimed: the keys another driver is running
    are waited for, not run twice."""
    grid, tracking_uri, experiment_id = plan.grid, base_context["tracking_uri"], base_context["experiment_id"]
    counts = {}
    checked = []

    def start_ray():
        """Ray only when something runs (a finished grid reruns in seconds); then, once, whether a
        node can run a trial at all (Ray would wait forever)."""
        if not ray.is_initialized():
            connect.init(address)
        if not checked:
            capacity.check(grid["resources"], address, echo)
            checked.append(True)

    def run_group(name, batch):
        start_ray()
        contexts = {}
        for trial in batch:
            context = {**base_context, "run_name": run_label(trial["spec"]),
                       "parent_run_id": parents.run_id(trial["spec"]["stage"], 1)}
            if trial["spec"]["stage"] == "unlearn":   # the trial gets its MIA-NN reference itself
                context.update(unlearn_context(trial))
            contexts[trial["key"]] = context
        if name == "unlearn":   # the first slots compute different forget sets' references side by side
            batch = order.round_robin(batch)
        run_stage(name, batch, contexts, grid["resources"], storage, echo)
        for trial in batch:
            counts[trial["spec"]["stage"]] += 1

    # originals and Retrain models do not depend on each other: one Tuner runs both, which saves a
    # round of worker start-up (~8 s on 2 cores); unlearn trials need both, so they come after
    # a search grid has no unlearn stage: its search cells run after the models they tune on
    groups = (("train", ("original", "retrain")),) + ((("unlearn", ("unlearn",)),) if not plan.search else ())
    stages = plan.stages()
    for name, group in groups:
        def pending(group=group):
            return [t for stage in group
                    for t in mlflow_runs.pending(stages[stage], stage, tracking_uri, experiment_id, storage)]
        todo = pending()
        for stage in group:
            waiting = sum(t["spec"]["stage"] == stage for t in todo)
            echo(f"stage {stage}: {waiting} to run, {len(stages[stage]) - waiting} already finished")
            counts[stage] = 0
        leases.run_claimed(f"stage {name}", pending, lambda batch, name=name: run_group(name, batch), claims, echo,
                           todo=todo)
        parents.end(group)
    if plan.search:
        from grid.execution import search   # Optuna is imported only when a grid searches
        start_ray()
        counts["search"] = search.run_searches(plan, base_context, grid["resources"], storage, echo, claims, parents)
        parents.end(["search"])
    if plan.ulira:
        counts["ulira"] = run_ulira(plan, tracking_uri, experiment_id, storage, echo, claims, parents, start_ray)
        parents.end(["ulira"])
    return counts
