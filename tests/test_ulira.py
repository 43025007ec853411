"""U-LiRA on synthetic φ whose answer is known (REFERENCE.md, "U-LiRA")."""
import numpy as np
import pytest

from analysis.ulira import (GaussianFit, fit_gaussians, log_likelihood_ratio, logit_scaled_confidence,
                            ulira)

K, N = 3, 600


def per_sample_scores(rng, shift=0.0, k=K, n=N):
    """(k, n) in and out φ: each sample has its own mean; in models are shifted by `shift` std."""
    centres = rng.normal(0.0, 3.0, n)
    in_scores = centres + shift + rng.normal(0.0, 1.0, (k, n))
    out_scores = centres + rng.normal(0.0, 1.0, (k, n))
    return in_scores, out_scores


# --- logit_scaled_confidence -----------------------------------------------------------------


def test_logit_scaled_confidence_matches_log_odds_on_moderate_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, (50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True))[np.arange(50), labels]
    phi = logit_scaled_confidence(logits, labels)
    assert phi.dtype == np.float64
    np.testing.assert_allclose(phi, np.log(p) - np.log1p(-p), rtol=1e-9, atol=1e-9)


def test_logit_scaled_confidence_is_finite_for_extreme_logits():
    logits = np.array([[1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0], [0.0, 500.0, 500.0]])
    phi = logit_scaled_confidence(logits, np.array([0, 0, 1]))
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(phi, [1000.0 - np.log(2.0), -1000.0 - np.log(2.0), 0.0], atol=1e-9)


# --- ulira -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", ["global", "per_sample"])
def test_identical_in_and_out_distributions_give_50(variance):
    in_scores, out_scores = per_sample_scores(np.random.default_rng(1), shift=0.0)
    result = ulira(in_scores, out_scores, variance=variance)
    assert abs(result.accuracy - 50.0) < 10.0
    assert abs(result.auc - 50.0) < 10.0
    assert len(result.pairs) == K * K


@pytest.mark.parametrize("variance, min_accuracy", [("global", 97.0), ("per_sample", 85.0)])
def test_well_separated_in_models_give_100(variance, min_accuracy):
    """per_sample std from K-1 = 2 models is sometimes tiny, so a held-out model falls outside its
    own class's Gaussian: why "global" is the default."""
    in_scores, out_scores = per_sample_scores(np.random.default_rng(2), shift=8.0)
    result = ulira(in_scores, out_scores, variance=variance)
    assert result.accuracy > min_accuracy
    assert ulira(in_scores, out_scores, variance="global").auc > 99.0


def test_two_models_per_side_work_with_the_std_floor():
    in_scores, out_scores = per_sample_scores(np.random.default_rng(3), shift=8.0, k=2)
    result = ulira(in_scores, out_scores)  # one model per fit: std = min_std
    assert result.accuracy > 97.0 and len(result.pairs) == 4


def test_each_pair_is_scored_with_fits_that_exclude_the_held_out_models():
    in_scores, out_scores = per_sample_scores(np.random.default_rng(4), shift=0.5, n=50)
    result = ulira(in_scores, out_scores)
    i, j, acc, _ = result.pairs[1 * K + 2]
    assert (i, j) == (1, 2)
    fit_in = fit_gaussians(in_scores[[0, 2]])
    fit_out = fit_gaussians(out_scores[[0, 1]])
    llr = np.concatenate([log_likelihood_ratio(in_scores[1], fit_in, fit_out),
                          log_likelihood_ratio(out_scores[2], fit_in, fit_out)])
    truth = np.concatenate([np.ones(50), np.zeros(50)])
    assert acc == pytest.approx(100.0 * np.mean((llr > 0) == truth))


def test_leave_one_out_matters_on_pure_noise():
    """Fitting on all K models (held-out included) would score well above 50 on identical
    distributions; the leave-one-out attack must not."""
    in_scores, out_scores = per_sample_scores(np.random.default_rng(5), shift=0.0)
    truth = np.concatenate([np.ones(N), np.zeros(N)])
    leaky_fit_in, leaky_fit_out = fit_gaussians(in_scores), fit_gaussians(out_scores)
    leaky = np.mean([
        100.0 * np.mean((log_likelihood_ratio(np.concatenate([in_scores[i], out_scores[j]]),
                                              GaussianFit(*(np.tile(a, 2) for a in leaky_fit_in)),
                                              GaussianFit(*(np.tile(a, 2) for a in leaky_fit_out)))
                         > 0) == truth)
        for i in range(K) for j in range(K)])
    assert leaky > 60.0
    assert abs(ulira(in_scores, out_scores).accuracy - 50.0) < 5.0


def test_fit_gaussians_global_pools_within_sample_variance_and_floors():
    scores = np.array([[0.0, 10.0, 5.0], [2.0, 10.0, 5.0]])
    fit = fit_gaussians(scores, variance="global", min_std=1e-3)
    np.testing.assert_allclose(fit.mean, [1.0, 10.0, 5.0])
    np.testing.assert_allclose(fit.std, np.sqrt(2.0 / 3.0))  # variances 2, 0, 0 pooled
    fit = fit_gaussians(scores, variance="per_sample", min_std=1e-3)
    np.testing.assert_allclose(fit.std, [np.sqrt(2.0), 1e-3, 1e-3])
    with pytest.raises(ValueError, match="variance"):
        fit_gaussians(scores, variance="median")


def test_errors_for_too_few_models_and_mismatched_shapes():
    with pytest.raises(ValueError, match="K=1"):
        ulira(np.zeros((1, 5)), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="shape|must both"):
        ulira(np.zeros((3, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="must both"):
        ulira(np.zeros((3, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="must both"):
        ulira(np.zeros(5), np.zeros(5))
