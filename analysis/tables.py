"""The paper's tables from a tidy frame of runs (one row per run; no MLflow here).

Expected columns: stage ('retrain' | 'unlearn'), method ('retrain', 'original' or a method name),
dataset, arch, forget_classes (e.g. '8' or '1,2'), seed, unlearn_seed (unlearn runs), metric columns
(acc_r_test, acc_f_test, mia_svm, mia_nn, mia_nn_reference, neighbour_class), the unlearn params as
'params.<name>', and optionally the tags mia_svm_predictions / mia_nn_predictions (per-sample attack
outcomes, statistics.pack_bits) and forget_mean_probs (JSON list).

Every cell is a mean over experimental units with five numbers, columns '<x> mean', '<x> std',
'<x> ci_low', '<x> ci_high', '<x> n':
- a unit is one (training seed, forget set, unlearning seed): one model evaluated once (Retrain and
  Original rows: (seed, forget set)); its value is its run's metric (the mean, should a unit have
  several runs). Running time: a unit is a trial.
- mean: the mean over the cell's units; n: how many units.
- ci_low / ci_high: the 95% percentile bootstrap interval of that mean (statistics.bootstrap_mean, its
  resamples seeded per cell by statistics.cell_seed(seed, table, row, column), so a table is the same
  at every call). Attack scores (MIA, MIA-NN) also resample the test samples inside each unit when
  every unit of the cell stored its per-sample predictions; else the interval is over units only.
  NaN below statistics.MIN_UNITS units (printed 'n/a').
- std: the sample std (ddof = 1) over what Uncertainty.spread names: 'seeds' (each seed's value the
  mean over its units: the paper's "mean ± std over 3 seeds"), 'forget_classes' (each forget set's
  value the mean over its units: our reading of the paper's ±, whose Table 2 Original has Acc_f
  ± 5.45 against Acc_r ± 0.09) or 'units'. NaN with one group (printed '± –').
`spread_note` words this for the captions.

Scaling: every builder groups its frame once (groupby / pivot over all rows) and never selects one
row label at a time from the whole frame: a λ sweep has hundreds of labels (bench/scale.py --labels).
"""
import json

import numpy as np
import pandas as pd

from analysis import statistics
from analysis.statistics import Uncertainty

FIXED_ROWS = {"original": "Original", "retrain": "Retrain"}
ACCURACY_METRICS = {"acc_r_test": "Acc_r", "acc_f_test": "Acc_f", "mia_svm": "MIA"}
UNIT_COLUMNS = ("seed", "forget_classes", "unlearn_seed")   # an experimental unit (module docstring)
PREDICTION_TAGS = {"mia_svm": "mia_svm_predictions", "mia_nn": "mia_nn_predictions"}   # per-sample bits
STATS = ("mean", "std", "ci_low", "ci_high", "n")
SPREAD_COLUMN = {"seeds": "seed", "forget_classes": "forget_classes", "units": None}
UNITS_COLUMNS = ["dataset", "arch", "label", "seed", "forget_classes", "unlearn_seed", "metric", "value", "samples"]


# what a run is, most significant first: the order build_tables puts runs in, so that no table, interval
# or units CSV depends on the order the tracking server returned them (two grids of the same trials, one
# of them restarted after a fault, then give the same files)
IDENTITY = ("stage", "dataset", "arch", "forget_classes", "method", "seed", "unlearn_seed")


def in_canonical_order(runs):
    """runs sorted by IDENTITY, then every 'params.*' column, then 'key' (the trial key: ties of
    everything else), compared as text; the index is renumbered."""
    if runs is None or runs.empty:
        return runs
    columns = [c for c in IDENTITY if c in runs] + sorted(c for c in runs if c.startswith("params."))
    columns += ["key"] if "key" in runs else []
    if not columns:
        return runs.reset_index(drop=True)
    ordered = runs.sort_values(columns, key=lambda column: column.astype(str), kind="stable")
    return ordered.reset_index(drop=True)


def method_labels(runs):
    """Row label per run: the method name, plus the params that vary within that method."""
    labels = runs["method"].map(lambda m: FIXED_ROWS.get(m, m)).astype(object)
    param_columns = [c for c in runs.columns if c.startswith("params.")]
    for method, index in runs.groupby("method").groups.items():
        group = runs.loc[index, param_columns]
        varying = [c for c in param_columns if group[c].dropna().astype(str).nunique() > 1]
        if varying:
            text = pd.Series(f"{method} (", index=index)
            for position, column in enumerate(varying):
                text += (", " if position else "") + f"{column[len('params.'):]}=" + group[column].astype(str)
            labels.loc[index] = text + ")"
    return labels


def _as_sortable(value):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _row_order(runs, labels, method_order=None):
    """Original, Retrain, then methods in `method_order` (else alphabetical), each method's rows by
    the param values that vary within that method (numerically where they are numbers). One pass over
    the runs (the first run of each label), not one selection per label."""
    method_order = list(method_order or [])
    param_columns = [c for c in runs.columns if c.startswith("params.")]
    varying = {method: [c for c in param_columns if group[c].dropna().astype(str).nunique() > 1]
               for method, group in runs.groupby("method")}
    first = runs.assign(_label=np.asarray(labels, dtype=object)).drop_duplicates("_label")

    def rank(row):
        method = row["method"]
        fixed = list(FIXED_ROWS).index(method) if method in FIXED_ROWS else len(FIXED_ROWS)
        position = method_order.index(method) if method in method_order else len(method_order)
        return (fixed, position, method, [_as_sortable(row[c]) for c in varying.get(method, [])])

    ranks = {row["_label"]: rank(row) for row in first.to_dict("records")}
    return sorted(ranks, key=ranks.get)


UNIT = "seed"   # mean_std's unit (ulira_table and figures still use it)


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


def _unit_keys(runs):
    """The runs' unit columns as text, '' where missing (Retrain has no unlearning seed; old runs no tag)."""
    return {column: (runs[column].astype(str).where(runs[column].notna(), "") if column in runs
                     else pd.Series("", index=runs.index)) for column in UNIT_COLUMNS}


def _prediction_counts(runs, metric):
    """(labelled, samples) per run from the metric's per-sample prediction tag; NaN where it has none."""
    labelled = np.full(len(runs), np.nan)
    samples = np.full(len(runs), np.nan)
    tag = PREDICTION_TAGS.get(metric)
    if tag in runs:
        for position, text in enumerate(runs[tag].to_numpy()):
            bits = statistics.unpack_bits(text)
            if bits is not None and len(bits):
                labelled[position], samples[position] = bits.sum(), len(bits)
    return labelled, samples


def _summarise(runs, keys, metrics, uncertainty, table, per_trial=False):
    """(cells, units) of `metrics` ({column: title}) in `runs`, grouped once by the `keys` columns.

    cells: one row per (keys..., metric title) with STATS; units: one row per unit and metric
    (UNITS_COLUMNS less dataset/arch/label, plus the keys). per_trial: every run its own unit (running
    time), the ± over the trials whatever the spread."""
    uncertainty = uncertainty or Uncertainty()
    # a trial is its own unit for running time; its unit columns still go to the per-unit rows
    # a unit is also of its dataset/arch when a table row pools several (λ, multi-class tables)
    identity = [c for c in ("dataset", "arch") if c in runs] + list(UNIT_COLUMNS)
    unit_columns = [c for c in (["trial", *identity] if per_trial else identity) if c not in keys]
    base = {"trial": np.arange(len(runs)), **{c: v.to_numpy() for c, v in _unit_keys(runs).items()},
            **{c: runs[c].to_numpy() for c in ("dataset", "arch") if c in runs}}
    base.update({key: runs[key].to_numpy() for key in keys})
    spread = "trial" if per_trial else SPREAD_COLUMN[uncertainty.spread]
    cells, unit_frames = [], []
    for metric, title in metrics.items():
        if metric not in runs:
            continue
        labelled, samples = _prediction_counts(runs, metric)
        frame = pd.DataFrame({**base, "value": pd.to_numeric(runs[metric], errors="coerce").to_numpy(),
                              "labelled": labelled, "samples": samples, "stored": ~np.isnan(samples)})
        frame = frame[frame["value"].notna()]
        if frame.empty:
            continue
        units = (frame.groupby(keys + unit_columns, sort=False, dropna=False)
                 .agg(value=("value", "mean"), labelled=("labelled", "sum"), samples=("samples", "sum"),
                      stored=("stored", "min")).reset_index())
        grouped = units.groupby(keys, sort=False, dropna=False)
        if spread is None:
            std = grouped["value"].std(ddof=1)
        else:
            std = (units.groupby(keys + [spread], sort=False, dropna=False)["value"].mean()
                   .groupby(level=list(range(len(keys))), sort=False).std(ddof=1))
        # every cell's units side by side: one sort, then a slice per cell for its bootstrap
        codes = grouped.ngroup().to_numpy()
        order = np.argsort(codes, kind="stable")
        ends = np.cumsum(np.bincount(codes))
        values = units["value"].to_numpy()[order]
        counts = units[["labelled", "samples"]].to_numpy()[order]
        stored = units["stored"].to_numpy()[order]
        std_of = dict(zip(std.index, std.to_numpy()))
        group_keys = _group_keys(units, keys, codes)
        draws = []
        for number, key in enumerate(group_keys):
            start, end = (ends[number - 1] if number else 0), ends[number]
            with_samples = metric in PREDICTION_TAGS and stored[start:end].all()
            draws.append((values[start:end], counts[start:end] if with_samples else None,
                          statistics.cell_seed(uncertainty.seed, table, *key, title)))
        intervals = statistics.bootstrap_means(draws, uncertainty.resamples, uncertainty.level)
        for key, interval in zip(group_keys, intervals):
            cells.append({**dict(zip(keys, key)), "metric": title, "mean": interval.estimate,
                          "std": std_of[key if len(keys) > 1 else key[0]], "ci_low": interval.low,
                          "ci_high": interval.high, "n": interval.n})
        units = units.drop(columns=["labelled", "stored"]).assign(metric=title)
        units["samples"] = units["samples"].where(units["samples"] > 0)
        unit_frames.append(units)
    cells = pd.DataFrame(cells, columns=[*keys, "metric", *STATS])
    units = pd.concat(unit_frames, ignore_index=True) if unit_frames else pd.DataFrame()
    return cells, units


def _group_keys(units, keys, codes):
    """The key tuple of each group code 0, 1, ... (codes from groupby(sort=False).ngroup())."""
    first = np.unique(codes, return_index=True)[1]
    rows = units[keys].to_numpy()[first]
    return [tuple(row) for row in rows]


def _wide(cells, row_keys, column_of, columns):
    """cells (one row per (row keys, metric)) as a table: a row per row key, '<column> <stat>' columns
    in the order of `columns` (column_of(cells): each cell's column name)."""
    cells = cells.assign(_column=column_of(cells))
    wide = cells.set_index([*row_keys, "_column"])[list(STATS)].unstack("_column")
    present = [c for c in columns if c in set(cells["_column"])]
    return pd.DataFrame({f"{column} {stat}": wide[(stat, column)] for column in present for stat in STATS},
                        index=wide.index)


def _units_frame(units, label_key="_label", **fixed):
    """The per-unit rows of a table as UNITS_COLUMNS (fixed: columns with one value, e.g. dataset)."""
    if units.empty:
        return pd.DataFrame(columns=UNITS_COLUMNS)
    frame = units.rename(columns={label_key: "label"}).assign(**fixed)
    for column in UNITS_COLUMNS:
        if column not in frame:
            frame[column] = "" if column not in ("value", "samples") else np.nan
    return frame[UNITS_COLUMNS]


def _stored_predictions(runs, metrics):
    """'all' / 'some' / 'none': how many of the runs with an attack score also stored its per-sample
    predictions (the interval then also resamples test samples)."""
    found = []
    for metric in metrics:
        if metric in PREDICTION_TAGS and metric in runs:
            scored = runs[metric].notna()
            tag = runs[PREDICTION_TAGS[metric]] if PREDICTION_TAGS[metric] in runs else pd.Series(np.nan, index=runs.index)
            found.append(tag[scored].map(lambda t: isinstance(t, str) and ":" in t).to_numpy())
    found = np.concatenate(found) if found else np.array([], dtype=bool)
    return "none" if not found.any() else "all" if found.all() else "some"


def spread_note(runs, per="forget set", uncertainty=None, trials=False, attack_metrics=("mia_svm", "mia_nn")):
    """Caption text: what the ± spans, what the interval resamples (and how often, with which seed) and
    what n counts, e.g. 'mean ± sample std (ddof = 1) over 3 seeds (each seed's value the mean over its
    10 forget sets); [95% bootstrap interval] over (seed, forget set, unlearning seed) units, 1000
    resamples, seed 0 (...); n = units; n/a below 3 units'. per: what a unit's forget set is called.
    trials: every trial is its own unit (running time)."""
    uncertainty = uncertainty or Uncertainty()
    level = f"{uncertainty.level * 100:g}%"
    resampling = f"{uncertainty.resamples} resamples, seed {uncertainty.seed}"
    if trials:
        return (f"mean ± sample std (ddof = 1) over each row's trials [{level} bootstrap interval over the trials, "
                f"{resampling}]; n = trials; n/a below {statistics.MIN_UNITS}")
    seeds = runs[UNIT].astype(str).nunique() if UNIT in runs else 0
    forget_sets = runs["forget_classes"].astype(str).nunique() if "forget_classes" in runs else 0
    unlearn_seeds = runs["unlearn_seed"].dropna().astype(str).nunique() if "unlearn_seed" in runs else 0
    if uncertainty.spread == "seeds":
        inside = f"its {forget_sets} {per}s" if forget_sets > 1 else f"its {per}" if forget_sets else "its runs"
        if unlearn_seeds > 1:
            inside += f" and {unlearn_seeds} unlearning seeds"
        spread = (f"± = sample std (ddof = 1) over {seeds} seed{'s' if seeds != 1 else ''}, each seed's value the "
                  f"mean over {inside}")
    elif uncertainty.spread == "forget_classes":
        spread = (f"± = sample std (ddof = 1) over {forget_sets} {per}{'s' if forget_sets != 1 else ''}, each one's "
                  f"value the mean over its seeds{' and unlearning seeds' if unlearn_seeds > 1 else ''} "
                  "(our reading of the paper's ±)")
    else:
        spread = "± = sample std (ddof = 1) over the units"
    stored = _stored_predictions(runs, attack_metrics)
    samples = {"all": "; attack scores also resample each unit's test samples",
               "some": "; attack scores also resample each unit's test samples where every unit of the cell "
                       "stored its per-sample predictions, else units only",
               "none": "; attack scores over units only (the runs stored no per-sample predictions)"}[stored]
    units = "(seed, forget set, unlearning seed)" if unlearn_seeds else "(seed, forget set)"
    return (f"mean over units ± spread [{level} bootstrap interval]: {spread}; "
            f"interval over {units} units, {resampling}{samples}; n = units; n/a below {statistics.MIN_UNITS} "
            "units; ± – with one")


def accuracy_table(runs, method_order=None, uncertainty=None, units=False):
    """Table 2 layout: a row per method (Original, Retrain first); per (dataset, arch) Acc_r, Acc_f, MIA
    (module docstring: mean, std, ci_low, ci_high, n) and the average gap to Retrain.
    method_order: method names in display order. Returns a numeric frame with columns
    '<dataset>/<arch> <metric> mean|std|ci_low|ci_high|n' and '<dataset>/<arch> Avg gap';
    with units=True, (table, units frame)."""
    runs = runs.reset_index(drop=True)
    labels = method_labels(runs)
    order = _row_order(runs, labels, method_order)
    frame = runs.assign(_label=labels.to_numpy())
    cells, unit_rows = _summarise(frame, ["_label", "dataset", "arch"], ACCURACY_METRICS, uncertainty, "accuracy")
    groups = [f"{d}/{a}" for d, a in dict.fromkeys(zip(runs["dataset"], runs["arch"]))]
    columns = [f"{g} {t}" for g in groups for t in ACCURACY_METRICS.values()]
    table = _wide(cells, ["_label"], lambda c: c["dataset"] + "/" + c["arch"] + " " + c["metric"], columns)
    table = table.reindex(order)
    parts = []
    for group in groups:
        block = table[[c for c in table.columns if c.startswith(f"{group} ")]].copy()
        block[f"{group} Avg gap"] = _average_gap(table, f"{group} ")
        parts.append(block)
    table = pd.concat(parts, axis=1) if parts else table
    table.index.name = "Method"
    return (table, _units_frame(unit_rows)) if units else table


def _average_gap(table, prefix):
    """'Avg gap' per row: the mean over Acc_r, Acc_f, MIA of |row mean − Retrain mean| (points), the
    usual single-number distance to Retrain; NaN for the Retrain row and without a Retrain row."""
    columns = [f"{prefix}{t} mean" for t in ACCURACY_METRICS.values() if f"{prefix}{t} mean" in table]
    if "Retrain" not in table.index or not columns:
        return pd.Series(np.nan, index=table.index)
    gap = (table[columns] - table.loc["Retrain", columns]).abs().mean(axis=1, skipna=False)
    gap.loc["Retrain"] = np.nan
    return gap


def forget_set_name(forget, names=None):
    """'8' / '1,3' (the forget_classes column) as class names joined by '+' ('eight+one'); indices without names."""
    return "+".join(names[int(c)] if names else str(c) for c in str(forget).split(","))


def js_to_retrain(runs, retrain):
    """Per run of `runs`: the Jensen–Shannon divergence (bits) between its forget_mean_probs and that of
    the Retrain run of the same (dataset, arch, seed, forget set) in `retrain`; NaN where either lacks it."""
    if "forget_mean_probs" not in runs or "forget_mean_probs" not in retrain:
        return pd.Series(np.nan, index=runs.index)
    key = ["dataset", "arch", "seed", "forget_classes"]

    def probs(text):
        return np.asarray(json.loads(text), dtype=np.float64) if isinstance(text, str) and text.strip() else None
    reference = {tuple(map(str, k)): probs(t) for *k, t in
                 retrain[key + ["forget_mean_probs"]].dropna().drop_duplicates(key).itertuples(index=False)}
    out = []
    for *k, text in runs[key + ["forget_mean_probs"]].itertuples(index=False):
        theirs, ours = reference.get(tuple(map(str, k))), probs(text)
        ok = theirs is not None and ours is not None and len(theirs) == len(ours)
        out.append(statistics.jensen_shannon(ours, theirs) if ok else np.nan)
    return pd.Series(out, index=runs.index, dtype=np.float64)


MIA_NN_METRICS = {"mia_nn": "MIA-NN", "mia_nn_gap": "MIA-NN gap", "js_to_retrain": "JS to Retrain"}
ALL_FORGET_SETS = "all"   # the Forget of a dataset/arch's summary rows (every forget set's units)


def mia_nn_table(runs, class_names=None, method_order=None, uncertainty=None, units=False):
    """Table 1's numbers in long form (a row per dataset/arch, forget set and method; the wide layout
    would need five columns per method): the forget class(es), the nearest neighbour c*, and per row
    MIA-NN, its gap |MIA-NN − A_c*| and the Jensen–Shannon divergence (bits) between the row's mean
    predicted distribution on forget samples and the Retrain model's of the same seed and forget set
    (module docstring: mean, std, ci_low, ci_high, n each). Each forget set's first row is Retrain:
    its MIA-NN is A_c*, the reference (a unit per (seed, forget set)); then, where the runs carry every
    Retrain model's A_c (tag retrain_model_scores), 'Retrain (held-out)': each Retrain model scored
    against the reference of the others (analysis/noise_floor.py), the gap no method can be expected
    to beat. After a dataset/arch's forget sets, rows with Forget 'all': each row over every forget set's units.
    class_names: {dataset: [name per class index]} to print names instead of indices."""
    retrain = runs[runs["stage"] == "retrain"]
    unlearn = runs[runs["stage"] == "unlearn"].reset_index(drop=True)
    labels = method_labels(unlearn)
    from analysis import noise_floor   # it reads this module's names: imported here, not at the top
    order = ["Retrain", noise_floor.HELD_OUT_LABEL, *_row_order(unlearn, labels, method_order)]
    frame = unlearn.assign(_label=labels.to_numpy(), js_to_retrain=js_to_retrain(unlearn, retrain).to_numpy())
    keys = ["dataset", "arch", "forget_classes"]
    if "mia_nn_reference" in unlearn:   # A_c*: the Retrain row, one unit per (seed, forget set)
        # the noise floor: each Retrain model scored against the reference of the other Retrain models
        held_out = noise_floor.held_out_rows(unlearn).assign(_label=noise_floor.HELD_OUT_LABEL)
        frame = pd.concat([_reference_rows(unlearn).assign(_label="Retrain"), held_out, frame], ignore_index=True)
    metrics = {m: t for m, t in MIA_NN_METRICS.items() if m in frame}
    per_set, set_units = _summarise(frame, keys + ["_label"], metrics, uncertainty, "mia_nn")
    everything = frame[frame["_label"] != "Retrain"]
    overall, _ = _summarise(everything, ["dataset", "arch", "_label"], metrics, uncertainty, "mia_nn_all")
    overall["forget_classes"] = ALL_FORGET_SETS
    cells = pd.concat([per_set, overall], ignore_index=True)
    if cells.empty:
        return (pd.DataFrame(), _units_frame(set_units)) if units else pd.DataFrame()
    table = _wide(cells, keys + ["_label"], lambda c: c["metric"], list(MIA_NN_METRICS.values())).reset_index()
    neighbours = (unlearn.groupby(keys, sort=False)["neighbour_class"].first() if "neighbour_class" in unlearn
                  else pd.Series(dtype=float))
    blocks = list(dict.fromkeys(zip(unlearn["dataset"], unlearn["arch"], unlearn["forget_classes"])))
    block_rank = {k: i for i, k in enumerate(blocks)}
    dataset_rank = {k[:2]: i for i, k in reversed(list(enumerate(blocks)))}
    label_rank = {label: i for i, label in enumerate(order)}

    def rank(row):
        summary = row["forget_classes"] == ALL_FORGET_SETS
        place = len(blocks) if summary else block_rank[(row["dataset"], row["arch"], row["forget_classes"])]
        return (dataset_rank[(row["dataset"], row["arch"])], place, label_rank[row["_label"]])
    ranks = [rank(row) for row in table[keys + ["_label"]].to_dict("records")]
    table = table.iloc[sorted(range(len(table)), key=ranks.__getitem__)].reset_index(drop=True)

    def neighbour(row):
        if row["forget_classes"] == ALL_FORGET_SETS:
            return ""
        value = neighbours.get((row["dataset"], row["arch"], row["forget_classes"]), np.nan)
        names = (class_names or {}).get(row["dataset"])
        return "–" if pd.isna(value) else forget_set_name(int(float(value)), names)
    text = pd.DataFrame({
        "Dataset": table["dataset"] + "/" + table["arch"],
        "Forget": [f if f == ALL_FORGET_SETS else forget_set_name(f, (class_names or {}).get(d))
                   for d, f in zip(table["dataset"], table["forget_classes"])],
        "c*": [neighbour(row) for row in table[keys].to_dict("records")],
        "Method": table["_label"]})
    table = pd.concat([text, table.drop(columns=keys + ["_label"])], axis=1)
    return (table, _units_frame(set_units)) if units else table


def format_mean_std(table, digits=2):
    """'<x> mean' / '<x> std' (/ ci_low, ci_high, n) column groups -> one '<x>' column of text: 'mean ± std'
    or, with an interval, 'mean ± std [low, high] (n=N)'; a NaN interval prints '[n/a]', a NaN std
    '± –' (one group: no spread), a NaN mean '–'. Other columns kept."""
    out = {}
    columns = set(table.columns)
    for column in table.columns:
        base = column.rsplit(" ", 1)[0] if isinstance(column, str) and " " in column else None
        if base is None or f"{base} mean" not in columns or column[len(base) + 1:] not in STATS:
            out[column] = table[column].to_numpy()
        elif column == f"{base} mean":
            out[base] = _mean_std_texts(table, base, digits)
    return pd.DataFrame(out, index=table.index, columns=list(out))


def _mean_std_texts(table, base, digits):
    """format_mean_std's text of one '<x>' column group, a string per row."""
    def values(stat):
        name = f"{base} {stat}"
        return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64) if name in table \
            else np.full(len(table), np.nan)
    with_interval = f"{base} ci_low" in table
    texts = []
    for mean, std, low, high, n in zip(*(values(stat) for stat in STATS)):
        if np.isnan(mean):
            texts.append("–")
            continue
        text = f"{mean:.{digits}f} ± " + ("–" if np.isnan(std) else f"{std:.{digits}f}")
        if with_interval:
            interval = "[n/a]" if np.isnan(low) or np.isnan(high) else f"[{low:.{digits}f}, {high:.{digits}f}]"
            text += f" {interval} (n={0 if np.isnan(n) else int(n)})"
        texts.append(text)
    return texts


def csv_columns(table):
    """`table` with its '<x> mean|std|ci_low|ci_high|n' columns renamed '<x>_mean', ... (the CSV's names)."""
    columns = set(table.columns)
    renamed = {}
    for column in table.columns:
        if isinstance(column, str) and " " in column:
            base, stat = column.rsplit(" ", 1)
            if stat in STATS and f"{base} mean" in columns:
                renamed[column] = f"{base}_{stat}"
    return table.rename(columns=renamed)


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


def _reference_rows(unlearn):
    """A_c* as Retrain rows: the mia_nn_reference of each (dataset, arch, forget set, seed) once, as mia_nn
    (one unit per (seed, forget set): it is the same for every method and unlearning seed there)."""
    keys = ["dataset", "arch", "forget_classes", "seed"]
    first = unlearn.drop_duplicates(keys)
    return first[keys].assign(mia_nn=first["mia_nn_reference"].to_numpy())


def lambda_table(runs, method="trw", uncertainty=None, units=False):
    """Table 7 layout: a row per λ of `method` (+ Retrain): Acc_r, Acc_f, MIA, MIA-NN and the MIA-NN gap
    to the Retrain reference (module docstring: mean, std, ci_low, ci_high, n each). Retrain's MIA-NN is
    A_c*, the reference."""
    metrics = {**ACCURACY_METRICS, "mia_nn": "MIA-NN", "mia_nn_gap": "MIA-NN gap"}
    sweep = runs[runs["method"] == method]
    lam = pd.to_numeric(sweep["params.lam"])
    names = {value: f"λ={value:g}" for value in lam.unique()}
    parts = [sweep.assign(_label=lam.map(names).to_numpy())]
    retrain = runs[runs["method"] == "retrain"]
    if len(retrain):
        parts.insert(0, retrain.drop(columns=["mia_nn", "mia_nn_gap"], errors="ignore").assign(_label="Retrain"))
        unlearn = runs[runs["stage"] == "unlearn"]
        if "mia_nn_reference" in unlearn and len(unlearn):
            parts.insert(1, _reference_rows(unlearn).assign(_label="Retrain"))
    frame = pd.concat(parts, ignore_index=True)
    cells, unit_rows = _summarise(frame, ["_label"], metrics, uncertainty, f"lambda_{method}")
    order = (["Retrain"] if len(retrain) else []) + [names[value] for value in sorted(names)]
    table = _wide(cells, ["_label"], lambda c: c["metric"], list(metrics.values())).reindex(order)
    table.index.name = "λ"
    return (table, _units_frame(unit_rows)) if units else table


def multiclass_table(runs, method_order=None, uncertainty=None, units=False):
    """Table 8 layout: a row per (number of forgotten classes, method), Retrain first: Acc_r, Acc_f, MIA
    (module docstring) with the Original's values beside them, and the average gap to Retrain (see
    accuracy_table)."""
    runs = runs[runs["stage"].isin(["unlearn", "retrain"])].reset_index(drop=True)
    forgotten = runs["forget_classes"].astype(str).str.count(",").to_numpy() + 1
    labels = method_labels(runs)
    order = _row_order(runs, labels, method_order)
    frame = runs.assign(_label=labels.to_numpy(), _forgotten=forgotten)
    cells, unit_rows = _summarise(frame, ["_forgotten", "_label"], ACCURACY_METRICS, uncertainty, "multiclass")
    if cells.empty:
        return (pd.DataFrame(), _units_frame(unit_rows)) if units else pd.DataFrame()
    table = _wide(cells, ["_forgotten", "_label"], lambda c: c["metric"], list(ACCURACY_METRICS.values()))
    blocks = []
    for count in sorted(set(forgotten)):
        block = table.xs(count, level="_forgotten").reindex([label for label in order if label in
                                                              table.xs(count, level="_forgotten").index])
        original = block.loc["Original"] if "Original" in block.index else pd.Series(np.nan, index=block.columns)
        block = block.drop(index="Original", errors="ignore")
        out = pd.DataFrame(index=block.index)
        for title in ACCURACY_METRICS.values():
            for stat in STATS:
                if f"{title} {stat}" in block:
                    out[f"{title} {stat}"] = block[f"{title} {stat}"]
            for stat in STATS:
                if f"{title} {stat}" in block:
                    out[f"{title} (Original) {stat}"] = original[f"{title} {stat}"]
        out["Avg gap"] = _average_gap(block, "")
        out.index = pd.MultiIndex.from_tuples([(int(count), label) for label in out.index],
                                              names=["Forgotten classes", "Method"])
        blocks.append(out)
    table = pd.concat(blocks) if blocks else pd.DataFrame()
    unit_rows = unit_rows.drop(columns=["_forgotten"], errors="ignore")
    return (table, _units_frame(unit_rows)) if units else table


def running_time_table(runs, method_order=None, uncertainty=None, units=False):
    """Figure 5's numbers: per method, wall and compute seconds (a trial is the unit: mean, sample std
    over the trials and the bootstrap interval), the devices they ran on and on how many Ray nodes
    (distinct `ray_node_id` tags; runs from before that tag count none)."""
    runs = runs.reset_index(drop=True)
    labels = method_labels(runs)
    order = _row_order(runs, labels, method_order)
    metrics = {"wall_seconds": "Wall s", "compute_seconds": "Compute s"}
    frame = runs.assign(_label=labels.to_numpy())
    cells, unit_rows = _summarise(frame, ["_label"], metrics, uncertainty, "running_time", per_trial=True)
    table = _wide(cells, ["_label"], lambda c: c["metric"], list(metrics.values())).reindex(order)
    grouped = frame.groupby("_label", sort=False)
    if "device" in runs:
        table["Device"] = grouped["device"].agg(lambda d: ", ".join(sorted(set(d.dropna())))).reindex(order)
    if "ray_node_id" in runs:
        table["Nodes"] = grouped["ray_node_id"].nunique().reindex(order)
    table.index.name = "Method"
    return (table, _units_frame(unit_rows.drop(columns=["trial"], errors="ignore"))) if units else table


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


def ulira_units(ulira_runs, method_order=None):
    """The U-LiRA table's per-unit frame (write_tables' NAME.units.csv): one row per attack (a forget set,
    method, params and unlearning seed) and statistic, its value (the mean over the attack's held-out
    pairs) and in `samples` the pairs (TPR: held-out in models) behind it."""
    from analysis import ulira
    runs = ulira_runs.reset_index(drop=True)
    labels = method_labels(runs).where(runs["method"] != "retrain", ulira.FLOOR_LABEL)
    rows = []
    for statistic, title in ulira.table_statistics(runs.columns).items():
        name = f"ulira_{statistic}"
        if name not in runs:
            continue
        counts = runs[f"{name}_n"] if f"{name}_n" in runs else pd.Series(np.nan, index=runs.index)
        rows.append(pd.DataFrame({
            "dataset": runs.get("dataset"), "arch": runs.get("arch"), "label": labels,
            "seed": np.nan, "forget_classes": runs.get("forget_classes"), "unlearn_seed": runs.get("unlearn_seed"),
            "metric": title, "value": pd.to_numeric(runs[name], errors="coerce"),
            "samples": pd.to_numeric(counts, errors="coerce")}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


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
    return statistics.columns(title, interval, statistics.sample_std(values))


def search_holdout(parent, holdout, uncertainty=None):
    """A search cell's holdout columns: its default params and its best params, each evaluated on the
    holdout half by the `<search>-best` grid (`holdout`: that experiment's tidy runs), as the search's
    objective per unit (seed, unlearning seed) with its bootstrap interval over units, and the paired
    difference Best − Default over the units both have (> 0: the best did worse than the default on the
    holdout, the winner's curse). A holdout run belongs to the default (best) when its searched params
    equal the cell's default point (params.<p> of the parent run) or its best (best.<p> tags); when the
    search kept the default, the same runs are both. NaN (n 0) without holdout runs."""
    empty = {f"{title} {statistic}": (0 if statistic == "n" else np.nan)
             for title in HOLDOUT_COLUMNS for statistic in STATS}
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
