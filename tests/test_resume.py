"""Resume through the trainable (trainables/trial.py run_pack), without Ray: a "worker death" is an exception
raised where the worker would die, and Tune's retry is run_pack called again. Checkpoints go to storage by
trial key (trainables/checkpoints.py), so a retry in another Tuner, run or driver finds them the same way.
- A training trial that dies mid-training is retried from its last checkpoint in the same MLflow run, its
  per-epoch metrics continue without gaps or repeats, and its final weights equal an uninterrupted run's.
- A pack of two trials whose second dies before its first checkpoint: the second starts from scratch.
- An unlearn trial that dies mid-method resumes its method's loop from its last epoch checkpoint, and
  one that dies after its method resumes without running it again; both end as uninterrupted ones.
~20 s on toy2d/mlp."""
import pytest
import torch
from mlflow import MlflowClient

from grid.plan import config
from grid.execution import stages
from grid.tracking import mlflow_runs
from trainables import checkpoints, methods, store
from trainables import trial as trial_module

EPOCHS = 6
GRID = {"name": "resume", "datasets": "toy2d", "archs": "mlp", "forget_classes": ["a"], "seeds": [0, 1],
        "train": {"epochs": EPOCHS, "lr": 0.05, "batch_size": 64}, "methods": {"ft": {"epochs": 3}},
        "resources": {"cpu": 1, "gpu": 0}}


class WorkerDied(RuntimeError):
    pass


def die_at(monkeypatch, key, epoch):
    """The worker dies while saving `key`'s checkpoint of `epoch` (training state or a method's loop): the
    epoch's metrics are logged, its checkpoint is not (the window where a retry would log the epoch twice).
    Returns the epochs of `key` checkpointed after that: the retry's, which show where it started."""
    save, after = checkpoints.save, []

    def saving(storage, saved_key, state):
        state_epoch = (state.get("training") or state.get("method") or {}).get("epoch")
        if (saved_key, state_epoch) == (key, epoch) and not died:
            died.append(True)
            raise WorkerDied("worker died")
        if died and saved_key == key and state_epoch is not None:
            after.append(state_epoch)
        save(storage, saved_key, state)
    died = []
    monkeypatch.setattr(checkpoints, "save", saving)
    return after


class Store:
    """A fresh tracking store and storage under `folder` for `grid`, and run_pack as Tune would call it."""

    def __init__(self, folder, monkeypatch, grid=GRID):
        folder.mkdir(exist_ok=True)
        self.folder, self.monkeypatch = folder, monkeypatch
        self.plan = config.build_plan(grid)
        self.tracking_uri, self.storage = f"sqlite:///{folder / 'mlflow.db'}", str(folder / "storage")
        self.experiment_id = mlflow_runs.ensure_experiment(self.tracking_uri, self.plan.name)
        self.client = MlflowClient(self.tracking_uri)
        monkeypatch.setattr(trial_module, "placement_tags", lambda: {"hostname": "test", "pid": "0"})

    def context(self, spec, **extra):
        return {"grid": self.plan.name, "tracking_uri": self.tracking_uri, "storage": self.storage, "driver": "test",
                "cpus": 1, "experiment_id": self.experiment_id, "checkpoint_minutes": 0,
                "run_name": stages.run_label(spec), **extra}

    def run_pack(self, trials, fail_at=None):
        """The pack of `trials` ({"spec", "key"} with their context) through run_pack; when fail_at (key,
        epoch) makes the first attempt die, Tune's retry runs it again. Returns the reports."""
        reports = []
        self.monkeypatch.setattr(trial_module.tune, "report", reports.append)
        packs = [trials]
        self.retried_epochs = None
        if fail_at is not None:
            self.retried_epochs = die_at(self.monkeypatch, *fail_at)
            with pytest.raises(trial_module.PackFailed, match="worker died"):
                trial_module.run_pack({"pack": 0}, packs)
        trial_module.run_pack({"pack": 0}, packs)       # Tune's retry of the pack
        return reports

    def trained(self, stage, seed):
        (found,) = [t for t in self.plan.stages()[stage] if t["spec"]["seed"] == seed]
        return {**found, "context": self.context(found["spec"])}

    def runs(self, key):
        return self.client.search_runs([self.experiment_id], f"tags.key = '{key}'")

    def steps(self, run_id, name="train_loss"):
        return sorted(m.step for m in self.client.get_metric_history(run_id, name))

    def losses(self, run_id):
        return [m.value for m in sorted(self.client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)]


def assert_same_weights(one, other):
    assert one.keys() == other.keys()
    for name, value in other.items():      # the retry restored the optimizer, scheduler and RNG too
        assert torch.equal(one[name], value), name


def test_a_trial_that_dies_mid_training_resumes_its_run_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    crashed = Store(tmp_path / "crashed", monkeypatch)
    original = crashed.trained("original", 0)
    crashed.run_pack([original], fail_at=(original["key"], 4))
    assert crashed.retried_epochs == [4, 5, 6]            # the retry trained from epoch 3's checkpoint on
    runs = crashed.runs(original["key"])
    assert len(runs) == 1                               # the retry continued the run, it did not start another
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "3"
    for name in ("train_loss", "lr"):
        # a repeat of epoch 4 (logged before the failed checkpoint, then again by the retry) or a gap fails here
        assert crashed.steps(run.info.run_id, name) == list(range(1, EPOCHS + 1)), name

    whole = Store(tmp_path / "whole", monkeypatch)
    whole.run_pack([whole.trained("original", 0)])
    assert_same_weights(store.load_model_state(crashed.storage, original["key"]),
                        store.load_model_state(whole.storage, original["key"]))
    (whole_run,) = whole.runs(original["key"])
    assert crashed.losses(run.info.run_id) == whole.losses(whole_run.info.run_id)


def test_a_trial_of_a_pack_never_resumes_from_another_trials_checkpoint(tmp_path, monkeypatch):
    """Pack [seed 0, seed 1]: seed 0 finishes, seed 1 dies saving its first checkpoint. The retry skips
    seed 0 and starts seed 1 from scratch: resumed from seed 0's checkpoint it would continue seed 0's
    MLflow run and store seed 0's weights under seed 1's key."""
    crashed = Store(tmp_path / "crashed", monkeypatch)
    first, second = crashed.trained("original", 0), crashed.trained("original", 1)
    crashed.run_pack([first, second], fail_at=(second["key"], 1))
    assert checkpoints.load(crashed.storage, first["key"]) is None    # a finished trial's checkpoint is deleted
    (first_run,) = crashed.runs(first["key"])
    assert first_run.info.status == "FINISHED" and "resumed_from_epoch" not in first_run.data.tags
    assert crashed.steps(first_run.info.run_id) == list(range(1, EPOCHS + 1))   # nothing of seed 1's in it
    second_runs = {r.info.status: r for r in crashed.runs(second["key"])}
    assert sorted(second_runs) == ["FAILED", "FINISHED"]         # the dead attempt's run, and the retry's own
    retried = second_runs["FINISHED"]
    assert "resumed_from_epoch" not in retried.data.tags
    assert crashed.steps(retried.info.run_id) == list(range(1, EPOCHS + 1))

    whole = Store(tmp_path / "whole", monkeypatch)
    whole.run_pack([whole.trained("original", 1)])
    assert_same_weights(store.load_model_state(crashed.storage, second["key"]),
                        store.load_model_state(whole.storage, second["key"]))


def _unlearn_trial(where, method):
    """`where`'s unlearn trial of `method` (seed 0) with the context the driver gives it (after its original
    and Retrain models are trained and stored; the trial gets its MIA-NN reference itself)."""
    where.run_pack([where.trained("original", 0), where.trained("retrain", 0), where.trained("retrain", 1)])
    (found,) = [t for t in where.plan.unlearn if t["spec"]["method"] == method and t["spec"]["seed"] == 0]
    spec = found["spec"]
    context = where.context(spec, **stages.unlearn_context(found))
    return {"spec": spec, "key": found["key"], "context": context}


def test_an_unlearn_trial_that_dies_after_its_method_resumes_without_running_it_again(tmp_path, monkeypatch):
    """The unlearn stage checkpoints the unlearned model when its method returns; a worker that dies after
    that (here: in the evaluation) is retried from it, in the same MLflow run, the method not run again
    (its per-epoch metrics logged once), with the weights and metrics of an uninterrupted trial."""
    calls = []
    unlearn = methods.unlearn

    def counted(name, task, params):
        calls.append(name)
        return unlearn(name, task, params)
    monkeypatch.setattr(trial_module.methods, "unlearn", counted)

    crashed = Store(tmp_path / "crashed", monkeypatch)
    trial = _unlearn_trial(crashed, "ft")
    evaluate = trial_module.evaluate_forgetting

    def dies_once(*args, **kwargs):
        monkeypatch.setattr(trial_module, "evaluate_forgetting", evaluate)
        raise WorkerDied("worker died")
    monkeypatch.setattr(trial_module, "evaluate_forgetting", dies_once)
    calls.clear()
    monkeypatch.setattr(trial_module.tune, "report", lambda metrics: None)
    with pytest.raises(trial_module.PackFailed, match="worker died"):
        trial_module.run_pack({"pack": 0}, [[trial]])
    trial_module.run_pack({"pack": 0}, [[trial]])          # Tune's retry
    assert calls == ["ft"]                                 # the retry took the checkpointed model
    (run,) = crashed.runs(trial["key"])                    # one run: resumed, not started again
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "3"
    assert crashed.steps(run.info.run_id) == [1, 2, 3]     # the method's epochs, each logged once

    whole = Store(tmp_path / "whole", monkeypatch)
    whole.run_pack([_unlearn_trial(whole, "ft")])
    assert_same_weights(store.load_model_state(crashed.storage, trial["key"]),
                        store.load_model_state(whole.storage, trial["key"]))
    (whole_run,) = whole.runs(trial["key"])
    for name in ("acc_r_test", "acc_f_test", "mia_svm", "mia_nn", "mia_nn_gap"):
        assert run.data.metrics[name] == whole_run.data.metrics[name], name


@pytest.mark.parametrize("method", ["ft", "l1", "salun", "scrub", "scar", "l2ul"])
def test_an_unlearn_trial_that_dies_mid_method_resumes_the_method_from_its_epoch_checkpoint(tmp_path, monkeypatch,
                                                                                             method):
    """A worker that dies in epoch 3 of a method (after epoch 2's checkpoint) is retried from that
    checkpoint: the same MLflow run, tag resumed_from_epoch 2, every epoch logged once, and the weights and
    metrics of an uninterrupted trial (model, optimizer, loop generator and global RNG restored)."""
    epochs = 4
    grid = {**GRID, "methods": {method: {"epochs": epochs}}}
    crashed = Store(tmp_path / "crashed", monkeypatch, grid)
    trial = _unlearn_trial(crashed, method)
    crashed.run_pack([trial], fail_at=(trial["key"], 3))
    assert crashed.retried_epochs == [3, 4]                # the retry trained epochs 3 and 4 only
    (run,) = crashed.runs(trial["key"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "2"
    assert crashed.steps(run.info.run_id) == list(range(1, epochs + 1))
    assert checkpoints.load(crashed.storage, trial["key"]) is None

    whole = Store(tmp_path / "whole", monkeypatch, grid)
    whole_trial = _unlearn_trial(whole, method)
    whole.run_pack([whole_trial])
    assert_same_weights(store.load_model_state(crashed.storage, trial["key"]),
                        store.load_model_state(whole.storage, trial["key"]))
    (whole_run,) = whole.runs(trial["key"])
    assert crashed.losses(run.info.run_id) == whole.losses(whole_run.info.run_id)
    for name in ("acc_r_test", "acc_f_test", "mia_svm", "mia_nn"):
        assert run.data.metrics[name] == whole_run.data.metrics[name], name


def test_a_checkpoint_that_fails_its_hash_is_discarded_and_the_trial_starts_over(tmp_path, monkeypatch):
    crashed = Store(tmp_path / "crashed", monkeypatch)
    original = crashed.trained("original", 0)
    die_at(monkeypatch, original["key"], 4)
    monkeypatch.setattr(trial_module.tune, "report", lambda metrics: None)
    with pytest.raises(trial_module.PackFailed, match="worker died"):
        trial_module.run_pack({"pack": 0}, [[original]])
    path = f"{crashed.storage}/checkpoints/{original['key']}/{checkpoints.CHECKPOINT_FILE}"
    with open(path, "r+b") as f:                           # a flipped byte: the hash no longer matches
        head = f.read(1)
        f.seek(0)
        f.write(bytes([head[0] ^ 0xFF]))
    assert checkpoints.load(crashed.storage, original["key"]) is None
    assert not (tmp_path / "crashed" / "storage" / "checkpoints" / original["key"]).exists()
    trial_module.run_pack({"pack": 0}, [[original]])
    runs = {r.info.status: r for r in crashed.runs(original["key"])}
    assert sorted(runs) == ["FAILED", "FINISHED"]          # the retry started a run of its own
    assert "resumed_from_epoch" not in runs["FINISHED"].data.tags


@pytest.mark.parametrize("notice", [False, True])
def test_a_spot_interruption_notice_checkpoints_every_epoch_from_then_on(tmp_path, monkeypatch, notice):
    """checkpoint_minutes 60: a 6-epoch trial is never due. Once the node's metadata service has a spot
    interruption notice (a stand-in on 127.0.0.1, trainables/interruption.py), every epoch is checkpointed."""
    from test_interruption import NOTICE, FakeIMDS
    from trainables import interruption
    imds = FakeIMDS()
    monkeypatch.setenv(interruption.ENV_URL, imds.url)
    monkeypatch.setenv(interruption.ENV_SECONDS, "0.05")
    try:
        if notice:
            imds.notice = NOTICE
            interruption.notice()                           # starts the poller
            assert interruption.wait(30) == NOTICE          # the poller has seen it (30 s: a failure bound)
        saved = []
        save = checkpoints.save
        monkeypatch.setattr(checkpoints, "save", lambda storage, key, state: (saved.append(state["training"]["epoch"]),
                                                                              save(storage, key, state)))
        where = Store(tmp_path, monkeypatch)
        original = where.trained("original", 0)
        original["context"]["checkpoint_minutes"] = 60
        where.run_pack([original])
        assert saved == (list(range(1, EPOCHS + 1)) if notice else [])
    finally:
        interruption.stop()
        imds.close()


def test_a_search_trial_that_dies_mid_method_resumes_its_loop_in_its_own_run(tmp_path, monkeypatch):
    """A search trial's worker dies in epoch 3 of the method (after epoch 2's checkpoint); Tune's retry of
    the same point resumes from it in the same MLflow run, and reports the objective an uninterrupted
    trial reports."""
    from grid.execution import search
    from trainables import search_trial
    grid = {**GRID, "name": "resume-search", "methods": {"ft": {"epochs": 4}},
            "search": {"budget": {"samples": 1}, "methods": {"ft": {"lr": {"loguniform": [0.001, 0.1]}}}}}

    def search_once(where, fail_at=None):
        where.run_pack([where.trained("original", 0), where.trained("retrain", 0)])
        (cell,) = where.plan.search
        parent = where.client.create_run(where.experiment_id).info.run_id
        context = {**where.context(where.plan.original[0]["spec"]), "parent_run_id": parent,
                   "reference": search.validation_reference(where.storage, cell), "original_key": cell["original_key"]}
        config = {"cell": {"spec": cell["spec"], "key": cell["key"], "context": context},
                  "lr": cell["spec"]["params"]["lr"]}
        spec, key, _ = search_trial.trial_config(config["cell"], {"lr": config["lr"]})
        reports = []
        monkeypatch.setattr(search_trial.tune, "report", reports.append)
        monkeypatch.setattr(search_trial, "placement_tags", lambda: {"hostname": "test", "pid": "0"})
        retried = None
        if fail_at is not None:
            retried = die_at(monkeypatch, key, fail_at)
            with pytest.raises(WorkerDied):
                search_trial.run_search_trial(config)
        search_trial.run_search_trial(config)            # Tune's retry of the same point
        return key, reports[-1], retried

    crashed = Store(tmp_path / "crashed", monkeypatch, grid)
    key, result, retried = search_once(crashed, fail_at=3)
    assert retried == [3, 4]                             # the retry trained epochs 3 and 4 only
    (run,) = crashed.runs(key)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "2"
    assert crashed.steps(run.info.run_id) == [1, 2, 3, 4]
    assert checkpoints.load(crashed.storage, key) is None
    whole = Store(tmp_path / "whole", monkeypatch, grid)
    _, uninterrupted, _ = search_once(whole)
    assert result["objective"] == uninterrupted["objective"] and result["epoch"] == uninterrupted["epoch"] == 4
