"""TRW-2R: exactly the chosen layers change (parameters and buffers of all others bit-identical); the
choice is deterministic per trial, varies across a plan's trials, and is logged as `layers_chosen`."""
import dataclasses
import types

import pytest
import torch

from grid.plan import config
from trainables import methods, models, trial
from trainables.methods.trw_2r import choose_layers, layer_generator


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
    assert logged == [{"layers_chosen": ",".join(chosen)}]
    assert changed_layers(tiny_problem.original, model) == set(chosen)


def test_the_unlearn_stage_logs_params_to_mlflow(monkeypatch):
    logged = []
    monkeypatch.setattr(trial.mlflow, "log_params", logged.append)
    tasks = plan_tasks("small_cnn")
    tasks[0].log_params({"layers_chosen": "0,7"})
    assert logged == [{"layers_chosen": "0,7"}]
    assert sorted({task.original_seed for task in tasks}) == [0, 1, 2]      # spec seed, not unlearn_seed
    assert {task.seed for task in tasks} == {0}
