"""TRW targets (docs/metrics.md, "TRW's target", and the paper's Proposition 3.1) and the weight-PCA similarity scores."""
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from trainables.methods.trw import tilted_log_target, tilted_target
from trainables.similarity import masked_softmax, score_matrix, weight_pca_cosine

NUM_CLASSES = 5


def random_probs(num_samples=6, num_classes=NUM_CLASSES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(num_samples, num_classes, generator=generator, dtype=torch.float64), dim=1)


SCORES = torch.tensor([0.1, 0.5, 0.0, 0.3, 0.2], dtype=torch.float64)   # argmax over retained {0,1,3,4} is 1


@pytest.mark.parametrize("forget_classes", [2, [2], [0, 2], [4, 1, 2]])
def test_target_rows_sum_to_one_and_are_zero_on_forget_classes(forget_classes):
    q = tilted_target(random_probs(), forget_classes, SCORES, lam=10.0)
    forget = list(np.atleast_1d(forget_classes))
    assert torch.allclose(q.sum(dim=1), torch.ones(len(q), dtype=q.dtype))
    assert torch.all(q[:, forget] == 0)
    retained = [c for c in range(NUM_CLASSES) if c not in forget]
    assert torch.all(q[:, retained] > 0)


def test_lam_zero_is_plain_rescaling():
    probs = random_probs()
    forget_class = 2
    q = tilted_target(probs, forget_class, SCORES, lam=0.0)
    expected = probs / (1 - probs[:, [forget_class]])
    expected[:, forget_class] = 0
    assert torch.allclose(q, expected, atol=1e-12)


def test_lam_zero_with_several_forget_classes_rescales_by_retained_mass():
    probs = random_probs()
    forget = [0, 3]
    q = tilted_target(probs, forget, SCORES, lam=0.0)
    expected = probs / (1 - probs[:, forget].sum(dim=1, keepdim=True))
    expected[:, forget] = 0
    assert torch.allclose(q, expected, atol=1e-12)


def test_target_matches_the_tilt_formula():
    probs = random_probs()
    forget_class, lam = 2, 3.0
    q = tilted_target(probs, forget_class, SCORES, lam=lam)
    unnormalised = probs * torch.exp(lam * SCORES)
    unnormalised[:, forget_class] = 0
    assert torch.allclose(q, unnormalised / unnormalised.sum(dim=1, keepdim=True), atol=1e-12)


def test_invariant_to_adding_a_constant_to_the_scores():
    probs = random_probs()
    q = tilted_target(probs, 2, SCORES, lam=10.0)
    q_shifted = tilted_target(probs, 2, SCORES + 7.5, lam=10.0)
    assert torch.allclose(q, q_shifted, atol=1e-10)


def test_forget_class_scores_are_ignored():
    probs = random_probs()
    other = SCORES.clone()
    other[2] = 100.0
    assert torch.allclose(tilted_target(probs, 2, SCORES, 10.0), tilted_target(probs, 2, other, 10.0))


def test_large_lam_puts_all_mass_on_argmax_of_retained_scores():
    scores = SCORES.clone()
    scores[2] = 5.0                      # forget class has the highest score overall; must not win
    q = tilted_target(random_probs(), 2, scores, lam=1e4)
    expected = torch.zeros_like(q)
    expected[:, 1] = 1.0
    assert torch.allclose(q, expected, atol=1e-6)


def test_large_lam_in_float32_still_concentrates_on_argmax():
    q = tilted_target(random_probs().float(), 2, SCORES.float(), lam=1e4)
    assert torch.all(q.argmax(dim=1) == 1)
    assert torch.allclose(q[:, 1], torch.ones(len(q)), atol=1e-5)


def test_target_is_the_information_projection_of_the_rescaled_probs():
    """Proposition 3.1: q = argmin KL(q'||p_hat) over the retained simplex with E_q'[s] = E_q[s]."""
    probs = torch.tensor([[0.1, 0.2, 0.4, 0.3]], dtype=torch.float64)
    scores = torch.tensor([0.7, 0.1, 0.0, 0.2], dtype=torch.float64)
    forget_class, lam = 2, 2.0
    q = tilted_target(probs, forget_class, scores, lam)[0].numpy()

    retained = [0, 1, 3]
    p_hat = probs[0, retained].numpy() / (1 - probs[0, forget_class].item())
    s = scores[retained].numpy()
    mu = float(q[retained] @ s)

    def kl_to_p_hat(x):
        return float(np.sum(x * np.log(x / p_hat)))

    result = minimize(kl_to_p_hat, x0=np.full(3, 1 / 3), method="SLSQP", bounds=[(1e-9, 1.0)] * 3,
                      constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1},
                                   {"type": "eq", "fun": lambda x: x @ s - mu}],
                      options={"ftol": 1e-14, "maxiter": 500})
    assert result.success
    assert np.allclose(result.x, q[retained], atol=1e-4)
    assert q[forget_class] == 0
    assert not np.allclose(q[retained], p_hat, atol=1e-2)   # the tilt actually moved mass


def test_negative_lam_raises():
    with pytest.raises(ValueError):
        tilted_target(random_probs(), 2, SCORES, lam=-1.0)


def test_scores_per_sample_apply_row_wise():
    probs = random_probs(num_samples=2)
    per_sample = torch.stack([SCORES, SCORES.flip(0)])
    q = tilted_target(probs, 2, per_sample, lam=4.0)
    assert torch.allclose(q[0], tilted_target(probs[:1], 2, SCORES, 4.0)[0])
    assert torch.allclose(q[1], tilted_target(probs[1:], 2, SCORES.flip(0), 4.0)[0])


def test_zero_probability_rows_still_give_a_distribution():
    probs = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)   # all mass on the forget class
    q = tilted_target(probs, 2, SCORES, lam=0.0)
    assert torch.allclose(q, torch.tensor([[0.25, 0.25, 0.0, 0.25, 0.25]], dtype=torch.float64))


def test_log_target_is_log_of_target():
    probs = random_probs()
    log_q = tilted_log_target(torch.log(probs), [2], SCORES, 10.0)
    assert torch.allclose(log_q.exp(), tilted_target(probs, [2], SCORES, 10.0), atol=1e-12)
    assert torch.all(torch.isneginf(log_q[:, 2]))


# --- similarity scores -------------------------------------------------------------------------

# Rows sum to zero, so centring leaves them unchanged and full-rank PCA is a rotation: the scores are
# a softmax of plain cosines with row 0. cos(w0, w1) = 0.8 (highest); w2 and w3 point away from w0.
WEIGHT = torch.tensor([[1.0, 0.0, 0.0],
                       [0.8, 0.6, 0.0],
                       [-0.9, -0.1, 0.5],
                       [-0.9, -0.5, -0.5]])


def test_weight_pca_cosine_is_a_distribution_over_retained_classes():
    scores = weight_pca_cosine(WEIGHT, 0, [0], rank=None, temperature=0.1)
    assert scores.shape == (4,)
    assert scores[0] == 0
    assert torch.isclose(scores.sum(), torch.tensor(1.0))
    assert torch.all(scores[1:] > 0)


def test_weight_pca_cosine_matches_softmax_of_cosines():
    temperature = 0.5
    scores = weight_pca_cosine(WEIGHT, 0, [0], rank=None, temperature=temperature)
    cosine = torch.nn.functional.cosine_similarity(WEIGHT, WEIGHT[0:1], dim=1)
    expected = torch.softmax(cosine[1:] / temperature, dim=0)
    assert torch.allclose(scores[1:], expected, atol=1e-5)


def test_weight_pca_cosine_ranks_the_closest_direction_first():
    scores = weight_pca_cosine(WEIGHT, 0, [0], rank=None, temperature=0.1)
    assert int(scores.argmax()) == 1


def test_weight_pca_cosine_lower_temperature_is_sharper():
    warm = weight_pca_cosine(WEIGHT, 0, [0], rank=None, temperature=1.0)
    cold = weight_pca_cosine(WEIGHT, 0, [0], rank=None, temperature=0.05)
    assert cold[1] > warm[1]
    assert cold[1] > 0.99

    def entropy(p):
        p = p[p > 0]
        return float(-(p * p.log()).sum())
    assert entropy(cold) < entropy(warm)


def test_weight_pca_cosine_is_invariant_to_a_shift_of_all_rows():
    shift = torch.tensor([3.0, -2.0, 5.0])
    for rank in (None, 2):
        scores = weight_pca_cosine(WEIGHT, 0, [0], rank=rank, temperature=1.0)
        shifted = weight_pca_cosine(WEIGHT + shift, 0, [0], rank=rank, temperature=1.0)
        assert torch.allclose(scores, shifted, atol=1e-5)


def test_weight_pca_cosine_with_several_forget_classes_zeroes_them_all():
    scores = weight_pca_cosine(WEIGHT, 0, [0, 1], rank=None, temperature=0.1)
    assert scores[0] == 0 and scores[1] == 0
    assert torch.isclose(scores.sum(), torch.tensor(1.0))
    assert torch.all(scores[2:] > 0)


def test_masked_softmax_zeroes_forget_classes():
    out = masked_softmax(torch.tensor([1.0, 2.0, 3.0]), [2], temperature=1.0)
    assert out[2] == 0
    assert torch.allclose(out[:2], torch.softmax(torch.tensor([1.0, 2.0]), dim=0))


def test_score_matrix_has_a_row_per_forget_class_and_zero_rows_elsewhere():
    matrix = score_matrix("weight_pca_cosine", WEIGHT, [0, 2], rank=None, temperature=0.1)
    assert matrix.shape == (4, 4)
    for forget_class in (0, 2):
        expected = weight_pca_cosine(WEIGHT, forget_class, [0, 2], None, 0.1)
        assert torch.allclose(matrix[forget_class], expected)
        assert torch.isclose(matrix[forget_class].sum(), torch.tensor(1.0))
        assert torch.all(matrix[forget_class, [0, 2]] == 0)
    assert torch.all(matrix[[1, 3]] == 0)


# ---------------------------------------------------------------- original_softmax (data-driven)

def test_original_softmax_ranks_the_class_the_original_leans_to_first():
    from trainables.similarity import SimilarityContext, original_softmax
    # the original's mean softmax on class-0 training samples: most mass on 0 itself, then class 3
    probabilities = torch.tensor([[0.70, 0.05, 0.05, 0.15, 0.05],
                                  [0.10, 0.80, 0.05, 0.03, 0.02],
                                  [0.05, 0.05, 0.80, 0.05, 0.05],
                                  [0.05, 0.05, 0.05, 0.80, 0.05],
                                  [0.05, 0.05, 0.05, 0.05, 0.80]], dtype=torch.float64)
    context = SimilarityContext(probabilities=probabilities)
    scores = original_softmax(context, 0, [0], None, 0.1)
    assert int(scores.argmax()) == 3 and scores[0] == 0
    assert torch.isclose(scores.sum(), torch.tensor(1.0))
    # the formula: retained mass renormalised, divided by its largest value, softmax at T
    retained = probabilities[0, 1:] / probabilities[0, 1:].sum()
    expected = torch.softmax((retained / retained.max()) / 0.1, dim=0)
    assert torch.allclose(scores[1:].double(), expected, atol=1e-6)
    # invariant to how confident the original is on the forget class itself
    sharper = probabilities.clone()
    sharper[0] = torch.tensor([0.97, 0.005, 0.005, 0.015, 0.005], dtype=torch.float64)
    assert torch.allclose(original_softmax(SimilarityContext(probabilities=sharper), 0, [0], None, 0.1), scores, atol=1e-6)
    # several forget classes: all zeroed, the top retained class still wins
    both = score_matrix("original_softmax", context, [0, 3], None, 0.1)[0]
    assert both[0] == 0 and both[3] == 0 and int(both.argmax()) == 1


def test_original_softmax_from_a_model_reads_only_the_forget_class_samples():
    from trainables.similarity import SimilarityContext
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    x = torch.randn(30, 4)
    y = torch.arange(30) % 3
    seen = []
    context = SimilarityContext(weight=model[-1].weight, model=model, x=(x[y != 1], x[y == 1]),
                                y=(y[y != 1], y[y == 1]), prepare=lambda batch: seen.append(len(batch)) or batch)
    with torch.no_grad():
        expected = torch.softmax(model(x[y == 1]).double(), dim=1).mean(dim=0)
    assert torch.allclose(context.mean_probabilities(1), expected, atol=1e-10)
    assert seen == [10]                                   # only class 1's 10 samples went through the model
    scores = score_matrix("original_softmax", context, [1], None, 0.1)[1]
    assert int(scores.argmax()) == max((0, 2), key=lambda c: expected[c])   # where the original leans
    # a full pass (the centroids, through `prepare` too) fills every class's mean softmax at once
    embedding = model[:-1](x).double().detach()
    assert torch.allclose(context.centroids, torch.stack([embedding[y == k].mean(dim=0) for k in range(3)]), atol=1e-10)
    assert seen == [10, 20, 10]
    with torch.no_grad():
        assert torch.allclose(context.mean_probabilities(2), torch.softmax(model(x[y == 2]).double(), dim=1).mean(dim=0))


def test_original_softmax_needs_the_model_and_data():
    with pytest.raises(ValueError, match="softmax"):
        score_matrix("original_softmax", WEIGHT, [0])


def test_original_softmax_is_selectable_and_searchable_in_trw():
    from trainables import methods
    from trainables.similarity import SIMILARITIES
    assert {"weight_pca_cosine", "centroid_distance", "original_softmax"} <= set(SIMILARITIES)
    for name in ("trw", "trw_2r"):
        assert "original_softmax" in methods.METHODS[name].choices["similarity"]
        assert methods.check_params(name, {"similarity": "original_softmax"}) == []


# ---------------------------------------------------------------- end to end, on digits

def test_trw_targets_tilt_each_forget_sample_by_its_own_classes_similarity(tiny_problem, monkeypatch):
    """TRW on the trained digits model forgetting class 3 (the other tests forget 8, or class 2 of a toy):
    the soft target of every forget sample is the original's softmax with class 3 removed, tilted by
    exp(λ s_k) with s class 3's own weight_pca_cosine row, renormalised; retain samples keep one-hot
    labels. The expectation is built here from the definitions (PCA of the centred final-layer rows at
    full rank keeps their cosines), not from trw.py's functions."""
    from trainables import data, methods
    from trainables.methods import trw as trw_module
    from trainables.models import final_layer
    forget_class, lam, temperature = 3, 10.0, 0.1
    dataset, original = tiny_problem.dataset, tiny_problem.original
    split = data.forget_split(dataset.train_y.numpy(), [forget_class])
    task = methods.UnlearnTask(original=original, retain_x=dataset.train_x[split.retain],
                               retain_y=dataset.train_y[split.retain], forget_x=dataset.train_x[split.forget],
                               forget_y=dataset.train_y[split.forget], forget_classes=[forget_class], num_classes=10,
                               seed=0)
    captured = {}

    def capture(task, model, x, targets, loss_fn, params, **options):   # finetune's inputs, no training
        captured.update(x=x, targets=targets)
        return model
    monkeypatch.setattr(trw_module, "finetune", capture)
    methods.unlearn("trw", task, {"lam": lam, "temperature": temperature})

    weight = final_layer(original).weight.detach().double()
    centred = weight - weight.mean(dim=0)
    cosine = torch.nn.functional.cosine_similarity(centred, centred[forget_class][None, :], dim=1)
    retained = [c for c in range(10) if c != forget_class]
    scores = torch.zeros(10, dtype=torch.float64)
    scores[retained] = torch.softmax(cosine[retained] / temperature, dim=0)
    with torch.no_grad():
        probabilities = torch.softmax(original(task.forget_x).double(), dim=1)
    expected = probabilities * torch.exp(lam * scores)
    expected[:, forget_class] = 0
    expected /= expected.sum(dim=1, keepdim=True)

    retain_count = len(split.retain)
    assert torch.equal(captured["x"], torch.cat([task.retain_x, task.forget_x]))
    assert torch.equal(captured["targets"][:retain_count],
                       torch.nn.functional.one_hot(task.retain_y, 10).float())
    forget_targets = captured["targets"][retain_count:].double()
    assert torch.allclose(forget_targets, expected, atol=1e-5)
    # the tilt matters here: neither the plain rescale nor a tilt by class 8's row (the class the other
    # tests forget) comes near these targets
    def tilted_by(row):
        target = probabilities * torch.exp(lam * row)
        target[:, forget_class] = 0
        return target / target.sum(dim=1, keepdim=True)
    cosine_8 = torch.nn.functional.cosine_similarity(centred, centred[8][None, :], dim=1)
    scores_8 = torch.zeros(10, dtype=torch.float64)
    scores_8[retained] = torch.softmax(cosine_8[retained] / temperature, dim=0)
    for wrong in (torch.zeros(10, dtype=torch.float64), scores_8):
        assert (forget_targets - tilted_by(wrong)).abs().max() > 0.05
