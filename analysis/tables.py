"""The paper's tables from a tidy frame of runs (one row per run; no MLflow here).

Expected columns: stage ('retrain' | 'unlearn'), method ('retrain', 'original' or a method name),
dataset, arch, forget_classes (e.g. '8' or '1,2'), seed, metric columns (acc_r_test, acc_f_test,
mia_svm, mia_nn, mia_nn_reference, neighbour_class) and the unlearn params as 'params.<name>'.

Mean ± std: the paper repeats every experiment with three seeds and reports the average over its
forget classes ("mean ± std over 3 seeds", as the paper reports). So the unit of the ± is a seed (`seed`,
the training seed: one Original and its Retrain models): a cell's runs are first averaged within each
seed (over its forget classes and, when a grid has several, its unlearning seeds), and the ± is the
SAMPLE std (ddof = 1) of those per-seed means; the mean is their mean. One seed: the std is NaN
(printed '± –'). Running time is per trial: its ± is over the trials. `spread_note` words this for
the table captions.
"""
import numpy as np
import pandas as pd

FIXED_ROWS = {"original": "Original", "retrain": "Retrain"}
ACCURACY_METRICS = {"acc_r_test": "Acc_r", "acc_f_test": "Acc_f", "mia_svm": "MIA"}


def method_labels(runs):
    """Row label per run: the method name, plus the params that vary within that method."""
    labels = runs["method"].map(lambda m: FIXED_ROWS.get(m, m)).astype(object)
    param_columns = [c for c in runs.columns if c.startswith("params.")]
    for method, group in runs.groupby("method"):
        varying = [c for c in param_columns if group[c].dropna().astype(str).nunique() > 1]
        if varying:
            labels.loc[group.index] = group.apply(
                lambda row: f"{method} (" + ", ".join(f"{c[len('params.'):]}={row[c]}" for c in varying) + ")",
                axis=1)
    return labels


def _as_sortable(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _row_order(runs, labels, method_order=None):
    """Original, Retrain, then methods in `method_order` (else alphabetical), each method's rows by
    the param values that vary within that method (numerically where they are numbers)."""
    method_order = list(method_order or [])
    param_columns = [c for c in runs.columns if c.startswith("params.")]
    varying = {method: [c for c in param_columns if group[c].dropna().astype(str).nunique() > 1]
               for method, group in runs.groupby("method")}

    def rank(label):
        row = runs[labels == label].iloc[0]
        method = row["method"]
        fixed = list(FIXED_ROWS).index(method) if method in FIXED_ROWS else len(FIXED_ROWS)
        position = method_order.index(method) if method in method_order else len(method_order)
        return (fixed, position, method, [_as_sortable(row[c]) for c in varying.get(method, [])])

    return sorted(dict.fromkeys(labels), key=rank)


UNIT = "seed"   # the unit the ± is over (module docstring)


def mean_std(values, units=None):
    """(mean, sample std with ddof = 1) of `values` (missing / non-numeric values dropped).

    units: one label per value (e.g. the runs' seeds): values are first averaged within each unit, and
    the mean and std are over the unit means. None: every value is its own unit. A single unit
    gives std NaN (a spread needs two)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    if units is not None:
        values = values.groupby(pd.Series(np.asarray(units).astype(str), index=values.index)).mean()
    values = values.dropna()
    if values.empty:
        return np.nan, np.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else np.nan


def units_of(runs):
    """The unit of each run for mean_std: its seed (as text); None (each run alone) without a seed column."""
    return runs[UNIT].astype(str) if UNIT in runs else None


def spread_note(runs, per="forget set"):
    """Caption text for mean ± std over seeds, e.g. 'mean ± sample std (ddof = 1) over 3 seeds, each
    seed's value the mean over its 10 forget sets; ± – where there is one seed'. per: what is averaged
    inside a seed."""
    seeds = runs[UNIT].astype(str).nunique() if UNIT in runs else 0
    forget_sets = runs["forget_classes"].astype(str).nunique() if "forget_classes" in runs else 0
    inside = f"its {forget_sets} {per}s" if forget_sets > 1 else f"its {per}" if forget_sets else "its runs"
    unlearn_seeds = runs["unlearn_seed"].dropna().astype(str).nunique() if "unlearn_seed" in runs else 0
    if unlearn_seeds > 1:
        inside += f" and {unlearn_seeds} unlearning seeds"
    return (f"mean ± sample std (ddof = 1) over {seeds} seed{'s' if seeds != 1 else ''}, each seed's value the "
            f"mean over {inside}; ± – where there is one seed")


def accuracy_table(runs, method_order=None):
    """Table 2 layout: a row per method (Original, Retrain first); per (dataset, arch) Acc_r, Acc_f, MIA
    as mean and sample std over seeds of each seed's mean over forget classes (mean_std).
    method_order: method names in display order. Returns a numeric frame with
    columns '<dataset>/<arch> <metric> mean|std'."""
    runs = runs.reset_index(drop=True)
    labels = method_labels(runs)
    rows = {}
    for label in _row_order(runs, labels, method_order):
        group = runs[labels == label]
        row = {}
        for (dataset, arch), cell in group.groupby(["dataset", "arch"], sort=False):
            for metric, title in ACCURACY_METRICS.items():
                if metric in cell:
                    mean, std = mean_std(cell[metric], units_of(cell))
                    row[f"{dataset}/{arch} {title} mean"] = mean
                    row[f"{dataset}/{arch} {title} std"] = std
        rows[label] = row
    if "Retrain" in rows:
        _add_average_gap(rows, rows["Retrain"], [f"{d}/{a} " for d, a in runs.groupby(["dataset", "arch"], sort=False).groups])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "Method"
    return table


def _add_average_gap(rows, retrain, prefixes):
    """'<prefix> Avg gap' per row: the mean over Acc_r, Acc_f, MIA of |row mean − Retrain mean| (points),
    the usual single-number distance to Retrain; NaN for the Retrain row itself."""
    for label, row in rows.items():
        for prefix in prefixes:
            gaps = [abs(row[f"{prefix}{t} mean"] - retrain[f"{prefix}{t} mean"]) for t in ACCURACY_METRICS.values()
                    if f"{prefix}{t} mean" in row and f"{prefix}{t} mean" in retrain]
            row[f"{prefix}Avg gap"] = np.nan if row is retrain or not gaps else float(np.mean(gaps))


def forget_set_name(forget, names=None):
    """'8' / '1,3' (the forget_classes column) as class names joined by '+' ('eight+one'); indices without names."""
    return "+".join(names[int(c)] if names else str(c) for c in str(forget).split(","))


def mia_nn_table(runs, class_names=None, method_order=None):
    """Table 1 layout: a row per (dataset, arch, forget set): the forget class(es), the nearest
    neighbour c*, the Retrain reference A_c*, and each method's MIA-NN (mean over seeds).
    class_names: {dataset: [name per class index]} to print names instead of indices."""
    runs = runs[runs["stage"] == "unlearn"].reset_index(drop=True)
    labels = method_labels(runs)
    order = _row_order(runs, labels, method_order)
    rows = []
    for (dataset, arch, forget), group in runs.groupby(["dataset", "arch", "forget_classes"], sort=False):
        names = (class_names or {}).get(dataset)
        neighbour = pd.to_numeric(group["neighbour_class"]).iloc[0]
        row = {"Dataset": f"{dataset}/{arch}",
               "Forget": forget_set_name(forget, names),
               "c*": forget_set_name(int(neighbour), names),
               "Retrain": mean_std(group["mia_nn_reference"])[0]}
        for label in order:
            cell = group[labels[group.index] == label]
            if len(cell):
                row[label] = mean_std(cell["mia_nn"])[0]
        rows.append(row)
    if rows and "mia_nn_gap" in runs:
        # the paper's comparison: distance to the Retrain reference, averaged over forget sets and seeds
        gap = {"Dataset": "mean abs. gap to Retrain", "Forget": "", "c*": "", "Retrain": np.nan}
        gap.update({label: mean_std(runs.loc[labels == label, "mia_nn_gap"])[0] for label in order})
        rows.append(gap)
    return pd.DataFrame(rows)


def format_mean_std(table, digits=2):
    """'<x> mean' / '<x> std' column pairs -> one '<x>' column of 'mean ± std' strings; other columns kept."""
    out = pd.DataFrame(index=table.index)
    for column in table.columns:
        if not column.endswith((" mean", " std")):
            out[column] = table[column]
        elif column.endswith(" mean"):
            base = column[:-len(" mean")]
            out[base] = [("–" if np.isnan(m) else f"{m:.{digits}f} ± –" if np.isnan(s)   # one seed: no spread
                          else f"{m:.{digits}f} ± {s:.{digits}f}")
                         for m, s in zip(table[column], table[f"{base} std"])]
    return out


def _cells(table, index, digits, missing, text=str):
    """(header, rows) of `table` as strings: floats with `digits` decimals, NaN as `missing`, the rest
    through `text`; the index becomes the first column when `index`."""
    frame = table.reset_index() if index else table
    def cell(value):
        if isinstance(value, float):
            return missing if np.isnan(value) else f"{value:.{digits}f}"
        return text(value)
    return [text(str(c)) for c in frame.columns], [[cell(v) for v in row] for row in frame.itertuples(index=False)]


def to_markdown(table, digits=1, index=True):
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    header, rows = _cells(table, index, digits, "–")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _aggregate(runs, labels, metrics, by_unit=True):
    """{label: {'<title> mean': .., '<title> std': ..}} for metrics = {column: title}; mean_std over
    seeds (by_unit) or over the runs themselves."""
    rows = {}
    for label in dict.fromkeys(labels):
        group = runs[labels == label]
        row = {}
        for metric, title in metrics.items():
            units = units_of(group) if by_unit else None
            mean, std = mean_std(group[metric], units) if metric in group else (np.nan, np.nan)
            row[f"{title} mean"], row[f"{title} std"] = mean, std
        rows[label] = row
    return rows


def lambda_table(runs, method="trw"):
    """Table 7 layout: a row per λ of `method` (+ Retrain): Acc_r, Acc_f, MIA, MIA-NN and the MIA-NN gap
    to the Retrain reference (mean/std)."""
    metrics = {**ACCURACY_METRICS, "mia_nn": "MIA-NN"}
    sweep = runs[runs["method"] == method].copy()
    sweep["lam"] = pd.to_numeric(sweep["params.lam"])
    rows = {}
    retrain = runs[runs["method"] == "retrain"]
    if len(retrain):
        row = _aggregate(retrain, pd.Series("Retrain", index=retrain.index), metrics)["Retrain"]
        unlearn = runs[runs["stage"] == "unlearn"]
        if "mia_nn_reference" in unlearn:   # A_c*: one per forget set, the same for every seed
            row["MIA-NN mean"], row["MIA-NN std"] = mean_std(unlearn["mia_nn_reference"], units_of(unlearn))
        else:
            row["MIA-NN mean"], row["MIA-NN std"] = np.nan, np.nan
        rows["Retrain"] = row
    for lam in sorted(sweep["lam"].unique()):
        group = sweep[sweep["lam"] == lam]
        gap = {"mia_nn_gap": "MIA-NN gap"} if "mia_nn_gap" in group else {}   # |MIA-NN − Retrain's A_c*|
        rows[f"λ={lam:g}"] = _aggregate(group, pd.Series("x", index=group.index), {**metrics, **gap})["x"]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "λ"
    return table


def multiclass_table(runs, method_order=None):
    """Table 8 layout: a row per (number of forgotten classes, method), Retrain first: Acc_r, Acc_f, MIA
    (mean/std) with the Original's values beside them, and the average gap to Retrain (see accuracy_table)."""
    runs = runs[runs["stage"].isin(["unlearn", "retrain"])].reset_index(drop=True)
    runs["forgotten"] = runs["forget_classes"].astype(str).str.count(",") + 1
    labels = method_labels(runs)
    rows = []
    for count in sorted(runs["forgotten"].unique()):
        subset = runs["forgotten"] == count
        original = _aggregate(runs[subset & (runs["method"] == "original")],
                              pd.Series("o", index=runs.index[subset & (runs["method"] == "original")]),
                              ACCURACY_METRICS).get("o", {})
        block = {}
        for label in _row_order(runs[subset], labels[subset], method_order):
            if label == "Original":
                continue
            group_mask = subset & (labels == label)
            row = {"Forgotten classes": int(count), "Method": label}
            values = _aggregate(runs[group_mask], labels[group_mask], ACCURACY_METRICS)[label]
            for title in ACCURACY_METRICS.values():
                row[f"{title} mean"], row[f"{title} std"] = values[f"{title} mean"], values[f"{title} std"]
                row[f"{title} (Original) mean"] = original.get(f"{title} mean", np.nan)
                row[f"{title} (Original) std"] = original.get(f"{title} std", np.nan)
            block[label] = row
        if "Retrain" in block:
            _add_average_gap(block, block["Retrain"], [""])
        rows.extend(block.values())
    return pd.DataFrame(rows).set_index(["Forgotten classes", "Method"]) if rows else pd.DataFrame()


def running_time_table(runs, method_order=None):
    """Figure 5's numbers: per method, wall and compute seconds (mean and sample std over the trials:
    a trial's time is the measurement), the devices they ran on and on how many Ray nodes (distinct
    `ray_node_id` tags; runs from before that tag count none)."""
    runs = runs.reset_index(drop=True)
    labels = method_labels(runs)
    rows = _aggregate(runs, labels, {"wall_seconds": "Wall s", "compute_seconds": "Compute s"}, by_unit=False)
    table = pd.DataFrame.from_dict(rows, orient="index").loc[_row_order(runs, labels, method_order)]
    if "device" in runs:
        table["Device"] = [", ".join(sorted(set(runs.loc[labels == label, "device"].dropna()))) for label in table.index]
    if "ray_node_id" in runs:
        table["Nodes"] = [runs.loc[labels == label, "ray_node_id"].dropna().nunique() for label in table.index]
    table.index.name = "Method"
    return table


def ulira_table(ulira_runs, method_order=None, uncertainty=None):
    """Table 3 layout, numeric: a row per statistic (U-LiRA accuracy, AUC, TPR at each FPR the runs
    have), and per column label (a method; 'Retrain (held-out)' for the Retrain-against-Retrain floor)
    the columns '<label> mean', '<label> std', '<label> ci_low', '<label> ci_high', '<label> n'.
    ulira_runs: one row per attack (forget set, method, params, unlearning seed) with ulira_<statistic>
    and, from runs logged since the bank (analysis/ulira.py), ulira_<statistic>_{std,n,ci_low,ci_high}.
    A label's cell over its attacks: mean of their means; std sqrt(mean of their variances) (the spread
    over held-out pairs, pooled); n the pairs (TPR: held-out in models) summed; interval the attack's
    own (bootstrap over held-out in models) when there is one attack, else a bootstrap over the attack
    means (statistics.bootstrap_mean; n/a below 3 attacks). Old runs: std, n and interval NaN."""
    from analysis import statistics, ulira
    uncertainty = uncertainty or statistics.Uncertainty()
    runs = ulira_runs.reset_index(drop=True)
    labels = method_labels(runs)
    order = _row_order(runs, labels, method_order)
    labels = labels.where(runs["method"] != "retrain", ulira.FLOOR_LABEL)
    order = [ulira.FLOOR_LABEL if label == FIXED_ROWS["retrain"] else label for label in order]
    statistics_shown = ulira.table_statistics(runs.columns)
    columns = {}
    for label, attacks in runs.groupby(labels, sort=False):
        for suffix in ("mean", "std", "ci_low", "ci_high", "n"):
            columns[f"{label} {suffix}"] = {}
        for statistic, row in statistics_shown.items():
            name = f"ulira_{statistic}"
            means = pd.to_numeric(attacks[name], errors="coerce") if name in attacks else pd.Series(np.nan, attacks.index)

            def extra(suffix, attacks=attacks, name=name):
                column = f"{name}_{suffix}"
                return pd.to_numeric(attacks[column], errors="coerce") if column in attacks else \
                    pd.Series(np.nan, attacks.index)
            stds, counts = extra("std"), extra("n")
            if len(attacks) == 1:
                low, high = extra("ci_low").iloc[0], extra("ci_high").iloc[0]
            else:
                interval = statistics.bootstrap_mean(means, resamples=uncertainty.resamples, level=uncertainty.level,
                                                     seed=statistics.cell_seed(uncertainty.seed, "ulira", label, statistic))
                low, high = interval.low, interval.high
            measured = means.notna()
            cell = columns
            cell[f"{label} mean"][row] = float(means[measured].mean()) if measured.any() else np.nan
            cell[f"{label} std"][row] = (float(np.sqrt((stds[measured] ** 2).mean()))
                                         if measured.any() and stds[measured].notna().all() else np.nan)
            cell[f"{label} ci_low"][row], cell[f"{label} ci_high"][row] = float(low), float(high)
            cell[f"{label} n"][row] = (float(counts[measured].sum())
                                       if measured.any() and counts[measured].notna().all() else np.nan)
    ordered = [f"{label} {suffix}" for label in order for suffix in ("mean", "std", "ci_low", "ci_high", "n")]
    table = pd.DataFrame(columns)[ordered].reindex(list(statistics_shown.values()))
    table.index.name = "Metric"
    return table


def _param_text(value, digits=3):
    """A best-param tag ('12', '0.0031234', 'sgd') as short text: whole numbers as they are, other
    numbers with `digits` significant digits, anything else unchanged."""
    text = str(value)
    try:
        return str(int(text))
    except ValueError:
        pass
    try:
        return f"{float(text):.{digits}g}"
    except ValueError:
        return text


def _forget_rank(forget):
    """Forget sets in the usual order: fewest classes first, then by class index."""
    classes = [int(c) for c in str(forget).split(",")]
    return (len(classes), classes)


def _number(value):
    """A metric cell as a float; NaN when missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def _count(value):
    """A count logged as an MLflow metric (a float) as a whole number; '–' when missing."""
    number = _number(value)
    return "–" if np.isnan(number) else int(round(number))


def search_table(parents, method_order=None, class_names=None, holdout=None, uncertainty=None):
    """Hyperparameter searches, one row per searched cell (a finished `stage=search` run): the
    objective of the method's default params and of the best params found (both on the search's split),
    the best params, trials run and trials stopped early, then the same two objectives on the holdout
    half (search_holdout: `holdout`, the `<search>-best` experiment's runs; NaN columns without them).
    Rows by dataset/arch, forget set, method (in `method_order`, else alphabetical), then seed; a Seed
    column only when cells differ in seed. Numbers stay numbers at full precision (md/tex format them).
    parents columns: dataset, arch, forget_classes, method, seed, objective (the name), split,
    searched_params ('epochs,lam'), params.<param> (the default point), best.<param>, default_objective,
    best_objective, trials, stopped_early. uncertainty: analysis.statistics.Uncertainty (None: defaults)."""
    method_order = list(method_order or [])
    seeds = parents["seed"].astype(str).nunique() if len(parents) else 0

    def rank(row):
        method = row["method"]
        position = method_order.index(method) if method in method_order else len(method_order)
        return (row["dataset"], row["arch"], _forget_rank(row["forget_classes"]), position, method,
                _as_sortable(row["seed"]))

    rows = []
    for _, row in sorted(parents.iterrows(), key=lambda item: rank(item[1])):
        searched = [p for p in str(row.get("searched_params", "")).split(",") if p]
        best = ", ".join(f"{p}={_param_text(row[f'best.{p}'])}" for p in searched
                         if pd.notna(row.get(f"best.{p}")))
        out = {"Dataset": f"{row['dataset']}/{row['arch']}",
               "Forget": forget_set_name(row["forget_classes"], (class_names or {}).get(row["dataset"]))}
        if seeds > 1:
            out["Seed"] = str(row["seed"])
        out.update({"Method": row["method"], "Objective": row.get("objective"), "Split": row.get("split"),
                    "Default": _number(row.get("default_objective")), "Best": _number(row.get("best_objective")),
                    "Best params": best or "–", "Trials": _count(row.get("trials")),
                    "Stopped early": _count(row.get("stopped_early"))})
        out.update(search_holdout(row, holdout, uncertainty))
        rows.append(out)
    return pd.DataFrame(rows)


def to_latex(table, digits=2, index=True):
    """A booktabs tabular; numbers with `digits` decimals, NaN as '--'."""
    def text(value):
        # '>' (neighbour_agreement's A_c ranking) is an inverted '?' in text mode under LaTeX's default OT1 fonts
        return (str(value).replace("±", r"$\pm$").replace("_", r"\_").replace("λ", r"$\lambda$").replace("%", r"\%")
                .replace(">", r"$>$"))
    header, rows = _cells(table, index, digits, "--", text)
    body = "\n".join(" & ".join(row) + r" \\" for row in rows)
    return (f"\\begin{{tabular}}{{{'l' * len(header)}}}\n\\toprule\n{' & '.join(header)} \\\\\n\\midrule\n"
            f"{body}\n\\bottomrule\n\\end{{tabular}}\n")


# -- searches on the holdout half -------------------------------------------------------------------------

HOLDOUT_COLUMNS = ("Default on holdout", "Best on holdout", "Best − Default on holdout")
STATISTICS = ("mean", "std", "ci_low", "ci_high", "n")


def _same_value(a, b):
    """A logged param against a tag ('10.0' vs '10', 3.2145 vs '3.2145'): equal as numbers when both are,
    else as text; a missing value matches nothing."""
    if a is None or b is None or (isinstance(a, float) and np.isnan(a)) or (isinstance(b, float) and np.isnan(b)):
        return False
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def holdout_objectives(runs, objective_name):
    """Per unlearn run of `runs` (a tidy frame of unlearn and Retrain runs on the holdout split), the search
    objective (analysis/objective.py) recomputed from its holdout metrics: acc_r_test and acc_f_test against
    the mean of the Retrain runs of the same (dataset, arch, forget set, seed), and mia_nn against the run's
    own mia_nn_reference (A_c* of its Retrain reference). NaN where a part is missing."""
    from analysis.objective import objective
    keys = ["dataset", "arch", "forget_classes", "seed"]
    unlearn = runs[runs["stage"] == "unlearn"]
    retrain = runs[runs["stage"] == "retrain"]
    index = pd.MultiIndex.from_frame(unlearn[keys].astype(str))
    reference = {}
    for metric in ("acc_r_test", "acc_f_test"):
        means = (pd.to_numeric(retrain[metric], errors="coerce").groupby([retrain[k].astype(str) for k in keys]).mean()
                 if len(retrain) and metric in retrain else pd.Series(dtype=float))
        reference[metric] = means.reindex(index).to_numpy() if len(means) else np.full(len(unlearn), np.nan)

    def column(name):
        return pd.to_numeric(unlearn[name], errors="coerce").to_numpy() if name in unlearn else np.full(len(unlearn), np.nan)
    gaps = {"gap_acc_r": np.abs(column("acc_r_test") - reference["acc_r_test"]),
            "gap_acc_f": np.abs(column("acc_f_test") - reference["acc_f_test"]),
            "gap_mia_nn": np.abs(column("mia_nn") - column("mia_nn_reference"))}
    values = [objective(objective_name, {k: v[i] for k, v in gaps.items()}) for i in range(len(unlearn))]
    return pd.Series(values, index=unlearn.index, dtype=float)


def _unit_values(runs, values):
    """values (per run) averaged within each unit (seed, unlearning seed): a Series indexed by unit."""
    units = [runs["seed"].astype(str),
             runs["unlearn_seed"].astype(str) if "unlearn_seed" in runs else pd.Series("0", index=runs.index)]
    return values.groupby(units).mean()


def _interval_columns(title, values, uncertainty, *names):
    """'<title> mean|std|ci_low|ci_high|n' of per-unit `values` (statistics.bootstrap_mean, seeded per cell)."""
    from analysis import statistics
    options = uncertainty or statistics.Uncertainty()
    values = np.asarray(values, dtype=np.float64)
    interval = statistics.bootstrap_mean(values, resamples=options.resamples, level=options.level,
                                         seed=statistics.cell_seed(options.seed, "search", *names, title))
    return {f"{title} mean": interval.estimate, f"{title} std": statistics.sample_std(values),
            f"{title} ci_low": interval.low, f"{title} ci_high": interval.high, f"{title} n": interval.n}


def search_holdout(parent, holdout, uncertainty=None):
    """A search cell's holdout columns: its default params and its best params, each evaluated on the
    holdout half by the `<search>-best` grid (`holdout`: that experiment's tidy runs), as the search's
    objective per unit (seed, unlearning seed) with its bootstrap interval over units, and the paired
    difference Best − Default over the units both have (> 0: the best did worse than the default on the
    holdout, the winner's curse). A holdout run belongs to the default (best) when its searched params
    equal the cell's default point (params.<p> of the parent run) or its best (best.<p> tags); when the
    search kept the default, the same runs are both. NaN (n 0) without holdout runs."""
    empty = {f"{title} {statistic}": (0 if statistic == "n" else np.nan)
             for title in HOLDOUT_COLUMNS for statistic in STATISTICS}
    if holdout is None or holdout.empty or "stage" not in holdout:
        return empty
    searched = [p for p in str(parent.get("searched_params", "")).split(",") if p]
    runs = holdout
    if "evaluation_split" in runs:   # runs on the whole test split (or older runs without the tag) do not count
        runs = runs[runs["evaluation_split"].astype(str) == "holdout"]
    here = runs[(runs["dataset"].astype(str) == str(parent["dataset"])) & (runs["arch"].astype(str) == str(parent["arch"]))
                & (runs["forget_classes"].astype(str) == str(parent["forget_classes"]))]
    unlearn = here[(here["stage"] == "unlearn") & (here["method"].astype(str) == str(parent["method"]))]
    if unlearn.empty or not searched:
        return empty
    names = (parent["dataset"], parent["arch"], parent["forget_classes"], parent["method"], parent.get("seed"))

    def matching(source):   # unlearn runs whose every searched param equals the parent's `source.<p>`
        mask = pd.Series(True, index=unlearn.index)
        for param in searched:
            wanted = parent.get(f"{source}.{param}")
            logged = unlearn[f"params.{param}"] if f"params.{param}" in unlearn else pd.Series(None, index=unlearn.index)
            mask &= logged.map(lambda value, wanted=wanted: _same_value(value, wanted))
        return unlearn[mask]

    objectives = holdout_objectives(pd.concat([here[here["stage"] == "retrain"], unlearn]),
                                    parent.get("objective") or "retrain_gap")
    per_unit = {}
    for title, source in (("Default on holdout", "params"), ("Best on holdout", "best")):
        chosen = matching(source)
        per_unit[title] = _unit_values(chosen, objectives.loc[chosen.index])
    out = {}
    for title, values in per_unit.items():
        out.update(_interval_columns(title, values.to_numpy(), uncertainty, *names))
    both = per_unit["Best on holdout"].index.intersection(per_unit["Default on holdout"].index)
    difference = per_unit["Best on holdout"].loc[both] - per_unit["Default on holdout"].loc[both]
    out.update(_interval_columns("Best − Default on holdout", difference.to_numpy(), uncertainty, *names))
    return out
