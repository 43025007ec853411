"""The `comparisons` and `noise_floor` tables of `unlearn-grid tables` (issue 28, parts 3 and 4): items for
grid/reports/report.py build_tables, each (name, title, numeric table, show_index, per-unit frame).

The numbers come from analysis/comparisons.py (paired differences, Wilcoxon, Holm) and
analysis/noise_floor.py (leave-one-out over the Retrain models); here they only get their captions,
which say what was paired or resampled, how many times, with which seed, and what n counts.
"""
from analysis import comparisons, noise_floor, statistics


def _seeds(runs):
    return runs["seed"].dropna().astype(str).nunique() if "seed" in runs else 0


def _interval_words(uncertainty):
    return (f"{uncertainty.level:.0%} percentile bootstrap intervals, {uncertainty.resamples} resamples, "
            f"seed {uncertainty.seed}")


def comparisons_title(table, uncertainty, note=""):
    tests = int(table["Wilcoxon p"].notna().sum()) if len(table) else 0
    return ("Paired comparisons (method − baseline, points): each method's (seed, forget set, unlearning seed) "
            "paired with the baseline's same unit; with Retrain, which has no unlearning seed, the Retrain of "
            "the same (seed, forget set); the MIA-NN gap against Retrain (held-out), the Retrain model of that "
            "seed scored against the other Retrain models' reference. Mean difference over the pairs with "
            f"{_interval_words(uncertainty)} (pairs resampled); two-sided Wilcoxon signed-rank p, Holm-adjusted "
            f"over the table's {tests} tests; n = pairs, n/a below {statistics.MIN_UNITS} pairs" + note)


def noise_floor_title(uncertainty, note=""):
    return ("Retrain noise floor (%): each Retrain model scored against the reference of the other Retrain "
            "models of its forget set (leave-one-out c* and A_c*). A_c* (as used): the reference the MIA-NN "
            "table uses, biased upward (c* is the argmax of the same means); A_c* (leave-one-out): the mean "
            "over models of the held-out model's score on the class the others chose; c* stability: how many "
            "Retrain models have c* as their own argmax; Retrain (held-out) gap: |held-out score − the others' "
            f"A_c*|, the gap of a model that is a Retrain. {_interval_words(uncertainty)} (Retrain models "
            f"resampled); n = Retrain models; 'all': every (forget set, model) of the dataset" + note)


def items(runs, uncertainty=None, order=None, class_names=None, note=""):
    """[(name, title, numeric table, show_index, units frame)] for `comparisons` (whenever the runs
    have >= 2 training seeds) and `noise_floor` (whenever a forget set has >= 2 Retrain models with
    their scores tagged). order: method names in display order; class_names: {dataset: [names]};
    note: the split note every title ends with (report.split_note)."""
    uncertainty = uncertainty or statistics.Uncertainty()
    out = []
    if _seeds(runs) >= 2:
        pairs = comparisons.paired_units(runs, uncertainty.baselines, order)
        table = comparisons.summarise(pairs, uncertainty)
        if len(table):
            out.append(("comparisons", comparisons_title(table, uncertainty, note), table, False, pairs))
    floor = noise_floor.noise_floor_table(runs, uncertainty, class_names)
    if len(floor):
        out.append(("noise_floor", noise_floor_title(uncertainty, note), floor, False,
                    noise_floor.noise_floor_units(runs)))
    return out
