"""The Retrain noise floor (analysis/noise_floor.py) on hand-built Retrain score matrices: leave-one-out c*
and A_c* per Retrain model, the unbiased A_c* below the one the MIA-NN table uses, c* stability, the
held-out rows for the MIA-NN table, and the empty table for runs without the tag."""
import json

import numpy as np
import pandas as pd
import pytest

from analysis import noise_floor, statistics
from grid.reports import statistics_tables

# A_c of three Retrain models (training seeds 0, 1, 2) for the retained classes 1, 2, 3:
#              c=1   c=2   c=3
#   model 0     60    50    10     own c* = 1
#   model 1     40    55    10     own c* = 2
#   model 2     58    45    10     own c* = 1
#   mean      52.67   50    10     c* = 1, A_c* = 52.67 (as used)
# leave-one-out:  others' means        c*_{-j}  A^{-j}  held-out score A^j_{c*_{-j}}  gap
#   j = 0        (49, 50, 10)            2       50       50                         0
#   j = 1        (59, 47.5, 10)          1       59       40                         19
#   j = 2        (50, 52.5, 10)          2       52.5     45                         7.5
# unbiased A_c* = (50 + 40 + 45) / 3 = 45 < 52.67; c* stability 2/3
SCORES = [[60, 50, 10], [40, 55, 10], [58, 45, 10]]
USED_REFERENCE = round(158 / 3, 3)


def tag(scores=SCORES, seeds=(0, 1, 2), classes=(1, 2, 3)):
    return json.dumps({"seeds": list(seeds), "classes": list(classes), "scores": scores})


def runs_frame(tags_by_forget=None, seeds=(0, 1, 2)):
    """Unlearn runs of ft (one per seed) per forget set, each carrying its forget set's tag, plus Retrain runs."""
    tags_by_forget = tags_by_forget if tags_by_forget is not None else {"0": tag()}
    rows = []
    for forget, value in tags_by_forget.items():
        for seed in seeds:
            rows.append({"stage": "retrain", "method": "retrain", "dataset": "digits", "arch": "small_cnn",
                         "forget_classes": forget, "seed": str(seed), "unlearn_seed": None})
            rows.append({"stage": "unlearn", "method": "ft", "dataset": "digits", "arch": "small_cnn",
                         "forget_classes": forget, "seed": str(seed), "unlearn_seed": "0",
                         "mia_nn_reference": USED_REFERENCE, "neighbour_class": 1, noise_floor.TAG: value})
    return pd.DataFrame(rows)


def test_leave_one_out_reference_per_retrain_model():
    units = noise_floor.held_out_units(runs_frame())
    assert list(units["seed"]) == ["0", "1", "2"]
    assert list(units["loo_neighbour_class"]) == [2, 1, 2]
    assert list(units["loo_reference"]) == pytest.approx([50.0, 59.0, 52.5])
    assert list(units["held_out_mia_nn"]) == pytest.approx([50.0, 40.0, 45.0])
    assert list(units["held_out_gap"]) == pytest.approx([0.0, 19.0, 7.5])
    assert list(units["own_neighbour_class"]) == [1, 2, 1]
    assert list(units["own_score"]) == pytest.approx([60.0, 55.0, 58.0])


def test_unbiased_reference_is_below_the_one_used_and_c_star_stability_counts():
    table = noise_floor.noise_floor_table(runs_frame(), statistics.Uncertainty(resamples=200))
    row = table.iloc[0]
    assert (row["Dataset"], row["Forget"], row["c*"]) == ("digits/small_cnn", "0", "1")
    assert row["A_c* (as used)"] == pytest.approx(52.667)
    assert row["A_c* (leave-one-out) mean"] == pytest.approx(45.0)
    assert row["A_c* (leave-one-out) mean"] < row["A_c* (as used)"]   # the argmax's upward bias
    assert row["A_c* (leave-one-out) std"] == pytest.approx(5.0)
    assert row["A_c* (leave-one-out) n"] == 3
    assert row["c* stability"] == "2/3"
    assert row["Retrain (held-out) gap mean"] == pytest.approx(26.5 / 3)
    assert row["Retrain (held-out) gap n"] == 3
    assert 0.0 <= row["Retrain (held-out) gap ci_low"] <= row["Retrain (held-out) gap ci_high"] <= 19.0


def test_summary_row_pools_forget_sets():
    # forget set 4: the same models with classes 0, 2, 3 and model 1 preferring class 0 too: c* stable 3/3
    other = tag([[60, 50, 10], [56, 55, 10], [58, 45, 10]], classes=(0, 2, 3))
    runs = runs_frame({"0": tag(), "4": other})
    runs.loc[runs["forget_classes"] == "4", "neighbour_class"] = 0
    table = noise_floor.noise_floor_table(runs, statistics.Uncertainty(resamples=200))
    assert list(table["Forget"]) == ["0", "4", "all"]
    assert list(table["c* stability"]) == ["2/3", "3/3", "5/6"]
    assert table.iloc[2]["Retrain (held-out) gap n"] == 6
    units = noise_floor.held_out_units(runs)
    assert table.iloc[2]["Retrain (held-out) gap mean"] == pytest.approx(units["held_out_gap"].mean())


def test_ties_go_to_the_lowest_class_also_through_float_rounding():
    # classes 1, 2, 3; for model 2 the others' means are 0.3 / 2 and (0.1 + 0.2) / 2, equal but for the
    # float rounding (0.15 vs 0.15000000000000002); model 2's own scores tie classes 1 and 2.
    # The tag lists the classes in descending order: the lowest class still wins.
    scores = np.array([[0.3, 0.1, 0.0], [0.0, 0.2, 0.0], [0.5, 0.5, 0.0]])
    units = noise_floor.held_out_units(runs_frame({"0": tag(scores[:, ::-1].tolist(), classes=(3, 2, 1))}))
    assert units.loc[2, "loo_neighbour_class"] == 1
    assert units.loc[2, "own_neighbour_class"] == 1


def test_held_out_rows_for_the_mia_nn_table():
    rows = noise_floor.held_out_rows(runs_frame())
    assert list(rows.columns) == ["dataset", "arch", "forget_classes", "seed", "mia_nn", "mia_nn_gap"]
    assert list(rows["mia_nn"]) == pytest.approx([50.0, 40.0, 45.0])
    assert list(rows["mia_nn_gap"]) == pytest.approx([0.0, 19.0, 7.5])


def test_runs_without_the_tag_or_with_one_retrain_model_give_an_empty_table():
    untagged = runs_frame().drop(columns=noise_floor.TAG)
    assert noise_floor.noise_floor_table(untagged).empty
    assert noise_floor.held_out_rows(untagged).empty
    assert noise_floor.noise_floor_table(runs_frame({"0": None})).empty          # old runs: the column, no value
    assert noise_floor.noise_floor_table(runs_frame({"0": tag([[60, 50, 10]], seeds=(0,))})).empty
    assert statistics_tables.items(untagged.iloc[:2]) == []                      # one seed, no tag: no item


def test_noise_floor_item_and_its_units():
    uncertainty = statistics.Uncertainty(resamples=300, seed=5)
    found = {name: rest for name, *rest in statistics_tables.items(runs_frame(), uncertainty)}
    title, table, show_index, units = found["noise_floor"]
    assert "300 resamples" in title and "seed 5" in title and "leave-one-out" in title
    assert show_index is False and len(table) == 2
    assert set(units["metric"]) == {"held_out_mia_nn", "held_out_gap"} and len(units) == 6
    assert set(units["label"]) == {"Retrain (held-out)"}
