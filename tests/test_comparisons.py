"""The comparisons table (analysis/comparisons.py) and its item (grid/reports/statistics_tables.py):
pairing rules, the paired differences' interval and Wilcoxon p against statistics.bootstrap_mean and
scipy on the same differences, Holm over the table, n/a below 3 pairs, and the >= 2 seeds condition."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import comparisons, noise_floor, statistics
from grid.reports import statistics_tables

NAN = float("nan")
RETRAIN_ACC_R = {0: 95.0, 1: 96.0, 2: 97.0, 3: 98.0}   # per seed
# ft − Retrain on Acc_r per (seed, unlearning seed), in the pairs' order (seed, then unlearning seed):
# distinct absolute values and no zero, so scipy's wilcoxon is exact like ours
FT_DIFFERENCES = {(0, 0): -3.0, (0, 1): -1.0, (1, 0): -2.5, (1, 1): 0.5,
                  (2, 0): -4.0, (2, 1): -1.5, (3, 0): -2.0, (3, 1): 3.5}


def run(method, seed, unlearn_seed=NAN, acc_r=NAN, lam=NAN, gap=NAN, forget="8", dataset="digits", **extra):
    return {"stage": "retrain" if method == "retrain" else "unlearn", "method": method, "dataset": dataset,
            "arch": "small_cnn", "forget_classes": forget, "seed": seed, "unlearn_seed": unlearn_seed,
            "acc_r_test": acc_r, "acc_f_test": 0.0, "mia_svm": 50.0, "mia_nn_gap": gap, "params.lam": lam, **extra}


def make_runs(trw_lams=(0.0, 1.0)):
    """digits/small_cnn, forget set 8, seeds 0-3, unlearning seeds 0 and 1: Retrain, ft and TRW at each λ
    (TRW's Acc_r: Retrain's − 1 at λ = 0, − 1 − λ otherwise, whatever the unlearning seed)."""
    rows = [run("retrain", seed, acc_r=acc) for seed, acc in RETRAIN_ACC_R.items()]
    for (seed, unlearn_seed), difference in FT_DIFFERENCES.items():
        rows.append(run("ft", seed, unlearn_seed, RETRAIN_ACC_R[seed] + difference, gap=10.0 + seed))
        for lam in trw_lams:
            rows.append(run("trw", seed, unlearn_seed, RETRAIN_ACC_R[seed] - 1 - lam, lam=lam, gap=5.0))
    return pd.DataFrame(rows)


def row(table, method, baseline, metric):
    found = table[(table["Method"] == method) & (table["Baseline"] == baseline) & (table["Metric"] == metric)]
    assert len(found) == 1, (method, baseline, metric)
    return found.iloc[0]


def test_difference_interval_and_p_match_bootstrap_and_scipy_on_the_same_differences():
    uncertainty = statistics.Uncertainty(resamples=500, seed=7)
    table = comparisons.comparisons_table(make_runs(), uncertainty)
    got = row(table, "ft", "Retrain", "Acc_r")
    differences = list(FT_DIFFERENCES.values())
    expected = statistics.bootstrap_mean(
        differences, resamples=500, seed=statistics.cell_seed(7, "comparisons", "digits", "small_cnn", "ft",
                                                              "Retrain", "acc_r_test"))
    assert got["Difference mean"] == pytest.approx(np.mean(differences)) == pytest.approx(-1.25)
    assert got["Difference std"] == pytest.approx(np.std(differences, ddof=1))
    assert (got["Difference ci_low"], got["Difference ci_high"]) == pytest.approx((expected.low, expected.high))
    assert got["Difference ci_low"] < -1.25 < got["Difference ci_high"]
    assert got["Difference n"] == 8
    assert got["Wilcoxon p"] == pytest.approx(stats.wilcoxon(differences).pvalue)
    assert got["Wilcoxon p"] == pytest.approx(2 * 25 / 2 ** 8)   # R+ = 1 + 7 = 8: 25 of the 256 sign patterns have R+ <= 8


def test_holm_is_over_every_test_in_the_table():
    table = comparisons.comparisons_table(make_runs(), statistics.Uncertainty(resamples=100))
    tested = table["Wilcoxon p"].notna()
    assert tested.sum() >= 3
    assert np.allclose(table.loc[tested, "Holm p"], statistics.holm(table.loc[tested, "Wilcoxon p"]))
    smallest = table.loc[tested, "Wilcoxon p"].idxmin()
    assert table.loc[smallest, "Holm p"] == pytest.approx(min(1.0, tested.sum() * table.loc[smallest, "Wilcoxon p"]))
    assert table.loc[~tested, "Holm p"].isna().all()   # no test (all differences 0): no adjusted p either


def test_retrain_pairs_by_seed_and_forget_set_whatever_the_unlearning_seed():
    pairs = comparisons.paired_units(make_runs(), baselines=("retrain",))
    ft = pairs[(pairs["label"] == "ft") & (pairs["metric"] == "acc_r_test")]
    assert len(ft) == 8                                       # both unlearning seeds of a seed pair with its Retrain
    assert set(ft["baseline"]) == {"Retrain"}
    assert dict(zip(zip(ft["seed"], ft["unlearn_seed"]), ft["value"])) == {
        (str(s), str(u)): d for (s, u), d in FT_DIFFERENCES.items()}
    assert pairs["samples"].isna().all()
    # a Retrain run of another forget set does not pair
    other = pd.concat([make_runs(), pd.DataFrame([run("retrain", 0, acc_r=0.0, forget="3")])], ignore_index=True)
    again = comparisons.paired_units(other, baselines=("retrain",))
    assert len(again[(again["label"] == "ft") & (again["metric"] == "acc_r_test")]) == 8


def test_trw_baseline_is_its_first_row_in_order_and_pairs_the_whole_unit():
    table = comparisons.comparisons_table(make_runs(), statistics.Uncertainty(resamples=100, baselines=("trw",)))
    assert set(table["Baseline"]) == {"trw (lam=0.0)"}
    assert "trw (lam=0.0)" not in set(table["Method"])        # not compared with itself
    lam_one = row(table, "trw (lam=1.0)", "trw (lam=0.0)", "Acc_r")
    assert lam_one["Difference mean"] == pytest.approx(-1.0) and lam_one["Difference n"] == 8
    ft = row(table, "ft", "trw (lam=0.0)", "Acc_r")
    # ft − TRW(λ=0) per unit = (Retrain + d) − (Retrain − 1) = d + 1
    assert ft["Difference mean"] == pytest.approx(np.mean(list(FT_DIFFERENCES.values())) + 1)


def test_trw_baseline_is_the_bare_method_when_no_param_varies():
    table = comparisons.comparisons_table(make_runs(trw_lams=(0.0,)), statistics.Uncertainty(resamples=100))
    assert list(dict.fromkeys(table["Baseline"])) == ["trw", "Retrain"]   # the order asked for


def retrain_scores_tag(seeds):
    """Three Retrain models' A_c for classes 1, 2, 3 (test_noise_floor's matrix): held-out gaps 0, 19, 7.5."""
    return json.dumps({"seeds": seeds, "classes": [1, 2, 3], "scores": [[60, 50, 10], [40, 55, 10], [58, 45, 10]]})


def test_mia_nn_gap_pairs_with_the_held_out_retrain_model_of_the_same_seed():
    runs = make_runs()
    runs[noise_floor.TAG] = np.where(runs["stage"] == "unlearn", retrain_scores_tag([0, 1, 2]), None)
    pairs = comparisons.paired_units(runs, baselines=("retrain",))
    gap = pairs[(pairs["label"] == "ft") & (pairs["metric"] == "mia_nn_gap")]
    assert set(gap["baseline"]) == {"Retrain (held-out)"}
    # ft's gap is 10 + seed; the held-out gaps of seeds 0, 1, 2 are 0, 19, 7.5; seed 3 has no Retrain model scored
    assert sorted(zip(gap["seed"], gap["value"])) == [("0", 10.0), ("0", 10.0), ("1", -8.0), ("1", -8.0),
                                                      ("2", 4.5), ("2", 4.5)]
    # without the tag there is nothing to pair the gap with: no MIA-NN gap rows against Retrain
    table = comparisons.comparisons_table(make_runs(), statistics.Uncertainty(resamples=100, baselines=("retrain",)))
    assert "MIA-NN gap" not in set(table["Metric"])


def test_below_three_pairs_the_interval_and_p_are_na():
    runs = make_runs()
    # seeds 0 and 1 with one unlearning seed each: two pairs (seed 1 a copy of seed 0)
    seed_zero = runs[(runs["seed"] == 0) & (runs["unlearn_seed"].isna() | (runs["unlearn_seed"] == 0))]
    two = pd.concat([seed_zero, seed_zero.assign(seed=1)], ignore_index=True)
    got = row(comparisons.comparisons_table(two, statistics.Uncertainty(resamples=100)), "ft", "Retrain", "Acc_r")
    assert got["Difference n"] == 2 and got["Difference mean"] == pytest.approx(-3.0)
    assert math.isnan(got["Difference ci_low"]) and math.isnan(got["Wilcoxon p"]) and math.isnan(got["Holm p"])


def test_comparisons_item_needs_two_seeds():
    runs = make_runs()
    uncertainty = statistics.Uncertainty(resamples=200, seed=3)
    assert statistics_tables.items(runs[runs["seed"] == 0], uncertainty) == []
    (name, title, table, show_index, units), = statistics_tables.items(runs[runs["seed"].isin([0, 1])], uncertainty)
    assert (name, show_index) == ("comparisons", False)
    assert "200 resamples" in title and "seed 3" in title and "Holm" in title and "n = pairs" in title
    assert set(units.columns) >= {"dataset", "arch", "label", "seed", "forget_classes", "unlearn_seed", "metric",
                                  "value", "samples"}
    assert len(units) == table["Difference n"].sum()


def test_p_values_print_with_three_significant_digits(tmp_path, capsys):
    """A 1-decimal float would print Wilcoxon's smallest p for 6 pairs (2/64 = 0.03125) as '0.0'."""
    from grid.reports import report
    table = pd.DataFrame({"Method": ["ft", "rl"], "Wilcoxon p": [2 / 64, np.nan], "Holm p": [1.0, np.nan]})
    report.write_tables([("comparisons", "title", table, False)], tmp_path)
    rows = (tmp_path / "comparisons.md").read_text().splitlines()[2:]
    assert rows == ["| ft | 0.0312 | 1 |", "| rl | – | – |"]
    assert pd.read_csv(tmp_path / "comparisons.csv")["Wilcoxon p"][0] == 2 / 64   # the CSV keeps every digit
