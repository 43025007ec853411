"""SalUn: the saliency mask covers the requested fraction ranked globally, and the hard mask leaves every
unmasked weight entry bit-identical (weight decay and momentum included) while masked entries move."""
import pytest
import torch

from trainables import methods
from trainables.methods.salun import global_top_mask, saliency


def test_mask_ranks_globally_across_tensors():
    scores = [torch.tensor([10.0, 9.0, 8.0, 7.0]), torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])]
    first, second = global_top_mask(scores, 0.4)        # 4 of 10 entries: all of the first tensor
    assert first.all() and not second.any()
    assert second.shape == (2, 3)


def test_mask_takes_exactly_the_fraction_even_with_ties():
    scores = [torch.ones(7), torch.ones(2, 3)]
    assert sum(int(m.sum()) for m in global_top_mask(scores, 0.5)) == 6     # floor(0.5 · 13)
    with pytest.raises(ValueError):
        global_top_mask(scores, 0.0)


@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_unmasked_weights_are_bit_identical_and_masked_ones_move(tiny_problem, fraction):
    task = tiny_problem.task(seed=0)
    params = {"fraction": fraction} if fraction != 0.5 else {}       # 0.5: the registered default
    model = methods.unlearn("salun", task, params)
    masks = global_top_mask(saliency(task.fresh_copy(), task.forget_x, task.forget_y, 128, task.device), fraction)
    total = sum(m.numel() for m in masks)
    assert sum(int(m.sum()) for m in masks) == int(fraction * total)
    changed = 0
    for before, after, keep in zip(tiny_problem.original.parameters(), model.parameters(), masks):
        assert torch.equal(after[~keep], before[~keep])
        changed += int((after[keep] != before[keep]).sum())
    assert changed > 0.9 * int(fraction * total)       # SGD with weight decay moves nearly every masked entry
