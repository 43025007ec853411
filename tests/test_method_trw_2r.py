"""TRW-2R: exactly the chosen layers change (parameters and buffers of all others bit-identical); the
choice is deterministic per trial, varies across a plan's trials, and is logged as `layers_chosen`."""
import dataclasses
import types

import pytest
import torch

from grid.plan import config
from trainables import methods, models, trial
from trainables.methods.trw_2r import choose_layers, draw_kind, layer_generator


def own_tensors(module):
    return list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))


def changed_layers(original, model):
    """Names of modules with at least one own parameter or buffer that differs."""
    after = dict(model.named_modules())
    return {name for name, module in original.named_modules()
            if any(not torch.equal(a, b) for a, b in zip(own_tensors(module), own_tensors(after[name])))}


@pytest.mark.parametrize("seed", [0, 2])        # seed 0 picks two convs, seed 2 two BatchNorms (small_cnn)
def test_changes_exactly_the_chosen_layers(tiny_problem, seed):
    task = tiny_problem.task(seed=seed)
    chosen = choose_layers(tiny_problem.original, 2, layer_generator(task))
    model = methods.unlearn("trw_2r", task, {})
    assert len(chosen) == 2
    assert changed_layers(tiny_problem.original, model) == set(chosen)
    after = dict(model.named_modules())
    originals = dict(tiny_problem.original.named_modules())
    for name in chosen:                              # every parameter of a chosen layer moved
        for a, b in zip(originals[name].parameters(recurse=False), after[name].parameters(recurse=False)):
            assert not torch.equal(a, b), f"{name} did not change"
    assert all(p.requires_grad for p in model.parameters())    # returned like any other method's model
    assert not model._forward_pre_hooks


def test_choice_is_deterministic_per_seed_and_varies_across_seeds(tiny_problem):
    def pick(seed):
        return tuple(choose_layers(tiny_problem.original, 2, torch.Generator().manual_seed(seed)))
    assert pick(0) == pick(0)
    assert len({pick(seed) for seed in range(10)}) > 1
    owners = {name for name, m in tiny_problem.original.named_modules() if list(m.parameters(recurse=False))}
    assert all(set(pick(seed)) <= owners for seed in range(10))


def test_layers_param(tiny_problem):
    task = tiny_problem.task(seed=1)
    model = methods.unlearn("trw_2r", task, {"layers": 1, "epochs": 2})
    chosen = choose_layers(tiny_problem.original, 1, layer_generator(task))
    assert changed_layers(tiny_problem.original, model) == set(chosen)
    with pytest.raises(ValueError):
        methods.unlearn("trw_2r", task, {"layers": 0})


# ---------------------------------------------------------------- the choice across a plan's trials

def plan_tasks(arch="resnet18"):
    """An UnlearnTask per trw_2r trial of a plan (3 seeds x 3 forget sets, one unlearning seed as in the
    paper grids), built by trainables.trial.unlearn_task as the unlearn stage builds it (no training)."""
    plan = config.build_plan({"name": "layers", "datasets": ["digits"], "archs": [arch], "forget_classes": [0, 3, [1, 7]],
                              "seeds": [0, 1, 2], "unlearn_seeds": [0], "methods": {"trw_2r": {}}})
    empty = torch.zeros(0)
    dataset = types.SimpleNamespace(train_x=empty, train_y=empty, model_input=lambda x: x,
                                    info=types.SimpleNamespace(num_classes=10))
    split = types.SimpleNamespace(retain=[], forget=[])
    trials = [t for t in plan.unlearn if t["spec"]["method"] == "trw_2r"]
    assert len(trials) == 9
    return [trial.unlearn_task(t["spec"], {}, dataset, split, None, torch.device("cpu"), None) for t in trials]


def test_the_plans_trials_do_not_all_choose_the_same_layers():
    model = models.build("resnet18", 10, (3, 32, 32))
    picks = [tuple(choose_layers(model, 2, layer_generator(task))) for task in plan_tasks()]
    assert len(set(picks)) > 1, picks                      # before: ('bn1', 'fc') in every trial
    again = [tuple(choose_layers(model, 2, layer_generator(task))) for task in plan_tasks()]
    assert picks == again                                   # the same trial chooses the same layers


def test_the_generator_depends_on_each_of_seed_unlearn_seed_and_forget_set():
    task = methods.UnlearnTask(None, *[torch.zeros(0)] * 4, forget_classes=[3, 1], num_classes=10, seed=0)
    draw = lambda t: torch.randint(2**31, (4,), generator=layer_generator(t)).tolist()
    base = draw(task)
    assert draw(dataclasses.replace(task, forget_classes=[1, 3])) == base       # a set: order does not count
    for change in ({"original_seed": 1}, {"seed": 1}, {"forget_classes": [3]}):
        assert draw(dataclasses.replace(task, **change)) != base, change


def test_chosen_layers_are_logged_as_a_param(tiny_problem):
    logged = []
    task = dataclasses.replace(tiny_problem.task(seed=1), log_params=logged.append)
    model = methods.unlearn("trw_2r", task, {"epochs": 1})
    chosen = choose_layers(tiny_problem.original, 2, layer_generator(task))
    assert logged == [{"layers_chosen": ",".join(chosen), "layers_kind": draw_kind(tiny_problem.original, chosen)}]
    assert changed_layers(tiny_problem.original, model) == set(chosen)


# ---------------------------------------------------------------- layer_types and the kind of each draw

def test_weights_only_draws_never_pick_a_batchnorm():
    model = models.build("resnet18", 10, (3, 32, 32))
    modules = dict(model.named_modules())
    weights = {name for name, m in modules.items() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    drawn = [choose_layers(model, 2, torch.Generator().manual_seed(seed), "weights") for seed in range(200)]
    assert all(set(names) <= weights for names in drawn)
    assert len({tuple(names) for names in drawn}) > 50                        # still random among them
    assert {draw_kind(model, names) for names in drawn} == {"weights_only"}
    anything = [choose_layers(model, 2, torch.Generator().manual_seed(seed)) for seed in range(200)]
    assert {draw_kind(model, names) for names in anything} == {"batchnorm_only", "mixed", "weights_only"}
    # the default draw is today's draw: layer_types any picks what choose_layers always picked
    assert anything[0] == choose_layers(model, 2, torch.Generator().manual_seed(0), "any")


def test_draw_kind():
    model = models.build("resnet18", 10, (3, 32, 32))
    assert draw_kind(model, ["bn1", "layer1.0.bn2"]) == "batchnorm_only"
    assert draw_kind(model, ["conv1", "bn1"]) == "mixed"
    assert draw_kind(model, ["layer2.0.downsample.0", "fc"]) == "weights_only"


def test_layer_types_weights_trains_only_weight_layers_and_logs_the_kind(tiny_problem):
    logged = []
    task = dataclasses.replace(tiny_problem.task(seed=2), log_params=logged.append)   # seed 2: two BatchNorms with any
    assert draw_kind(tiny_problem.original, choose_layers(tiny_problem.original, 2, layer_generator(task))) == "batchnorm_only"
    model = methods.unlearn("trw_2r", task, {"epochs": 1, "layer_types": "weights"})
    chosen = logged[0]["layers_chosen"].split(",")
    assert logged[0]["layers_kind"] == "weights_only"
    modules = dict(tiny_problem.original.named_modules())
    assert all(isinstance(modules[name], (torch.nn.Conv2d, torch.nn.Linear)) for name in chosen)
    assert changed_layers(tiny_problem.original, model) == set(chosen)


def test_layer_types_is_checked_by_the_registry():
    assert methods.check_params("trw_2r", {"layer_types": "conv"})[0][0] == "layer_types"
    assert methods.check_params("trw_2r", {"layer_types": "weights"}) == []
    with pytest.raises(ValueError, match="layer_types must be one of"):
        choose_layers(models.build("small_cnn", 10, (1, 8, 8)), 2, torch.Generator(), "conv")


def test_the_unlearn_stage_logs_params_to_mlflow(monkeypatch):
    logged = []
    monkeypatch.setattr(trial.mlflow, "log_params", logged.append)
    tasks = plan_tasks("small_cnn")
    tasks[0].log_params({"layers_chosen": "0,7"})
    assert logged == [{"layers_chosen": "0,7"}]
    assert sorted({task.original_seed for task in tasks}) == [0, 1, 2]      # spec seed, not unlearn_seed
    assert {task.seed for task in tasks} == {0}
