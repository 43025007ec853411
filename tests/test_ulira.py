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
        (trial,) = [t for t in plan.unlearn + plan.retrain if t["model_key"] == key]   # attacks read stored models
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


# --- TPR at low FPR, spreads, variance choice ------------------------------------------------


def test_tpr_at_fpr_of_a_held_out_in_model_matches_a_hand_built_roc():
    """K = 2 pairs of N = 50: 100 negatives scoring 0..99, 100 positives of which 30 score 95.5. At
    FPR 10% the threshold may let 10 negatives through (scores 90..99): TPR = 30 of 100 positives. At
    1% it needs 10/0.01 = 1,000 negatives and has 100: not measurable (NaN)."""
    from analysis.ulira import _in_model_tpr
    n = 50
    positives = np.where(np.arange(2 * n) < 30, 95.5, 50.0).reshape(2, n)
    negatives = np.arange(2 * n, dtype=float).reshape(2, n)
    rows = np.concatenate([positives, negatives], axis=1)   # [j] = pair (i, j): i's N samples, then out j's
    assert _in_model_tpr(rows, n, 0.1) == pytest.approx(30.0)
    assert np.isnan(_in_model_tpr(rows, n, 0.01))


def test_ulira_reports_spreads_over_pairs_and_in_models_and_keeps_the_likelihood_ratios():
    in_scores, out_scores = per_sample_scores(np.random.default_rng(6), shift=3.0, k=4, n=300)
    result = ulira(in_scores, out_scores, fprs=(0.01, 0.001))
    accuracy = result.spreads["accuracy"]
    assert accuracy.mean == pytest.approx(result.accuracy) and accuracy.n == 16
    assert accuracy.std == pytest.approx(np.std([p[2] for p in result.pairs], ddof=1))
    assert accuracy.ci_low <= accuracy.mean <= accuracy.ci_high
    # each held-out in model pools 4 out models × 300 samples = 1,200 negatives: 1% is measured, 0.1% is not
    assert result.spreads["tpr_at_1pct"].n == 4 and 0.0 < result.spreads["tpr_at_1pct"].mean <= 100.0
    assert result.spreads["tpr_at_0.1pct"].n == 0 and np.isnan(result.spreads["tpr_at_0.1pct"].mean)
    assert result.llr.shape == (4, 4, 600)
    i, j = 2, 1
    acc = 100.0 * np.mean((result.llr[i, j] > 0) == np.r_[np.ones(300), np.zeros(300)])
    assert acc == pytest.approx(result.pairs[i * 4 + j][2])


def test_auto_variance_is_pooled_below_16_models_per_side_and_per_sample_from_16():
    from analysis.ulira import PER_SAMPLE_MIN_K, resolve_variance
    assert PER_SAMPLE_MIN_K == 16
    assert resolve_variance("auto", 15) == "global" and resolve_variance("auto", 16) == "per_sample"
    assert resolve_variance("per_sample", 3) == "per_sample" and resolve_variance("global", 32) == "global"
    in_scores, out_scores = per_sample_scores(np.random.default_rng(7), shift=1.0, k=3, n=20)
    assert ulira(in_scores, out_scores, variance="auto").variance == "global"
    assert ulira(in_scores, out_scores, variance="auto").accuracy == ulira(in_scores, out_scores).accuracy
    with pytest.raises(ValueError, match="variance must be one of"):
        resolve_variance("pooled", 3)


# --- the bank in the plan ---------------------------------------------------------------------


def load_grid(tmp_path, **fields):
    grid = {"name": "bank", "datasets": "digits", "archs": "small_cnn", "forget_classes": [8, 3],
            "seeds": [0], "methods": {"ft": {}}, **fields}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return config.load(str(path))


def test_a_bank_attacks_with_more_models_than_the_grid_has_seeds_and_leaves_the_grid_unchanged(tmp_path):
    """ulira.bank 4 with one grid seed: per forget set and method, 4 in models (bank Originals of seeds
    10000-10003 unlearned by the method) and the 4 bank Retrain models of those seeds, in the same seed
    order; the grid's own trials keep their keys; every bank trial is tagged role ulira_bank and its
    unlearn trials take their MIA-NN reference from the bank's Retrain models; K >= 4 adds the
    Retrain-against-Retrain attack, 2 against 2."""
    plain = load_grid(tmp_path)
    plan = load_grid(tmp_path, ulira={"bank": 4})
    bank_seeds = [10_000, 10_001, 10_002, 10_003]
    grid_trials = [t for t in plan.original + plan.retrain + plan.unlearn if t["spec"].get("role") is None]
    assert {t["key"] for t in grid_trials} == {t["key"] for t in plain.original + plain.retrain + plain.unlearn}
    bank = [t for t in plan.original + plan.retrain + plan.unlearn if t["spec"].get("role") == "ulira_bank"]
    assert len(bank) == 4 + 4 * 2 + 4 * 2 * 2     # originals; Retrain per forget set; (original, ft) per forget set
    by_key = {t["model_key"]: t for t in plan.original + plan.retrain + plan.unlearn}   # attacks read stored models
    methods_attacked = sorted((a["spec"]["forget_classes"], a["spec"]["method"]) for a in plan.ulira)
    assert methods_attacked == [([3], "ft"), ([3], "original"), ([3], "retrain"),
                                ([8], "ft"), ([8], "original"), ([8], "retrain")]
    for attack in plan.ulira:
        spec = attack["spec"]
        ins, outs = [by_key[k]["spec"] for k in attack["in_keys"]], [by_key[k]["spec"] for k in attack["out_keys"]]
        assert spec["bank_seeds"] == bank_seeds and spec["variance"] == "global" and spec["fprs"] == [0.01, 0.001]
        assert all(s["role"] == "ulira_bank" and s["forget_classes"] == spec["forget_classes"] for s in ins + outs)
        assert all(s["stage"] == "retrain" for s in outs)
        if spec["method"] == "retrain":
            assert [s["seed"] for s in ins] == bank_seeds[:2] and [s["seed"] for s in outs] == bank_seeds[2:]
            assert all(s["stage"] == "retrain" for s in ins)
            continue
        assert [s["seed"] for s in ins] == [s["seed"] for s in outs] == bank_seeds
        assert all(s["stage"] == "unlearn" and s["method"] == spec["method"] for s in ins)
        for key in attack["in_keys"]:
            assert by_key[key]["retrain_model_keys"] == attack["out_keys"]
            assert by_key[by_key[key]["original_key"]]["spec"]["seed"] == by_key[key]["spec"]["seed"]


def test_a_bank_of_three_has_no_retrain_floor_and_a_search_grid_refuses_a_bank(tmp_path):
    assert sorted(a["spec"]["method"] for a in load_grid(tmp_path, ulira={"bank": 3}).ulira) == \
        ["ft", "ft", "original", "original"]
    with pytest.raises(config.GridError, match="ulira.bank: a search grid runs no unlearn stage"):
        load_grid(tmp_path, ulira={"bank": 4}, search={"methods": {"ft": {"lr": {"low": 0.01, "high": 0.1}}}})


def test_validate_prints_what_the_bank_adds(tmp_path):
    from grid.plan import cost
    plan = load_grid(tmp_path, ulira={"bank": 4})
    report = cost.format_report(cost.estimate(plan))
    assert ("U-LiRA bank (ulira.bank 4): adds 4 original (<0.01 GPU-h), 8 retrain (<0.01 GPU-h), "
            "16 unlearn (<0.01 GPU-h) trials") in report
    assert "U-LiRA bank" not in cost.format_report(cost.estimate(load_grid(tmp_path)))


def test_the_tables_drop_the_bank_runs():
    import pandas as pd
    from grid.tracking.mlflow_runs import without_bank
    runs = pd.DataFrame({"method": ["ft", "ft", "retrain"], "role": [None, "ulira_bank", "ulira_bank"]})
    assert list(without_bank(runs)["method"]) == ["ft"]
    assert len(without_bank(runs.drop(columns="role"))) == 3     # runs from before the bank


# --- the table --------------------------------------------------------------------------------


def test_ulira_table_has_a_row_per_statistic_and_mean_std_interval_n_per_method():
    import pandas as pd
    from analysis import tables
    from analysis.ulira import note
    nan = float("nan")

    def attack(method, forget, accuracy, tpr, std=2.0):
        return {"stage": "ulira", "method": method, "forget_classes": forget, "variance": "global",
                "bank_seeds": "10000,10001,10002,10003", "ulira_models": "4",
                "ulira_accuracy": accuracy, "ulira_accuracy_std": std, "ulira_accuracy_n": 16,
                "ulira_accuracy_ci_low": accuracy - 1, "ulira_accuracy_ci_high": accuracy + 1,
                "ulira_auc": accuracy + 1, "ulira_auc_std": std, "ulira_auc_n": 16,
                "ulira_auc_ci_low": accuracy, "ulira_auc_ci_high": accuracy + 2,
                "ulira_tpr_at_1pct": tpr, "ulira_tpr_at_1pct_std": nan if np.isnan(tpr) else 1.0,
                "ulira_tpr_at_1pct_n": 0 if np.isnan(tpr) else 4,
                "ulira_tpr_at_1pct_ci_low": nan, "ulira_tpr_at_1pct_ci_high": nan,
                "ulira_tpr_at_0.1pct": nan, "ulira_tpr_at_0.1pct_n": 0}
    runs = pd.DataFrame([attack("trw", "8", 60.0, 5.0, std=3.0), attack("trw", "3", 70.0, 7.0, std=4.0),
                         attack("rl", "8", 95.0, 80.0), attack("retrain", "8", 50.0, nan)])
    table = tables.ulira_table(runs, ["rl", "trw"])
    assert list(table.index) == ["U-LiRA accuracy (%)", "U-LiRA AUC (%)", "TPR at 1% FPR (%)", "TPR at 0.1% FPR (%)"]
    assert [c for c in table.columns if c.endswith(" mean")] == ["Retrain (held-out) mean", "rl mean", "trw mean"]
    row = table.loc["U-LiRA accuracy (%)"]
    assert row["trw mean"] == 65.0 and row["trw std"] == pytest.approx(np.sqrt((9 + 16) / 2)) and row["trw n"] == 32
    assert np.isnan(row["trw ci_low"])                     # two attacks: too few for a bootstrap over attacks
    assert (row["rl mean"], row["rl ci_low"], row["rl ci_high"], row["rl n"]) == (95.0, 94.0, 96.0, 16)
    assert table.loc["TPR at 1% FPR (%)", "trw mean"] == 6.0
    assert np.isnan(table.loc["TPR at 1% FPR (%)", "Retrain (held-out) mean"])   # too few negatives: n/a
    assert np.isnan(table.loc["TPR at 0.1% FPR (%)", "rl mean"])
    text = note(runs)
    assert "K = 4 in and out models per forget set, from a bank" in text and "pooled ('global')" in text
    assert "Retrain (held-out): half the bank's Retrain models against the other half" in text


def test_ulira_table_reads_runs_from_before_the_bank():
    import pandas as pd
    from analysis import tables
    from analysis.ulira import note
    rows = [dict(stage="ulira", method=m, forget_classes=f, ulira_accuracy=a, ulira_auc=a + 1)
            for m, f, a in (("trw", "8", 60.0), ("trw", "3", 70.0), ("rl", "8", 95.0))]
    table = tables.ulira_table(pd.DataFrame(rows), ["rl", "trw"])
    assert list(table.index) == ["U-LiRA accuracy (%)", "U-LiRA AUC (%)"]
    assert table.loc["U-LiRA accuracy (%)", "trw mean"] == 65.0
    assert table.loc["U-LiRA AUC (%)", "rl mean"] == 96.0
    assert np.isnan(table.loc["U-LiRA AUC (%)", "rl std"]) and np.isnan(table.loc["U-LiRA AUC (%)", "rl n"])
    assert "pooled ('global')" in note(pd.DataFrame(rows))


# --- end to end (system: trains a bank) ---------------------------------------------------------


@pytest.mark.system
def test_a_bank_grid_logs_tpr_spreads_and_likelihood_ratios_and_stays_out_of_the_tables(run_grid, tiny_grid):
    """TINY's recipe with one grid seed and a bank of 4 (more models than seeds): every attack run has
    the new metrics and its ulira_llr.npz; the experiment's runs for the tables hold no bank run."""
    import mlflow
    from conftest import TINY
    from grid.tracking import mlflow_runs
    grid = {**TINY, "name": "bank-e2e", "seeds": [0], "methods": {"ft": {"epochs": 1}}, "ulira": {"bank": 4}}
    _, tracking_uri, _ = run_grid(tiny_grid[0], grid)
    attacks = mlflow_runs.experiment_ulira_runs(tracking_uri, "bank-e2e")
    assert sorted(attacks["method"]) == ["ft", "original", "retrain"]
    # K = 4: K·K held-out pairs; Retrain against Retrain: 2 bank Retrain models against the other 2
    pairs = dict(zip(attacks["method"], attacks["ulira_accuracy_n"]))
    assert pairs == {"ft": 16, "original": 16, "retrain": 4}
    assert dict(zip(attacks["method"], attacks["ulira_models"])) == {"ft": "4", "original": "4", "retrain": "2"}
    assert {"ulira_tpr_at_1pct", "ulira_tpr_at_0.1pct_n", "ulira_auc_ci_low"} <= set(attacks.columns)
    for run_id in attacks["run_id"]:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="ulira_llr.npz")
        llr = np.load(path)["llr"]
        assert llr.ndim == 3 and llr.shape[0] == llr.shape[1] in (2, 4)
    runs = mlflow_runs.experiment_runs(tracking_uri, "bank-e2e")
    assert set(runs["seed"].astype(str)) == {"0"}


def test_ulira_units_give_one_row_per_attack_and_statistic():
    import pandas as pd
    from analysis import tables
    rows = [dict(stage="ulira", method=m, forget_classes=f, ulira_accuracy=a, ulira_auc=a + 1, ulira_accuracy_n=16.0)
            for m, f, a in (("trw", "8", 60.0), ("trw", "3", 70.0), ("retrain", "8", 50.0))]
    units = tables.ulira_units(pd.DataFrame(rows))
    accuracy = units[units["metric"] == "U-LiRA accuracy (%)"]
    assert list(zip(accuracy["label"], accuracy["forget_classes"], accuracy["value"], accuracy["samples"])) == \
        [("trw", "8", 60.0, 16.0), ("trw", "3", 70.0, 16.0), ("Retrain (held-out)", "8", 50.0, 16.0)]
    assert units[units["metric"] == "U-LiRA AUC (%)"]["samples"].isna().all()   # no pair count logged for it
