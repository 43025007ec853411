"""analysis/statistics.py against hand-computed values and scipy on small arrays."""
import math

import numpy as np
import pytest
import scipy.stats

from analysis import statistics


def test_bootstrap_mean_is_the_percentile_interval_of_resampled_unit_means():
    values = np.array([1.0, 2.0, 4.0, 8.0])
    got = statistics.bootstrap_mean(values, resamples=500, seed=7)
    # the same draws by hand: unit indices with replacement, then the 2.5th / 97.5th percentiles of their means
    drawn = np.random.default_rng(7).integers(0, 4, size=(500, 4))
    low, high = np.percentile(values[drawn].mean(axis=1), [2.5, 97.5])
    assert got == (3.75, low, high, 4)
    assert statistics.bootstrap_mean(values, resamples=500, seed=7) == got   # seeded: reproducible


def test_bootstrap_mean_needs_three_units_and_drops_nan():
    two = statistics.bootstrap_mean([1.0, np.nan, 3.0])
    assert two.estimate == 2.0 and two.n == 2 and math.isnan(two.low) and math.isnan(two.high)
    assert statistics.bootstrap_mean([]).n == 0


def test_resampling_the_samples_widens_the_interval_of_an_attack_score():
    # three units that agree exactly (50%) on 10 samples each: over units alone the interval is a point,
    # resampling the samples inside them shows the binomial noise of 30 samples
    units_only = statistics.bootstrap_mean([50.0, 50.0, 50.0], seed=0)
    with_samples = statistics.bootstrap_mean([50.0, 50.0, 50.0], counts=[(5, 10)] * 3, seed=0)
    assert units_only.low == units_only.high == 50.0
    assert with_samples.estimate == 50.0
    assert with_samples.low < 40 and with_samples.high > 60   # ±1.96·sqrt(.25/30) ≈ ±18 points
    # a unit's samples resampled: all-1 or all-0 units cannot move
    fixed = statistics.bootstrap_mean([100.0, 100.0, 0.0], counts=[(4, 4), (4, 4), (0, 4)], seed=1)
    assert fixed == statistics.bootstrap_mean([100.0, 100.0, 0.0], seed=1)


@pytest.mark.parametrize("n", [4, 9, 20, 60])
def test_wilcoxon_signed_rank_matches_scipy(n):
    differences = np.random.default_rng(n).normal(0.4, 1.0, n)
    assert statistics.wilcoxon_signed_rank(differences) == pytest.approx(scipy.stats.wilcoxon(differences).pvalue)


def test_wilcoxon_with_ties_and_zeros_matches_scipys_normal_approximation():
    differences = np.array([0.0, 1.0, -1.0, 2.0, 2.0, 3.0, 3.0, 3.0, -0.5, 4.0, 1.0, 2.0])
    expected = scipy.stats.wilcoxon(differences, zero_method="wilcox", method="approx", correction=False).pvalue
    assert statistics.wilcoxon_signed_rank(differences) == pytest.approx(expected)
    assert math.isnan(statistics.wilcoxon_signed_rank([0.0, 0.0]))


def test_wilcoxon_exact_by_hand():
    # 3 positive differences, ranks 1..3: R+ = 6 of the 8 equally likely sign patterns' sums
    # {0,1,2,3,3,4,5,6}; two-sided p = 2 · P(R+ >= 6) = 2/8
    assert statistics.wilcoxon_signed_rank([1.0, 2.0, 3.0]) == 0.25


def test_paired_permutation_is_exact_for_few_pairs():
    # 3 pairs: 8 sign patterns of (1, 2, 3); |mean| >= 2 only for all + and all −
    assert statistics.paired_permutation([1.0, 2.0, 3.0]) == 0.25
    assert statistics.paired_permutation([1.0, -1.0]) == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 over m = 3 tests: 0.03, 0.06, max(0.06, 0.04) = 0.06; NaN is no test
    adjusted = statistics.holm([0.04, 0.01, np.nan, 0.03])
    assert adjusted[[0, 1, 3]] == pytest.approx([0.06, 0.03, 0.06])
    assert math.isnan(adjusted[2])


def test_tpr_at_fpr_on_a_hand_built_roc():
    # 1000 negatives scored 0..999, 10 positives at 995, 996, 500, ...: at FPR 1% (10 negatives above the
    # threshold) a threshold of 990 labels negatives 990..999 positive and the positives >= 990 found
    negatives = np.arange(1000.0)
    positives = np.array([995.5, 996.5, 1500.0, 2000.0, 500.5, 10.5, 990.5, 991.5, 100.5, 3.5])
    scores = np.concatenate([positives, negatives])
    truth = np.concatenate([np.ones(10), np.zeros(1000)])
    tpr, negatives_seen = statistics.tpr_at_fpr(scores, truth, 0.01)
    assert negatives_seen == 1000
    assert tpr == 60.0   # 995.5, 996.5, 1500, 2000, 990.5, 991.5 are >= 990
    assert math.isnan(statistics.tpr_at_fpr(scores, truth, 0.001)[0])   # needs 10,000 negatives
    with pytest.raises(ValueError, match="fpr must be in"):
        statistics.tpr_at_fpr(scores, truth, 1.0)


def test_jensen_shannon_in_bits():
    assert statistics.jensen_shannon([1, 0], [0, 1]) == 1.0
    assert statistics.jensen_shannon([0.5, 0.5], [0.5, 0.5]) == 0.0
    # by hand: p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): ½·log2(4/3) + ½·(½·log2(2/3) + ½·log2(2))
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * 1.0)
    assert statistics.jensen_shannon([2, 0], [1, 1]) == pytest.approx(expected)


def test_packed_bits_round_trip():
    bits = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=bool)
    text = statistics.pack_bits(bits)
    assert text == "9:b080"
    assert (statistics.unpack_bits(text) == bits).all()
    assert statistics.unpack_bits(float("nan")) is None


def test_uncertainty_options_name_the_bad_field():
    assert statistics.Uncertainty().check(["trw", "ft"])
    with pytest.raises(ValueError, match=r"spread: must be one of \['seeds', 'forget_classes', 'units'\]"):
        statistics.Uncertainty(spread="methods").check()
    with pytest.raises(ValueError, match=r"compare_to: unknown baseline 'sgd'; allowed: \['ft', 'retrain', 'trw'\]"):
        statistics.Uncertainty(baselines=("sgd",)).check(["trw", "ft"])
    assert [name for name, _ in statistics.Uncertainty(resamples=10, seed=-1).problems()] == ["resamples", "ci_seed"]


def test_cell_seed_is_stable_and_separates_cells():
    assert statistics.cell_seed(0, "accuracy", "trw", "Acc_r") == statistics.cell_seed(0, "accuracy", "trw", "Acc_r")
    assert statistics.cell_seed(0, "accuracy", "trw", "Acc_r") != statistics.cell_seed(0, "accuracy", "ft", "Acc_r")


def test_the_binomial_cdf_behind_the_sample_resampling_by_hand():
    # 1 of 3 samples labelled: Binomial(3, 1/3) has pmf 8/27, 12/27, 6/27, 1/27
    assert statistics._binomial_cdf(3, 1) == pytest.approx(np.cumsum([8 / 27, 12 / 27, 6 / 27, 1 / 27]))
    assert list(statistics._binomial_cdf(4, 0)) == [1.0] * 5          # nothing labelled: always 0
    assert list(statistics._binomial_cdf(4, 4)) == [0.0] * 4 + [1.0]  # everything labelled: always 4
