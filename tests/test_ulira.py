"""U-LiRA on synthetic φ whose answer is known (docs/metrics.md, "U-LiRA"), and the grid's choice of
the attacks' in and out models (grid/plan/config.py, ulira_attacks)."""
import numpy as np
import pytest
import yaml

from analysis.ulira import (GaussianFit, fit_gaussians, log_likelihood_ratio, logit_scaled_confidence,
                            ulira)
from grid.plan import config

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


def test_hand_computed_k2_n3_accuracy_and_auc_use_the_likelihood_ratio_scores():
    """K = 2: each pair's fits hold one model, so every std is the min_std floor σ and
    LLR = [(φ − μ_out)² − (φ − μ_in)²] / (2σ²): its sign and order are those of
    D = (φ − μ_out)² − (φ − μ_in)². Pair (i, j): μ_in = in[1 − i], μ_out = out[1 − j]; the held-out
    in[i] are truth 1, out[j] truth 0; "in" when D > 0 (D = 0 goes to "out")."""
    in_scores = np.array([[2.0, 2.0, 0.0], [2.0, 0.0, 2.0]])
    out_scores = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    # (0, 0): μ_in = [2, 0, 2], μ_out = [0, 1, 1]
    #   in0 [2, 2, 0]: D = 4−0, 1−4, 1−4 = [4, −3, −3] → in, out, out: 1 right
    #   out0 [0, 0, 0]: D = 0−4, 1−0, 1−4 = [−4, 1, −3] → out, in, out: 2 right   acc 3/6 = 50
    #   AUC: 4 beats all 3 negatives; each −3 beats −4 and ties −3: 3 + 1.5 + 1.5 = 6 of 9
    # (0, 1): μ_in = [2, 0, 2], μ_out = [0, 0, 0]
    #   in0 [2, 2, 0]: D = 4−0, 4−4, 0−4 = [4, 0, −4] → 1 right
    #   out1 [0, 1, 1]: D = 0−4, 1−1, 1−1 = [−4, 0, 0] → 3 right (ties go to "out")   acc 4/6
    #   AUC: 4 → 3; 0 beats −4, ties two 0s → 2; −4 ties −4 → 0.5: 5.5 of 9
    # (1, 0): μ_in = [2, 2, 0], μ_out = [0, 1, 1]
    #   in1 [2, 0, 2]: D = 4−0, 1−4, 1−4 = [4, −3, −3] → 1 right
    #   out0 [0, 0, 0]: D = 0−4, 1−4, 1−0 = [−4, −3, 1] → 2 right   acc 3/6 = 50; AUC as (0, 0): 6 of 9
    # (1, 1): μ_in = [2, 2, 0], μ_out = [0, 0, 0]
    #   in1 [2, 0, 2]: D = 4−0, 0−4, 4−4 = [4, −4, 0] → 1 right
    #   out1 [0, 1, 1]: D = 0−4, 1−1, 1−1 = [−4, 0, 0] → 3 right   acc 4/6; AUC as (0, 1): 5.5 of 9
    result = ulira(in_scores, out_scores)
    expected_pairs = [(0, 0, 50.0, 600 / 9), (0, 1, 400 / 6, 550 / 9),
                      (1, 0, 50.0, 600 / 9), (1, 1, 400 / 6, 550 / 9)]
    for (i, j, acc, auc), expected in zip(result.pairs, expected_pairs):
        assert (i, j) == expected[:2]
        assert (acc, auc) == pytest.approx(expected[2:], abs=1e-9)
    assert result.accuracy == pytest.approx(175 / 3, abs=1e-9)     # (50 + 66.67 + 50 + 66.67) / 4 = 58.33
    assert result.auc == pytest.approx(2300 / 36, abs=1e-9)        # (6 + 5.5 + 6 + 5.5) / 9 / 4 = 63.89
    # An AUC from the 0/1 decisions is (TPR + TNR) / 2 = the accuracy here (N in and N out): 58.33
    assert result.auc != pytest.approx(result.accuracy, abs=1.0)


def test_ulira_attacks_pair_the_first_k_seeds_unlearned_and_retrained_models(tmp_path):
    """seeds [0, 1, 2], K = 2: each attack's in models are its group's unlearn trials of seeds 0 and 1
    and its out models the Retrain models of seeds 0 and 1, in that seed order. Catches: no
    `seeds[:K]` cut (3 in/out models), groups that mix unlearning seeds (4 in models), out models of
    another forget set, or in and out lists in different seed orders."""
    grid = {"name": "ulira-pairs", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8, 3],
            "seeds": [0, 1, 2], "unlearn_seeds": [0, 1], "methods": {"ft": {}}, "ulira": {"shadow_models": 2}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    plan = config.load(str(path))

    def spec_of(key):
        (trial,) = [t for t in plan.unlearn + plan.retrain if t["key"] == key]
        return trial["spec"]

    # per forget set: the Original row (first unlearning seed only) and ft under unlearning seeds 0 and 1
    assert sorted((a["spec"]["forget_classes"], a["spec"]["method"], a["spec"]["unlearn_seed"]) for a in plan.ulira) \
        == [([3], "ft", 0), ([3], "ft", 1), ([3], "original", 0), ([8], "ft", 0), ([8], "ft", 1), ([8], "original", 0)]
    for attack in plan.ulira:
        wanted = attack["spec"]
        ins = [spec_of(key) for key in attack["in_keys"]]
        outs = [spec_of(key) for key in attack["out_keys"]]
        assert [s["seed"] for s in ins] == [0, 1] and [s["seed"] for s in outs] == [0, 1]
        assert all(s["stage"] == "unlearn" and s["method"] == wanted["method"] and s["params"] == wanted["params"]
                   and s["unlearn_seed"] == wanted["unlearn_seed"] and s["forget_classes"] == wanted["forget_classes"]
                   for s in ins)
        assert all(s["stage"] == "retrain" and s["forget_classes"] == wanted["forget_classes"] for s in outs)
        assert wanted["shadow_seeds"] == [0, 1]
    # seeds listed out of order: the first K in the grid's order, in and out paired seed by seed
    # (in models sorted by seed value beside out models in grid order paired seed 0 with seed 2)
    path.write_text(yaml.safe_dump({**grid, "seeds": [2, 0, 1]}))
    for attack in config.load(str(path)).ulira:
        ins, outs = attack["in_keys"], attack["out_keys"]
        assert attack["spec"]["shadow_seeds"] == [2, 0]
        assert [spec_of(key)["seed"] for key in ins] == [spec_of(key)["seed"] for key in outs] == [2, 0]
