"""SCRUB: max passes over the forget set happen only in the first msteps epochs, and they do the forgetting."""
import math

import torch

from analysis.metrics import retain_forget_accuracy
from trainables import methods
from trainables.methods import scrub


def _run(tiny_problem, params):
    task = tiny_problem.task(seed=0)
    logs = []
    task.log_epoch = lambda epoch, metrics, model=None: logs.append((epoch, metrics))
    model = methods.unlearn("scrub", task, params)
    _, acc_f = retain_forget_accuracy(tiny_problem.logits_on_test(model), tiny_problem.dataset.test_y.numpy(),
                                      [tiny_problem.forget_class])
    return logs, acc_f


def test_schedule_function():
    assert [scrub.has_max_pass(e, 2) for e in range(1, 6)] == [True, True, False, False, False]
    assert not any(scrub.has_max_pass(e, 0) for e in range(1, 6))
    # the reference lr schedule: × decay after epochs 3, 5 and 9
    assert [scrub.epoch_lr(e, 1.0, 0.1) for e in (1, 3, 4, 6, 10)] == [1.0, 1.0, 0.1, 0.1**2, 0.1**3]


def test_distill_kl_is_zero_for_equal_logits_and_scaled_by_t_squared():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    assert scrub.distill_kl(logits, logits, 4.0).abs() < 1e-6
    other = logits.flip(1)
    kl = (torch.softmax(other, 1) * (torch.log_softmax(other, 1) - torch.log_softmax(logits, 1))).sum(1).mean()
    assert torch.allclose(scrub.distill_kl(logits, other, 1.0), kl, atol=1e-6)


def test_max_steps_only_in_first_msteps_epochs_and_they_drive_forgetting(tiny_problem):
    base = {"epochs": 3, "lr": 1e-3}
    logs, acc_with_max = _run(tiny_problem, {**base, "msteps": 2})
    batches = math.ceil(len(tiny_problem.split.forget) / methods.METHODS["scrub"].defaults["forget_batch_size"])
    assert [m["max_steps"] for _, m in logs] == [batches, batches, 0]
    assert ["max_loss" in m for _, m in logs] == [True, True, False]
    assert all(m["max_loss"] < 0 for _, m in logs if "max_loss" in m)      # −KL: the divergence is maximised

    logs, acc_without_max = _run(tiny_problem, {**base, "msteps": 0})
    assert [m["max_steps"] for _, m in logs] == [0, 0, 0]
    assert not any("max_loss" in m for _, m in logs)
    assert acc_without_max >= 90.0                        # retain-only min steps keep the class
    assert acc_with_max <= acc_without_max - 30.0


def test_scrub_param_ranges():
    assert [p for p, _ in methods.check_params("scrub", {"forget_batch_size": 0})] == ["forget_batch_size"]
    assert [p for p, _ in methods.check_params("scrub", {"lr_decay": 1.5})] == ["lr_decay"]
    assert methods.check_params("scrub", {"msteps": 0, "lr_decay": 1.0}) == []
