"""The paper's published numbers (analysis/paper_values.csv) and the paper_comparison table that sets our
cells beside them (analysis/paper_comparison.py, grid/reports/paper_comparison.py)."""
import json
import math

import pandas as pd
import pytest

from analysis import noise_floor, paper_comparison, statistics, tables
from grid.reports import paper_comparison as paper_item
from grid.reports import report
from trainables import archs, datasets

NAN = float("nan")
UNCERTAINTY = statistics.Uncertainty(resamples=200, seed=3)
SEEDS = (0, 1, 2)
# Table 1, MNIST (forget 8, c* 3), typed by hand from the paper, not read from the file under test
TABLE_1_MNIST = {"Retrain": "73.9", "ft": "58.2", "rl": "45.6", "ga": "18.5", "salun": "6.1", "bu": "9.6", "l1": "4.7",
                 "svd": "48.3", "scrub": "7.7", "scar": "42.8", "l2ul": "31.1", "trw": "70.5"}
# our MIA-NN per seed on forget set 8: ft's straddles the paper's 58.2, rl's lies far above its 45.6
MIA_NN = {"original": (1.0, 2.0, 3.0), "ft": (57.2, 58.2, 59.2), "rl": (90.0, 91.0, 92.0),
          "bu_shrink": (9.0, 9.5, 10.0), "bu_expand": (20.0, 21.0, 22.0), "trw": (69.0, 70.0, 71.0)}
ACC_R = {"retrain": 99.6, "original": 99.7, "ft": 98.0, "rl": 99.3, "bu_shrink": 94.0, "bu_expand": 95.0, "trw": 99.5}
A_C_STAR = 74.5   # one reference per forget set (it pools the Retrain models), the same in every seed's runs


def run(method, seed, forget="8", dataset="mnist5k", arch="small_cnn", neighbour="3", **extra):
    """One run of a (dataset, arch, forget set, seed): Acc_r ACC_R[method] + seed + 10 · forget (a forget set
    of several classes: + 50), so averages over forget sets can be told apart."""
    shift = seed + (50.0 if "," in forget else 0.1 * int(forget))
    row = {"stage": "retrain" if method == "retrain" else "unlearn", "method": method, "dataset": dataset,
           "arch": arch, "forget_classes": forget, "seed": seed, "unlearn_seed": NAN if method == "retrain" else 0,
           "acc_r_test": ACC_R[method] + shift, "acc_f_test": 0.0 if method != "original" else 99.0,
           "mia_svm": 100.0 if method == "retrain" else 90.0, "run_id": f"{method}-{forget}-{seed}",
           "per_class_drop": json.dumps([[0, 1.0]])}
    if method != "retrain":
        row.update({"mia_nn": MIA_NN[method][seed] + (0.0 if forget == "8" else 5.0), "mia_nn_reference": A_C_STAR,
                    "neighbour_class": neighbour})
    return {**row, **extra}


def make_runs(forgets=("8",), dataset="mnist5k", arch="small_cnn", neighbours=("3", "3", "3"), own=("3", "3", "5")):
    rows = []
    for forget in forgets:
        for seed in SEEDS:
            rows.append(run("retrain", seed, forget, dataset, arch, own_neighbour_class=own[seed]))
            rows += [run(method, seed, forget, dataset, arch, neighbours[seed]) for method in MIA_NN]
    return pd.DataFrame(rows)


def rows_of(table, table_name, method, metric=None):
    chosen = table[(table["Table"] == table_name) & (table["Method"] == method)]
    return chosen if metric is None else chosen[chosen["Metric"] == metric]


# -- the data file ---------------------------------------------------------------------------------------

def test_the_data_file_holds_every_cell_of_the_four_tables():
    paper = paper_comparison.load_paper_values()
    assert list(paper.columns) == list(paper_comparison.VALUE_COLUMNS)
    # Table 1: 3 datasets x 12 columns; Table 2: 14 methods x 2 archs x 3 metrics; Table 4: two datasets of
    # Table 2's size; Table 5: 7 methods x 3 metrics
    assert paper["table"].value_counts().to_dict() == {"Table 1": 36, "Table 2": 84, "Table 4": 168, "Table 5": 21}
    assert not paper.duplicated(["table", "dataset", "arch", "forget", "method", "metric"]).any()
    assert set(paper["dataset"]) <= set(datasets.DATASETS) and set(paper["arch"]) <= set(archs.ARCHS)
    assert set(paper["metric"]) == {"acc_r_test", "acc_f_test", "mia_svm", "mia_nn"}
    assert set(paper["method"]) == {"Original", "Retrain", "ft", "rl", "ga", "salun", "bu", "l1", "svd", "scrub",
                                    "scar", "l2ul", "trw", "trw_2r"}
    for value, spread in zip(paper["value"], paper["std"]):
        assert 0 <= float(value) <= 100 and (spread == "" or float(spread) >= 0)
    sections = dict(zip(paper["table"], paper["section"]))
    assert sections["Table 1"].startswith("3.3 ") and sections["Table 2"].startswith("5.1 ")
    assert sections["Table 4"].startswith("B.3 ") and sections["Table 5"].startswith("B.4 ")


def test_table_1_rows_name_the_paper_forget_classes_and_neighbours_by_our_class_indices():
    paper = paper_comparison.load_paper_values()
    first = paper[paper["table"] == "Table 1"].drop_duplicates("dataset").set_index("dataset")
    names = {d: datasets.DATASETS[d].class_names for d in ("mnist", "cifar10", "cifar100")}
    assert [(names[d][int(first.loc[d, "forget"])], names[d][int(first.loc[d, "neighbour"])])
            for d in ("mnist", "cifar10", "cifar100")] == [("8", "3"), ("automobile", "truck"), ("beaver", "shrew")]
    assert (paper.loc[paper["table"] != "Table 1", "forget"] == "all").all()
    assert (paper.loc[paper["table"] != "Table 1", "neighbour"] == "").all()


def test_the_data_file_against_values_typed_from_the_paper():
    paper = paper_comparison.load_paper_values()
    mnist = paper[(paper["table"] == "Table 1") & (paper["dataset"] == "mnist")]
    assert dict(zip(mnist["method"], mnist["value"])) == TABLE_1_MNIST
    assert set(mnist["metric"]) == {"mia_nn"} and (mnist["std"] == "").all()

    def cell(table, dataset, arch, method, metric):
        found = paper[(paper["table"] == table) & (paper["dataset"] == dataset) & (paper["arch"] == arch)
                      & (paper["method"] == method) & (paper["metric"] == metric)]
        assert len(found) == 1
        return found["value"].iloc[0], found["std"].iloc[0]
    assert cell("Table 2", "cifar10", "resnet18", "trw_2r", "acc_f_test") == ("0.32", "0.32")
    assert cell("Table 2", "cifar10", "vgg19", "Original", "mia_svm") == ("0", "")     # printed without ±
    assert cell("Table 2", "cifar10", "resnet18", "Original", "acc_f_test") == ("94.42", "5.45")
    assert cell("Table 4", "cifar100", "vgg19", "scar", "acc_f_test") == ("1.38", "1.04")
    assert cell("Table 4", "mnist", "resnet18", "ga", "acc_f_test") == ("14.94", "0.03")
    assert cell("Table 4", "cifar100", "resnet18", "trw_2r", "mia_svm") == ("98.87", "1.15")
    assert cell("Table 5", "tinyimagenet", "resnet18_imagenet", "rl", "acc_r_test") == ("41.58", "")
    assert cell("Table 5", "tinyimagenet", "resnet18_imagenet", "trw_2r", "mia_svm") == ("100", "")


def test_a_data_file_without_a_column_is_refused_naming_it(tmp_path):
    path = tmp_path / "values.csv"
    paper_comparison.load_paper_values().drop(columns=["setting"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="setting"):
        paper_comparison.load_paper_values(path)


# -- Table 1 ---------------------------------------------------------------------------------------------

def test_table_1_rows_set_the_paper_value_beside_our_mia_nn_cell():
    runs = make_runs()
    table = paper_comparison.comparison_table(runs, uncertainty=UNCERTAINTY)
    ours = tables.mia_nn_table(runs, None, None, UNCERTAINTY)
    ours = ours[ours["Forget"] == "8"].set_index("Method")
    expected = {"Retrain": "Retrain", "ft": "ft", "rl": "rl", "bu_shrink": "bu", "bu_expand": "bu", "trw": "trw"}
    for label, paper_method in expected.items():
        metric = paper_comparison.REFERENCE_TITLE if label == "Retrain" else "MIA-NN"
        found = rows_of(table, "Table 1", label, metric)
        assert len(found) == 1, label
        found = found.iloc[0]
        assert found["Paper"] == TABLE_1_MNIST[paper_method] and found["Paper ±"] == ""
        for stat in tables.STATS:   # the same cell as our mia_nn table
            assert found[f"Ours {stat}"] == pytest.approx(ours.loc[label, f"MIA-NN {stat}"], nan_ok=True)
        assert found["Difference"] == pytest.approx(ours.loc[label, "MIA-NN mean"] - float(TABLE_1_MNIST[paper_method]))
        assert found["Forget"] == "8" and found["Dataset"] == "mnist5k / MNIST"
        assert found["Arch"] == "small_cnn / ResNet-18"
    assert rows_of(table, "Table 1", "Retrain", paper_comparison.REFERENCE_TITLE)["Ours mean"].iloc[0] == A_C_STAR
    assert rows_of(table, "Table 1", "Original").empty          # Table 1 has no Original column


def test_the_paper_a_c_star_is_also_set_beside_our_leave_one_out_a_c_star():
    runs = make_runs()
    assert rows_of(paper_comparison.comparison_table(runs, uncertainty=UNCERTAINTY), "Table 1",
                   noise_floor.HELD_OUT_LABEL).empty      # without every Retrain model's A_c: no held-out row
    # three Retrain models' A_c on classes 1, 2, 3: each one's A_c at the c* of the other two is 50, 40, 45
    scores = json.dumps({"seeds": [0, 1, 2], "classes": [1, 2, 3], "scores": [[60, 50, 10], [40, 55, 10], [58, 45, 10]]})
    runs[noise_floor.TAG] = runs["stage"].map(lambda stage: scores if stage == "unlearn" else None)
    table = paper_comparison.comparison_table(runs, uncertainty=UNCERTAINTY)
    held_out = rows_of(table, "Table 1", noise_floor.HELD_OUT_LABEL, paper_comparison.HELD_OUT_TITLE)
    assert len(held_out) == 1
    assert held_out["Paper"].iloc[0] == TABLE_1_MNIST["Retrain"]
    assert held_out["Ours mean"].iloc[0] == pytest.approx(45.0) and held_out["Ours n"].iloc[0] == 3
    assert held_out["Difference"].iloc[0] == pytest.approx(45.0 - 73.9)
    assert len(rows_of(table, "Table 1", "Retrain", paper_comparison.REFERENCE_TITLE)) == 1   # still there


def test_paper_inside_ci_yes_inside_our_interval_no_outside_it():
    table = paper_comparison.comparison_table(make_runs(), uncertainty=UNCERTAINTY)
    ft = rows_of(table, "Table 1", "ft", "MIA-NN").iloc[0]
    rl = rows_of(table, "Table 1", "rl", "MIA-NN").iloc[0]
    assert ft["Ours ci_low"] <= 58.2 <= ft["Ours ci_high"] and ft["Paper inside CI"] == "yes"
    assert rl["Ours ci_low"] > 45.6 and rl["Paper inside CI"] == "no"
    assert rl["Difference"] == pytest.approx(91.0 - 45.6)
    # our A_c* is one value per forget set: an interval of no width, which 73.9 is outside of
    assert rows_of(table, "Table 1", "Retrain", paper_comparison.REFERENCE_TITLE)["Paper inside CI"].iloc[0] == "no"
    numeric = table[table["Metric"] != paper_comparison.NEIGHBOUR_TITLE]
    for _, row in numeric.iterrows():
        inside = row["Ours ci_low"] <= float(row["Paper"]) <= row["Ours ci_high"]
        assert row["Paper inside CI"] == ("yes" if inside else "no")


def test_paper_inside_ci_is_na_without_our_interval():
    table = paper_comparison.comparison_table(make_runs()[lambda r: r["seed"] < 2], uncertainty=UNCERTAINTY)
    ft = rows_of(table, "Table 1", "ft", "MIA-NN").iloc[0]
    assert ft["Ours n"] == 2 and math.isnan(ft["Ours ci_low"]) and ft["Paper inside CI"] == "n/a"
    assert ft["Ours mean"] == pytest.approx(57.7)


def test_the_paper_bu_column_is_set_beside_both_of_our_bu_methods():
    table = paper_comparison.comparison_table(make_runs(forgets=("8", "3")), uncertainty=UNCERTAINTY)
    for table_name, metrics in (("Table 1", ["MIA-NN"]), ("Table 4", ["Acc_r", "Acc_f", "MIA"])):
        for method in ("bu_shrink", "bu_expand"):
            found = rows_of(table, table_name, method)
            assert list(found["Metric"]) == metrics
            assert (found["Note"] == "the paper's single BU column").all()
    bu = rows_of(table, "Table 1", "bu_shrink", "MIA-NN").iloc[0], rows_of(table, "Table 1", "bu_expand", "MIA-NN").iloc[0]
    assert bu[0]["Paper"] == bu[1]["Paper"] == "9.6"
    assert (bu[0]["Paper inside CI"], bu[1]["Paper inside CI"]) == ("yes", "no")


def test_the_neighbour_row_says_whether_our_retrain_c_star_is_the_paper_c_star():
    table = paper_comparison.comparison_table(make_runs(), uncertainty=UNCERTAINTY)
    found = rows_of(table, "Table 1", "Retrain", paper_comparison.NEIGHBOUR_TITLE)
    assert len(found) == 1
    found = found.iloc[0]
    assert found["Paper"] == "3" and found["Paper inside CI"] == "match: yes"
    assert "our c*: 3 in 3 of 3 seeds" in found["Note"]
    assert "own c*: that class in 2 of 3" in found["Note"]      # own_neighbour_class: 3, 3, 5
    assert math.isnan(found["Ours mean"]) and math.isnan(found["Difference"])
    # the c* row follows Retrain's A_c* row, as the paper's Table 1 puts c* beside Retrain
    assert list(table.loc[table["Table"] == "Table 1", "Metric"])[:2] == [paper_comparison.REFERENCE_TITLE, "c*"]

    other = paper_comparison.comparison_table(make_runs(neighbours=("5", "5", "3")), uncertainty=UNCERTAINTY)
    found = rows_of(other, "Table 1", "Retrain", paper_comparison.NEIGHBOUR_TITLE).iloc[0]
    assert found["Paper inside CI"] == "match: no" and "our c*: 5 in 2 of 3 seeds" in found["Note"]


def test_no_table_1_rows_where_ours_did_not_forget_the_paper_class():
    table = paper_comparison.comparison_table(make_runs(forgets=("3",)), uncertainty=UNCERTAINTY)
    assert not (table["Table"] == "Table 1").any()
    assert (table["Table"] == "Table 4").any()


# -- Tables 2, 4, 5 --------------------------------------------------------------------------------------

def test_table_4_cells_are_our_mean_over_the_single_class_forget_sets_we_ran():
    runs = make_runs(forgets=("8", "3", "1,2"))
    table = paper_comparison.comparison_table(runs, uncertainty=UNCERTAINTY)
    ft = rows_of(table, "Table 4", "ft", "Acc_r").iloc[0]
    single = runs[(runs["method"] == "ft") & ~runs["forget_classes"].str.contains(",")]
    assert ft["Ours mean"] == pytest.approx(single["acc_r_test"].mean())      # the forget set 1,2 is left out
    assert ft["Ours n"] == 6
    assert ft["Paper"] == "98.16" and ft["Paper ±"] == "0.65"
    assert ft["Forget"] == "3, 8 (paper: 0–9)"
    assert "forget classes 3, 8; 3 seeds (0, 1, 2)" in ft["Our setting"]
    assert ft["Paper's setting"].startswith("ResNet-18, 60,000 training images; forget classes 0–9")
    ours = tables.accuracy_table(runs[~runs["forget_classes"].str.contains(",")], None, UNCERTAINTY)
    assert ft["Ours ci_low"] == pytest.approx(ours.loc["ft", "mnist5k/small_cnn Acc_r ci_low"])
    original = rows_of(table, "Table 4", "Original")
    assert list(original["Metric"]) == ["Acc_r", "Acc_f", "MIA"]
    assert list(original["Paper"]) == ["99.65", "99.91", "0.23"]
    assert not rows_of(table, "Table 4", "Retrain").empty


def test_the_caption_names_the_forget_classes_ours_covers_and_the_paper_averages():
    (name, title, table, show_index, units), = paper_item.items(make_runs(forgets=("8", "3")), UNCERTAINTY)
    assert name == "paper_comparison" and show_index is False and units is None
    assert "our forget classes 3, 8" in title and "classes 0–9" in title
    assert "Table 1's forget class 8: ours ran it" in title
    assert "3 seeds" in title and "200 resamples, seed 3" in title          # our interval, from the uncertainty
    assert "the paper's own spread" in title


def test_vgg19_compares_with_the_paper_vgg19_column_and_has_no_table_1_rows():
    table = paper_comparison.comparison_table(make_runs(dataset="cifar100", arch="vgg19", forgets=("4",)),
                                              uncertainty=UNCERTAINTY)
    assert set(table["Table"]) == {"Table 4"}
    scar = rows_of(table, "Table 4", "Retrain", "Acc_r").iloc[0]
    assert scar["Paper"] == "69.54" and scar["Arch"] == "vgg19 / VGG19" and scar["Dataset"] == "cifar100 / CIFAR-100"
    resnet = paper_comparison.comparison_table(make_runs(dataset="cifar100", arch="resnet18", forgets=("4",),
                                                         neighbours=("74",) * 3, own=("74",) * 3),
                                               uncertainty=UNCERTAINTY,
                                               class_names={"cifar100": datasets.CIFAR100_CLASSES})
    assert rows_of(resnet, "Table 4", "Retrain", "Acc_r").iloc[0]["Paper"] == "78.30"
    neighbour = rows_of(resnet, "Table 1", "Retrain", "c*").iloc[0]
    assert neighbour["Paper inside CI"] == "match: yes" and neighbour["Forget"] == "beaver (4)"
    assert neighbour["Paper"] == "74" and "our c*: shrew (74) in 3 of 3 seeds" in neighbour["Note"]


def test_a_dataset_without_paper_values_gives_no_table():
    runs = make_runs(dataset="digits")
    assert paper_item.items(runs, UNCERTAINTY) == []
    assert paper_comparison.comparison_table(runs, uncertainty=UNCERTAINTY).empty
    assert paper_item.items(make_runs(forgets=("1,2",)), UNCERTAINTY) == []   # only multi-class forget sets


# -- the report ------------------------------------------------------------------------------------------

def test_unlearn_grid_tables_writes_the_comparison_beside_ours(tmp_path):
    runs = make_runs(forgets=("8", "3"))
    items = report.build_tables(runs, pd.DataFrame(), uncertainty=UNCERTAINTY)
    names = [item[0] for item in items]
    assert "paper_comparison" in names and "accuracy" in names
    report.write_tables(items, tmp_path)
    written = pd.read_csv(tmp_path / "paper_comparison.csv", dtype={"Paper": str})
    assert {"Ours_mean", "Ours_ci_low", "Ours_ci_high", "Ours_n", "Paper", "Paper ±", "Paper inside CI"} <= set(written)
    assert "58.2" in set(written.loc[written["Method"] == "ft", "Paper"])
    # the same cells as `accuracy` and `mia_nn` (every forget set here is a single class)
    ours = {name: table for name, _, table, *_ in items}
    found = written[(written["Table"] == "Table 4") & (written["Method"] == "ft") & (written["Metric"] == "Acc_r")]
    for stat in ("mean", "ci_low", "ci_high", "n"):
        assert found[f"Ours_{stat}"].iloc[0] == pytest.approx(ours["accuracy"].loc["ft", f"mnist5k/small_cnn Acc_r {stat}"])
    mia_nn = ours["mia_nn"].set_index(["Forget", "Method"])
    found = written[(written["Table"] == "Table 1") & (written["Method"] == "trw")]
    for stat in ("mean", "ci_low", "ci_high", "n"):
        assert found[f"Ours_{stat}"].iloc[0] == pytest.approx(mia_nn.loc[("8", "trw"), f"MIA-NN {stat}"])
    markdown = (tmp_path / "paper_comparison.md").read_text()
    assert "match: yes" in markdown and "| Paper inside CI |" in markdown
    assert "paper_comparison" not in [item[0] for item in report.build_tables(make_runs(dataset="digits"),
                                                                              pd.DataFrame(), uncertainty=UNCERTAINTY)]
