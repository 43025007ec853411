"""l1-sparse: the α_t schedule (linear, not compounded, 0 at the last epoch) and that the penalty sparsifies."""
import pytest

from trainables import methods
from trainables.methods.l1 import l1_coefficient, l1_norm

ALPHA = 5e-4


def test_coefficient_decays_linearly_to_exactly_zero_at_the_last_epoch():
    epochs = 20
    values = [l1_coefficient(ALPHA, epoch, epochs) for epoch in range(1, epochs + 1)]
    assert values[-1] == 0.0
    assert values[0] == pytest.approx(ALPHA * (1 - 1 / epochs))
    steps = [a - b for a, b in zip(values, values[1:])]
    assert steps == pytest.approx([ALPHA / epochs] * (epochs - 1))      # linear: constant decrement
    # not compounded: halfway is α/2 (a compounding α ← α(1 − t/T) would be far smaller by then)
    assert l1_coefficient(ALPHA, 10, epochs) == pytest.approx(ALPHA / 2)


def test_single_epoch_is_the_last_and_out_of_range_epochs_are_rejected():
    assert l1_coefficient(ALPHA, 1, 1) == 0.0
    with pytest.raises(ValueError):
        l1_coefficient(ALPHA, 0, 5)
    with pytest.raises(ValueError):
        l1_coefficient(ALPHA, 6, 5)


def run_l1(tiny_problem, **params):
    task = tiny_problem.task(seed=0)
    logged = []
    task.log_epoch = lambda epoch, metrics, model=None: logged.append((epoch, metrics["l1_alpha"]))
    return methods.unlearn("l1", task, {"epochs": 4, **params}), logged


def test_training_applies_the_schedule_and_the_penalty_shrinks_the_l1_norm(tiny_problem):
    sparse, logged = run_l1(tiny_problem, alpha=ALPHA)
    plain, _ = run_l1(tiny_problem, alpha=0.0)          # same seed, data order and steps: only the penalty differs
    assert logged == [(epoch, l1_coefficient(ALPHA, epoch, 4)) for epoch in range(1, 5)]
    assert float(l1_norm(sparse).detach()) < float(l1_norm(plain).detach())
    assert float(l1_norm(plain).detach()) - float(l1_norm(sparse).detach()) > 1e-3 * float(l1_norm(plain).detach())
