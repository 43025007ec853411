"""Table cells with intervals: the numbers against hand-computed values on tiny frames, the spread
option, n and n/a, the CSV and per-unit CSV, the JS column, grouping once, and bad options."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import statistics, tables
from analysis.statistics import Uncertainty
from grid import cli
from grid.reports import report


def run(method, forget, seed, acc_r, unlearn_seed=0, stage="unlearn", **extra):
    return {"stage": stage, "method": method, "dataset": "digits", "arch": "mlp", "forget_classes": forget,
            "seed": str(seed), "unlearn_seed": None if stage == "retrain" else str(unlearn_seed),
            "acc_r_test": acc_r, "acc_f_test": 0.0, "mia_svm": 50.0, **extra}


# ft's Acc_r per (forget set, seed): seed means 91 and 95; forget-set means 92 and 94
FT = {("3", 0): 90.0, ("3", 1): 94.0, ("5", 0): 92.0, ("5", 1): 96.0}


def ft_runs():
    return pd.DataFrame([run("ft", f, s, v) for (f, s), v in FT.items()])


def test_a_cell_is_the_mean_over_units_with_bootstrap_means_interval():
    uncertainty = Uncertainty(resamples=200, seed=7)
    table = tables.accuracy_table(ft_runs(), uncertainty=uncertainty)
    expected = statistics.bootstrap_mean(list(FT.values()), resamples=200,
                                         seed=statistics.cell_seed(7, "accuracy", "ft", "digits", "mlp", "Acc_r"))
    assert table.loc["ft", "digits/mlp Acc_r mean"] == pytest.approx(93.0)
    assert table.loc["ft", "digits/mlp Acc_r ci_low"] == expected.low
    assert table.loc["ft", "digits/mlp Acc_r ci_high"] == expected.high
    assert table.loc["ft", "digits/mlp Acc_r n"] == 4
    again = tables.accuracy_table(ft_runs(), uncertainty=uncertainty)      # seeded: the same table
    pd.testing.assert_frame_equal(table, again)


def test_the_spread_option_chooses_what_the_std_spans():
    def std(spread):
        return tables.accuracy_table(ft_runs(), uncertainty=Uncertainty(spread=spread)).loc["ft", "digits/mlp Acc_r std"]
    assert std("seeds") == pytest.approx(np.std([91.0, 95.0], ddof=1))           # per-seed means
    assert std("forget_classes") == pytest.approx(np.std([92.0, 94.0], ddof=1))  # per-forget-set means
    assert std("units") == pytest.approx(np.std(list(FT.values()), ddof=1))      # every unit


def test_attack_scores_resample_test_samples_when_every_unit_stored_them():
    bits = {0: [1, 1, 0, 0], 1: [1, 1, 1, 0], 2: [1, 0, 0, 0]}   # MIA = 100 · mean(bits): 50, 75, 25
    rows = [run("ft", "3", s, 90.0, mia_svm=100.0 * np.mean(b), mia_svm_predictions=statistics.pack_bits(b))
            for s, b in bits.items()]
    uncertainty = Uncertainty(resamples=300, seed=1)
    table = tables.accuracy_table(pd.DataFrame(rows), uncertainty=uncertainty)
    seed = statistics.cell_seed(1, "accuracy", "ft", "digits", "mlp", "MIA")
    with_samples = statistics.bootstrap_mean([50.0, 75.0, 25.0], [(2, 4), (3, 4), (1, 4)], 300, seed)
    assert table.loc["ft", "digits/mlp MIA ci_low"] == with_samples.low
    assert table.loc["ft", "digits/mlp MIA ci_high"] == with_samples.high
    rows[0]["mia_svm_predictions"] = None                          # one unit without: units only
    table = tables.accuracy_table(pd.DataFrame(rows), uncertainty=uncertainty)
    assert table.loc["ft", "digits/mlp MIA ci_low"] == statistics.bootstrap_mean([50.0, 75.0, 25.0], None, 300, seed).low
    assert "where every unit of the cell stored" in tables.spread_note(pd.DataFrame(rows))


def test_fewer_than_three_units_print_n_a_with_n():
    table = tables.accuracy_table(ft_runs()[lambda r: r["forget_classes"] == "3"])
    assert np.isnan(table.loc["ft", "digits/mlp Acc_r ci_low"])
    text = tables.format_mean_std(table).loc["ft", "digits/mlp Acc_r"]
    assert text == "92.00 ± 2.83 [n/a] (n=2)"


def test_js_column_compares_with_the_retrain_of_the_same_seed_and_forget_set():
    retrain = [run("retrain", "3", s, 95.0, stage="retrain", forget_mean_probs=json.dumps([0.5, 0.5, 0.0]))
               for s in (0, 1)]
    ft = [run("ft", "3", 0, 90.0, mia_nn=40.0, forget_mean_probs=json.dumps([0.0, 1.0, 0.0])),
          run("ft", "3", 1, 90.0, mia_nn=40.0, forget_mean_probs=json.dumps([0.5, 0.5, 0.0])),
          run("ft", "3", 0, 90.0, unlearn_seed=1, mia_nn=40.0)]                 # an old run: no tag
    table = tables.mia_nn_table(pd.DataFrame(retrain + ft)).set_index(["Forget", "Method"])
    # JS([0, 1, 0], [.5, .5, 0]) = 0.5·KL(p‖m) + 0.5·KL(q‖m), m = [.25, .75, 0]: by hand 0.311278 bits
    hand = 0.5 * np.log2(1 / 0.75) + 0.5 * (0.5 * np.log2(0.5 / 0.25) + 0.5 * np.log2(0.5 / 0.75))
    assert table.loc[("3", "ft"), "JS to Retrain mean"] == pytest.approx(hand / 2)     # and 0 for seed 1
    assert table.loc[("3", "ft"), "JS to Retrain n"] == 2                              # the old run: n/a, not 0
    assert table.loc[("3", "ft"), "MIA-NN n"] == 3


def sweep(labels, forget_sets=3):
    """A λ sweep: one trw run per (λ, forget set) plus Retrain and Original per forget set."""
    rows = []
    for forget in range(forget_sets):
        rows.append(run("retrain", str(forget), 0, 95.0, stage="retrain"))
        rows.append(run("original", str(forget), 0, 96.0))
        rows += [run("trw", str(forget), 0, 90.0 + lam % 7, mia_nn=50.0, mia_nn_reference=60.0, mia_nn_gap=10.0,
                     neighbour_class=1, wall_seconds=1.0, **{"params.lam": str(lam)}) for lam in range(labels)]
    return pd.DataFrame(rows)


def scans(monkeypatch, runs):
    """How many boolean selections / comparisons of whole columns the table builders make on `runs`."""
    count = {"n": 0}
    original_getitem, original_eq = pd.DataFrame.__getitem__, pd.Series.__eq__

    def getitem(self, key):
        if isinstance(key, (pd.Series, np.ndarray)) and getattr(key, "dtype", None) == bool:
            count["n"] += 1
        return original_getitem(self, key)

    def eq(self, other):
        count["n"] += 1
        return original_eq(self, other)
    monkeypatch.setattr(pd.DataFrame, "__getitem__", getitem)
    monkeypatch.setattr(pd.Series, "__eq__", eq)
    uncertainty = Uncertainty(resamples=100)
    tables.accuracy_table(runs, ["trw"], uncertainty)
    tables.mia_nn_table(runs, None, ["trw"], uncertainty)
    tables.lambda_table(runs, "trw", uncertainty)
    tables.running_time_table(runs, ["trw"], uncertainty)
    tables.multiclass_table(runs, ["trw"], uncertainty)
    monkeypatch.undo()
    return count["n"]


def test_tables_scan_the_frame_a_fixed_number_of_times_whatever_the_labels(monkeypatch):
    # the old builders selected each row label from the whole frame: scans grew with the labels
    assert scans(monkeypatch, sweep(4)) == scans(monkeypatch, sweep(12))


def test_write_tables_writes_full_precision_csv_formatted_md_and_units(tmp_path):
    table, units = tables.accuracy_table(ft_runs(), uncertainty=Uncertainty(resamples=100), units=True)
    paths = report.write_tables([("accuracy", "title", table, True, units),
                                 ("plain", "old-style item", pd.DataFrame({"a": [1.0 / 3]}), False)], tmp_path)
    assert {p.name for p in paths} == {"accuracy.csv", "accuracy.md", "accuracy.tex", "accuracy.units.csv",
                                       "plain.csv", "plain.md", "plain.tex"}
    csv = pd.read_csv(tmp_path / "accuracy.csv", index_col=0)
    assert {f"digits/mlp Acc_r_{s}" for s in ("mean", "std", "ci_low", "ci_high", "n")} <= set(csv.columns)
    assert csv.loc["ft", "digits/mlp Acc_r_std"] == np.std([91.0, 95.0], ddof=1)      # not rounded
    assert "93.00 ± 2.83 [" in (tmp_path / "accuracy.md").read_text()
    assert "(n=4)" in (tmp_path / "accuracy.md").read_text()
    rows = pd.read_csv(tmp_path / "accuracy.units.csv", dtype={"seed": str, "forget_classes": str})
    acc_r = rows[rows["metric"] == "Acc_r"]
    assert len(rows) == 12 and len(acc_r) == 4                       # 4 units × 3 metrics
    assert sorted(zip(acc_r["forget_classes"], acc_r["seed"], acc_r["value"])) == \
        sorted((f, str(s), v) for (f, s), v in FT.items())
    assert set(acc_r["label"]) == {"ft"} and set(acc_r["dataset"]) == {"digits"}


def test_tables_with_a_bad_spread_is_an_error_that_writes_nothing(tmp_path, capsys):
    out = tmp_path / "tables"
    code = cli.main(["tables", "anything", "--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--out", str(out),
                     "--spread", "forget_sets"])
    assert code == 2
    error = capsys.readouterr().err
    assert "--spread" in error and "seeds" in error and "forget_classes" in error
    assert not out.exists()
