"""Every registered method on stored inputs (uint8 pixels + task.prepare) computes bitwise what it computes
on pre-normalised float32 inputs: holding uint8 on the device and normalising per batch (a quarter of the
device memory: docs/performance.md) changes no result.

Parametrized over the whole registry: a newly registered method is checked automatically. A method that
feeds a stored tensor to a model without task.prepare fails here (uint8 into a conv), as does one that
normalises differently. Both speeds run: the plain path and the fast path (data held in place, bf16 +
channels_last on CPU), which is what a GPU trial runs.
"""
import functools

import pytest
import torch

from trainables import data, methods, models
from trainables.recipe import Recipe
from trainables.train import Speed, seed_everything, train_classifier
from trainables.trial import unlearn_task

FORGET = 3
FAST = Speed(data_on_device=True, channels_last=True, bf16=True)
# just enough work for a few steps per pass: 24 images a class, batches of 32
SMALL = {"l2ul": {"pgd_steps": 3}, "scar": {"num_surrogates": 64}, "svd": {"num_samples": 60, "max_patches": 500}}
# the variants whose data path differs from the defaults': similarities that read the training set,
# surrogates made from retain pixels
VARIANTS = {"trw": {"similarity": "centroid_distance"}, "trw_2r": {"similarity": "centroid_distance"},
            "scar": {"surrogate": "shuffled"}}


@pytest.fixture(scope="module")
def pixels_problem():
    """(info, uint8 images (N, 3, 8, 8), labels, frozen small_cnn original, split): CIFAR-10's
    normalisation and class count on random pixels with a class signal in the red channel."""
    info = data.get_info("cifar10")
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(info.num_classes).repeat_interleave(24)
    x = torch.randint(0, 256, (len(y), 3, 8, 8), generator=generator, dtype=torch.uint8)
    x[:, 0] = x[:, 0] // 2 + (y * 12).to(torch.uint8)[:, None, None]
    seed_everything(0)
    original = models.build("small_cnn", info.num_classes, (3, 8, 8))
    train_classifier(original, data.model_input(info, x), y, Recipe(epochs=2, lr=0.05, batch_size=32, lr_step=10),
                     generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    original.eval()
    for p in original.parameters():
        p.requires_grad_(False)
    return info, x, y, original, data.forget_split(y.numpy(), [FORGET])


def make_task(problem, stored, speed):
    """The task as trial.py builds it (stored uint8 + prepare), or with inputs normalised up front."""
    info, x, y, original, split = problem
    if stored:
        retain_x, forget_x, prepare = x[split.retain], x[split.forget], functools.partial(data.model_input, info)
    else:
        retain_x, forget_x = data.model_input(info, x[split.retain]), data.model_input(info, x[split.forget])
        prepare = methods.UnlearnTask.prepare    # the default: inputs are model inputs
    return methods.UnlearnTask(original=original, retain_x=retain_x, retain_y=y[split.retain], forget_x=forget_x,
                               forget_y=y[split.forget], forget_classes=[FORGET], num_classes=info.num_classes,
                               seed=0, device=torch.device("cpu"), dataset="cifar10", speed=speed, prepare=prepare)


def small_params(name):
    defaults = methods.METHODS[name].defaults
    params = {key: value for key, value in (("epochs", 1), ("batch_size", 32)) if key in defaults}
    return {**params, **SMALL.get(name, {})}


CASES = [(name, {}) for name in sorted(methods.METHODS)] + sorted(VARIANTS.items())


@pytest.mark.parametrize("speed", [Speed(), FAST], ids=["plain", "fast"])
@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}{'-' + '-'.join(v.values()) if v else ''}" for n, v in CASES])
def test_stored_inputs_give_bitwise_the_same_model(name, variant, speed, pixels_problem):
    params = {**small_params(name), **variant}
    results = []
    for stored in (False, True):
        model = methods.unlearn(name, make_task(pixels_problem, stored, speed), params)
        results.append(model.state_dict())
    floats, uint8 = results
    assert floats.keys() == uint8.keys()
    differ = [key for key in floats if not torch.equal(floats[key], uint8[key])]
    assert not differ, f"{name}: stored uint8 inputs + prepare change {differ}"


def test_trial_tasks_hold_stored_pixels_and_normalise_per_batch(pixels_problem):
    info, x, y, original, split = pixels_problem
    dataset = data.Dataset(info, x, y, x[:10], y[:10])
    spec = {"forget_classes": [FORGET], "unlearn_seed": 0, "dataset": "cifar10", "seed": 0}
    task = unlearn_task(spec, {}, dataset, split, original, torch.device("cpu"), log_epoch=None)
    assert task.retain_x.dtype == torch.uint8 and task.forget_x.dtype == torch.uint8
    assert torch.equal(task.retain_x, x[split.retain])
    batch = task.retain_x[:5]
    assert torch.equal(task.prepare(batch), data.model_input(info, x[split.retain])[:5])


def test_a_task_without_prepare_takes_its_inputs_as_model_inputs(pixels_problem):
    """Tasks built by tests and plugins on float data (digits, toy2d) need no prepare."""
    info, x, y, original, split = pixels_problem
    floats = data.model_input(info, x)
    task = methods.UnlearnTask(original, floats[split.retain], y[split.retain], floats[split.forget],
                               y[split.forget], [FORGET], info.num_classes, seed=0)
    assert task.prepare(task.forget_x) is task.forget_x
