"""TRW-2R by layer draw: its runs split by what the draw trained (issue 28, part 7).

TRW-2R fine-tunes `layers` randomly drawn parameter-owning modules (trainables/methods/trw_2r.py). With
`layer_types: any` (the default, the paper's "randomly chosen layers") about a quarter of ResNet-18's
2-layer draws are two BatchNorms, which train only affine scales and shifts; averaging them with the
draws that train convolutions hides two different methods in one row. This table shows each kind
apart: batchnorm_only (every drawn layer a BatchNorm), mixed, weights_only (every one a Conv/Linear).

A run's kind is its `layers_kind` param (logged since layer_types exists); for runs from before, it is
read from the names in `layers_chosen` where they say it (ResNet-style names: bn1, conv2, fc,
downsample.0 / downsample.1), else 'unknown' (small_cnn's and VGG's layers are numbered: a name alone
does not say whether '1' is a conv or a BatchNorm).

Per kind: Acc_r, Acc_f, MIA and the MIA-NN gap as mean, std, 95% bootstrap interval and n over the
runs (units: (seed, forget set, unlearning seed)); MIA also resamples its test samples where the run
stored its per-sample predictions (`mia_svm_predictions`); and the share of draws of that kind (%),
with its interval (a bootstrap of the 0/1 'this draw is of this kind' over the draws).
"""
import math
import re

import numpy as np
import pandas as pd

from analysis import statistics
from analysis.tables import SPREAD_COLUMN, method_labels

KINDS = ("batchnorm_only", "mixed", "weights_only", "unknown")
METRICS = {"acc_r_test": "Acc_r", "acc_f_test": "Acc_f", "mia_svm": "MIA", "mia_nn_gap": "MIA-NN gap"}
COUNTED = {"mia_svm": "mia_svm_predictions"}      # metric -> the tag of its per-sample bits (metric = 100·mean)
SHARE = "Share of draws (%)"
GROUP = ["dataset", "arch", "Method", "Draw"]

_BATCHNORM = re.compile(r"(^|\.)(bn\d*|downsample\.1)$")
_WEIGHT = re.compile(r"(^|\.)(conv\d*|fc|downsample\.0|linear|classifier|head)$")


def kind_from_names(layers_chosen):
    """A draw's kind from its comma-joined module names (runs without `layers_kind`), 'unknown' when a
    name does not say what the module is."""
    if not isinstance(layers_chosen, str) or not layers_chosen:
        return "unknown"
    kinds = set()
    for name in layers_chosen.split(","):
        if _BATCHNORM.search(name):
            kinds.add("batchnorm")
        elif _WEIGHT.search(name):
            kinds.add("weight")
        else:
            return "unknown"
    return {frozenset({"batchnorm"}): "batchnorm_only", frozenset({"weight"}): "weights_only"}.get(
        frozenset(kinds), "mixed")


def draw_kinds(runs):
    """The kind of each run's draw: its `layers_kind`, else read from `layers_chosen`."""
    logged = runs["layers_kind"] if "layers_kind" in runs else pd.Series(np.nan, index=runs.index)
    chosen = runs["layers_chosen"] if "layers_chosen" in runs else pd.Series(np.nan, index=runs.index)
    return pd.Series([k if isinstance(k, str) and k in KINDS else kind_from_names(c) for k, c in zip(logged, chosen)],
                     index=runs.index, dtype=object)


def _trw_2r(runs):
    """TRW-2R's runs with their Method label (trw_2r, plus its varying params) and Draw kind."""
    runs = runs[(runs["stage"] == "unlearn") & (runs["method"] == "trw_2r")].copy()
    runs["Method"] = method_labels(runs).to_numpy()   # the other tables' labels: trw_2r plus its varying params
    runs["Draw"] = draw_kinds(runs)
    return runs


def _spread_std(group, metric, spread):
    """Sample std of a metric as the uncertainty's spread says: over per-seed or per-forget-set means, or units."""
    values = pd.to_numeric(group[metric], errors="coerce")
    by = SPREAD_COLUMN.get(spread)
    if by is not None and by in group:
        values = values.groupby(group[by].astype(str)).mean()
    return statistics.sample_std(values.to_numpy())


def _counts(group, metric):
    """Per unit (labelled, samples) from its stored bits, (nan, nan) where a run has none; None when no run has any."""
    tag = COUNTED.get(metric)
    if tag is None or tag not in group:
        return None
    bits = [statistics.unpack_bits(text) for text in group[tag]]
    if all(b is None for b in bits):
        return None
    return [(float(b.sum()), float(len(b))) if b is not None else (math.nan, math.nan) for b in bits]


def trw_2r_draws_table(runs, uncertainty=statistics.Uncertainty()):
    """A row per (dataset, arch, TRW-2R label, draw kind) in KINDS order: Acc_r, Acc_f, MIA and MIA-NN
    gap (`<x> mean/std/ci_low/ci_high/n`) and the share of draws of that kind. Empty without TRW-2R runs."""
    runs = _trw_2r(runs)
    rows = []
    for (dataset, arch, label), block in runs.groupby(["dataset", "arch", "Method"], sort=True):
        for kind, group in sorted(block.groupby("Draw"), key=lambda item: KINDS.index(item[0])):
            row = {"dataset": dataset, "arch": arch, "Method": label, "Draw": kind}
            for metric, title in METRICS.items():
                if metric not in group:
                    continue
                values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=np.float64)
                seed = statistics.cell_seed(uncertainty.seed, "trw_2r_draws", dataset, arch, label, kind, title)
                interval = statistics.bootstrap_mean(values, _counts(group, metric), uncertainty.resamples, seed,
                                                     uncertainty.level)
                row.update(statistics.columns(title, interval, _spread_std(group, metric, uncertainty.spread)))
            indicator = 100.0 * (block["Draw"] == kind).to_numpy(dtype=np.float64)
            seed = statistics.cell_seed(uncertainty.seed, "trw_2r_draws", dataset, arch, label, kind, SHARE)
            share = statistics.bootstrap_mean(indicator, None, uncertainty.resamples, seed, uncertainty.level)
            row.update(statistics.columns(SHARE, share, math.nan))     # a share has no spread of its own
            rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(GROUP)


def trw_2r_draws_units(runs):
    """The table's per-unit values: one row per run and metric (dataset, arch, row label, seed,
    forget_classes, unlearn_seed, metric, value, samples; samples NaN without stored predictions)."""
    runs = _trw_2r(runs)
    rows = []
    for _, run in runs.iterrows():
        for metric, title in METRICS.items():
            if metric not in runs:
                continue
            bits = statistics.unpack_bits(run[COUNTED[metric]]) if COUNTED.get(metric) in runs else None
            rows.append({"dataset": run["dataset"], "arch": run["arch"], "row": f"{run['Method']}: {run['Draw']}",
                         "seed": run.get("seed"), "forget_classes": run.get("forget_classes"),
                         "unlearn_seed": run.get("unlearn_seed"), "metric": title,
                         "value": pd.to_numeric(run[metric], errors="coerce"),
                         "samples": len(bits) if bits is not None else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "arch", "row", "seed", "forget_classes", "unlearn_seed", "metric",
                                       "value", "samples"])
