"""Every method trains on the task's numeric path (task.speed: bf16 autocast, channels_last, data in
place), not only those that go through `finetune`: otherwise the running-time comparison (Figure 5)
and the numerics differ by method. Checked on CPU, where autocast(bf16) and channels_last run too."""
import dataclasses

import pytest
import torch

from trainables import methods
from trainables.train import Speed

FAST = Speed(data_on_device=True, channels_last=True, bf16=True)
GRADIENT_FREE = {"svd"}          # no training loop: nothing runs on a Speed
# just enough work for one training step per pass (the method's own defaults otherwise)
SMALL = {"l2ul": {"pgd_steps": 2}, "scar": {"num_surrogates": 64}, "scrub": {"msteps": 1},
         "svd": {"num_samples": 32, "max_patches": 500}}


def training_convs(name, task):
    """(autocast bf16 on, weight channels_last) at every forward of a trainable conv with gradients on:
    the training steps (and grad passes such as SalUn's saliency), not the frozen original's."""
    records = []

    def spy(module, inputs):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels > 1 and module.weight.requires_grad \
                and torch.is_grad_enabled():
            records.append((torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16,
                            module.weight.is_contiguous(memory_format=torch.channels_last)))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(spy)
    try:
        epochs = {"epochs": 1} if "epochs" in methods.METHODS[name].defaults else {}
        methods.unlearn(name, task, {**epochs, **SMALL.get(name, {})})
    finally:
        handle.remove()
    return records


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_trains_on_the_tasks_speed(name, tiny_problem):
    task = tiny_problem.task(seed=0)
    task = dataclasses.replace(task, retain_x=task.retain_x[:256], retain_y=task.retain_y[:256],
                               forget_x=task.forget_x[:64], forget_y=task.forget_y[:64], speed=FAST)
    records = training_convs(name, task)
    if name in GRADIENT_FREE:
        assert records == []
        return
    assert records, f"{name} took no training step"
    assert any(autocast and nhwc for autocast, nhwc in records), \
        f"{name} trains in float32 / NCHW although task.speed asks for bf16 + channels_last"
