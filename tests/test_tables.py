"""The paper's tables from a tidy frame of runs: labels, row order, mean ± std, MIA-NN layout, Markdown."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.tables import (accuracy_table, format_mean_std, mean_std, method_labels, mia_nn_table, spread_note,
                             to_markdown)

NAN = float("nan")
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Per (forget set, seed): acc_r_test of each row label on digits/small_cnn.
ACC_R = {
    "retrain": {("8", 0): 95.0, ("8", 1): 97.0, ("1,2", 0): 93.0, ("1,2", 1): 95.0},
    "original": {("8", 0): 96.0, ("8", 1): 96.0, ("1,2", 0): 96.0, ("1,2", 1): 96.0},
    "trw 0.0": {("8", 0): 94.0, ("8", 1): 94.0, ("1,2", 0): 92.0, ("1,2", 1): 92.0},
    "trw 10.0": {("8", 0): 94.0, ("8", 1): 96.0, ("1,2", 0): 90.0, ("1,2", 1): 92.0},
    "ft": {("8", 0): 93.0, ("8", 1): 93.0, ("1,2", 0): 93.0, ("1,2", 1): 93.0},
}
MIA_NN = {
    "original": {("8", 0): 10.0, ("8", 1): 12.0, ("1,2", 0): 5.0, ("1,2", 1): 7.0},
    "trw 0.0": {("8", 0): 40.0, ("8", 1): 42.0, ("1,2", 0): 30.0, ("1,2", 1): 34.0},
    "trw 10.0": {("8", 0): 68.0, ("8", 1): 70.0, ("1,2", 0): 50.0, ("1,2", 1): 56.0},
    "ft": {("8", 0): 55.0, ("8", 1): 57.0, ("1,2", 0): 20.0, ("1,2", 1): 30.0},
}
REFERENCE = {("8", 0): 70.0, ("8", 1): 72.0, ("1,2", 0): 50.0, ("1,2", 1): 54.0}
NEIGHBOUR = {"8": 3, "1,2": 7}
PARAMS = {"retrain": (NAN, NAN), "original": (NAN, NAN), "trw 0.0": (0.0, 10), "trw 10.0": (10.0, 10),
          "ft": (NAN, 20)}


def run_row(label, dataset, arch, forget, seed, acc_r, mia_nn=NAN, reference=NAN, neighbour=NAN):
    method = label.split()[0]
    lam, epochs = PARAMS[label]
    return {"stage": "retrain" if method == "retrain" else "unlearn", "method": method,
            "dataset": dataset, "arch": arch, "forget_classes": forget, "seed": seed,
            "acc_r_test": acc_r, "acc_f_test": 0.0 if method != "original" else 95.0,
            "mia_svm": 100.0 if method == "retrain" else 90.0 + seed,
            "mia_nn": mia_nn, "mia_nn_reference": reference, "neighbour_class": neighbour,
            "params.lam": lam, "params.epochs": epochs}


def make_runs():
    rows = []
    for label, by_key in ACC_R.items():                     # retrain first, so order is not by appearance
        for (forget, seed), acc_r in by_key.items():
            if label == "retrain":
                rows.append(run_row(label, "digits", "small_cnn", forget, seed, acc_r))
            else:
                rows.append(run_row(label, "digits", "small_cnn", forget, seed, acc_r,
                                    MIA_NN[label][forget, seed], REFERENCE[forget, seed], NEIGHBOUR[forget]))
    # A second dataset with one seed and no lam=0 run: its cell for that row must stay empty.
    for label, acc_r, mia in [("retrain", 90.0, NAN), ("original", 91.0, 1.0), ("trw 10.0", 89.0, 80.0),
                              ("ft", 88.0, 60.0)]:
        reference, neighbour = (NAN, NAN) if label == "retrain" else (85.0, 9)
        rows.append(run_row(label, "cifar10", "resnet18", "1", 0, acc_r, mia, reference, neighbour))
    return pd.DataFrame(rows)


TRW_LABELS = {"trw 0.0": "trw (lam=0.0)", "trw 10.0": "trw (lam=10.0)"}
TABLE_LABELS = {"retrain": "Retrain", "original": "Original", "ft": "ft", **TRW_LABELS}


def test_method_labels_split_trw_by_lam_only():
    labels = method_labels(make_runs())
    assert set(labels) == {"Retrain", "Original", "trw (lam=0.0)", "trw (lam=10.0)", "ft"}
    runs = make_runs()
    assert (labels[runs["method"] == "ft"] == "ft").all()           # epochs constant within ft: no suffix


def test_method_labels_name_every_varying_param():
    runs = make_runs()
    runs.loc[(runs["method"] == "trw") & (runs["seed"] == 1), "params.epochs"] = 5
    labels = method_labels(runs)
    # params in column order; epochs prints as 5.0 because the column holds NaN (float dtype)
    assert set(labels[runs["method"] == "trw"]) == {"trw (lam=0.0, epochs=10.0)", "trw (lam=0.0, epochs=5.0)",
                                                     "trw (lam=10.0, epochs=10.0)", "trw (lam=10.0, epochs=5.0)"}
    assert set(labels[runs["method"] == "ft"]) == {"ft"}


def test_accuracy_table_rows_original_and_retrain_first_then_methods():
    table = accuracy_table(make_runs())
    assert list(table.index[:2]) == ["Original", "Retrain"]
    assert set(table.index[2:]) == {"trw (lam=0.0)", "trw (lam=10.0)", "ft"}
    assert len(table) == 5
    assert table.index.name == "Method"


def per_seed_means(by_key):
    """The per-seed means over forget sets of {(forget, seed): value}: the values the ± is over."""
    seeds = sorted({seed for _, seed in by_key})
    return [np.mean([v for (_, s), v in by_key.items() if s == seed]) for seed in seeds]


def test_accuracy_table_mean_and_sample_std_over_seeds_of_the_mean_over_forget_sets():
    table = accuracy_table(make_runs())
    for key, label in TABLE_LABELS.items():
        values = per_seed_means(ACC_R[key])
        assert table.loc[label, "digits/small_cnn Acc_r mean"] == pytest.approx(np.mean(values))
        assert table.loc[label, "digits/small_cnn Acc_r std"] == pytest.approx(np.std(values, ddof=1))
    # worked by hand: seed 0 (8: 94, 1+2: 90) -> 92, seed 1 (96, 92) -> 94: mean 93, sample std sqrt(2)
    # (the old pooled population std over the 4 runs was sqrt(5), the pooled sample std 2.58)
    assert table.loc["trw (lam=10.0)", "digits/small_cnn Acc_r mean"] == pytest.approx(93.0)
    assert table.loc["trw (lam=10.0)", "digits/small_cnn Acc_r std"] == pytest.approx(math.sqrt(2))
    assert table.loc["Original", "digits/small_cnn Acc_f mean"] == pytest.approx(95.0)
    # MIA = 90 + seed: seeds 90 and 91 -> mean 90.5, sample std 0.71 (population std was 0.5)
    assert table.loc["ft", "digits/small_cnn MIA mean"] == pytest.approx(90.5)
    assert table.loc["ft", "digits/small_cnn MIA std"] == pytest.approx(math.sqrt(0.5))


def test_mean_std_is_the_sample_std_over_unit_means():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))            # ddof = 1 (ddof = 0: 0.816)
    # units: seed a has 1 and 3 (mean 2), seed b has 6: mean of (2, 6) = 4, sample std 2.83
    values = pd.Series([1.0, 3.0, 6.0])
    assert mean_std(values, ["a", "a", "b"]) == pytest.approx((4.0, math.sqrt(8)))
    assert mean_std(values, pd.Series([0, 0, 1], index=[5, 6, 7])) == pytest.approx((4.0, math.sqrt(8)))  # positional
    mean, std = mean_std([7.0])
    assert mean == 7.0 and math.isnan(std)                                   # one value: no spread
    mean, std = mean_std([1.0, 3.0], [0, 0])
    assert mean == 2.0 and math.isnan(std)                                   # one seed: no spread
    assert all(math.isnan(v) for v in mean_std([NAN, "x"]))


def test_a_single_seed_has_no_std_and_prints_a_dash():
    table = accuracy_table(make_runs())
    assert table.loc["ft", "cifar10/resnet18 Acc_r mean"] == pytest.approx(88.0)
    assert math.isnan(table.loc["ft", "cifar10/resnet18 Acc_r std"])       # one seed: NaN, not 0
    formatted = format_mean_std(table)
    assert formatted.loc["ft", "cifar10/resnet18 Acc_r"] == "88.00 ± – [n/a] (n=1)"   # one unit: no interval
    assert formatted.loc["trw (lam=0.0)", "cifar10/resnet18 Acc_r"] == "–"  # no run at all


def test_spread_note_says_what_the_std_is_over():
    assert spread_note(make_runs()) == (
        "mean over units ± spread [95% bootstrap interval]: ± = sample std (ddof = 1) over 2 seeds, each seed's "
        "value the mean over its 3 forget sets; interval over (seed, forget set) units, 1000 resamples, seed 0; "
        "attack scores over units only (the runs stored no per-sample predictions); n = units; n/a below 3 units; "
        "± – with one")
    runs = make_runs().assign(unlearn_seed=lambda r: r["seed"])
    assert "its 3 forget sets and 2 unlearning seeds" in spread_note(runs)
    assert "(seed, forget set, unlearning seed) units" in spread_note(runs)
    one = make_runs()[lambda r: r["dataset"] == "cifar10"]
    assert "over 1 seed, each seed's value the mean over its forget set;" in spread_note(one)


def test_accuracy_table_has_a_column_group_per_dataset_and_arch():
    table = accuracy_table(make_runs())
    for prefix in ("digits/small_cnn", "cifar10/resnet18"):
        for metric in ("Acc_r", "Acc_f", "MIA"):
            assert f"{prefix} {metric} mean" in table.columns
            assert f"{prefix} {metric} std" in table.columns
    assert table.loc["ft", "cifar10/resnet18 Acc_r mean"] == pytest.approx(88.0)
    assert math.isnan(table.loc["ft", "cifar10/resnet18 Acc_r std"])       # one seed
    assert np.isnan(table.loc["trw (lam=0.0)", "cifar10/resnet18 Acc_r mean"])   # no such run


def test_mia_nn_table_one_row_per_forget_set_and_method_retrain_first():
    table = mia_nn_table(make_runs(), class_names={"digits": DIGIT_NAMES}, method_order=["trw", "ft"])
    digits_eight = table[(table["Dataset"] == "digits/small_cnn") & (table["Forget"] == "eight")]
    assert list(digits_eight["Method"]) == ["Retrain", "Original", "trw (lam=0.0)", "trw (lam=10.0)", "ft"]
    assert set(digits_eight["c*"]) == {"three"}
    assert list(dict.fromkeys(table["Forget"])) == ["eight", "one+two", "all", "1"]   # cifar10 has no names
    cifar = table[table["Dataset"] == "cifar10/resnet18"]
    assert list(cifar["c*"]) == ["9", "9", "9", "9", "", "", ""]          # 'all' rows have no c*
    # Retrain's MIA-NN is A_c*: one unit per (seed, forget set)
    retrain = table[table["Method"] == "Retrain"].set_index("Forget")
    assert list(retrain["MIA-NN mean"]) == pytest.approx([71.0, 52.0, 85.0])
    assert list(retrain["MIA-NN n"]) == [2, 2, 1]
    assert "Retrain" not in set(method_labels(make_runs()[lambda r: r["stage"] == "unlearn"]))


def test_mia_nn_table_cells_are_means_over_units():
    table = mia_nn_table(make_runs(), class_names={"digits": DIGIT_NAMES})
    cell = table.set_index(["Dataset", "Forget", "Method"])
    for key, label in [("original", "Original"), *TRW_LABELS.items(), ("ft", "ft")]:
        for forget, name in [("8", "eight"), ("1,2", "one+two")]:
            values = [MIA_NN[key][forget, seed] for seed in (0, 1)]
            assert cell.loc[("digits/small_cnn", name, label), "MIA-NN mean"] == pytest.approx(np.mean(values))
            assert cell.loc[("digits/small_cnn", name, label), "MIA-NN n"] == 2
            assert np.isnan(cell.loc[("digits/small_cnn", name, label), "MIA-NN ci_low"])   # 2 units: n/a
        every = [v for v in MIA_NN[key].values()]
        assert cell.loc[("digits/small_cnn", "all", label), "MIA-NN mean"] == pytest.approx(np.mean(every))
    assert cell.loc[("cifar10/resnet18", "1", "trw (lam=10.0)"), "MIA-NN mean"] == pytest.approx(80.0)
    assert ("cifar10/resnet18", "1", "trw (lam=0.0)") not in cell.index        # no such run


def test_mia_nn_table_without_class_names_prints_indices():
    table = mia_nn_table(make_runs())
    assert list(dict.fromkeys(table["Forget"])) == ["8", "1+2", "all", "1"]
    assert list(dict.fromkeys(table["c*"])) == ["3", "7", "", "9"]


def test_format_mean_std_joins_mean_and_std_columns():
    formatted = format_mean_std(accuracy_table(make_runs()))
    assert "digits/small_cnn Acc_r" in formatted.columns
    assert not any(c.endswith((" mean", " std")) for c in formatted.columns)
    assert not any(c.endswith((" ci_low", " ci_high", " n")) for c in formatted.columns)
    table = accuracy_table(make_runs())
    low, high = table.loc["trw (lam=10.0)", ["digits/small_cnn Acc_r ci_low", "digits/small_cnn Acc_r ci_high"]]
    assert formatted.loc["trw (lam=10.0)", "digits/small_cnn Acc_r"] == f"93.00 ± 1.41 [{low:.2f}, {high:.2f}] (n=4)"
    assert formatted.loc["Retrain", "digits/small_cnn MIA"] == "100.00 ± 0.00 [100.00, 100.00] (n=4)"
    assert formatted.loc["trw (lam=0.0)", "cifar10/resnet18 Acc_r"] == "–"
    one_digit = format_mean_std(table, digits=1)
    assert one_digit.loc["trw (lam=10.0)", "digits/small_cnn Acc_r"].startswith("93.0 ± 1.4 [")
    # mean and std alone (tables of other modules): the old 'mean ± std'
    plain = pd.DataFrame({"x mean": [1.0], "x std": [0.5]})
    assert format_mean_std(plain).loc[0, "x"] == "1.00 ± 0.50"


def test_to_markdown_has_header_separator_and_a_line_per_row():
    table = pd.DataFrame({"a": [1.25, NAN], "b": ["x", "y"]}, index=pd.Index(["r1", "r2"], name="Method"))
    lines = to_markdown(table).splitlines()
    assert lines == ["| Method | a | b |",
                     "|---|---|---|",
                     "| r1 | 1.2 | x |",
                     "| r2 | – | y |"]
    assert to_markdown(table, index=False).splitlines()[0] == "| a | b |"
    assert to_markdown(table, digits=2).splitlines()[2] == "| r1 | 1.25 | x |"


def test_to_markdown_of_the_formatted_accuracy_table():
    formatted = format_mean_std(accuracy_table(make_runs()))
    lines = to_markdown(formatted).splitlines()
    assert len(lines) == 2 + len(formatted)
    assert lines[0].startswith("| Method | ")
    assert lines[1] == "|" + "|".join(["---"] * (1 + len(formatted.columns))) + "|"
    assert lines[2].startswith("| Original | ")
    assert any(line.startswith("| trw (lam=10.0) | 93.00 ± 1.41 [") for line in lines)


def lam_sweep_runs(extra_params=None):
    """Original plus trw at lam 20, 5, 10 (in that order of appearance) on one dataset."""
    rows = []
    for method, lam in [("original", NAN), ("trw", 20.0), ("trw", 5.0), ("trw", 10.0)]:
        row = run_row("original", "digits", "small_cnn", "8", 0, 90.0)
        row.update({"method": method, "params.lam": lam, "params.epochs": NAN})
        rows.append(row)
    runs = pd.DataFrame(rows)
    for column, values in (extra_params or {}).items():
        runs.insert(list(runs.columns).index("params.lam"), column, values)
    return runs


def test_accuracy_table_orders_a_methods_rows_by_param_value_numerically():
    table = accuracy_table(lam_sweep_runs())
    assert list(table.index) == ["Original", "trw (lam=5.0)", "trw (lam=10.0)", "trw (lam=20.0)"]


def test_param_order_survives_a_param_column_that_another_method_uses():
    runs = lam_sweep_runs({"params.alpha": [NAN, NAN, NAN, NAN]})      # e.g. l1's alpha, NaN for trw
    table = accuracy_table(runs)
    assert list(table.index) == ["Original", "trw (lam=5.0)", "trw (lam=10.0)", "trw (lam=20.0)"]


def test_accuracy_table_average_gap_to_retrain_per_dataset():
    table = accuracy_table(make_runs())
    # digits Retrain: Acc_r 95, Acc_f 0, MIA 100; ft: Acc_r 93, Acc_f 0, MIA 90.5 -> (2 + 0 + 9.5) / 3
    assert table.loc["ft", "digits/small_cnn Avg gap"] == pytest.approx(11.5 / 3)
    assert math.isnan(table.loc["Retrain", "digits/small_cnn Avg gap"])
    # cifar10 Retrain: 90, 0, 100; ft: 88, 0, 90 -> 12 / 3
    assert table.loc["ft", "cifar10/resnet18 Avg gap"] == pytest.approx(4.0)
    assert "digits/small_cnn Avg gap" in format_mean_std(table).columns     # kept as a plain number


def test_mia_nn_table_all_rows_give_the_mean_gap_to_retrain_per_method():
    runs = make_runs()
    runs["mia_nn_gap"] = (runs["mia_nn"] - runs["mia_nn_reference"]).abs()
    table = mia_nn_table(runs, class_names={"digits": DIGIT_NAMES}).set_index(["Dataset", "Forget", "Method"])
    # trw lam=10 on digits: |68-70|, |70-72|, |50-50|, |56-54| -> 6 / 4 over 4 units
    assert table.loc[("digits/small_cnn", "all", "trw (lam=10.0)"), "MIA-NN gap mean"] == pytest.approx(6 / 4)
    assert table.loc[("digits/small_cnn", "all", "trw (lam=10.0)"), "MIA-NN gap n"] == 4
    assert table.loc[("cifar10/resnet18", "all", "trw (lam=10.0)"), "MIA-NN gap mean"] == pytest.approx(5.0)
    assert np.isnan(table.loc[("digits/small_cnn", "eight", "Retrain"), "MIA-NN gap mean"])
