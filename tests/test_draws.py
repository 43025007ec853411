"""The TRW-2R-by-draw table (analysis/draws.py) and its report item (grid/reports/draws.py), on a hand-built frame."""
import numpy as np
import pandas as pd
import pytest

from analysis import draws, statistics
from grid.reports import draws as draws_report

UNCERTAINTY = statistics.Uncertainty(spread="units", resamples=200)


def frame():
    """8 TRW-2R runs (4 seeds x 2 forget sets) + 1 FT run: 3 BatchNorm-only draws, 1 mixed, 3 weights-only
    and one old run whose layer names cannot be read (small_cnn's numbers)."""
    kinds = ["batchnorm_only", "batchnorm_only", "batchnorm_only", "mixed", "weights_only", "weights_only",
             "weights_only", None]
    chosen = ["bn1,layer1.0.bn2", "bn1,fc", "layer1.0.bn1,layer2.0.downsample.1", "conv1,bn1",
              "conv1,fc", "layer2.0.downsample.0,fc", "layer3.1.conv2,fc", "0,7"]
    rows = []
    for i, (kind, names) in enumerate(zip(kinds, chosen)):
        rows.append({"stage": "unlearn", "method": "trw_2r", "dataset": "cifar10", "arch": "resnet18",
                     "seed": str(i % 4), "forget_classes": "3" if i < 4 else "5", "unlearn_seed": "0",
                     "layers_kind": kind, "layers_chosen": names,
                     "acc_r_test": 90.0 + i, "acc_f_test": 10.0 * i, "mia_svm": 50.0 + i, "mia_nn_gap": float(i),
                     "mia_svm_predictions": statistics.pack_bits([1, 0, 1, 1]) if i == 0 else np.nan})
    rows.append({"stage": "unlearn", "method": "ft", "dataset": "cifar10", "arch": "resnet18", "seed": "0",
                 "forget_classes": "3", "unlearn_seed": "0", "acc_r_test": 1.0})
    return pd.DataFrame(rows)


def test_kind_from_names():
    assert draws.kind_from_names("bn1,layer1.0.bn2") == "batchnorm_only"
    assert draws.kind_from_names("layer2.0.downsample.1,bn1") == "batchnorm_only"
    assert draws.kind_from_names("conv1,layer1.0.bn1") == "mixed"
    assert draws.kind_from_names("layer2.0.downsample.0,fc") == "weights_only"
    assert draws.kind_from_names("0,7") == "unknown"          # small_cnn: numbered modules
    assert draws.kind_from_names(np.nan) == "unknown"


def test_table_splits_runs_by_draw_kind():
    table = draws.trw_2r_draws_table(frame(), UNCERTAINTY)
    kinds = list(table.index.get_level_values("Draw"))
    assert kinds == ["batchnorm_only", "mixed", "weights_only", "unknown"]
    bn = table.xs("batchnorm_only", level="Draw").iloc[0]
    assert bn["Acc_r n"] == 3 and bn["Acc_r mean"] == pytest.approx(91.0)           # runs 0, 1, 2
    assert bn["Acc_r std"] == pytest.approx(1.0)                                     # units' sample std
    assert bn["Acc_r ci_low"] <= 91.0 <= bn["Acc_r ci_high"]
    assert bn["MIA-NN gap mean"] == pytest.approx(1.0)
    assert bn[f"{draws.SHARE} mean"] == pytest.approx(100 * 3 / 8) and bn[f"{draws.SHARE} n"] == 8
    mixed = table.xs("mixed", level="Draw").iloc[0]
    assert mixed["Acc_f n"] == 1 and np.isnan(mixed["Acc_f ci_low"])                  # one unit: no interval
    assert table[f"{draws.SHARE} mean"].sum() == pytest.approx(100.0)
    assert "ft" not in set(table.index.get_level_values("Method"))


def test_table_is_seeded():
    a = draws.trw_2r_draws_table(frame(), UNCERTAINTY)
    b = draws.trw_2r_draws_table(frame(), UNCERTAINTY)
    pd.testing.assert_frame_equal(a, b)


def test_attack_bits_widen_the_mia_interval():
    """A run's stored per-sample SVM predictions are resampled too: the interval is not that of the values alone."""
    runs = frame()
    with_bits = draws.trw_2r_draws_table(runs, UNCERTAINTY).xs("batchnorm_only", level="Draw").iloc[0]
    without = draws.trw_2r_draws_table(runs.drop(columns="mia_svm_predictions"), UNCERTAINTY)
    without = without.xs("batchnorm_only", level="Draw").iloc[0]
    assert with_bits["MIA mean"] == without["MIA mean"]
    assert (with_bits["MIA ci_low"], with_bits["MIA ci_high"]) != (without["MIA ci_low"], without["MIA ci_high"])


def test_varying_params_get_their_own_rows():
    runs = frame()
    runs["params.layer_types"] = ["any"] * 4 + ["weights"] * 4 + [np.nan]
    table = draws.trw_2r_draws_table(runs, UNCERTAINTY)
    assert set(table.index.get_level_values("Method")) == {"trw_2r (layer_types=any)", "trw_2r (layer_types=weights)"}
    shares = table[f"{draws.SHARE} mean"].groupby(level="Method").sum()
    assert shares.to_numpy() == pytest.approx([100.0, 100.0])


def test_report_item():
    items = draws_report.items(frame(), UNCERTAINTY)
    [(name, title, table, show_index, units)] = items
    assert name == "trw_2r_draws" and show_index and "200 resamples" in title
    assert len(units) == 8 * 4 and set(units["metric"]) == set(draws.METRICS.values())
    assert units.loc[units["metric"] == "MIA", "samples"].iloc[0] == 4
    assert draws_report.items(frame().query("method == 'ft'"), UNCERTAINTY) == []
