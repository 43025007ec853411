"""TRW's loss weighting (trw.py docstring, docs/methods.md): `pooled` weighs every sample alike, so the
forget term by its share; `sum_of_means` (the paper's Eq. 4 read as two mean losses) scales target rows
so that a uniformly drawn minibatch's loss is in expectation mean retain CE + mean forget soft CE."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from trainables import methods
from trainables.methods.trw import training_targets, weighted_targets
from trainables.train import soft_cross_entropy

N_RETAIN, N_FORGET, CLASSES = 5, 2, 4


def tiny_batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(N_RETAIN + N_FORGET, CLASSES, generator=generator, dtype=torch.float64)
    labels = torch.randint(CLASSES, (N_RETAIN,), generator=generator)
    soft = torch.softmax(torch.randn(N_FORGET, CLASSES, generator=generator, dtype=torch.float64), dim=1)
    return logits, labels, soft


def direct_losses(logits, labels, soft):
    """(mean CE over the retain rows, mean soft CE over the forget rows), computed directly."""
    retain = F.cross_entropy(logits[:N_RETAIN], labels)
    forget = -(soft * F.log_softmax(logits[N_RETAIN:], dim=1)).sum(dim=1).mean()
    return retain, forget


def test_sum_of_means_over_the_whole_set_is_the_sum_of_the_two_mean_losses():
    logits, labels, soft = tiny_batch()
    retain, forget = weighted_targets(F.one_hot(labels, CLASSES).double(), soft, "sum_of_means")
    mean_retain, mean_forget = direct_losses(logits, labels, soft)
    loss = soft_cross_entropy(logits, torch.cat([retain, forget]))
    assert torch.allclose(loss, mean_retain + mean_forget, atol=1e-12)


def test_pooled_weighs_each_term_by_its_share():
    logits, labels, soft = tiny_batch()
    retain, forget = weighted_targets(F.one_hot(labels, CLASSES).double(), soft, "pooled")
    mean_retain, mean_forget = direct_losses(logits, labels, soft)
    total = N_RETAIN + N_FORGET
    loss = soft_cross_entropy(logits, torch.cat([retain, forget]))
    assert torch.allclose(loss, (N_RETAIN * mean_retain + N_FORGET * mean_forget) / total, atol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_sum_of_means_is_the_expected_loss_of_a_uniformly_drawn_minibatch(batch_size):
    """Every batch of `batch_size` rows is equally likely under a shuffled pooled set: their mean loss is
    mean retain + mean forget (not the loss of any one batch, which depends on its mix)."""
    logits, labels, soft = tiny_batch()
    targets = torch.cat(weighted_targets(F.one_hot(labels, CLASSES).double(), soft, "sum_of_means"))
    losses = [soft_cross_entropy(logits[list(rows)], targets[list(rows)])
              for rows in itertools.combinations(range(N_RETAIN + N_FORGET), batch_size)]
    assert torch.allclose(torch.stack(losses).mean(), sum(direct_losses(logits, labels, soft)), atol=1e-12)


def test_unknown_weighting_is_refused_by_name():
    with pytest.raises(ValueError, match="forget_weighting must be one of"):
        weighted_targets(torch.ones(1, 2), torch.ones(1, 2), "mean")
    assert methods.check_params("trw", {"forget_weighting": "mean"})[0][0] == "forget_weighting"
    assert methods.check_params("trw_2r", {"forget_weighting": "sum_of_means"}) == []
    assert "forget_weighting" not in methods.METHODS["rescale"].defaults      # rescale keeps its trial keys


def test_training_targets_scale_the_pooled_rows(tiny_problem):
    task = tiny_problem.task(seed=0)
    params = dict(methods.METHODS["trw"].defaults)
    x, pooled = training_targets(task, params)
    _, summed = training_targets(task, {**params, "forget_weighting": "sum_of_means"})
    n_retain, n_forget = len(task.retain_y), len(task.forget_y)
    total = n_retain + n_forget
    assert torch.allclose(summed[:n_retain], pooled[:n_retain] * total / n_retain)
    assert torch.allclose(summed[n_retain:], pooled[n_retain:] * total / n_forget)
    assert torch.allclose(pooled.sum(dim=1), torch.ones(total))               # pooled: distributions as before
