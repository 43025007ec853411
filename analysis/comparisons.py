"""Paired comparisons: every method row against each baseline (TRW, Retrain), per dataset/arch.

Pairs. A method's experimental unit is one run: (training seed, forget set, unlearning seed).
- Against a method baseline (TRW): the baseline run of the same unit. When the baseline method has
  several rows (a λ sweep: 'trw (lam=0.0)', 'trw (lam=10.0)'), its row is the one labelled with the
  bare method name if there is one, else the first in the tables' row order (the lowest varying
  param); the table's Baseline column names the row used. The other rows of that method are
  compared with it like any method.
- Against Retrain: Retrain has no unlearning seed, so every unit pairs with the Retrain run of the same
  (training seed, forget set), whatever its unlearning seed.
- MIA-NN gap against Retrain: Retrain's own gap is 0 by definition (the reference is built from it),
  which would make the comparison a one-sample test of the gap. Instead the method's gap is paired with
  the `Retrain (held-out)` gap of the same (training seed, forget set): the Retrain model of that seed
  scored against the reference of the other Retrain models (analysis/noise_floor.py). A positive
  difference means the method is farther from the reference than an independent Retrain model is.
  Runs without the `retrain_model_scores` tag: those cells are left out (no pairs).

Per (method, baseline, metric) the table gives the mean of the paired differences (method − baseline,
points) with the sample std and a percentile bootstrap interval over the pairs (statistics.bootstrap_mean,
seeded per cell with statistics.cell_seed), the two-sided Wilcoxon signed-rank p-value of the
differences, that p Holm-adjusted over every test in the table, and n = pairs. Below
statistics.MIN_UNITS pairs the interval and both p-values are NaN ('n/a').
"""
import numpy as np
import pandas as pd

from analysis import noise_floor, statistics
from analysis.tables import _row_order, method_labels

METRICS = {"acc_r_test": "Acc_r", "acc_f_test": "Acc_f", "mia_svm": "MIA", "mia_nn_gap": "MIA-NN gap"}
RETRAIN = "retrain"
DIFFERENCE = "Difference"   # numeric columns 'Difference mean|std|ci_low|ci_high|n' (n = pairs)
COLUMNS = ["Dataset", "Method", "Baseline", "Metric", f"{DIFFERENCE} mean", f"{DIFFERENCE} std",
           f"{DIFFERENCE} ci_low", f"{DIFFERENCE} ci_high", f"{DIFFERENCE} n", "Wilcoxon p", "Holm p"]
UNIT_COLUMNS = ["dataset", "arch", "label", "baseline", "seed", "forget_classes", "unlearn_seed", "metric",
                "value", "samples"]


def _long_units(runs, labels):
    """One row per (run, metric) with a value: dataset, arch, method, label, seed, forget_classes,
    unlearn_seed (keys as text, '' where missing), metric, value; duplicate runs of a unit averaged."""
    metrics = [m for m in METRICS if m in runs]
    frame = pd.DataFrame({
        "dataset": runs["dataset"].astype(str), "arch": runs["arch"].astype(str), "method": runs["method"],
        "label": labels, "seed": noise_floor.key_text(runs["seed"]),
        "forget_classes": runs["forget_classes"].astype(str),
        "unlearn_seed": (noise_floor.key_text(runs["unlearn_seed"]) if "unlearn_seed" in runs else ""),
    })
    frame.loc[frame["method"] == RETRAIN, "unlearn_seed"] = ""   # Retrain has none (module docstring)
    for metric in metrics:
        frame[metric] = pd.to_numeric(runs[metric], errors="coerce")
    long = frame.melt(id_vars=["dataset", "arch", "method", "label", "seed", "forget_classes", "unlearn_seed"],
                      value_vars=metrics, var_name="metric", value_name="value").dropna(subset=["value"])
    keys = ["dataset", "arch", "method", "label", "seed", "forget_classes", "unlearn_seed", "metric"]
    return long.groupby(keys, sort=False, as_index=False)["value"].mean()


def _retrain_pairs(units, held_out):
    """Pairs with Retrain on (dataset, arch, seed, forget set): its runs for Acc_r, Acc_f, MIA; its
    held-out models for the MIA-NN gap."""
    retrain = units[(units["method"] == RETRAIN) & (units["metric"] != "mia_nn_gap")].assign(baseline="Retrain")
    held = held_out.assign(metric="mia_nn_gap", value=held_out["mia_nn_gap"], baseline=noise_floor.HELD_OUT_LABEL,
                           seed=noise_floor.key_text(held_out["seed"]),
                           forget_classes=held_out["forget_classes"].astype(str))
    keys = ["dataset", "arch", "seed", "forget_classes", "metric"]
    reference = pd.concat([retrain[[*keys, "baseline", "value"]], held[[*keys, "baseline", "value"]]])
    candidates = units[units["method"] != RETRAIN]
    return candidates.merge(reference.rename(columns={"value": "baseline_value"}), on=keys)


def _method_pairs(units, method, rank):
    """Pairs with `method`'s baseline row (module docstring) on the whole unit, per (dataset, arch)."""
    rows = units[units["method"] == method]
    if rows.empty:
        return units.iloc[:0].assign(baseline="", baseline_value=np.nan)
    chosen = (rows[["dataset", "arch", "label"]].drop_duplicates()
              .assign(bare=lambda f: f["label"] != method, rank=lambda f: f["label"].map(rank))
              .sort_values(["bare", "rank"], kind="stable")
              .drop_duplicates(["dataset", "arch"])[["dataset", "arch", "label"]])
    baseline = rows.merge(chosen, on=["dataset", "arch", "label"])
    keys = ["dataset", "arch", "seed", "forget_classes", "unlearn_seed", "metric"]
    reference = baseline[[*keys, "label", "value"]].rename(columns={"label": "baseline", "value": "baseline_value"})
    candidates = units[units["method"] != RETRAIN].merge(chosen.rename(columns={"label": "baseline"}),
                                                         on=["dataset", "arch"], how="left")
    candidates = candidates[candidates["label"] != candidates["baseline"]].drop(columns="baseline")
    return candidates.merge(reference, on=keys)


def paired_units(runs, baselines=("trw", "retrain"), method_order=None):
    """Every pair behind the comparisons table: dataset, arch, label (the method's row), baseline (the
    baseline's row label), seed, forget_classes, unlearn_seed, metric, value (method − baseline),
    samples (NaN: the differences are per unit). Baselines in `baselines`' order."""
    runs = runs.reset_index(drop=True)
    if runs.empty or not baselines:
        return pd.DataFrame(columns=UNIT_COLUMNS)
    labels = method_labels(runs)
    rank = {label: position for position, label in enumerate(_row_order(runs, labels, method_order))}
    units = _long_units(runs, labels)
    pairs = [(_retrain_pairs(units, noise_floor.held_out_rows(runs)) if baseline == RETRAIN
               else _method_pairs(units, baseline, rank)).assign(_baseline_rank=position)
             for position, baseline in enumerate(baselines)]
    pairs = pd.concat(pairs, ignore_index=True)
    pairs["value"] = pairs["value"] - pairs["baseline_value"]
    pairs["samples"] = np.nan
    # rows: datasets as the runs list them, then baselines as asked, methods in row order, metrics as METRICS
    cells = list(dict.fromkeys(zip(runs["dataset"].astype(str), runs["arch"].astype(str))))
    pairs["_cell_rank"] = [cells.index(cell) for cell in zip(pairs["dataset"], pairs["arch"])]
    pairs["_rank"] = pairs["label"].map(rank)
    pairs["_metric_rank"] = pairs["metric"].map(list(METRICS).index)
    pairs = pairs.sort_values(["_cell_rank", "_baseline_rank", "_rank", "_metric_rank", "seed", "forget_classes",
                               "unlearn_seed"], kind="stable")
    return pairs[UNIT_COLUMNS].reset_index(drop=True)


def summarise(pairs, uncertainty=None):
    """The comparisons table from paired_units' frame: one row per (dataset/arch, method, baseline,
    metric) with Dataset, Method, Baseline, Metric, 'Difference mean|std|ci_low|ci_high|n' (method −
    baseline, points; n = pairs), 'Wilcoxon p' and 'Holm p' (adjusted over every test in the table)."""
    uncertainty = uncertainty or statistics.Uncertainty()
    rows = []
    values = pairs["value"].to_numpy(dtype=np.float64)
    cells = pairs.groupby(["dataset", "arch", "label", "baseline", "metric"], sort=False).indices
    # cells in the pairs' order (paired_units sorts them as the table shows them)
    for (dataset, arch, label, baseline, metric), positions in sorted(cells.items(), key=lambda cell: cell[1][0]):
        differences = values[positions]
        interval = statistics.bootstrap_mean(
            differences, resamples=uncertainty.resamples, level=uncertainty.level,
            seed=statistics.cell_seed(uncertainty.seed, "comparisons", dataset, arch, label, baseline, metric))
        enough = interval.n >= statistics.MIN_UNITS
        rows.append({"Dataset": f"{dataset}/{arch}", "Method": label, "Baseline": baseline,
                     "Metric": METRICS[metric],
                     **statistics.columns(DIFFERENCE, interval, statistics.sample_std(differences)),
                     "Wilcoxon p": statistics.wilcoxon_signed_rank(differences) if enough else np.nan})
    table = pd.DataFrame(rows, columns=COLUMNS[:-1])
    table["Holm p"] = statistics.holm(table["Wilcoxon p"].to_numpy(dtype=np.float64))
    return table


def comparisons_table(runs, uncertainty=None, method_order=None):
    """The comparisons table of `runs` (module docstring; columns as summarise's) against
    uncertainty.baselines (default trw and retrain). method_order: method names in display order."""
    uncertainty = uncertainty or statistics.Uncertainty()
    return summarise(paired_units(runs, uncertainty.baselines, method_order), uncertainty)
