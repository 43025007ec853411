"""BU-shrink's FGSM and L2UL's PGD on normalised inputs (issue 12): ε and the [0, 1] box are in pixels.

The fixture is CIFAR-10-like: random uint8 images normalised with CIFAR-10's mean/std exactly as
trials feed methods (data.model_input), and a linear classifier on pixels. `norm_model` is that same
classifier behind de-normalisation, i.e. what a method's `task.original` is on normalised data. An
attack on (norm_model, normalised inputs) must then equal the attack on (pix_model, pixels).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables import data, methods
from trainables.methods import bu_shrink, l2ul
from trainables.methods._pixels import pixel_stats, to_pixels

INFO = data.get_info("cifar10")
MEAN, STD = (torch.tensor(v).view(1, -1, 1, 1) for v in (INFO.mean, INFO.std))
STATS = (MEAN, STD)
FORGET = 3


class Denormalise(nn.Module):
    def forward(self, x):
        return x * STD + MEAN


@pytest.fixture(scope="module")
def fixture():
    generator = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (64, 3, 8, 8), generator=generator, dtype=torch.uint8)
    u8[:, :, 0, :], u8[:, :, 1, :] = 0, 255            # rows at the box's edges, where the clamp acts
    torch.manual_seed(0)
    pix_model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with torch.no_grad():
        pix_model[1].weight[:, 2 * 64:] = 0              # blue channel ignored: its gradient is 0
    pix_model.eval().requires_grad_(False)
    norm_model = nn.Sequential(Denormalise(), pix_model).eval()
    return pix_model, norm_model, u8.float() / 255, data.model_input(INFO, u8)


def _task(original, x, dataset):
    return methods.UnlearnTask(original=original, retain_x=x[:0], retain_y=torch.zeros(0, dtype=torch.long),
                               forget_x=x, forget_y=torch.full((len(x),), FORGET), forget_classes=[FORGET],
                               num_classes=10, seed=0, dataset=dataset)


def test_pixel_stats_only_where_inputs_are_normalised(fixture):
    stats = pixel_stats(_task(fixture[1], fixture[3], "cifar10"))
    assert torch.equal(stats[0], MEAN) and torch.equal(stats[1], STD)
    for name in ("digits", "toy2d", ""):                 # float inputs: attacks unchanged
        assert pixel_stats(_task(fixture[0], fixture[2], name)) is None


def test_fgsm_moves_pixels_by_epsilon_and_clamps_in_pixel_space(fixture):
    pix_model, norm_model, pixels, x = fixture
    y, epsilon = torch.full((len(x),), FORGET), 0.1
    adv = to_pixels(bu_shrink.fgsm(norm_model, x, y, epsilon, STATS), STATS)
    delta = adv - pixels
    assert delta.abs().max() <= epsilon + 1e-6          # L∞ in pixels (was 0.49 before the fix)
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    wanted = pixels.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(pix_model(wanted), y), wanted)
    step = epsilon * grad.sign()
    inside = ((pixels + step) >= 1e-3) & ((pixels + step) <= 1 - 1e-3)
    assert torch.allclose(delta[inside], step[inside], atol=1e-5)        # exactly ε, along the sign
    assert (delta[:, 2].abs() < 1e-6).all()             # zero gradient: not moved (the clamp moved them)
    low, high = (pixels == 0) & (step < 0), (pixels == 1) & (step > 0)
    assert low.any() and high.any()
    assert (adv[low].abs() < 1e-6).all() and ((adv[high] - 1).abs() < 1e-6).all()   # clamped at the edge
    assert torch.allclose(adv, bu_shrink.fgsm(pix_model, pixels, y, epsilon), atol=1e-5)


def test_bu_shrink_labels_match_the_unnormalised_attack(fixture, monkeypatch):
    pix_model, norm_model, pixels, x = fixture
    seen = {}
    monkeypatch.setattr(bu_shrink, "finetune", lambda task, model, x, labels, loss, params: seen.setdefault("y", labels))
    methods.unlearn("bu_shrink", _task(norm_model, x, "cifar10"), {})
    expected = bu_shrink.nearest_wrong_labels(pix_model, pixels, torch.full((len(x),), FORGET), [FORGET], 0.1,
                                              torch.device("cpu"))
    assert torch.equal(seen["y"], expected)


def test_pgd_ball_and_box_are_in_pixel_space(fixture):
    pix_model, norm_model, pixels, x = fixture
    targets, epsilon = torch.arange(len(x)) % 10, 1.0
    adv = to_pixels(l2ul.targeted_l2_pgd(norm_model, x, targets, epsilon, 0.1, 20,
                                         torch.Generator().manual_seed(0), STATS), STATS)
    norms = (adv - pixels).flatten(1).norm(dim=1)
    assert (norms <= epsilon + 1e-5).all()               # per sample, in pixels
    assert (norms > epsilon - 1e-3).any()                # the pixel-space projection was active (was ≤ 0.25)
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    same = l2ul.targeted_l2_pgd(pix_model, pixels, targets, epsilon, 0.1, 20, torch.Generator().manual_seed(0))
    assert torch.allclose(adv, same, atol=1e-4)


def test_targeted_pgd_reaches_targets_as_often_as_unnormalised(fixture):
    pix_model, norm_model, pixels, x = fixture
    params = methods.resolve_params("l2ul", {"epsilon": 2.0, "pgd_steps": 30})
    rates = []
    for original, inputs, dataset in ((pix_model, pixels, ""), (norm_model, x, "cifar10")):
        task = _task(original, inputs, dataset)
        adv_x, adv_y = l2ul.adversarial_set(task, params, task.generator())
        with torch.no_grad():
            rates.append((original(adv_x).argmax(dim=1) == adv_y).float().mean().item())
    assert rates[0] > 0.7                                # the attack works at ε = 2 on pixels (0.95) ...
    assert abs(rates[1] - rates[0]) <= 0.05              # ... and as well on normalised inputs (was 0.02)
