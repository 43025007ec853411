"""The Ray Tune trainable of one search trial: unlearn with the searched params and report the search
objective on the validation split after every epoch, so ASHA can stop bad trials early.

config = {"cell": {"spec": the cell (grid/plan/search_space.py), "key": the cell key, "context": runtime
settings (tracking, storage, parent run id, Retrain's validation reference)}, <param>: searched value,
...}; or, when the search passes its cells with tune.with_parameters(run_search_trial, cells=[...]) (all
cells side by side, grid/execution/search/), "cell" is the index of the trial's cell in `cells`. Each trial is an MLflow child run of its cell's parent run. It stores no weights: the grid that
`unlearn-grid best` writes trains and evaluates the chosen params on the held-out split.
"""
import time

import mlflow
import torch
from ray import tune

from analysis import objective
from trainables import checkpoints, data, methods, plugins, store
from trainables.evaluate import svm_class_weight
from trainables.keys import trial_key
from trainables.train import predict_logits, seed_everything
from trainables.trial import (compared_params, device_for, driver_tags, flatten, load_original, logged_through,
                              method_checkpoint, placement_tags, saved_state, unlearn_task)


def trial_config(cell, searched):
    """(spec, key, is_default) of the trial that runs `searched` values in `cell`."""
    cell_spec = cell["spec"]
    params = methods.resolve_params(cell_spec["method"], {**cell_spec["params"], **searched})
    spec = {k: v for k, v in cell_spec.items() if k != "space"}
    spec.update(stage="search_trial", params=params, search_key=cell["key"])
    # the default point comes back from Optuna as the exact values enqueued
    is_default = all(params[name] == cell_spec["params"][name] for name in cell_spec["space"])
    return spec, trial_key(spec), is_default


def trial_label(spec, searched):
    values = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(searched.items()))
    forget = "+".join(str(c) for c in spec["forget_classes"])
    return f"search/{spec['method']}({values})/{spec['dataset']}/{spec['arch']}/f{forget}"


def validation_reference(storage, cell):
    """Retrain's side of the objective: its stored test logits on the validation half of the test split
    (SVM fits: the search runs it as a Ray task per cell, on the workers)."""
    spec = cell["spec"]
    logits, labels = store.load_logits(storage, cell["retrain_key"])
    validation = data.holdout_split(labels, spec["evaluation"]["seed"]).validation
    return objective.reference(logits[validation], labels[validation], spec["forget_classes"],
                               svm_class_weight(spec["evaluation"]))


def run_search_trial(config, cells=None):
    cell = config["cell"] if cells is None else cells[config["cell"]]
    context = cell["context"]
    searched = {name: config[name] for name in cell["spec"]["space"]}
    torch.set_num_threads(max(1, int(context.get("cpus", 1))))
    # first: a plugin's method is registered on this worker only once its plugin is imported here, and
    # trial_config resolves the method's params (MLflow's bounded retries come along, grid/execution/stages.py)
    plugins.apply_worker_env(context.get("worker_env", {}))
    spec, key, is_default = trial_config(cell, searched)
    mlflow.set_tracking_uri(context["tracking_uri"])
    # a retried attempt (its worker died) continues the method's loop from its checkpoint, in its run
    checkpoint = saved_state({"context": context, "key": key})
    saved = checkpoint.get("method")
    if saved:
        run = mlflow.start_run(run_id=checkpoint["run_id"])
    else:
        run = mlflow.start_run(experiment_id=context["experiment_id"], run_name=trial_label(spec, searched),
                               tags={"mlflow.parentRunId": context["parent_run_id"], **driver_tags(context)})
    try:
        if saved:
            mlflow.set_tags({**placement_tags(), "resumed_from_epoch": str(saved["epoch"])})
        else:
            mlflow.set_tags({"stage": "search_trial", "search_key": cell["key"], "key": key, "grid": context["grid"],
                             "dataset": spec["dataset"], "arch": spec["arch"], "method": spec["method"],
                             "forget_classes": ",".join(str(c) for c in spec["forget_classes"]),
                             "seed": str(spec["seed"]), "default": str(is_default).lower(), "stopped_early": "false",
                             "split": spec["split"], **placement_tags()})
            mlflow.log_params({**flatten(spec), **compared_params(spec)})
        result = _search(spec, key, context, run.info.run_id, saved)
        mlflow.end_run("FINISHED")
        checkpoints.delete(context["storage"], key)
    except SystemExit:
        # Tune stopped the trial at a report: ASHA (the driver then tags it stopped_early) or an
        # interrupted search (left untagged, so a rerun evaluates the point again); either way its
        # checkpoint is of no further use
        mlflow.end_run("KILLED")
        checkpoints.delete(context["storage"], key)
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    tune.report({**result, "finished": 1})


def _search(spec, key, context, run_id, resume=None):
    device = device_for(context)
    dataset = data.load(spec["dataset"], context.get("data_root"), context.get("download", False))
    info = dataset.info
    original = load_original(spec, context, info, device)
    split = data.forget_split(dataset.train_y.numpy(), spec["forget_classes"])
    test_y = dataset.test_y.numpy()
    validation = data.holdout_split(test_y, spec["evaluation"]["seed"]).validation
    validation_x, validation_y = dataset.test_x[validation], test_y[validation]
    class_weight = svm_class_weight(spec["evaluation"])
    epochs_done = [0]

    def evaluate(model):
        logits = predict_logits(model, validation_x, device, prepare=dataset.model_input).numpy()
        if logits.shape[1] != info.num_classes:   # e.g. bu_expand's extra neuron, removed at its end
            return None
        parts = objective.components(logits, validation_y, spec["forget_classes"], context["reference"], class_weight)
        return {**parts, "objective": objective.objective(spec["objective"], parts)}

    logged = logged_through(run_id) if resume else 0
    checkpoint, _ = method_checkpoint(context, key, run_id, "search_trial")

    def log_epoch(epoch, metrics, model=None):
        epochs_done[0] = epoch
        if epoch > logged:   # a resumed loop reruns the epochs its predecessor logged after its checkpoint
            mlflow.log_metrics(metrics, step=epoch)
        plugins.epoch_end(stage="search_trial", key=key, epoch=epoch, run_id=run_id)
        if model is None or epoch >= spec["params"].get("epochs", 0):
            # the last epoch is reported once, by the final report: were it reported here, ASHA could
            # stop the trial at it (max_t, or its last rung) and the complete trial would look cut short
            return
        result = evaluate(model)
        if result is not None:
            mlflow.log_metrics(result, step=epoch)
            tune.report({"epoch": epoch, **result, "run_id": run_id})   # raises SystemExit when stopped

    seed_everything(spec["unlearn_seed"])
    started = time.perf_counter()
    task = unlearn_task(spec, context, dataset, split, original, device, log_epoch, resume=resume,
                        checkpoint=checkpoint)
    model = methods.unlearn(spec["method"], task, spec["params"])
    compute_seconds = time.perf_counter() - started
    result = evaluate(model)
    # the epochs it trained (l2ul, scar may stop before their bound by themselves); 1 for a method
    # without epochs (svd)
    epoch = epochs_done[0] or int(spec["params"].get("epochs") or 1)
    mlflow.log_metrics({**result, "compute_seconds": compute_seconds}, step=epoch)
    return {"epoch": epoch, **result, "run_id": run_id, "compute_seconds": compute_seconds}
