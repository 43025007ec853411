"""Table builders of the paper's evaluation: λ ablation, multi-class, running time, U-LiRA, LaTeX."""
import numpy as np
import pandas as pd
import pytest

from analysis import tables


def run(stage, method, forget="8", seed=0, **values):
    return {"stage": stage, "method": method, "dataset": "digits", "arch": "small_cnn", "forget_classes": forget,
            "seed": str(seed), **values}


def test_lambda_table_has_retrain_and_one_row_per_lambda_in_order():
    rows = [run("retrain", "retrain", seed=s, acc_r_test=99.0, acc_f_test=0.0, mia_svm=100.0) for s in (0, 1)]
    for lam, mia in ((20.0, 90.0), (0.0, 40.0), (10.0, 70.0)):
        rows += [run("unlearn", "trw", seed=s, acc_r_test=98.0 + s, acc_f_test=0.0, mia_svm=100.0,
                     mia_nn=mia + s, mia_nn_reference=75.0, mia_nn_gap=abs(mia + s - 75.0),
                     **{"params.lam": str(lam)}) for s in (0, 1)]
    table = tables.lambda_table(pd.DataFrame(rows))
    assert list(table.index) == ["Retrain", "λ=0", "λ=10", "λ=20"]
    assert table.loc["λ=10", "MIA-NN mean"] == pytest.approx(70.5)
    assert table.loc["λ=10", "Acc_r std"] == pytest.approx(np.std([98.0, 99.0], ddof=1))   # sample std over seeds
    assert table.loc["Retrain", "MIA-NN mean"] == pytest.approx(75.0)   # the reference A_c*
    assert table.loc["λ=0", "MIA-NN gap mean"] == pytest.approx(34.5)    # |40 - 75|, |41 - 75|
    assert table.loc["λ=20", "MIA-NN gap std"] == pytest.approx(np.std([15.0, 14.0], ddof=1))
    assert table.loc["Retrain", "MIA-NN std"] == 0.0     # A_c* is the same for every seed


def test_multiclass_table_groups_by_number_of_forgotten_classes_with_the_original_beside():
    rows = []
    for forget, original_acc_r, trw_acc_r in (("8", 99.0, 98.0), ("3,8", 98.5, 97.0), ("0,1,3,5,8", 98.0, 95.0)):
        rows.append(run("unlearn", "original", forget, acc_r_test=original_acc_r, acc_f_test=99.0, mia_svm=0.0))
        rows.append(run("unlearn", "trw", forget, acc_r_test=trw_acc_r, acc_f_test=0.0, mia_svm=100.0))
    table = tables.multiclass_table(pd.DataFrame(rows))
    assert list(table.index) == [(1, "trw"), (2, "trw"), (5, "trw")]
    assert table.loc[(5, "trw"), "Acc_r mean"] == 95.0
    assert table.loc[(5, "trw"), "Acc_r (Original) mean"] == 98.0
    assert table.loc[(2, "trw"), "MIA (Original) mean"] == 0.0


def test_running_time_table_means_and_devices():
    rows = [run("unlearn", "trw", seed=s, wall_seconds=w, compute_seconds=w - 1, device="cpu") for s, w in ((0, 3.0), (1, 5.0))]
    rows.append(run("retrain", "retrain", wall_seconds=10.0, compute_seconds=9.0, device="NVIDIA H100"))
    table = tables.running_time_table(pd.DataFrame(rows), ["trw"])
    assert list(table.index) == ["Retrain", "trw"]
    assert table.loc["trw", "Wall s mean"] == 4.0
    assert table.loc["trw", "Wall s std"] == pytest.approx(np.sqrt(2))   # sample std over the trials (3, 5)
    assert np.isnan(table.loc["Retrain", "Wall s std"])                   # one trial
    assert table.loc["Retrain", "Device"] == "NVIDIA H100"


def test_latex_is_a_booktabs_tabular_with_escaped_text():
    table = pd.DataFrame({"Acc_r": ["99.00 ± 0.10"], "MIA-NN": [np.nan]}, index=pd.Index(["trw_2r"], name="Method"))
    latex = tables.to_latex(table)
    assert latex.startswith("\\begin{tabular}{lll}") and "\\toprule" in latex and latex.rstrip().endswith("\\end{tabular}")
    assert "trw\\_2r & 99.00 $\\pm$ 0.10 & -- \\\\" in latex


def test_multiclass_table_has_a_retrain_row_per_count_and_the_average_gap_to_it():
    rows = []
    for forget, trw_acc_r in (("8", 98.0), ("3,8", 96.0)):
        rows.append(run("retrain", "retrain", forget, acc_r_test=99.0, acc_f_test=0.0, mia_svm=100.0))
        rows.append(run("unlearn", "original", forget, acc_r_test=99.0, acc_f_test=99.0, mia_svm=0.0))
        rows.append(run("unlearn", "trw", forget, acc_r_test=trw_acc_r, acc_f_test=3.0, mia_svm=97.0))
    table = tables.multiclass_table(pd.DataFrame(rows), ["trw"])
    assert list(table.index) == [(1, "Retrain"), (1, "trw"), (2, "Retrain"), (2, "trw")]
    assert table.loc[(2, "trw"), "Avg gap"] == pytest.approx((3 + 3 + 3) / 3)
    assert table.loc[(1, "trw"), "Avg gap"] == pytest.approx((1 + 3 + 3) / 3)
    assert np.isnan(table.loc[(1, "Retrain"), "Avg gap"])


def test_running_time_table_counts_the_ray_nodes_each_method_ran_on():
    rows = [run("unlearn", "trw", seed=s, wall_seconds=1.0, compute_seconds=1.0, ray_node_id=node)
            for s, node in ((0, "a"), (1, "b"), (2, "a"))]
    rows.append(run("retrain", "retrain", wall_seconds=2.0, compute_seconds=2.0, ray_node_id=None))
    table = tables.running_time_table(pd.DataFrame(rows), ["trw"])
    assert table.loc["trw", "Nodes"] == 2
    assert table.loc["Retrain", "Nodes"] == 0     # runs logged before the tag existed count no node
