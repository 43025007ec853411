"""SCAR: surrogate filtering, the Mahalanobis target (closest other class), and param validation."""
import torch

from trainables import methods
from trainables.methods import _mahalanobis, scar
from trainables.train import predict_logits


def test_surrogate_filter_drops_inputs_the_teacher_assigns_to_a_forget_class():
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0],     # -> 0 kept
                           [0.0, 0.0, 5.0, 0.0],     # -> 2 forget: dropped
                           [0.0, 5.0, 4.0, 0.0],     # -> 1 kept (forget class only second)
                           [0.0, 0.0, 0.0, 5.0]])    # -> 3 forget: dropped
    assert scar.keep_surrogates(logits, [2]).tolist() == [True, False, True, True]
    assert scar.keep_surrogates(logits, [2, 3]).tolist() == [True, False, True, False]


def test_prepared_surrogates_exclude_forget_predictions_and_suppress_the_forget_logit(tiny_problem):
    task = tiny_problem.task(seed=0)
    params = methods.resolve_params("scar", {})
    _, _, targets, surrogates, teacher = scar.targets_from_original(task, params, task.generator())
    original_pred = predict_logits(tiny_problem.original, surrogates, torch.device("cpu")).argmax(1)
    assert len(surrogates) < params["num_surrogates"]                 # digits' original calls much noise an 8
    assert not (original_pred == tiny_problem.forget_class).any()
    assert torch.equal(teacher[:, tiny_problem.forget_class], teacher.min(dim=1).values)
    assert len(targets) == len(task.forget_x)


def _points(center, n, generator):
    return (torch.tensor(center) + 0.05 * torch.randn(n, len(center), generator=generator)).abs()


def test_mahalanobis_target_is_the_closest_other_class():
    g = torch.Generator().manual_seed(0)
    centers = {0: [1.0, 0.1, 0.1], 1: [0.1, 1.0, 0.1], 2: [0.1, 0.1, 1.0]}
    embeddings = torch.cat([_points(c, 50, g) for c in centers.values()])
    labels = torch.arange(3).repeat_interleave(50)
    means, inverses = scar.class_statistics(embeddings, labels, [0, 1, 2], 0.5, 3.0, 3.0)
    # a class-0 sample lying between 0 and 2: its own class is closest, the target is the next one, 2
    queries = torch.tensor([[1.0, 0.1, 0.6], [0.1, 1.0, 0.3], [0.6, 0.1, 1.0]])
    distances = scar.mahalanobis(queries, means, inverses, 0.5)
    own = torch.tensor([0, 0, 1])
    assert distances.argmin(1).tolist() == [0, 1, 2]
    assert scar.closest_other_class(distances, own, [0, 1, 2]).tolist() == [2, 1, 2]
    # class ids need not be the column indices: with classes [3, 5, 7] the own class 5 is the middle column
    assert scar.closest_other_class(distances, torch.tensor([5, 5, 5]), [3, 5, 7]).tolist() == [0, 2, 2]
    # brute force for every sample of the cloud: the target is the argmin over the other classes
    distances = scar.mahalanobis(embeddings, means, inverses, 0.5)
    target = scar.closest_other_class(distances, labels, [0, 1, 2])
    for row, label, t in zip(distances, labels, target):
        others = [k for k in range(3) if k != label]
        assert int(t) == others[int(row[others].argmin())]


def test_shrinkage_formula():
    cov = torch.tensor([[2.0, 0.5, 0.0], [0.5, 4.0, 1.5], [0.0, 1.5, 6.0]])
    v1, v2 = 4.0, 1.0              # mean variance; mean of the non-zero covariances (0.5, 1.5)
    expected = cov + 3 * v1 * torch.eye(3) + 3 * v2 * (1 - torch.eye(3))
    assert torch.allclose(_mahalanobis.shrink(cov, 3.0, 3.0), expected)


def test_power_transform_keeps_sign_and_has_finite_gradient_at_zero():
    z = torch.tensor([-4.0, 0.0, 9.0], requires_grad=True)
    out = _mahalanobis.power_transform(z, 0.5)
    assert torch.allclose(out, torch.tensor([-2.0, 0.0, 3.0]))
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_shuffled_surrogates_are_pixel_permutations_of_retain_images(tiny_problem):
    x = tiny_problem.dataset.train_x[:20]
    out = scar.make_surrogates("shuffled", x, 30, torch.Generator().manual_seed(0))
    assert out.shape == (30,) + tuple(x.shape[1:])
    pool = {tuple(img.flatten().sort().values.tolist()) for img in x}
    assert all(tuple(img.flatten().sort().values.tolist()) in pool for img in out)
    noise = scar.make_surrogates("noise", x, 30, torch.Generator().manual_seed(0))
    assert noise.shape == out.shape and noise.min() >= x.min() and noise.max() <= x.max()


def test_surrogate_choice_is_validated():
    assert methods.check_params("scar", {"surrogate": "shuffled"}) == []
    assert methods.check_params("scar", {"surrogate": "noise"}) == []
    errors = methods.check_params("scar", {"surrogate": "imagenet"})
    assert [p for p, _ in errors] == ["surrogate"] and "noise" in errors[0][1]
    assert [p for p, _ in methods.check_params("scar", {"momentum": 1.0})] == ["momentum"]      # Adam β1 < 1
