"""Boundary Unlearning (bu_shrink, bu_expand): nearest-wrong-class labels and the shadow-class head."""
import copy

import pytest
import torch

from trainables import methods, models
from trainables.methods import bu_expand, bu_shrink


def test_fgsm_stays_in_linf_ball_and_pixel_range(tiny_problem):
    task = tiny_problem.task()
    x = task.forget_x[:64]
    adv = bu_shrink.fgsm(tiny_problem.original, x, task.forget_y[:64], 0.1)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)


def test_shrink_labels_are_the_nearest_retained_class(tiny_problem):
    task = tiny_problem.task()
    original = tiny_problem.original
    labels = bu_shrink.nearest_wrong_labels(original, task.forget_x, task.forget_y, task.forget_classes,
                                            0.1, task.device)
    assert labels.shape == task.forget_y.shape
    assert not torch.isin(labels, torch.tensor(task.forget_classes)).any()    # never a forget class
    with torch.no_grad():
        logits = original(bu_shrink.fgsm(original, task.forget_x, task.forget_y, 0.1))
    flipped = logits.argmax(dim=1) != task.forget_y
    assert flipped.any() and (~flipped).any()          # both cases occur on digits at ε = 0.1
    # where the attack succeeded the label is the original's prediction on the perturbed input ...
    assert torch.equal(labels[flipped], logits.argmax(dim=1)[flipped])
    # ... where it failed, the runner-up (best class other than the forget class)
    assert torch.equal(labels[~flipped], logits[~flipped].topk(2, dim=1).indices[:, 1])


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_expand_then_shrink_head(arch):
    torch.manual_seed(0)
    model = models.build(arch, 10, (1, 8, 8)).eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        wide = bu_expand.expand_head(copy.deepcopy(model), torch.Generator().manual_seed(0))
        wide_logits = wide(x)
        narrow = bu_expand.shrink_head(wide, 10)
        after = narrow(x)
    assert wide_logits.shape == (5, 11)
    assert torch.allclose(wide_logits[:, :10], before)       # existing outputs copied, one new output
    assert after.shape == (5, 10) and torch.allclose(after, before)
    assert {k: v.shape for k, v in narrow.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_expand_trains_forget_set_into_shadow_class_and_returns_original_architecture(tiny_problem, monkeypatch):
    seen = {}
    real_finetune = bu_expand.finetune

    def spy(task, model, x, targets, loss_fn, params):
        seen["outputs"] = models.final_layer(model).out_features
        seen["targets"] = targets.clone()
        return real_finetune(task, model, x, targets, loss_fn, params)

    monkeypatch.setattr(bu_expand, "finetune", spy)
    task = tiny_problem.task()
    model = methods.unlearn("bu_expand", task, {"epochs": 2})
    assert seen["outputs"] == task.num_classes + 1
    assert torch.equal(seen["targets"], torch.full_like(task.forget_y, task.num_classes))
    original_state = tiny_problem.original.state_dict()
    state = model.state_dict()
    assert list(state) == list(original_state)
    assert all(state[k].shape == original_state[k].shape for k in state)
    copy.deepcopy(tiny_problem.original).load_state_dict(state)          # strict: loadable as the original
