"""TRW-2R: exactly the seed-chosen layers change (parameters and buffers of all others bit-identical)."""
import pytest
import torch

from trainables import methods
from trainables.methods.trw_2r import choose_layers


def own_tensors(module):
    return list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))


def changed_layers(original, model):
    """Names of modules with at least one own parameter or buffer that differs."""
    after = dict(model.named_modules())
    return {name for name, module in original.named_modules()
            if any(not torch.equal(a, b) for a, b in zip(own_tensors(module), own_tensors(after[name])))}


@pytest.mark.parametrize("seed", [0, 3])        # seed 0 picks two convs, seed 3 two BatchNorms (small_cnn)
def test_changes_exactly_the_chosen_layers(tiny_problem, seed):
    task = tiny_problem.task(seed=seed)
    chosen = choose_layers(tiny_problem.original, 2, task.generator())
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
    chosen = choose_layers(tiny_problem.original, 1, task.generator())
    assert changed_layers(tiny_problem.original, model) == set(chosen)
    with pytest.raises(ValueError):
        methods.unlearn("trw_2r", task, {"layers": 0})
