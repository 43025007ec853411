"""Packs (grid/plan/packing.py, trainables/trial.py run_pack): short trials share a Tune trial, yet each
keeps its own MLflow run; a failing trial does not stop its pack, and a retried pack runs only what
did not finish. The run_pack tests run it in this process (no Ray) on toy2d/mlp trials: ~10 s."""
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from grid.plan import config, packing, shapes
from grid.execution import stages
from grid.tracking import mlflow_runs
from trainables import methods, references, store
from trainables import trial as trial_module

ROOT = Path(__file__).resolve().parents[1]
TOY = {"name": "packs", "datasets": "toy2d", "archs": "mlp", "forget_classes": ["a"], "seeds": [0],
       "train": {"epochs": 2, "lr": 0.05, "batch_size": 64},
       "methods": {"ft": {"epochs": 1}, "rl": {"epochs": 1}, "rescale": {"epochs": 1}},
       "resources": {"cpu": 1, "gpu": 0}}


def _trials(count, epochs=1):
    plan = config.build_plan({**TOY, "unlearn_seeds": list(range(count)), "methods": {"ft": {"epochs": epochs}}})
    return plan.unlearn[:count]


def test_short_trials_go_in_packs_that_shrink_to_one_trial_and_every_trial_runs_once():
    trials = _trials(100)
    packs = packing.packs(trials, slot_count=2)
    sizes = [len(p) for p in packs]
    assert [t["key"] for p in packs for t in p] == [t["key"] for t in trials]
    assert sizes[0] == min(packing.MAX_PACK, 100 // (packing.PACK_SHARE * 2))
    assert sizes == sorted(sizes, reverse=True) and sizes[-4:] == [1, 1, 1, 1]   # the tail: one trial each
    assert len(packs) < 30                                              # ~4x fewer Tune trials
    assert len(packing.packs(trials, slot_count=100)) == 100            # as many slots as trials: one each
    assert max(len(p) for p in packing.packs(_trials(400), 1)) == packing.MAX_PACK


def test_long_trials_run_alone():
    # ft on toy2d's 600 retained training samples: 400 epochs is 240,000 images, over SHORT_TRIAL_IMAGES
    long, short = _trials(3, epochs=400), _trials(40)
    packs = packing.packs(short + long, slot_count=1)
    assert packs[-3:] == [[t] for t in long]                      # after the short ones' packs, one each
    assert all(packing.is_short(t) for p in packs[:-3] for t in p)
    assert sum(len(p) for p in packs) == 43


@pytest.mark.parametrize("resources, nodes, expected", [
    ({"cpu": 1, "gpu": 0}, [{"CPU": 2.0}], 2),
    ({"cpu": 2, "gpu": 0.25}, [{"CPU": 16.0, "GPU": 1.0}], 4),      # the GPU share bounds it
    ({"cpu": 2, "gpu": 0}, [{"CPU": 3.0}, {"CPU": 3.0}], 2),         # per node: 6 CPUs, but 1 + 1 trials
    ({"cpu": 4, "gpu": 1}, [{"CPU": 0.0}], 1),                       # a cluster still growing: at least one
])
def test_slots_is_how_many_trials_fit_at_once_on_the_nodes(resources, nodes, expected):
    assert packing.slots(resources, shapes.from_nodes(nodes)) == expected


def test_slots_of_a_cold_autoscaling_cluster_come_from_its_maximum_not_its_nodes_at_start():
    """cluster.yaml before the autoscaler added a node: a CPU-less head, no GPU; its file says 20 GPU
    workers of four 0.25-GPU trials each."""
    paper = config.load("paper-cifar10").grid["resources"]
    cold = shapes.from_nodes([{"CPU": 0.0, "GPU": 0.0}])
    assert packing.slots(paper, cold) == 1
    assert packing.slots(paper, cold, shapes.load(ROOT / "cluster.yaml")) == 80
    # the short trials of a 900-trial stage: packs of a few trials for 80 slots, not 16 for one slot
    trials = _trials(400)
    assert max(len(p) for p in packing.packs(trials, packing.slots(paper, cold))) == packing.MAX_PACK
    assert max(len(p) for p in packing.packs(trials, 80)) == 400 // (packing.PACK_SHARE * 80)


@pytest.fixture
def toy_stage(tmp_path, monkeypatch):
    """(plan, contexts, reports): a toy grid whose originals/Retrain models are trained through
    run_pack in this process; run_pack's Tune calls are replaced (reports are collected)."""
    plan = config.build_plan(TOY)
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "storage")
    reports = []
    monkeypatch.setattr(trial_module.tune, "report", lambda metrics, **kw: reports.append(metrics))
    monkeypatch.setattr(trial_module, "placement_tags", lambda: {"hostname": "test", "pid": "0"})
    base = {"grid": plan.name, "tracking_uri": tracking_uri, "storage": storage, "driver": "test",
            "experiment_id": mlflow_runs.ensure_experiment(tracking_uri, plan.name), "cpus": 1, "checkpoint_minutes": 5}
    contexts = {t["key"]: {**base, "run_name": stages.run_label(t["spec"])} for t in plan.original + plan.retrain}
    trial_module.run_pack({"pack": 0}, [[{**t, "context": contexts[t["key"]]} for t in plan.original + plan.retrain]])
    for t in plan.unlearn:
        contexts[t["key"]] = {**base, "run_name": stages.run_label(t["spec"]), **stages.unlearn_context(t)}
    reports.clear()
    return plan, contexts, reports


def _finished(plan, contexts, key):
    client = MlflowClient(contexts[key]["tracking_uri"])
    experiment = client.get_experiment_by_name(plan.name).experiment_id
    return client.search_runs([experiment], f"tags.key = '{key}' and attributes.status = 'FINISHED'")


def test_a_failing_trial_leaves_its_pack_running_and_a_retry_runs_only_it(toy_stage, monkeypatch):
    plan, contexts, reports = toy_stage
    packs = [[{**t, "context": contexts[t["key"]]} for t in plan.unlearn]]
    real_unlearn = methods.unlearn

    def rl_breaks(name, task, params):
        if name == "rl":
            raise RuntimeError("rl broke\nfor this test")
        return real_unlearn(name, task, params)
    monkeypatch.setattr(trial_module.methods, "unlearn", rl_breaks)
    with pytest.raises(trial_module.PackFailed) as failed:
        trial_module.run_pack({"pack": 0}, packs)
    broken = next(t for t in plan.unlearn if t["spec"]["method"] == "rl")
    assert str(failed.value) == f"{contexts[broken['key']]['run_name']}: RuntimeError: for this test"
    others = [t for t in plan.unlearn if t is not broken]
    assert [r["run_name"] for r in reports if r.get("finished")] == [contexts[t["key"]]["run_name"] for t in others]
    assert all(len(_finished(plan, contexts, t["key"])) == 1 for t in others)
    assert not _finished(plan, contexts, broken["key"])

    # Tune retries the pack: the finished trials are skipped (no second run), the failed one runs
    monkeypatch.setattr(trial_module.methods, "unlearn", real_unlearn)
    reports.clear()
    trial_module.run_pack({"pack": 0}, packs)
    assert [r["run_name"] for r in reports if r.get("finished")] == [contexts[broken["key"]]["run_name"]]
    assert all(len(_finished(plan, contexts, t["key"])) == 1 for t in plan.unlearn)
    assert store.has_model(contexts[broken["key"]]["storage"], broken["key"])


def test_each_trial_of_a_pack_logs_its_final_tags_params_and_metrics(toy_stage):
    plan, contexts, _ = toy_stage
    trial_module.run_pack({"pack": 0}, [[{**t, "context": contexts[t["key"]]} for t in plan.unlearn]])
    mlflow.set_tracking_uri(contexts[plan.unlearn[0]["key"]]["tracking_uri"])
    for t in plan.unlearn:
        run = _finished(plan, contexts, t["key"])[0]
        assert run.data.tags["split_hash"] and run.data.tags["device"].startswith("cpu")
        assert run.data.tags["driver"] == "test" and run.data.tags["stage"] == "unlearn"
        expected = references.compute(contexts[t["key"]]["storage"], t["retrain_model_keys"], t["spec"]["forget_classes"],
                                      t["spec"]["evaluation"])
        assert run.data.params["neighbour_class"] == str(expected.neighbour_class)
        assert {"compute_seconds", "evaluate_seconds", "wall_seconds", "mia_nn"} <= set(run.data.metrics)
        drop = [row for row in __import__("json").loads(run.data.tags["per_class_drop"])]
        assert drop and all(len(row) == 2 for row in drop)
