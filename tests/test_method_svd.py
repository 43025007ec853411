"""SVD unlearning: gradient-free, BatchNorm statistics untouched, and the projection math itself."""
import torch
import torch.nn as nn

from trainables import methods
from trainables.methods import svd


def test_svd_keeps_batchnorm_statistics_bit_identical(tiny_problem):
    model = methods.unlearn("svd", tiny_problem.task(seed=0), {})
    original = dict(tiny_problem.original.named_buffers())
    buffers = dict(model.named_buffers())
    bn_keys = [k for k in original if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert bn_keys, "small_cnn should have BatchNorm buffers"
    for key in bn_keys:
        assert torch.equal(buffers[key], original[key]), key
    assert not model.training
    # while conv/linear weights did change
    assert not torch.equal(model[0].weight, tiny_problem.original[0].weight)


def test_svd_takes_no_gradient(tiny_problem, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("svd must not backpropagate")
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    model = methods.unlearn("svd", tiny_problem.task(seed=0), {})
    assert all(p.grad is None for p in model.parameters())


def _task(model, retain_x, forget_x):
    return methods.UnlearnTask(original=model, retain_x=retain_x, retain_y=torch.zeros(len(retain_x), dtype=torch.long),
                               forget_x=forget_x, forget_y=torch.ones(len(forget_x), dtype=torch.long),
                               forget_classes=[1], num_classes=2, seed=0)


def test_projection_removes_forget_only_direction_and_keeps_retain_directions():
    g = torch.Generator().manual_seed(0)
    e = torch.eye(3)
    # retain activations span {e0, e1}; forget activations span {e0, e2}: e2 is the forget-only direction
    retain_x = torch.randn(200, 2, generator=g) @ e[:2]
    forget_x = torch.randn(200, 2, generator=g) @ e[[0, 2]]
    m_r = svd.scaled_projection(retain_x.T @ retain_x, alpha=1000.0)
    m_f = svd.scaled_projection(forget_x.T @ forget_x, alpha=1000.0)
    p = svd.forget_projection(m_r, m_f).float()
    assert (p.T @ e[2]).norm() < 0.01                           # forget-only direction removed
    assert torch.allclose(p.T @ e[1], e[1], atol=1e-6)          # retain-only direction kept exactly
    assert torch.allclose(p.T @ e[0], e[0], atol=0.01)          # shared direction kept (retain uses it)

    # the same through the method on a one-layer model: W ← W Pᵀ
    original = nn.Linear(3, 2)
    model = methods.unlearn("svd", _task(original, retain_x, forget_x), {"alpha_r": 1000.0, "alpha_f": 1000.0})
    with torch.no_grad():
        assert (model.weight @ e[2]).norm() < 0.01
        assert torch.allclose(model.weight @ e[1], original.weight @ e[1], atol=1e-5)


def test_scaled_projection_matches_svd_of_the_rows():
    a = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u, s, _ = torch.linalg.svd(a.T, full_matrices=False)
    ratio = s**2 / (s**2).sum()
    expected = u @ torch.diag(5 * ratio / (4 * ratio + 1)) @ u.T
    assert torch.allclose(svd.scaled_projection(a.T @ a, 5.0), expected, atol=1e-10)


def test_conv_patches_follow_the_weight_layout():
    """Unfolded rows times the flattened weight reproduce the conv: W ← W Pᵀ acts on the conv's real inputs."""
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 2, 7, 7, generator=torch.Generator().manual_seed(2))
    rows = svd._input_rows(conv, (x,))
    out = conv(x).permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.allclose(rows @ conv.weight.flatten(1).T, out, atol=1e-5)


def test_alpha_defaults_per_dataset():
    assert svd.default_alphas("cifar10", 10) == (100.0, 3.0)
    assert svd.default_alphas("CIFAR-100", 100) == (1000.0, 30.0)
    assert svd.default_alphas("digits", 10) == (100.0, 3.0)
    assert svd.default_alphas("tiny_imagenet", 200) == (1000.0, 30.0)
    assert svd.default_alphas("", 10) == (100.0, 3.0)
    assert methods.check_params("svd", {"alpha_r": 50, "alpha_f": None}) == []
    assert [p for p, _ in methods.check_params("svd", {"alpha_f": 0})] == ["alpha_f"]
