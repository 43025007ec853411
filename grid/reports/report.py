"""Tables and figures of an experiment: MLflow runs (+ their artifacts) -> analysis/ -> files.

`unlearn-grid tables` writes every table that the experiment's runs support, each as .csv, .md and
.tex; `unlearn-grid figures` writes the PNG figures and logs them to MLflow.
"""
import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from analysis import tables
from analysis.statistics import Uncertainty
from trainables import data, methods, store


def class_names(runs):
    return {d: list(data.DATASETS[d].class_names) for d in runs["dataset"].unique() if d in data.DATASETS}


def first_forget_sets(runs):
    """The first forget set of each (dataset, arch) — fewest classes, then lowest indices — the one
    per-class tables and figures show."""
    unlearn = runs[runs["stage"] == "unlearn"]
    def rank(forget):
        classes = [int(c) for c in str(forget).split(",")]
        return (len(classes), classes)
    return {group: min(frame["forget_classes"].unique(), key=rank)
            for group, frame in unlearn.groupby(["dataset", "arch"], sort=False)}


def artifact(run_id, path, loader):
    """loader(a local copy of the run's file `path`). A stored file (weights, logits) is read from the
    storage the run points at (its stored.{path} tag, checked against stored.{path}.sha256); runs
    logged before those tags, and every other file, from the run's MLflow artifacts."""
    with tempfile.TemporaryDirectory() as folder:
        if path in store.STORED_FILES:
            tags = mlflow.MlflowClient().get_run(run_id).data.tags
            if f"{store.RUN_TAG}{path}" in tags:
                local = Path(folder, path)
                local.write_bytes(store.read_uri(tags[f"{store.RUN_TAG}{path}"], tags[f"{store.RUN_TAG}{path}.sha256"]))
                return loader(str(local))
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=folder)
        return loader(local)


PER_CLASS_DROP_TAG = "per_class_drop"
"""The unlearn runs' tag with the rows of their diagnostics/per_class_drop.csv artifact that the
per_class_drop table reads (trainables/trial.py sets it), so that the table reads the runs frame
instead of downloading an artifact per run. Its value is compact JSON: a list of [class index, drop]
pairs, every row of analysis.diagnostics.per_class_drop (each retained class with test samples) in
that order, drop = Original accuracy - accuracy in percentage points rounded to
PER_CLASS_DROP_DECIMALS, e.g. [[3,12.5],[5,4.0],[1,0.0],[2,-1.25],[4,-2.0]]. Runs logged by older
versions hold only their top 5 rows (tag and artifact alike); see per_class_drop_table."""
PER_CLASS_DROP_DECIMALS = 4
PER_CLASS_DROP_ARTIFACT = "diagnostics/per_class_drop.csv"   # the same rows, unrounded, in every unlearn run


def _tag_pairs(value):
    """A run's PER_CLASS_DROP_TAG value as its [class, drop] pairs; None when the run has no such tag
    (runs logged before it existed: a missing tag is NaN in the runs frame)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return [(int(c), float(d)) for c, d in json.loads(value)]


def parse_per_class_drop_tag(value):
    """A run's PER_CLASS_DROP_TAG value as a frame of (class, drop) rows in the tag's order; None when
    the run has no such tag."""
    pairs = _tag_pairs(value)
    return None if pairs is None else pd.DataFrame(pairs, columns=["class", "drop"])


def _per_class_drop_artifact(run_id):
    """The (class, drop) rows of a run's per_class_drop.csv artifact, rounded as the tag rounds them,
    so a table is the same whether its runs carry the tag or only the artifact."""
    frame = artifact(run_id, PER_CLASS_DROP_ARTIFACT, pd.read_csv)
    return pd.DataFrame({"class": [int(c) for c in frame["class"]],
                         "drop": [round(float(d), PER_CLASS_DROP_DECIMALS) for d in frame["drop"]]},
                        columns=["class", "drop"])


def run_per_class_drops(runs):
    """The (run, class, drop) rows of every run in `runs` (run: its position in `runs`), one run after the
    other: from the runs' PER_CLASS_DROP_TAG column, and only for runs without that tag (logged by older
    versions) from their artifact, one download each."""
    tags = runs[PER_CLASS_DROP_TAG] if PER_CLASS_DROP_TAG in runs else pd.Series(None, index=runs.index, dtype=object)
    rows = []   # one frame at the end: a frame per run costs ~1 ms, seconds over thousands of runs
    for position, (run_id, tag) in enumerate(zip(runs["run_id"], tags)):
        found = _tag_pairs(tag)
        pairs = found if found is not None else list(_per_class_drop_artifact(run_id).itertuples(index=False))
        rows += [(position, int(c), float(d)) for c, d in pairs]
    return pd.DataFrame(rows, columns=["run", "class", "drop"])


DROP = "Accuracy drop"


def per_class_drop_table(runs, order, uncertainty=None, units=False):
    """Table 6 layout: per method, the 5 retained classes whose test accuracy dropped most vs the
    Original, for the first forget set of each dataset/arch: each class's drop is averaged over all of
    the method's runs there (its seeds and unlearning seeds: the units) first, and only then ranked.
    Each drop has the tables' columns 'Accuracy drop mean|std|ci_low|ci_high|n': sample std and 95%
    bootstrap interval over those runs (analysis.statistics; n/a below 3). Reads the runs'
    PER_CLASS_DROP_TAG (an artifact download only for runs logged before that tag). units=True: also
    the per-unit frame (one row per run and ranked class), as (table, units).

    Runs logged before every retained class was logged hold only their own top 5: a class then counts
    only in the runs where it made that run's top 5 (the old, biased average, which favours classes
    that dropped a lot in one run); the table still reads, but such rows lean towards large drops."""
    from analysis import statistics
    uncertainty = uncertainty or Uncertainty()
    unlearn = runs[(runs["stage"] == "unlearn") & (runs["method"] != "original")].reset_index(drop=True)
    labels = tables.method_labels(unlearn)
    names_of = class_names(runs)
    rows, unit_rows = [], []
    for (dataset, arch), forget in first_forget_sets(runs).items():
        names = names_of.get(dataset)
        subset = (unlearn["dataset"] == dataset) & (unlearn["arch"] == arch) & (unlearn["forget_classes"] == forget)
        for label in tables._row_order(unlearn[subset], labels[subset], order):
            chosen = unlearn[subset & (labels == label)].reset_index(drop=True)
            drops = run_per_class_drops(chosen)
            # every run lists every retained class, so a class's mean is over all the runs; the top 5
            # is taken from those means, never per run. Ties by class index, as
            # analysis.diagnostics.per_class_drop breaks them (groupby sorts by class)
            by_class = drops.groupby("class")["drop"]
            mean = by_class.mean().sort_values(ascending=False, kind="stable").head(5)
            for rank, (cls, drop) in enumerate(mean.items(), 1):
                values = by_class.get_group(cls)
                interval = statistics.bootstrap_mean(
                    values.to_numpy(), resamples=uncertainty.resamples, level=uncertainty.level,
                    seed=statistics.cell_seed(uncertainty.seed, "per_class_drop", dataset, arch, forget, label, cls))
                class_name = names[int(cls)] if names else cls
                rows.append({"Dataset": f"{dataset}/{arch}", "Forget": tables.forget_set_name(forget, names),
                             "Method": label, "Rank": rank, "Class": class_name,
                             **statistics.columns(DROP, interval._replace(estimate=float(drop)),
                                                  statistics.sample_std(values.to_numpy()))})
                runs_of_class = chosen.loc[drops.loc[values.index, "run"]]
                unit_rows += [{"dataset": dataset, "arch": arch, "label": label, "seed": seed,
                               "forget_classes": forget, "unlearn_seed": unlearn_seed,
                               "metric": f"{DROP} ({class_name})", "value": value, "samples": np.nan}
                              for seed, unlearn_seed, value in zip(
                                  runs_of_class["seed"], runs_of_class.get("unlearn_seed", pd.Series(np.nan, index=runs_of_class.index)),
                                  values)]
    table = pd.DataFrame(rows)
    return (table, pd.DataFrame(unit_rows)) if units else table


def split_note(runs):
    """The test samples an experiment's numbers are on, for its table titles, from each run's
    evaluation_split and evaluation_samples tags (runs made before those tags: the whole test set)."""
    splits = runs["evaluation_split"].fillna("test") if "evaluation_split" in runs else pd.Series(["test"] * len(runs))
    if splits.nunique() > 1:
        return " — mixed splits (some runs on the whole test set, some on its holdout half: rows may not compare)"
    counts = runs["evaluation_samples"].dropna() if "evaluation_samples" in runs else pd.Series([], dtype=object)
    sizes = {d: int(n) for d, n in zip(runs.loc[counts.index, "dataset"], counts)}
    number = " + ".join(f"{n} ({d})" if len(sizes) > 1 else str(n) for d, n in sizes.items())
    if len(splits) and splits.iloc[0] == "holdout":
        return (" — holdout split (the half of each test class that searches never read; "
                f"{number or 'the holdout'} samples)")
    return f" — test split (all {number + ' ' if number else ''}test samples)"


def build_tables(runs, ulira_runs, data_root=None, echo=print, cache=None, uncertainty=None):
    """[(name, title, table, show_index, units)] for every table the runs support (units: the per-unit
    frame written as NAME.units.csv, or None). Tables are numeric ('<x> mean|std|ci_low|ci_high|n'
    columns, analysis.tables); write_tables formats them. data_root: where the datasets are (the
    similarities of neighbour_agreement that read training data need them); cache: a JSON file that
    keeps neighbour_agreement's refitted A_c (runs logged before their retrain_class_scores tag)
    between calls (None: none kept); uncertainty: analysis.statistics.Uncertainty (the spread of the ±,
    the bootstrap's resamples and seed)."""
    uncertainty = uncertainty or Uncertainty()
    runs, ulira_runs = tables.in_canonical_order(runs), tables.in_canonical_order(ulira_runs)
    order = methods.display_order()
    note = split_note(runs)   # every title says which test samples its numbers are on
    accuracy, accuracy_units = tables.accuracy_table(runs, order, uncertainty, units=True)
    mia_nn, mia_nn_units = tables.mia_nn_table(runs, class_names(runs), order, uncertainty, units=True)
    timing, timing_units = tables.running_time_table(runs, order, uncertainty, units=True)
    unlearn = runs[runs["stage"] == "unlearn"]
    items = [
        ("accuracy", f"Accuracy and SVM MIA (Table 2 layout, %; {tables.spread_note(runs, uncertainty=uncertainty)}; "
         "Avg gap: mean |difference to Retrain| over the three metrics' means)" + note,
         accuracy, True, accuracy_units),
        ("mia_nn", "MIA-NN (Table 1's numbers, one row per forget set and method; Retrain's MIA-NN = A_c*, the "
         "reference; closer to it is better, %; MIA-NN gap = |MIA-NN − A_c*|; JS to Retrain = Jensen–Shannon "
         "divergence in bits between the mean predicted distributions on forget samples of the method's and the "
         "Retrain model of the same seed and forget set, n/a for runs without forget_mean_probs; Forget 'all': "
         f"every forget set's units; {tables.spread_note(unlearn, uncertainty=uncertainty, attack_metrics=('mia_nn',))})"
         + note, mia_nn, False, mia_nn_units),
        ("running_time", "Running time per trial (Figure 5's numbers, seconds; "
         f"{tables.spread_note(runs, uncertainty=uncertainty, trials=True)})" + note,
         timing, True, timing_units),
    ]
    if len(ulira_runs):
        from analysis.ulira import note as ulira_note
        # U-LiRA attacks the forget set's training samples: no test split to name
        items.append(("ulira", "U-LiRA (Table 3 layout; 50 = indistinguishable from Retrain, %; "
                      f"{ulira_note(ulira_runs)}) — on the forget set's training samples (evaluation.split does not apply)",
                      tables.ulira_table(ulira_runs, order, uncertainty), True, tables.ulira_units(ulira_runs, order)))
    swept = [m for m in ("trw", "trw_2r") if "params.lam" in runs
             and runs.loc[runs["method"] == m, "params.lam"].nunique() > 1]
    for method in swept:
        swept_runs = runs[runs["method"].isin([method, "retrain"])]
        table, units = tables.lambda_table(runs, method, uncertainty, units=True)
        items.append((f"lambda_{method}", f"λ ablation of {method} (Table 7 layout, %; "
                      f"{tables.spread_note(swept_runs, uncertainty=uncertainty)}; "
                      "MIA-NN gap: |MIA-NN − Retrain's A_c*|)" + note, table, True, units))
    if runs["forget_classes"].astype(str).str.contains(",").any():
        table, units = tables.multiclass_table(runs, order, uncertainty, units=True)
        items.append(("multiclass", "Multi-class forgetting (Table 8 layout, %; per number of forgotten classes, "
                      f"{tables.spread_note(runs, per='forget set of that size', uncertainty=uncertainty)}; "
                      "Original beside each metric; Avg gap: mean |difference to Retrain| over Acc_r, Acc_f, MIA)"
                      + note, table, True, units))
    drop, drop_units = per_class_drop_table(runs, order, uncertainty, units=True)
    if len(drop):
        items.append(("per_class_drop", "Largest per-class accuracy drops vs the Original (Table 6 layout, points; "
                      "each retained class's mean drop over the method's runs, then the 5 largest; ± sample std "
                      f"over those runs, [95% bootstrap interval] over them, {uncertainty.resamples} resamples, "
                      f"seed {uncertainty.seed}; n = runs; n/a below 3)" + note, drop, False, drop_units))
    # paired comparisons, the Retrain noise floor; TRW-2R by draw; the paper's published numbers beside ours
    from grid.reports import draws, paper_comparison, statistics_tables
    items += statistics_tables.items(runs, uncertainty, order, class_names(runs), note)
    items += draws.items(runs, uncertainty)
    items += paper_comparison.items(runs, uncertainty, order, note)
    from grid.reports import neighbours
    agreement = neighbours.neighbour_agreement_table(runs, data_root, echo, cache)
    if len(agreement):
        items.append(("neighbour_agreement", "Neighbour-class agreement: Retrain's c* (argmax_c A_c, MIA-NN's nearest "
                      "neighbour; A_c in %, mean over the Retrain models) and every A_c, beside each registered "
                      "similarity's top class (its score averaged over the Originals), the rank of c* in its "
                      "ordering (1 = agrees) and how many Originals' own top class is c*; last row: the agreement "
                      "rate over (forget set, Original) units with its 95% bootstrap interval over them (1000 "
                      "resamples, none below 3 units) and the mean rank of c*" + note, agreement, False))
    return items


def write_tables(items, out):
    """Each (name, title, table, index[, units]) item as out/NAME.csv (numeric, full precision; a metric's
    columns '<x>_mean', '<x>_std', '<x>_ci_low', '<x>_ci_high', '<x>_n'), NAME.md and NAME.tex (a metric
    as 'mean ± std [low, high] (n=N)', '[n/a]' without an interval) and, when the item carries a units
    frame, NAME.units.csv (one row per unit and metric: dataset, arch, label, seed, forget_classes,
    unlearn_seed, metric, value, samples). Prints the markdown and returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, table, index, *rest in items:
        units = rest[0] if rest else None
        tables.csv_columns(table).to_csv(out / f"{name}.csv", index=index)
        shown = tables.format_mean_std(table)
        for column in [c for c in shown.columns if isinstance(c, str) and c.endswith(" p")]:
            # p-values (comparisons): 3 significant digits, as a 1-decimal float would print 0.03 as "0.0"
            shown[column] = [("–" if pd.isna(p) else f"{p:.3g}") for p in pd.to_numeric(shown[column])]
        markdown = tables.to_markdown(shown, index=index)
        (out / f"{name}.md").write_text(markdown)
        (out / f"{name}.tex").write_text(tables.to_latex(shown, index=index))
        written += [out / f"{name}.{suffix}" for suffix in ("csv", "md", "tex")]
        if units is not None:
            units.to_csv(out / f"{name}.units.csv", index=False)
            written.append(out / f"{name}.units.csv")
        print(f"{title}:\n\n{markdown}")
    print(f"written to {out}/: " + ", ".join(f"{name}.csv|md|tex" + ("|units.csv" if rest and rest[0] is not None
                                                                      else "")
                                           for name, _, _, _, *rest in items))
    return written


def load_npz_logits(path):
    with np.load(path) as f:
        return f["logits"], f["labels"]


def _runs_of(runs, dataset, arch, forget, seed):
    return runs[(runs["dataset"] == dataset) & (runs["arch"] == arch) & (runs["forget_classes"] == forget)
                & (pd.to_numeric(runs["seed"]) == seed)]


def _test_logits(run_id):
    return artifact(run_id, "test_logits.npz", load_npz_logits)


def write_figures(runs, out, toy_models=None, uncertainty=None):
    """Every figure the runs support, as PNGs in `out`; returns their paths.

    Per (dataset, arch), on its first forget set and lowest seed: confusion matrices Original /
    method / Retrain (one file per method), where forget-class predictions go (a heatmap with each
    method's JS divergence to Retrain of that seed), MIA-NN per method (over every run of that forget
    set) against the Retrain reference; over all runs: running time bars and each λ sweep's curve.
    Bars carry 95% bootstrap intervals over units (uncertainty: analysis.statistics.Uncertainty; its
    resamples, seed and level), MIA-NN's also resampling test samples where runs stored predictions.
    toy_models: optional callable(dataset, arch, forget, seed) -> figure path for 2-D datasets.
    """
    from analysis import diagnostics, figures, statistics
    uncertainty = uncertainty or statistics.Uncertainty()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = methods.display_order()
    written = []
    unlearn = runs[runs["stage"] == "unlearn"].reset_index(drop=True)
    labels = tables.method_labels(unlearn)
    for (dataset, arch), forget in first_forget_sets(runs).items():
        info = data.DATASETS[dataset]
        forget_classes = [int(c) for c in str(forget).split(",")]
        seed = int(pd.to_numeric(unlearn["seed"]).min())
        here = _runs_of(unlearn, dataset, arch, forget, seed)
        retrain = _runs_of(runs[runs["stage"] == "retrain"], dataset, arch, forget, seed)
        tag = f"{dataset}_{arch}_f{str(forget).replace(',', '+')}"
        shown = {label: here.loc[labels[here.index] == label].iloc[0]
                 for label in tables._row_order(here, labels[here.index], order)}
        if len(retrain):
            shown["Retrain"] = retrain.iloc[0]
        logits = {label: _test_logits(run["run_id"]) for label, run in shown.items()}
        matrices = {label: diagnostics.confusion_matrix(z, y, info.num_classes) for label, (z, y) in logits.items()}
        for label in matrices:
            if label in ("Original", "Retrain"):
                continue
            panels = {k: matrices[k] for k in ("Original", label, "Retrain") if k in matrices}
            written.append(figures.confusion_matrices(panels, out / f"confusion_{tag}_{_slug(label)}.png",
                                                      list(info.class_names)))
        # on the evaluation split, like the runs' metrics and their forget_mean_probs
        shares = {label: diagnostics.forget_redistribution(z[evaluation_indices(shown[label], y)],
                                                           y[evaluation_indices(shown[label], y)],
                                                           forget_classes, info.num_classes)
                  for label, (z, y) in logits.items()}
        mean_probs = {label: forget_mean_probs(run, *logits[label], forget_classes) for label, run in shown.items()}
        divergences = ({label: statistics.jensen_shannon(p, mean_probs["Retrain"])
                        if p is not None and mean_probs["Retrain"] is not None else np.nan
                        for label, p in mean_probs.items()} if "Retrain" in mean_probs else None)
        written.append(figures.redistribution_heatmap(shares, out / f"redistribution_{tag}.png",
                                                      list(info.class_names), forget_classes, divergences))
        at_forget = unlearn[(unlearn["dataset"] == dataset) & (unlearn["arch"] == arch) & (unlearn["forget_classes"] == forget)]
        values, intervals = {}, {}
        for label in tables._row_order(at_forget, labels[at_forget.index], order):
            group = at_forget.loc[labels[at_forget.index] == label]
            interval = statistics.bootstrap_mean(
                pd.to_numeric(group["mia_nn"], errors="coerce").to_numpy(dtype=np.float64), _attack_counts(group, "mia_nn_predictions"),
                uncertainty.resamples, statistics.cell_seed(uncertainty.seed, "figure mia_nn", tag, label), uncertainty.level)
            values[label], intervals[label] = interval.estimate, (interval.low, interval.high)
        reference = tables.mean_std(at_forget["mia_nn_reference"])[0]
        written.append(figures.mia_nn_bars(values, reference, out / f"mia_nn_{tag}.png",
                                           title=f"{dataset}/{arch}, forget {forget}", intervals=intervals))
        if toy_models is not None and len(info.input_shape) == 3 and info.input_shape[0] == 2 and info.input_shape[1:] == (1, 1):
            written.append(toy_models(dataset, arch, forget, seed, out / f"decision_regions_{tag}.png"))
    timing = tables.running_time_table(runs, order)
    all_labels = tables.method_labels(runs.reset_index(drop=True))
    seconds = {}
    for label in timing.index:
        values = pd.to_numeric(runs.reset_index(drop=True).loc[all_labels == label, "wall_seconds"], errors="coerce")
        interval = statistics.bootstrap_mean(values.to_numpy(dtype=np.float64), None, uncertainty.resamples,
                                             statistics.cell_seed(uncertainty.seed, "figure running_time", label),
                                             uncertainty.level)
        seconds[label] = (interval.estimate, interval.low, interval.high)
    written.append(figures.running_time_bars(seconds, out / "running_time.png"))
    for method in ("trw", "trw_2r"):
        if "params.lam" in runs and runs.loc[runs["method"] == method, "params.lam"].nunique() > 1:
            sweep = runs[(runs["stage"] == "unlearn") & (runs["method"] == method)]
            frame = pd.DataFrame({"lam": pd.to_numeric(sweep["params.lam"]),      # one row per unit (run)
                                  "acc_r": pd.to_numeric(sweep["acc_r_test"], errors="coerce"),
                                  "mia_nn": pd.to_numeric(sweep["mia_nn"], errors="coerce")})
            if "mia_nn_reference" in sweep and sweep["mia_nn_reference"].notna().any():
                frame["mia_nn_reference"] = pd.to_numeric(sweep["mia_nn_reference"], errors="coerce")
            written.append(figures.lambda_curve(frame, out / f"lambda_{method}.png", uncertainty.resamples,
                                                uncertainty.seed, uncertainty.level))
    return [Path(p) for p in written]


def _attack_counts(group, tag):
    """Per run (labelled, samples) from its packed per-sample attack predictions (`tag`), (nan, nan)
    where a run has none; None when no run has any (then only units are resampled)."""
    from analysis import statistics
    if tag not in group:
        return None
    bits = [statistics.unpack_bits(text) for text in group[tag]]
    if all(b is None for b in bits):
        return None
    return [(float(b.sum()), float(len(b))) if b is not None else (np.nan, np.nan) for b in bits]


def evaluation_indices(run, labels):
    """The test indices a run's metrics are on, from its evaluation.split / evaluation.seed params
    (runs without them: the whole test set)."""
    split = run.get("evaluation.split")
    evaluation = {"split": split if isinstance(split, str) else "test"}
    if evaluation["split"] == "holdout":
        evaluation["seed"] = int(float(run.get("evaluation.seed", 0)))
    return data.evaluation_indices(np.asarray(labels), evaluation)


def forget_mean_probs(run, logits, labels, forget_classes):
    """A run's mean softmax over the forget-class test samples of its evaluation split: its
    `forget_mean_probs` tag (JSON list) when it has one, else computed from its test logits (the whole
    test set; the split from the run's evaluation.split / evaluation.seed params). None without samples."""
    text = run.get("forget_mean_probs")
    if isinstance(text, str) and text:
        return np.asarray(json.loads(text), dtype=np.float64)
    labels = np.asarray(labels)
    reported = evaluation_indices(run, labels)
    z, y = np.asarray(logits, dtype=np.float64)[reported], labels[reported]
    z = z[np.isin(y, forget_classes)]
    if not len(z):
        return None
    z = z - z.max(axis=1, keepdims=True)                  # a stable softmax
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return probs.mean(axis=0)


def _slug(label):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")


def _joined(frame, column, missing):
    """The distinct values of a column, comma-joined (a grid searches with one objective and one split,
    but a title must not hide a mix); `missing` when there are none."""
    values = sorted(set(frame[column].dropna().astype(str))) if column in frame else []
    return ", ".join(values) or missing


def _search_note(parents, explain=True):
    """'<objective> on the <split> split' for search titles; `explain` says what the validation split is
    (table titles; too long for a figure's)."""
    split = _joined(parents, "split", "validation")
    note = f"{_joined(parents, 'objective', 'the objective')} (lower is better) on the {split} split"
    if explain and split == "validation":
        note += " (the half of each test class that the final tables never report on)"
    return note


BEST_SUFFIX = "-best"   # grid/reports/best.py names the experiment of the grid it writes `<search>-best`


def holdout_runs(tracking_uri, experiment, parents):
    """The tidy runs (unlearn and their Retrain) of the `<experiment>-best` experiment, where the grid that
    `unlearn-grid best` wrote evaluates the default and the best params on the holdout half; an empty
    frame when the experiment has no searches or that grid has not run."""
    from grid.tracking import mlflow_runs
    if parents.empty:
        return pd.DataFrame()
    try:
        return mlflow_runs.experiment_runs(tracking_uri, experiment + BEST_SUFFIX)
    except LookupError:   # no such experiment yet: the columns say n/a and the caption says what to run
        return pd.DataFrame()


def _holdout_note(parents, holdout, uncertainty):
    """The search table's caption on its holdout columns."""
    from analysis import statistics
    options = uncertainty or statistics.Uncertainty()
    grids = ", ".join(sorted(set(parents["grid"].dropna().astype(str)))) if "grid" in parents else "GRID"
    if holdout is None or holdout.empty:
        return (f"; Default / Best on holdout: n/a, no holdout runs yet: run `unlearn-grid best {grids or 'GRID'} "
                "--out best.yaml` and `unlearn-grid run best.yaml` (it evaluates both on the holdout half)")
    return (f"; Default / Best on holdout: the same objective recomputed on the holdout half (the test half the "
            f"search never read) by the {BEST_SUFFIX} grid over every seed, mean and sample std over (seed, "
            f"unlearning seed) units, {options.level:.0%} bootstrap intervals over those units, "
            f"{options.resamples} resamples, seed {options.seed}, n = units (n/a below "
            f"{statistics.MIN_UNITS}); Best − Default on holdout: their paired difference (> 0: the best "
            "params did worse than the default on data they were not chosen on, the winner's curse)")


def build_search_tables(parents, holdout=None, uncertainty=None):
    """[(name, title, table, show_index)]: the hyperparameter-search table when the experiment has
    finished searches (tidy `stage=search` runs, mlflow_runs.search_runs), else []. holdout: the
    `<experiment>-best` runs (holdout_runs; None or empty: n/a columns); uncertainty:
    analysis.statistics.Uncertainty of the intervals."""
    if parents.empty:
        return []
    title = ("Hyperparameter search: per cell, the objective of the method's default params (Default) and of "
             f"the best params found (Best); {_search_note(parents)}" + _holdout_note(parents, holdout, uncertainty))
    return [("search", title, tables.search_table(parents, methods.display_order(), class_names(parents),
                                                  holdout=holdout, uncertainty=uncertainty), False)]


def _flag(frame, column):
    """A 'true'/'false' tag column as booleans (False where the tag is missing)."""
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].astype(str).str.lower() == "true"


def _best_trial(objective, best_objective):
    """Booleans marking the one trial the search reported as best: the trial whose final objective is
    nearest the cell's best_objective (the lowest objective when the cell did not log it)."""
    marked = pd.Series(False, index=objective.index)
    if objective.notna().any():
        target = pd.to_numeric(best_objective, errors="coerce")
        marked[(objective - target).abs().idxmin() if pd.notna(target) else objective.idxmin()] = True
    return marked


def _search_trials(cell, children, series):
    """The trials of one searched cell as figures.search_objective wants them (param columns by name)."""
    trials = children[children["mlflow.parentRunId"] == cell["run_id"]] if "mlflow.parentRunId" in children \
        else children.iloc[0:0]
    searched = [p for p in str(cell.get("searched_params", "")).split(",") if p]
    frame = pd.DataFrame({"series": series, "objective": pd.to_numeric(trials["objective"], errors="coerce")
                          if "objective" in trials else np.nan,
                          "default": _flag(trials, "default"), "stopped_early": _flag(trials, "stopped_early")},
                         index=trials.index)
    for param in searched:
        # the flat trial config logs each method param as params.<name>
        frame[param] = trials[f"params.{param}"] if f"params.{param}" in trials else np.nan
    frame["best"] = _best_trial(frame["objective"], cell.get("best_objective"))
    return frame


def write_search_figures(parents, children, out):
    """One PNG per (dataset, arch, method) with finished searches: every trial's objective against
    each searched param, a colour per searched cell (forget set, and seed when there are several);
    returns their paths."""
    from analysis import figures
    if parents.empty:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = class_names(parents)
    several_seeds = parents["seed"].astype(str).nunique() > 1
    written = []
    for (dataset, arch, method), cells in parents.groupby(["dataset", "arch", "method"]):
        frames, spaces = [], {}
        for _, cell in cells.iterrows():
            series = tables.forget_set_name(cell["forget_classes"], names.get(dataset))
            series += f", seed {cell['seed']}" if several_seeds else ""
            frames.append(_search_trials(cell, children, series))
            for param in str(cell.get("searched_params", "")).split(","):
                if param and param not in spaces:
                    spaces[param] = cell.get(f"space.{param}", "")
        trials = pd.concat(frames, ignore_index=True)
        if trials.empty or not spaces:
            continue
        title = f"{method} on {dataset}/{arch}: {_search_note(cells, explain=False)}"
        written.append(figures.search_objective(trials, spaces, out / f"search_{dataset}_{arch}_{_slug(method)}.png",
                                                title=title))
    return [Path(p) for p in written]


def toy_decision_regions(runs):
    """A callable for write_figures: decision regions of Original, Retrain, rescale and TRW models
    of a 2-D dataset (the paper's Figure 2), evaluated on a grid over the data."""
    import torch
    from analysis import figures
    from trainables import models

    def draw(dataset, arch, forget, seed, path):
        info = data.DATASETS[dataset]
        points = data.load(dataset)
        xy = points.train_x[:, :, 0, 0].numpy()
        low, high = xy.min(axis=0) - 1.0, xy.max(axis=0) + 1.0
        grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
        inputs = torch.tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=torch.float32)[:, :, None, None]
        chosen = _runs_of(runs, dataset, arch, forget, seed)
        panels = {}
        for title, selector in (("Original", chosen["method"] == "original"), ("Retrain", chosen["method"] == "retrain"),
                                ("Rescale (λ=0)", chosen["method"] == "rescale"), ("TRW", chosen["method"] == "trw")):
            if not selector.any():
                continue
            model = models.build(arch, info.num_classes, info.input_shape)
            state = artifact(chosen.loc[selector, "run_id"].iloc[0], "model.pt",
                             lambda p: torch.load(p, map_location="cpu", weights_only=True))
            model.load_state_dict(state)
            with torch.no_grad():
                panels[title] = model.eval()(inputs).argmax(1).numpy().reshape(grid_x.shape)
        return figures.decision_regions(grid_x, grid_y, panels, path, points=(xy, points.train_y.numpy()),
                                        class_names=info.class_names)
    return draw
