"""The Ray Tune trainable: run a pack of trials (original / retrain / unlearn), each logged to MLflow as its own run.

config["pack"] = the index of its pack in the stage's packs, each [trial, ...] (grid/plan/packing.py: one,
or several short ones); trial = {"spec": the
defining config (its hash is the key: the MLflow run's), "key": ..., "model_key": the key its model and
logits are stored under (trainables/keys.py), "context": runtime settings that do not change the
result: tracking URI, experiment id, storage, data root; an unlearn trial's original and Retrain keys}.
An unlearn trial gets its MIA-NN reference itself (trainables/references.py). Ray and MLflow appear
here and in grid/ only.
"""
import contextlib
import functools
import json
import logging
import os
import platform
import socket
import time

import mlflow
import ray
import torch
from mlflow.entities import Metric, Param, RunTag
from ray import tune

from analysis import diagnostics, statistics
from trainables import (checkpoints, data, gpu_memory, interruption, methods, models, plugins, references, store,
                        tracking_http, uris)
from trainables.evaluate import evaluate_forgetting, evaluate_overall
from trainables.recipe import Recipe
from trainables.train import seed_everything, speed_for, train_classifier

log = logging.getLogger(__name__)

def flatten(spec, prefix=""):
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists become comma-joined strings (MLflow params)."""
    out = {}
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = value
    return out


# The hyperparameters users put on a chart axis, under one name in every stage: λ, T, the epochs and
# learning rate of the unlearning method (of the training recipe for originals/Retrain models). MLflow
# keeps params as strings; its parallel-coordinates plot draws an axis as numbers only when every
# value parses as one, so None and lists are left out.
COMPARED_PARAMS = {"lam": "lam", "T": "temperature", "epochs": "epochs", "lr": "lr"}


def compared_params(spec):
    """{'lam': 10.0, 'T': 0.1, 'epochs': 10, 'lr': 0.01}: what of COMPARED_PARAMS the trial has, as numbers."""
    source = spec["params"] if spec["stage"] in ("unlearn", "search_trial") else spec.get("train", {})
    return {name: source[key] for name, key in COMPARED_PARAMS.items()
            if isinstance(source.get(key), (int, float)) and not isinstance(source.get(key), bool)}


def driver_tags(context):
    """The tags naming who scheduled a run: `driver` (HOST:PID of its `unlearn-grid run`) and `storage`
    (that driver's storage, secrets dropped: its lease heartbeats are there). A RUNNING run whose driver
    is gone is marked KILLED by the next driver on that storage (grid/execution/orphans.py)."""
    return {"driver": context.get("driver", ""), "storage": uris.without_secrets(context.get("storage", ""))}


def model_key(trial):
    """The key the trial's model and logits are stored under (trainables/keys.py); a trial built without
    one (tools, older callers) stores under its trial key."""
    return trial.get("model_key", trial["key"])


def tags_for(trial):
    spec, context = trial["spec"], trial["context"]
    method = {"original": "original", "retrain": "retrain"}.get(spec["stage"], spec.get("method"))
    tags = {"stage": spec["stage"], "dataset": spec["dataset"], "arch": spec["arch"], "seed": str(spec["seed"]),
            "key": trial["key"], "model_key": model_key(trial), "grid": context["grid"], "method": method,
            "forget_classes": ",".join(str(c) for c in spec.get("forget_classes", []))}
    if spec.get("role"):   # e.g. ulira_bank: a U-LiRA bank model, left out of the tables (grid/tracking/mlflow_runs.py)
        tags["role"] = spec["role"]
    if context.get("parent_run_id"):   # the invocation's parent run of this stage (grid/execution/parents.py)
        tags["mlflow.parentRunId"] = context["parent_run_id"]
    if spec["stage"] == "unlearn":
        # retrain_keys: the Retrain runs' keys (reports join on them); retrain_model_keys: their stored logits
        tags.update(original_key=context["original_key"], retrain_keys=",".join(context["retrain_keys"]),
                    retrain_model_keys=",".join(context["retrain_model_keys"]),
                    unlearn_seed=str(spec["unlearn_seed"]))
    return tags


def placement_tags():
    """Where this attempt runs: host, Ray node, the GPU ids Ray assigned (empty for CPU trials) and the
    worker's pid. Set on every attempt, so a retried trial records where it finished. (The driver
    that scheduled it is tagged when its run is created: grid/execution/orphans.py.)"""
    runtime = ray.get_runtime_context()
    return {"hostname": socket.gethostname(), "ray_node_id": runtime.get_node_id(),
            "gpu_ids": ",".join(str(i) for i in runtime.get_accelerator_ids().get("GPU", [])),
            "pid": str(os.getpid())}


def device_for(context):
    device = torch.device("cuda" if context.get("use_gpu") and torch.cuda.is_available() else "cpu")
    share = float(context.get("gpu", 0))
    if device.type == "cuda" and 0 < share < 1:
        # a fractional trial keeps to its share of the GPU's memory less its process's CUDA context
        # (outside the allocator's cap), so trials packed on one GPU fail alone (CUDA OOM) instead of
        # starving each other
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(gpu_memory.allocator_fraction(share, total), device)
    return device


def speed_for_context(context, device):
    return speed_for(device, context.get("fast_path", "auto"), context.get("compile", False))


def checkpoint_timer(context):
    """A function that says True when `checkpoint_minutes` have passed since its last True, and at every
    epoch end once the node has a spot interruption notice (trainables/interruption.py)."""
    interval = 60.0 * context.get("checkpoint_minutes", 5)
    last = [time.monotonic()]

    def due():
        if time.monotonic() - last[0] < interval and not interruption.checkpoint_now():
            return False
        last[0] = time.monotonic()
        return True
    return due


def method_checkpoint(context, key, run_id, stage):
    """(checkpoint, due): `checkpoint(make_state)` is what an UnlearnTask calls at each epoch end of its
    method's loop (methods/task.py end_epoch): it saves make_state() as the key's checkpoint when
    `due()` (checkpoint_timer) says so."""
    due = checkpoint_timer(context)

    def checkpoint(make_state):
        if due():
            checkpoints.save(context["storage"], key, {"key": key, "run_id": run_id, "stage": stage,
                                                       "method": make_state()})
    return checkpoint, due


def saved_state(trial):
    """The trial's checkpoint (trainables/checkpoints.py) when it continues an MLflow run that still
    exists, else {} (a first attempt; or the run was deleted since: the trial starts over)."""
    saved = checkpoints.load(trial["context"]["storage"], trial["key"]) or {}
    if not saved:
        return {}
    try:
        if mlflow.MlflowClient().get_run(saved["run_id"]).info.lifecycle_stage == "active":
            return saved
    except mlflow.exceptions.MlflowException:
        pass
    checkpoints.delete(trial["context"]["storage"], trial["key"])
    return {}


def _raise_if_tracking_down(context, error):
    """After `error`: raise TrackingUnreachable (one line) when the tracking server does not answer now,
    instead of MLflow's paragraph after its retries. The trial's run is ended FAILED in one attempt;
    when that fails too it stays RUNNING until the next `run`'s driver marks it KILLED (grid/execution/orphans.py)."""
    reason = tracking_http.probe(context["tracking_uri"])
    if reason is None:
        return
    with tracking_http.single_attempt(), contextlib.suppress(Exception):
        mlflow.end_run("FAILED")
    raise tracking_http.TrackingUnreachable(f"the MLflow tracking server {context['tracking_uri']} does not answer "
                                            f"({reason}): this trial cannot log its run") from error


class PackFailed(RuntimeError):
    """Trials of a pack that failed, a line each ("run name: Error: message"): Tune retries the pack
    (the trials that finished are skipped), then the driver's summary lists the lines."""


def run_pack(config, packs):
    """Ray Tune function trainable: the trials of packs[config["pack"]] (grid/plan/packing.py; the packs
    come through tune.with_parameters) one after another, each its own MLflow run, each reported to
    Tune when it finishes. A retried pack resumes: trials that finished in an earlier attempt are
    skipped, the trial its checkpoint names resumes from it, the ones that failed run again. A failed
    trial does not stop the others; the pack fails at the end."""
    pack = packs[config["pack"]]
    context = pack[0]["context"]
    # where this attempt runs, before anything else: if its node dies, the driver tells a lost node
    # (retried without limit) from a failure on a live one (grid/execution/retries.py)
    # where this attempt runs: its node (retries: was it lost?) and its worker (node IP, pid), whose
    # output the driver keeps (grid/execution/worker_logs.py)
    tune.report({"attempt_node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else "",
                 "attempt_worker": f"{ray.util.get_node_ip_address() if ray.is_initialized() else ''} {os.getpid()}"})
    torch.set_num_threads(max(1, int(context.get("cpus", 1))))
    plugins.apply_worker_env(context.get("worker_env", {}))   # MLflow's bounded retries, plugins (grid/execution/stages.py)
    mlflow.set_tracking_uri(context["tracking_uri"])
    failures = []
    for trial in pack:
        if _finished_before(trial):
            continue
        try:
            metrics = run_trial(trial, saved_state(trial))
        except tracking_http.TrackingUnreachable:   # the next trial would fail the same way
            raise
        except Exception as error:
            failures.append(f"{trial['context']['run_name']}: {type(error).__name__}: {_last_line(error)}")
            continue
        # not "done": Tune ends a trial that reports done=True
        tune.report({**metrics, "run_name": trial["context"]["run_name"], "finished": True})
    if failures:
        raise PackFailed("\n".join(failures))


def _last_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _finished_before(trial):
    """True when an earlier attempt of this pack finished the trial: its result is stored and its run
    FINISHED. The storage check comes first: on a first attempt nothing is stored and MLflow is not asked."""
    context = trial["context"]
    if not store.has_model(context["storage"], model_key(trial)):
        return False
    found = mlflow.MlflowClient().search_runs(
        [context["experiment_id"]], f"tags.key = '{trial['key']}' and attributes.status = 'FINISHED'", max_results=1)
    return len(found) > 0


def run_trial(trial, saved):
    """One trial: its MLflow run (resumed when `saved` names one) and its stage; returns its final metrics."""
    spec, context = trial["spec"], trial["context"]
    started = time.perf_counter()
    try:
        # one request creates the run with every tag: the driver tag must go in with the run itself, as a
        # run created just before the tracking server or the driver dies must still be recognisable as
        # an orphan (grid/execution/orphans.py)
        tags = {**tags_for(trial), **driver_tags(context), **placement_tags()}
        run = mlflow.start_run(run_id=saved.get("run_id"), experiment_id=context["experiment_id"],
                               run_name=None if saved else context["run_name"], tags=None if saved else tags)
    except Exception as error:
        _raise_if_tracking_down(context, error)
        raise
    try:
        if saved:
            mlflow.set_tags(placement_tags())   # where this attempt runs
        else:
            mlflow.log_params({**flatten(spec), **compared_params(spec)})
        stage = {"original": _train_stage, "retrain": _train_stage, "unlearn": _unlearn_stage}[spec["stage"]]
        metrics = stage(trial, saved, run.info.run_id, started)
        mlflow.end_run("FINISHED")
        checkpoints.delete(context["storage"], trial["key"])   # finished: the next run skips it
    except BaseException as error:
        if isinstance(error, Exception):
            _raise_if_tracking_down(context, error)
        mlflow.end_run("FAILED")
        raise
    return metrics


def _train_stage(trial, saved, run_id, started):
    spec, context = trial["spec"], trial["context"]
    device = device_for(context)
    dataset = data.load(spec["dataset"], context.get("data_root"), context.get("download", False))
    x, y = dataset.train_x, dataset.train_y
    forget_classes = spec.get("forget_classes", [])
    split, tags = None, {}   # tags: logged with the final metrics, in one request
    if spec["stage"] == "retrain":
        split = data.forget_split(y.numpy(), forget_classes)
        x, y = x[split.retain], y[split.retain]
        tags = {"split_hash": split.hash, **_evaluation_split_tags(spec["evaluation"], dataset.test_y.numpy())}
    stored = _stored_state(trial)
    if stored is not None:   # trained by another grid (evaluated another way): only evaluate it here
        model = models.build(spec["arch"], dataset.info.num_classes, dataset.info.input_shape)
        model.load_state_dict(stored)
        model.to(device)
        return _evaluate_trained(trial, model, dataset, split, {}, started, {**tags, "reused_model": "true"},
                                 reused=True)
    seed_everything(spec["seed"])
    model = models.build(spec["arch"], dataset.info.num_classes, dataset.info.input_shape)
    if not saved:
        models.load_pretrained(spec["arch"], model, context.get("weights"), context.get("download", False))
    else:   # a retried attempt: say where it picked up (tests/test_faults.py kills a worker to check)
        mlflow.set_tag("resumed_from_epoch", str(saved["training"]["epoch"]))
    model.to(device)
    generator = torch.Generator().manual_seed(spec["seed"])
    recipe = Recipe(**spec["train"])
    checkpoint_due = checkpoint_timer(context)
    logged = logged_through(run_id) if saved else 0

    def on_epoch(epoch, metrics, snapshot):
        # a retried attempt reruns the epochs after its checkpoint, which its predecessor may have logged:
        # training is deterministic, so their values are the same, and logging them again repeats steps.
        # Logged before the checkpoint: a checkpointed epoch is always logged (no gaps).
        if epoch > logged:
            mlflow.log_metrics(metrics, step=epoch)
        if checkpoint_due():
            checkpoints.save(context["storage"], trial["key"],
                             {"key": trial["key"], "run_id": run_id, "stage": spec["stage"], "training": snapshot()})
        plugins.epoch_end(stage=spec["stage"], key=trial["key"], epoch=epoch, run_id=run_id)

    compute_seconds = time.perf_counter()
    train_classifier(model, x, y, recipe, generator=generator, device=device, state=saved.get("training"),
                     augment=functools.partial(data.training_input, dataset.info), on_epoch=on_epoch, speed=speed_for_context(context, device))
    compute_seconds = time.perf_counter() - compute_seconds
    return _evaluate_trained(trial, model, dataset, split, {"compute_seconds": compute_seconds}, started, tags)


def _stored_state(trial):
    """The state dict stored under the trial's model key (its SHA-256 checked), or None: nothing stored,
    or a file that fails its hash (logged; the trial trains the model again and overwrites it)."""
    storage = trial["context"]["storage"]
    if not store.has_model(storage, model_key(trial)):
        return None
    try:
        return store.load_model_state(storage, model_key(trial))
    except (OSError, ValueError, RuntimeError) as error:   # StoreIntegrityError is an OSError
        log.warning("training %s again: its stored model is unusable (%s)", model_key(trial), error)
        return None


def _evaluate_trained(trial, model, dataset, split, timing, started, tags, reused=False):
    """Evaluate an original (split None) or Retrain model, store it (unless `reused`: its files are
    already stored under its model key, and other grids' references hash them) and finish the run."""
    spec, device = trial["spec"], next(model.parameters()).device
    evaluate_seconds = time.perf_counter()
    if split is None:
        metrics, test_logits = evaluate_overall(model, dataset, device)
    else:
        metrics, test_logits, train_logits, per_sample = evaluate_forgetting(
            model, dataset, spec.get("forget_classes", []), spec["evaluation"], device)
        tags = {**tags, **per_sample_tags(per_sample)}
    timing = {**timing, "evaluate_seconds": time.perf_counter() - evaluate_seconds}
    if split is not None:
        tags = {**tags, **_save_forget_train_logits(trial, train_logits, dataset, split, keep_stored=reused)}
    return _finish(trial, model, test_logits, dataset, {**metrics, **timing}, started, tags, reused=reused)


# MLflow refuses a tag value over 8000 characters (and with it the whole final log_batch)
TAG_LIMIT = 8000


def per_sample_tags(per_sample):
    """PerSample (trainables/evaluate.py) as the run's tags: mia_svm_predictions, mia_nn_predictions
    (analysis.statistics.pack_bits: 100 · mean(bits) is the logged metric) and forget_mean_probs (JSON);
    one that would not fit a tag is left out (the tables then fall back to intervals over units)."""
    tags = {"mia_svm_predictions": statistics.pack_bits(per_sample.mia_svm),
            "forget_mean_probs": json.dumps(per_sample.forget_mean_probs, separators=(",", ":"))}
    if per_sample.mia_nn is not None:
        tags["mia_nn_predictions"] = statistics.pack_bits(per_sample.mia_nn)
    return {name: value for name, value in tags.items() if len(value) <= TAG_LIMIT}


def logged_through(run_id):
    """The last epoch whose training metrics the run has (0 when none)."""
    history = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    return max((metric.step for metric in history), default=0)


def load_original(spec, context, info, device):
    """The trial's original from storage, frozen (eval mode, no gradients), on `device`."""
    original = models.build(spec["arch"], info.num_classes, info.input_shape)
    original.load_state_dict(store.load_model_state(context["storage"], context["original_key"]))
    original.to(device).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    return original


def unlearn_task(spec, context, dataset, split, original, device, log_epoch, resume=None,
                 checkpoint=lambda make_state: None):
    """The UnlearnTask of an unlearn (or search) trial. Methods get the inputs as the dataset stores
    them (uint8 pixels for image datasets: a quarter of float32's device memory on the fast path) and
    normalise each batch with task.prepare (no augmentation: the unlearning budgets are a few epochs)."""
    return methods.UnlearnTask(
        original=original, retain_x=dataset.train_x[split.retain],
        retain_y=dataset.train_y[split.retain], forget_x=dataset.train_x[split.forget],
        forget_y=dataset.train_y[split.forget], forget_classes=list(spec["forget_classes"]),
        num_classes=dataset.info.num_classes, seed=spec["unlearn_seed"], device=device, dataset=spec["dataset"],
        log_epoch=log_epoch, speed=speed_for_context(context, device), original_seed=spec["seed"],
        log_params=mlflow.log_params, resume=resume, checkpoint=checkpoint, prepare=dataset.model_input)


def mia_nn_reference(trial):
    """The forget set's MIA-NN reference (a references.Reference), from storage or computed here
    (trainables/references.py), reported to Tune: the stage's Progress prints it once per forget set."""
    spec, context = trial["spec"], trial["context"]
    got = references.get(context["storage"], context["retrain_model_keys"], spec["forget_classes"], spec["evaluation"],
                         threads=max(1, int(context.get("cpus", 1))))   # the trial's cores fit side by side
    forget = "[" + ", ".join(str(c) for c in spec["forget_classes"]) + "]"
    tune.report({"reference": f"{spec['dataset']}/{spec['arch']} forget {forget}",
                 "neighbour_class": got.neighbour.neighbour_class, "reference_score": got.neighbour.reference_score,
                 "reference_computed": got.computed, "reference_seconds": got.seconds})
    return got


def model_scores_tag(neighbour, seeds, decimals=3):
    """Each Retrain model's {c: A_c} (NeighbourClass.model_scores, whose mean is retrain_class_scores) as
    the unlearn run's `retrain_model_scores` tag: JSON {"seeds": the models' training seeds, "classes":
    the retained classes ascending, "scores": [[A_c per class] per model]}; None when the reference has
    no per-model scores or the JSON would not fit a tag (CIFAR-100 with 10 models is ~5000 characters)."""
    if not neighbour.model_scores:
        return None
    classes = sorted(neighbour.class_scores)
    text = json.dumps({"seeds": [int(s) for s in seeds], "classes": [int(c) for c in classes],
                       "scores": [[round(float(scores[c]), decimals) for c in classes] for scores in neighbour.model_scores]},
                      separators=(",", ":"))
    return text if len(text) <= TAG_LIMIT else None


def tag_own_neighbour_classes(trial, neighbour):
    """On each Retrain model's FINISHED run in the trial's experiment: `own_neighbour_class` (that model's
    own argmax_c A_c, ties to the lowest class as for c*) and `own_reference_score` (its A_c), so how
    stable c* is across Retrain models is visible. Set by the trial that computed the reference; best
    effort: a failure is logged, the trial goes on."""
    context = trial["context"]
    try:
        client = mlflow.MlflowClient()
        for run_key, scores in zip(context["retrain_keys"], neighbour.model_scores):
            own = max(sorted(scores), key=lambda c: scores[c])
            found = client.search_runs([context["experiment_id"]],
                                       f"tags.key = '{run_key}' and attributes.status = 'FINISHED'", max_results=10)
            for run in found:
                client.set_tag(run.info.run_id, "own_neighbour_class", str(int(own)))
                client.set_tag(run.info.run_id, "own_reference_score", repr(float(scores[own])))
    except Exception as error:   # noqa: BLE001 — a tag for the reports, never a reason to fail the trial
        log.warning("could not tag the Retrain runs of %s with their own neighbour class (%s)",
                    ",".join(context["retrain_keys"]), error)


def _unlearn_stage(trial, saved, run_id, started):
    spec, context = trial["spec"], trial["context"]
    # first: a forget set's first trials compute it side by side (grid/plan/order.py), and unreadable
    # Retrain logits fail the trial before its method runs
    got = mia_nn_reference(trial)
    reference = got.neighbour
    if got.computed:
        tag_own_neighbour_classes(trial, reference)
    device = device_for(context)
    dataset = data.load(spec["dataset"], context.get("data_root"), context.get("download", False))
    info = dataset.info
    original = load_original(spec, context, info, device)
    split = data.forget_split(dataset.train_y.numpy(), spec["forget_classes"])
    tags = {"split_hash": split.hash, **_evaluation_split_tags(spec["evaluation"], dataset.test_y.numpy())}
    compute_seconds = time.perf_counter()
    if "model" in saved:                       # retried after the method had finished: not run again
        model = models.build(spec["arch"], info.num_classes, info.input_shape)
        model.load_state_dict(saved["model"])
        model.to(device)
        mlflow.set_tag("resumed_from_epoch", str(saved.get("epoch", spec["params"].get("epochs", 0))))
    elif spec["method"] == "original":         # the Original row: evaluate without unlearning
        model = original
    else:
        seed_everything(spec["unlearn_seed"])
        resumed = saved.get("method")
        if resumed:   # a retried attempt: its method's loop picks up after this epoch (task.resume_loop)
            mlflow.set_tag("resumed_from_epoch", str(resumed["epoch"]))
        logged = logged_through(run_id) if resumed else 0
        checkpoint, checkpoint_due = method_checkpoint(context, trial["key"], run_id, "unlearn")

        def log_epoch(epoch, metrics, model=None):
            if epoch > logged:   # a loop that resumed reruns nothing before its checkpoint
                mlflow.log_metrics(metrics, step=epoch)
            plugins.epoch_end(stage="unlearn", key=trial["key"], epoch=epoch, run_id=run_id)
        task = unlearn_task(spec, context, dataset, split, original, device, log_epoch, resume=resumed,
                            checkpoint=checkpoint)
        model = methods.unlearn(spec["method"], task, spec["params"])
        if checkpoint_due():   # the method's work is kept even if the evaluation below dies
            checkpoints.save(context["storage"], trial["key"],
                             {"key": trial["key"], "run_id": run_id, "stage": "unlearn",
                              "epoch": spec["params"].get("epochs", 0), "model": model.state_dict()})
    compute_seconds = time.perf_counter() - compute_seconds
    # every A_c: grid/reports/neighbours.py's table reads them
    tags["retrain_class_scores"] = class_scores_tag(reference.class_scores)
    model_scores = model_scores_tag(reference, context["retrain_seeds"])
    if model_scores is not None:
        tags["retrain_model_scores"] = model_scores
    neighbour = (reference.neighbour_class, reference.reference_score)
    evaluate_seconds = time.perf_counter()
    metrics, test_logits, train_logits, per_sample = evaluate_forgetting(model, dataset, spec["forget_classes"],
                                                                         spec["evaluation"], device, neighbour)
    timing = {"compute_seconds": compute_seconds, "evaluate_seconds": time.perf_counter() - evaluate_seconds}
    tags.update(per_sample_tags(per_sample))
    tags.update(_save_forget_train_logits(trial, train_logits, dataset, split))
    original_logits, _ = store.load_logits(context["storage"], context["original_key"])
    tags["per_class_drop"] = _log_diagnostics(original_logits, test_logits, dataset, spec["forget_classes"],
                                              spec["evaluation"])
    return _finish(trial, model, test_logits, dataset, {**metrics, **timing}, started, tags,
                   params={"neighbour_class": neighbour[0]})


def class_scores_tag(scores, decimals=4):
    """Retrain's {c: A_c} (the forget set's MIA-NN reference) as the compact JSON of the unlearn run's
    `retrain_class_scores` tag, {"c": A_c} rounded to `decimals`: a tag, as MLflow params hold 6000
    characters (CIFAR-100's 99 retained classes fit either way; 199 classes take < 8000 at 4 decimals)."""
    return json.dumps({str(int(c)): round(float(a), decimals) for c, a in sorted(scores.items())},
                      separators=(",", ":"))


def _save_forget_train_logits(trial, train_logits, dataset, split, keep_stored=False):
    """Logits of the forget-set training samples: what U-LiRA's likelihood ratio is computed on.
    keep_stored: a reused model's file, when stored, is pointed at, not written again."""
    storage, key, name = trial["context"]["storage"], model_key(trial), store.FORGET_TRAIN_LOGITS_FILE
    if keep_stored:
        tags = recorded_tags(storage, key, name)
        if tags is not None:
            return tags
    payload = store.save_logits(storage, key, train_logits[split.forget], dataset.train_y.numpy()[split.forget],
                                name=name)
    return stored_tags(storage, key, name, payload)


def stored_tags(storage, key, name, payload):
    """The tags by which a run points at a file it stored (weights, logits), instead of a second copy
    as an MLflow artifact (through the tracking server, into its artifact store): `stored.{name}`, the
    file's URI without credentials (trainables/uris.py), and `stored.{name}.sha256`, the hash written
    with it (from the bytes just written, `payload`: no read back). Readers: grid/reports/report.py artifact()."""
    return {f"{store.RUN_TAG}{name}": uris.without_secrets(store.file_uri(storage, key, name)),
            f"{store.RUN_TAG}{name}.sha256": store.digest(payload)}


def recorded_tags(storage, key, name):
    """stored_tags of a file already stored (a reused model's), with the hash recorded beside it; None
    when it has none (not stored, or its write did not finish)."""
    try:
        sha256 = store.recorded_hash(storage, key, name)
    except (OSError, ValueError):   # StoreIntegrityError is an OSError
        return None
    return {f"{store.RUN_TAG}{name}": uris.without_secrets(store.file_uri(storage, key, name)),
            f"{store.RUN_TAG}{name}.sha256": sha256}


def _evaluation_split_tags(evaluation, test_labels):
    """Tags naming the test samples a run's test metrics are on (report.py titles its tables with
    them): evaluation_split test|holdout, evaluation_samples (how many), and for holdout
    evaluation_split_hash, the hash of the holdout/validation indices (as split_hash for forget sets)."""
    split = evaluation.get("split", "test")
    tags = {"evaluation_split": split,
            "evaluation_samples": str(len(data.evaluation_indices(test_labels, evaluation)))}
    if split == "holdout":
        tags["evaluation_split_hash"] = data.holdout_split(test_labels, evaluation["seed"]).hash
    return tags


def _log_diagnostics(original_logits, test_logits, dataset, forget_classes, evaluation):
    """Test confusion matrix, where forget-class predictions go, per-class drop vs the Original (every
    retained class), on the test samples of evaluation.split, like the run's test metrics (the logits
    are the whole test set)."""
    labels, num_classes = dataset.test_y.numpy(), dataset.info.num_classes
    reported = data.evaluation_indices(labels, evaluation)
    labels, test_logits, original_logits = labels[reported], test_logits[reported], original_logits[reported]
    matrix = diagnostics.confusion_matrix(test_logits, labels, num_classes)
    shares = diagnostics.forget_redistribution(test_logits, labels, forget_classes, num_classes)
    # every retained class, not a top 5: Table 6 averages each class over all runs before it ranks, and
    # a per-run top 5 would average a class over only the runs where it happened to rank high
    drop = diagnostics.per_class_drop(original_logits, test_logits, labels, num_classes, forget_classes, top=None)
    mlflow.log_dict({"classes": list(dataset.info.class_names), "confusion_matrix": matrix.tolist()},
                    "diagnostics/confusion_matrix.json")
    mlflow.log_dict({"classes": list(dataset.info.class_names), "forget_classes": list(forget_classes),
                     "share_percent": [float(v) for v in shares]}, "diagnostics/forget_redistribution.json")
    mlflow.log_text(drop.to_csv(index=False), "diagnostics/per_class_drop.csv")
    return per_class_drop_tag(drop)


def per_class_drop_tag(drop, decimals=4):
    """The rows of the per-class drop (every retained class) as the unlearn run's `per_class_drop` tag:
    compact JSON [[class, drop], ...] in the table's order, so `unlearn-grid tables` reads a tag per run,
    not an artifact per run (grid/reports/report.py). Fits MLflow's 8000-character tag values: a pair is at
    most 15 characters ("[199,-66.6667],": the drop is in points, |drop| <= 100, 4 decimals), so
    199 retained classes (Tiny-ImageNet) take < 3000."""
    return json.dumps([[int(c), round(float(d), decimals)] for c, d in zip(drop["class"], drop["drop"])],
                      separators=(",", ":"))


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _finish(trial, model, test_logits, dataset, metrics, started, tags, params=None, reused=False):
    """Store weights + test logits by model key (the run points at them: stored_tags); log the final
    metrics, the device and the trial's other final tags and params in one request. reused: the model
    was stored by another trial of the same model key; its files are kept as they are (the MIA-NN
    references of other grids are keyed by their hashes)."""
    storage, key = trial["context"]["storage"], model_key(trial)
    stored = {}
    if reused:
        stored = {**(recorded_tags(storage, key, store.MODEL_FILE) or {}),
                  **(recorded_tags(storage, key, store.LOGITS_FILE) or {})}
    if len(stored) != 4:   # not reused, or a sidecar went missing since has_model: store them (again)
        model_bytes = store.save_model(storage, key, model)
        logits_bytes = store.save_logits(storage, key, test_logits, dataset.test_y.numpy())
        stored = {**stored_tags(storage, key, store.MODEL_FILE, model_bytes),
                  **stored_tags(storage, key, store.LOGITS_FILE, logits_bytes)}
    tags = {**tags, **stored, "device": _device_name(next(model.parameters()).device)}
    metrics = {**metrics, "wall_seconds": time.perf_counter() - started}
    now = int(time.time() * 1000)
    mlflow.MlflowClient().log_batch(
        mlflow.active_run().info.run_id,
        metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()],
        params=[Param(name, str(value)) for name, value in (params or {}).items()],
        tags=[RunTag(name, str(value)) for name, value in tags.items()])
    return metrics
