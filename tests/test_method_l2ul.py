"""L2UL: targeted L2-PGD examples, inverted MAS importance, early stop at zero forget accuracy."""
import torch
import torch.nn as nn

from trainables import methods
from trainables.methods import l2ul


def test_pgd_stays_in_l2_ball_and_pixel_range(tiny_problem):
    task = tiny_problem.task()
    x, targets = task.forget_x[:64], torch.zeros(64, dtype=torch.long)
    adv = l2ul.targeted_l2_pgd(tiny_problem.original, x, targets, 0.5, 0.2, 10, torch.Generator().manual_seed(0))
    norms = (adv - x).flatten(1).norm(dim=1)
    assert (norms <= 0.5 + 1e-5).all()                   # per sample, not on average
    assert (norms > 0.5 - 1e-3).any()                    # the projection was active
    assert adv.min() >= 0 and adv.max() <= 1


def test_adversarial_set_reaches_random_retained_targets(tiny_problem):
    task = tiny_problem.task()
    adv_x, adv_y = l2ul.adversarial_set(task, methods.resolve_params("l2ul", {}), task.generator())
    assert adv_x.shape == task.forget_x.shape and adv_y.shape == task.forget_y.shape
    assert not torch.isin(adv_y, torch.tensor(task.forget_classes)).any()
    assert len(adv_y.unique()) == task.num_classes - 1                   # spread over the retained classes
    assert ((adv_x - task.forget_x).flatten(1).norm(dim=1) <= 4.0 + 1e-5).all()
    with torch.no_grad():
        hits = (tiny_problem.original(adv_x).argmax(dim=1) == adv_y).float().mean()
    assert hits > 0.9                                    # targeted: the original predicts the target
    two = l2ul.adversarial_set(task, methods.resolve_params("l2ul", {"num_adv": 2, "pgd_steps": 1}),
                               task.generator())
    assert len(two[0]) == len(two[1]) == 2 * len(task.forget_x)


def test_pgd_is_seeded(tiny_problem):
    x, targets = tiny_problem.task().forget_x[:16], torch.zeros(16, dtype=torch.long)
    runs = [l2ul.targeted_l2_pgd(tiny_problem.original, x, targets, 4.0, 0.1, 5, torch.Generator().manual_seed(s))
            for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_penalty_is_inverted_min_max_importance():
    weights = l2ul.penalty_weights([torch.tensor([0.0, 1.0, 3.0]), torch.full((2, 2), 0.7)])
    assert torch.allclose(weights[0], torch.tensor([1.0, 2 / 3, 0.0]))   # most important -> no penalty
    assert torch.equal(weights[1], torch.ones(2, 2))                     # constant tensor: plain penalty


def test_importance_weights_on_model(tiny_problem):
    task = tiny_problem.task()
    model = task.fresh_copy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    importance = l2ul.mas_importance(model, task.forget_x, task.device, 128)
    weights = l2ul.penalty_weights(importance)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # BN stats untouched
    for imp, weight, param in zip(importance, weights, model.parameters()):
        assert weight.shape == param.shape
        assert weight.min() >= 0 and weight.max() <= 1
        if imp.max() > imp.min():
            assert weight.flatten()[imp.argmax()] == 0 and weight.flatten()[imp.argmin()] == 1


def _linear_task(bias, epochs_log):
    """3 classes, forget class 2; a frozen linear original whose bias alone decides every prediction."""
    original = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        original[1].weight.zero_()
        original[1].bias.copy_(torch.tensor(bias))
    original.eval().requires_grad_(False)
    x = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1] * 6)
    return methods.UnlearnTask(original=original, retain_x=x, retain_y=y, forget_x=x[:6],
                               forget_y=torch.full((6,), 2), forget_classes=[2], num_classes=3, seed=0,
                               log_epoch=lambda epoch, metrics, model=None: epochs_log.append((epoch, metrics)))


def test_stops_when_forget_accuracy_is_zero():
    params = {"epochs": 5, "lr": 1e-9, "pgd_steps": 2}        # lr ~0: predictions stay the bias's
    log = []
    methods.unlearn("l2ul", _linear_task([5.0, 0.0, 0.0], log), params)      # forget samples -> class 0
    assert [epoch for epoch, _ in log] == [1]                # forget accuracy 0 after epoch 1: stop
    assert log[0][1]["forget_acc"] == 0.0
    log = []
    methods.unlearn("l2ul", _linear_task([0.0, 0.0, 5.0], log), params)      # forget samples -> class 2
    assert [epoch for epoch, _ in log] == [1, 2, 3, 4, 5]    # never reaches 0: the epoch budget bounds it
    assert all(metrics["forget_acc"] == 100.0 for _, metrics in log)
